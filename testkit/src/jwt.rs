//! Minting JSON Web Tokens (RFC 7519) for the bearer mechanisms: HS256 with a shared secret,
//! RS256 with an RSA key (the PEM fixtures under `tests/fixtures/`), with or without a key id;
//! the JWKS that publishes an RS256 key; and tokens over any header and claims bytes (the fuzz
//! targets sign what the fuzzer chose, so the validator's claim checks run behind a good
//! signature).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// A signing key and the header fields that go with it.
pub struct Minter {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
}

impl Minter {
    /// HS256 with `secret`.
    pub fn hs256(secret: &[u8]) -> Minter {
        let key = match EncodingKey::from_secret(secret) {
            Ok(key) => key,
            Err(e) => panic!("HS256 key: {e}"),
        };
        Minter {
            key,
            algorithm: Algorithm::HS256,
            kid: None,
        }
    }

    /// RS256 with the first RSA private key (PKCS #1, `BEGIN RSA PRIVATE KEY`) in `pem`.
    pub fn rs256_pem(pem: &str) -> Minter {
        let der = match rustls_pemfile::rsa_private_keys(&mut pem.as_bytes()).next() {
            Some(Ok(der)) => der,
            Some(Err(e)) => panic!("RSA key PEM: {e}"),
            None => panic!("no RSA private key in the PEM text"),
        };
        Minter {
            key: EncodingKey::from_rsa_der(der.secret_pkcs1_der()),
            algorithm: Algorithm::RS256,
            kid: None,
        }
    }

    /// The same key, naming itself `kid` in each token's header (and in [`Minter::jwks`]).
    pub fn with_kid(mut self, kid: &str) -> Minter {
        self.kid = Some(kid.to_owned());
        self
    }

    /// A signed token carrying `claims`, with the header `{"typ":"JWT","alg":...,"kid":...}`.
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.kid);
        match jsonwebtoken::encode(&header, claims, &self.key) {
            Ok(token) => token,
            Err(e) => panic!("token signs: {e}"),
        }
    }

    /// A token `base64url(header).base64url(claims).signature` over the given bytes, which
    /// need not be JSON: the signature holds whatever they say.
    pub fn sign_raw(&self, header: &[u8], claims: &[u8]) -> String {
        let signing_input = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
        match jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.key, self.algorithm) {
            Ok(signature) => format!("{signing_input}.{signature}"),
            Err(e) => panic!("token signs: {e}"),
        }
    }

    /// A JWKS (RFC 7517 §5) JSON text publishing this key (RS256 keys only: an HS256 secret
    /// is never published).
    pub fn jwks(&self) -> String {
        let mut jwk = match Jwk::from_encoding_key(&self.key, self.algorithm) {
            Ok(jwk) => jwk,
            Err(e) => panic!("JWK: {e}"),
        };
        jwk.common.key_id.clone_from(&self.kid);
        match serde_json::to_string(&JwkSet { keys: vec![jwk] }) {
            Ok(text) => text,
            Err(e) => panic!("JWKS: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_tokens_verify_and_raw_ones_carry_any_bytes() {
        let minter = Minter::hs256(b"a shared secret of at least 32 bytes!");
        let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
        let token = minter.mint(&claims);
        let key = jsonwebtoken::DecodingKey::from_secret(b"a shared secret of at least 32 bytes!")
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        // The same claims through sign_raw verify too, and any bytes can be signed.
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        let raw = minter.sign_raw(header, claims.to_string().as_bytes());
        assert!(jsonwebtoken::decode::<Value>(&raw, &key, &validation).is_ok());
        let odd = minter.sign_raw(b"\xff", b"not json");
        assert_eq!(odd.split('.').count(), 3);
        assert!(jsonwebtoken::decode::<Value>(&odd, &key, &validation).is_err());
    }
}
