//! Offline JWT verification (RFC 7519, RFC 7515): the signing keys an admin configures (a JWKS
//! file, RFC 7517, for RS256 and ES256; a shared secret for HS256), key choice by `kid`, and
//! the signature check. Claims are checked afterwards by `claims.rs`.
//!
//! The header's `alg` must be one of the configured algorithms (RFC 8725 §3.1): `none` and
//! anything else unlisted is refused before any key is touched, and a key is only ever used
//! with the one algorithm it was loaded for, so an RSA public key can never serve as an HMAC
//! secret. Keys named in the token itself (`jwk`, `jku`, `x5u` headers) are ignored.

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Most keys kept from a JWKS file; a token is tried against at most this many.
pub const MAX_KEYS: usize = 32;

/// The largest header accepted before decoding, in bytes of base64url.
const MAX_HEADER_LEN: usize = 2048;

/// Why a token was refused. The texts never quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not three base64url parts with a JSON header.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// The header's `alg` is not configured (this includes `none`).
    #[error("JWT algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No configured key matches the header's `alg` and `kid`.
    #[error("no configured key for this JWT (alg {alg}, kid {kid:?})")]
    NoKey {
        /// The header's `alg`.
        alg: String,
        /// The header's `kid`, if any.
        kid: Option<String>,
    },
    /// The signature does not verify with any candidate key.
    #[error("JWT signature does not verify")]
    BadSignature,
}

/// The verification keys, each bound to one algorithm.
pub struct Keys {
    algorithms: Vec<Algorithm>,
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public keys are not secret, but the HS256 secret is: print only the key ids.
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.alg, k.kid.as_deref())))
            .finish()
    }
}

impl Keys {
    /// Keys from a JWKS document (RS256 and ES256 keys, for the listed `algorithms`) and an
    /// HS256 secret (used when "HS256" is listed). Keys of other types, algorithms or uses
    /// are skipped. Fails when the JWKS is not valid JSON, or when it is given, RS256 or ES256
    /// is accepted, and not one key in it is usable.
    pub fn new(
        algorithms: &[String],
        jwks: Option<&[u8]>,
        hs256_secret: Option<&[u8]>,
    ) -> Result<Keys, String> {
        let accepts = |name: &str| algorithms.iter().any(|a| a == name);
        let algorithms = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .filter(|a| accepts(name(*a)))
            .collect();
        let mut keys = Vec::new();
        if let Some(secret) = hs256_secret.filter(|_| accepts("HS256")) {
            keys.push(Key {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret).map_err(|e| e.to_string())?,
            });
        }
        if let Some(jwks) = jwks {
            let before = keys.len();
            let set: JwkSet = serde_json::from_slice(jwks).map_err(|e| e.to_string())?;
            for jwk in &set.keys {
                if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                    continue;
                }
                let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                    (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => {
                        Algorithm::RS256
                    }
                    (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                        if ec.curve == EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    _ => continue,
                };
                if !accepts(name(alg)) || keys.len() >= MAX_KEYS {
                    continue;
                }
                let Ok(key) = DecodingKey::from_jwk(jwk) else {
                    continue;
                };
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
            if (accepts("RS256") || accepts("ES256")) && keys.len() == before {
                return Err(format!(
                    "no usable key: {} key(s), none RS256 (RSA) or ES256 (EC P-256) for the \
                     accepted algorithms",
                    set.keys.len()
                ));
            }
        }
        Ok(Keys { algorithms, keys })
    }

    /// Whether no key was loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token`'s signature and returns its claims (not yet checked; see `claims.rs`).
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let (alg_name, kid) = header(token)?;
        let Some(alg) = self
            .algorithms
            .iter()
            .copied()
            .find(|a| name(*a) == alg_name)
        else {
            return Err(Rejection::Algorithm(printable(&alg_name)));
        };
        let mut validation = Validation::new(alg);
        // Time, audience and issuer are checked by `claims.rs` with the injected clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == alg && (alg == Algorithm::HS256 || kid.is_none() || k.kid == kid));
        let mut tried = false;
        for key in candidates {
            tried = true;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                }
                Err(_) => return Err(Rejection::Malformed),
            }
        }
        if tried {
            Err(Rejection::BadSignature)
        } else {
            Err(Rejection::NoKey {
                alg: alg_name,
                kid: kid.map(|k| printable(&k)),
            })
        }
    }
}

/// Whether `token` has the shape of a JWS compact serialization: three base64url parts.
pub fn looks_like_jwt(token: &str) -> bool {
    let b64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let parts: Vec<&str> = token.splitn(4, '.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| p.bytes().all(b64url))
}

/// The header's `alg` and `kid`, read without trusting anything else in it.
fn header(token: &str) -> Result<(String, Option<String>), Rejection> {
    if !looks_like_jwt(token) {
        return Err(Rejection::Malformed);
    }
    let encoded = token.split('.').next().unwrap_or_default();
    if encoded.len() > MAX_HEADER_LEN {
        return Err(Rejection::Malformed);
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Rejection::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&json).map_err(|_| Rejection::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Rejection::Malformed)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Rejection::Malformed),
    };
    Ok((alg.to_string(), kid))
}

/// The configuration name of an algorithm this module loads keys for.
fn name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "",
    }
}

/// A header value made safe for a log line: printable ASCII, at most 64 characters.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
