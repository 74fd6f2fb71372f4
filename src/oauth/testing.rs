//! Test support shared by the `oauth` and `sasl` unit tests: a real [`Validator`] over real
//! key files in a temporary folder, and token minting with the matching private keys.
//!
//! The RSA keys are fixed (tests/fixtures/oauth-rsa-{1,2}.pem, made with
//! `openssl genrsa -traditional 2048`); the P-256 key is made once per test run.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::Validator;
use crate::auth::UserStore;
use crate::clock::ManualClock;
use crate::config::OAuthConfig;

/// The test time, seconds since the Unix epoch.
pub const NOW: u64 = 1_700_000_000;
/// The HS256 shared secret.
pub const SECRET: &[u8] = b"an HS256 test secret, 32+ bytes long";
/// The issuer the test config requires.
pub const ISSUER: &str = "https://idp.example.test";
/// Users known to the test validator.
pub const USERS: &str = "alice:{PLAIN}pw\nbob:{PLAIN}pw\njohn.doe:{PLAIN}pw\n";

/// The fixed RSA keys (PKCS#1 PEM): 1 is in the JWKS, 2 is not.
const RSA_PEM: [&str; 2] = [
    include_str!("../../tests/fixtures/oauth-rsa-1.pem"),
    include_str!("../../tests/fixtures/oauth-rsa-2.pem"),
];

/// The signing key for `alg`: RSA key `n` (1 or 2), the run's P-256 key, or the secret.
pub fn signing_key(alg: Algorithm, n: usize) -> EncodingKey {
    match alg {
        Algorithm::RS256 => {
            let mut pem = RSA_PEM[n - 1].as_bytes();
            let der = rustls_pemfile::rsa_private_keys(&mut pem)
                .next()
                .expect("fixture holds a key")
                .expect("fixture key parses");
            EncodingKey::from_rsa_der(der.secret_pkcs1_der())
        }
        Algorithm::ES256 => {
            static EC: OnceLock<Vec<u8>> = OnceLock::new();
            let der = EC.get_or_init(|| {
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .expect("P-256 key")
                    .serialize_der()
            });
            EncodingKey::from_ec_der(der)
        }
        _ => EncodingKey::from_secret(SECRET).expect("HMAC key"),
    }
}

/// The JWKS document: RSA key 1 as kid "rsa-1" and the P-256 key as kid "ec-1".
pub fn jwks() -> String {
    let mut rsa = Jwk::from_encoding_key(&signing_key(Algorithm::RS256, 1), Algorithm::RS256)
        .expect("RSA JWK");
    rsa.common.key_id = Some("rsa-1".into());
    let mut ec = Jwk::from_encoding_key(&signing_key(Algorithm::ES256, 1), Algorithm::ES256)
        .expect("EC JWK");
    ec.common.key_id = Some("ec-1".into());
    serde_json::to_string(&JwkSet {
        keys: vec![rsa, ec],
    })
    .expect("JWKS JSON")
}

/// Claims that pass the test config, for `sub`.
pub fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": ["mailgate"], "sub": sub, "scope": "openid mail",
        "iat": NOW - 10, "exp": NOW + 600,
    })
}

/// `claims` with some members replaced (a `null` removes the member).
pub fn with(mut claims: Value, changes: Value) -> Value {
    if let (Some(map), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

/// A token for `claims`, signed with `alg` (key `n` for RS256) and carrying `kid`.
pub fn mint(alg: Algorithm, n: usize, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &signing_key(alg, n)).expect("token signs")
}

/// The test `[auth.oauth]`: JWKS and secret files written into `dir`, RS256/ES256/HS256,
/// issuer, audience "mailgate", skew 60 s, user claim `sub`, required scope "mail".
pub fn config(dir: &Path) -> OAuthConfig {
    let jwks_file = dir.join("jwks.json");
    let secret_file = dir.join("hs256.secret");
    std::fs::write(&jwks_file, jwks()).expect("write JWKS");
    std::fs::write(&secret_file, [SECRET, b"\n"].concat()).expect("write secret");
    OAuthConfig {
        jwks_file: Some(jwks_file),
        hs256_secret_file: Some(secret_file),
        issuer: Some(ISSUER.into()),
        audience: vec!["mailgate".into(), "smtp".into()],
        algorithms: vec!["RS256".into(), "ES256".into(), "HS256".into()],
        clock_skew: Duration::from_secs(60),
        user_claim: "sub".into(),
        required_scope: Some("mail".into()),
        introspection: None,
    }
}

/// A validator for `cfg` over [`USERS`], with a manual clock at [`NOW`].
pub fn validator(cfg: &OAuthConfig) -> (Validator, Arc<ManualClock>) {
    let users = UserStore::parse(USERS, "test").expect("test users parse");
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
    ));
    let v = Validator::from_config(cfg, Arc::new(users), clock.clone()).expect("validator");
    (v, clock)
}
