//! Validator tests: real keys, real files, a manual clock.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::Algorithm::{ES256, HS256, RS256};
use serde_json::json;

use super::testing::{NOW, claims, config, mint, validator, with};
use super::*;

fn invalid(result: Result<String, TokenError>, want: &str) {
    match result {
        Err(TokenError::Invalid(why)) => assert!(why.contains(want), "{why:?} lacks {want:?}"),
        other => panic!("expected Invalid({want}), got {other:?}"),
    }
}

#[tokio::test]
async fn accepts_each_algorithm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = validator(&config(dir.path()));
    let good = claims("alice");
    for token in [
        mint(RS256, 1, Some("rsa-1"), &good),
        mint(RS256, 1, None, &good),
        mint(ES256, 1, Some("ec-1"), &good),
        mint(ES256, 1, None, &good),
        mint(HS256, 1, None, &good),
        mint(HS256, 1, Some("anything"), &good),
    ] {
        assert_eq!(v.validate(token.as_bytes(), None).await, Ok("alice".into()));
        assert_eq!(
            v.validate(token.as_bytes(), Some("alice")).await,
            Ok("alice".into())
        );
    }
}

#[tokio::test]
async fn refuses_bad_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = validator(&config(dir.path()));
    let good = claims("alice");
    let changed = |c| mint(RS256, 1, Some("rsa-1"), &with(claims("alice"), c));
    let cases = [
        (changed(json!({"exp": NOW - 61})), "expired"),
        (changed(json!({"exp": null})), "no exp"),
        (changed(json!({"aud": "calendar"})), "audience"),
        (changed(json!({"iss": "https://evil.example"})), "issuer"),
        (changed(json!({"nbf": NOW + 120})), "nbf"),
        (changed(json!({"sub": "mallory"})), "unknown user"),
        (changed(json!({"sub": null})), "\"sub\""),
        // Signed with a key that is not in the JWKS, under a listed kid and with none.
        (mint(RS256, 2, Some("rsa-1"), &good), "signature"),
        (mint(RS256, 2, None, &good), "signature"),
        (mint(RS256, 1, Some("rotated"), &good), "no configured key"),
        (mint(ES256, 1, Some("rsa-1"), &good), "no configured key"),
        (tampered(&mint(RS256, 1, Some("rsa-1"), &good)), "signature"),
        (tampered(&mint(HS256, 1, None, &good)), "signature"),
        (unsigned(&good), "\"none\" is not accepted"),
        ("opaque-token".into(), "not a JWT"),
        ("a.b".into(), "not a JWT"),
    ];
    for (token, want) in cases {
        invalid(v.validate(token.as_bytes(), None).await, want);
    }
    let no_scope = changed(json!({"scope": "openid"}));
    assert_eq!(
        v.validate(no_scope.as_bytes(), None).await,
        Err(TokenError::InsufficientScope("mail".into()))
    );
    invalid(v.validate(b"\xff\xfe", None).await, "ASCII");
}

/// The payload swapped for one naming another user, signature kept.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(claims("bob").to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// An `alg: none` token (RFC 7519 §6.1).
fn unsigned(claims: &serde_json::Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

#[tokio::test]
async fn unlisted_algorithm_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.algorithms = vec!["RS256".into()];
    let (v, _) = validator(&cfg);
    let good = claims("alice");
    invalid(
        v.validate(mint(HS256, 1, None, &good).as_bytes(), None)
            .await,
        "\"HS256\" is not accepted",
    );
    invalid(
        v.validate(mint(ES256, 1, Some("ec-1"), &good).as_bytes(), None)
            .await,
        "\"ES256\" is not accepted",
    );
    assert!(
        v.validate(mint(RS256, 1, None, &good).as_bytes(), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn expiry_follows_the_clock_with_skew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, clock) = validator(&config(dir.path()));
    let token = mint(ES256, 1, Some("ec-1"), &claims("bob"));
    assert_eq!(v.validate(token.as_bytes(), None).await, Ok("bob".into()));
    // exp is NOW + 600, the skew 60 s.
    clock.advance(Duration::from_secs(659));
    assert_eq!(v.validate(token.as_bytes(), None).await, Ok("bob".into()));
    clock.advance(Duration::from_secs(1));
    invalid(v.validate(token.as_bytes(), None).await, "expired");
}

#[tokio::test]
async fn user_mapping_and_claimed_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = validator(&config(dir.path()));
    let for_sub = |sub: &str| mint(HS256, 1, None, &claims(sub));
    let cases: &[(&str, Option<&str>, Result<&str, &str>)] = &[
        ("alice@example.test", None, Ok("alice")),
        ("John.Doe@example.test", None, Ok("john.doe")),
        ("ALICE", None, Ok("alice")),
        ("alice", Some("alice@example.test"), Ok("alice")),
        ("alice@example.test", Some("Alice"), Ok("alice")),
        ("alice", Some(""), Ok("alice")),
        ("alice", Some("bob"), Err("client named user bob")),
        ("alice", Some("nobody"), Err("client named user nobody")),
        ("@example.test", None, Err("unknown user")),
        ("mallory@example.test", None, Err("unknown user")),
    ];
    for (sub, claimed, want) in cases {
        let got = v.validate(for_sub(sub).as_bytes(), *claimed).await;
        match want {
            Ok(user) => assert_eq!(got, Ok(user.to_string()), "{sub} {claimed:?}"),
            Err(why) => invalid(got, why),
        }
    }
}

#[test]
fn config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let users: Arc<dyn Authenticator> =
        Arc::new(crate::auth::UserStore::parse("a:{PLAIN}b\n", "t").expect("users"));
    let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
    let build = |cfg: &OAuthConfig| Validator::from_config(cfg, users.clone(), clock.clone());
    let base = config(dir.path());

    let mut cfg = base.clone();
    std::fs::write(dir.path().join("short"), "too short\n").expect("write");
    cfg.hs256_secret_file = Some(dir.path().join("short"));
    assert!(matches!(
        build(&cfg),
        Err(Error::ShortSecret { len: 9, .. })
    ));

    let mut cfg = base.clone();
    cfg.jwks_file = Some(dir.path().join("missing.json"));
    assert!(matches!(build(&cfg), Err(Error::Read { .. })));

    let jwks_cases = [
        ("not json", "expected"),
        (
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
            "no usable key",
        ),
        (r#"{"keys":[]}"#, "no usable key"),
    ];
    for (text, want) in jwks_cases {
        std::fs::write(dir.path().join("bad.json"), text).expect("write");
        let mut cfg = base.clone();
        cfg.jwks_file = Some(dir.path().join("bad.json"));
        match build(&cfg) {
            Err(Error::Jwks { reason, .. }) => assert!(reason.contains(want), "{reason}"),
            other => panic!("{text}: {other:?}"),
        }
    }

    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; MAX_KEY_FILE as usize + 1]).expect("write");
    let mut cfg = base.clone();
    cfg.jwks_file = Some(big);
    assert!(matches!(build(&cfg), Err(Error::TooLarge { .. })));

    // HS256 only: the JWKS is not needed, and an empty one is then no error.
    let mut cfg = base.clone();
    cfg.algorithms = vec!["HS256".into()];
    std::fs::write(dir.path().join("empty.json"), r#"{"keys":[]}"#).expect("write");
    cfg.jwks_file = Some(dir.path().join("empty.json"));
    assert!(build(&cfg).is_ok());
}

#[test]
fn debug_output_has_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v, _) = validator(&config(dir.path()));
    let shown = format!("{v:?}");
    assert!(shown.contains("rsa-1"), "{shown}");
    let secret = String::from_utf8_lossy(super::testing::SECRET);
    assert!(!shown.contains(secret.as_ref()), "{shown}");
}
