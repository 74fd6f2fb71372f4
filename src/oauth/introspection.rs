//! An RFC 7662 token introspection client: a blocking HTTPS POST of `token=...` (§2.1) with
//! HTTP Basic client authentication (RFC 6749 §2.3.1), whose JSON answer (§2.2) must say
//! `"active": true`. The answer's claims then pass the same checks as a JWT's (`claims.rs`).
//!
//! Each call is bounded by [`TIMEOUT`] and [`MAX_RESPONSE`]; redirects are not followed, so
//! the token is only ever sent to the configured URL. Positive answers are cached for at most
//! [`CACHE_TTL`] (never past the token's `exp`), keyed by the SHA-256 of the token, so the
//! token itself is never kept. TLS is rustls with the ring provider and the system's roots, or
//! only the CA certificates of `introspection_ca_file`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Error;
use crate::config::Introspection;
use crate::sasl::TokenError;

/// Time allowed for one introspection request, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest introspection response read, in bytes.
pub const MAX_RESPONSE: u64 = 64 * 1024;
/// Longest a positive answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most cached answers; when full, expired ones are dropped, then all.
pub const MAX_CACHE: usize = 10_000;

/// The introspection client.
pub struct Client {
    url: String,
    /// The `Authorization` header value, if client credentials are configured.
    authorization: Option<Zeroizing<String>>,
    agent: ureq::Agent,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

struct Cached {
    claims: Map<String, Value>,
    until: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("authenticates", &self.authorization.is_some())
            .finish()
    }
}

impl Client {
    /// A client for `cfg`, reading the client secret from its file. Client id and secret go
    /// together: one without the other is an error.
    pub fn new(cfg: &Introspection) -> Result<Client, Error> {
        let authorization = match (&cfg.client_id, &cfg.secret_file) {
            (Some(id), Some(path)) => {
                let secret = super::read_secret(path)?;
                let pair = Zeroizing::new(format!(
                    "{}:{}",
                    form_encode(id.as_bytes()),
                    form_encode(secret.expose())
                ));
                Some(Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                )))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Introspection(
                    "introspection_client_id and introspection_secret_file must be set together"
                        .into(),
                ));
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider)
            .root_certs(match (&cfg.ca_file, cfg.danger_accept_invalid_certs) {
                (_, true) => ureq::tls::RootCerts::Specific(Arc::new(Vec::new())),
                (Some(path), false) => ca_roots(path)?,
                (None, false) => system_roots(),
            })
            .disable_verification(cfg.danger_accept_invalid_certs)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .proxy(None)
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(Client {
            url: cfg.url.clone(),
            authorization,
            agent,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The claims of an active `token` at `now` (Unix seconds), from the cache or the
    /// endpoint. An inactive token is `Invalid`; a failed request is `Unavailable`.
    pub fn introspect(&self, token: &str, now: u64) -> Result<Map<String, Value>, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.lock().get(&key).filter(|c| now < c.until) {
            return Ok(hit.claims.clone());
        }
        let claims = self.request(token)?;
        let mut until = now.saturating_add(CACHE_TTL.as_secs());
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            until = until.min(exp.max(0.0) as u64);
        }
        if until > now {
            let mut cache = self.lock();
            if cache.len() >= MAX_CACHE {
                cache.retain(|_, c| now < c.until);
                if cache.len() >= MAX_CACHE {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    claims: claims.clone(),
                    until,
                },
            );
        }
        Ok(claims)
    }

    fn request(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let encoded = Zeroizing::new(form_encode(token.as_bytes()));
        let body = Zeroizing::new(format!(
            "token={}&token_type_hint=access_token",
            encoded.as_str()
        ));
        let mut request = self
            .agent
            .post(&self.url)
            .header("Accept", "application/json")
            .content_type("application/x-www-form-urlencoded");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.as_str());
        }
        let unavailable = |why: String| TokenError::Unavailable(format!("introspection: {why}"));
        let mut response = request
            .send(body.as_bytes())
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(unavailable(format!("endpoint answered HTTP {status}")));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| unavailable(e.to_string()))?;
        let claims: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| unavailable("response is not a JSON object".into()))?;
        // RFC 7662 §2.2: `active` is REQUIRED; anything but `true` means not usable.
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Invalid(
                "token is not active (introspection)".into(),
            ));
        }
        Ok(claims)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        // The cache holds no invariant a panic could break: recover it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The system's trust roots (as for the relay), for ureq.
/// The CA certificates of `introspection_ca_file` (PEM), trusted instead of the system's.
fn ca_roots(path: &std::path::Path) -> Result<ureq::tls::RootCerts, Error> {
    let certs = crate::tls::load_certs(path)
        .map_err(|e| Error::Introspection(format!("introspection_ca_file {e}")))?;
    Ok(ureq::tls::RootCerts::new_with_certs(
        &certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect::<Vec<_>>(),
    ))
}

fn system_roots() -> ureq::tls::RootCerts {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "oauth introspection: problem loading system trust roots");
    }
    if found.certs.is_empty() {
        tracing::warn!("oauth introspection: no system trust roots; HTTPS requests will fail");
    }
    ureq::tls::RootCerts::new_with_certs(
        &found
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect::<Vec<_>>(),
    )
}

/// `application/x-www-form-urlencoded` for one value: unreserved characters (RFC 3986 §2.3)
/// as they are, every other byte as `%XX`.
pub fn form_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "introspection_tests.rs"]
mod tests;
