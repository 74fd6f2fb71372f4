//! Key loading and signature verification.

use jsonwebtoken::Algorithm::{ES256, HS256, RS256};
use serde_json::json;

use super::*;
use crate::oauth::testing::{SECRET, claims, jwks, mint};

fn all() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "HS256".into()]
}

#[test]
fn shapes() {
    let cases = [
        ("a.b.c", true),
        ("a.b.", true),
        ("eyJ-_0.eyJ.sig_-", true),
        ("a.b", false),
        ("a.b.c.d", false),
        (".b.c", false),
        ("a..c", false),
        ("a.b+.c", false),
        ("a.b.c=", false),
        ("", false),
    ];
    for (token, want) in cases {
        assert_eq!(looks_like_jwt(token), want, "{token}");
    }
}

#[test]
fn loads_usable_keys_only() {
    let jwks = jwks();
    let keys = Keys::new(&all(), Some(jwks.as_bytes()), Some(SECRET)).expect("keys");
    assert_eq!(
        format!("{keys:?}"),
        r#"[(HS256, None), (RS256, Some("rsa-1")), (ES256, Some("ec-1"))]"#
    );
    // Only the listed algorithms keep keys.
    let keys = Keys::new(&["ES256".into()], Some(jwks.as_bytes()), Some(SECRET)).expect("keys");
    assert_eq!(format!("{keys:?}"), r#"[(ES256, Some("ec-1"))]"#);
    // Keys for encryption, other algorithms or curves are skipped.
    let mut set: serde_json::Value = serde_json::from_str(&jwks).expect("JSON");
    set["keys"][0]["use"] = json!("enc");
    set["keys"][1]["alg"] = json!("ES384");
    let text = set.to_string();
    let err = Keys::new(&all(), Some(text.as_bytes()), None).expect_err("no usable key");
    assert!(err.contains("no usable key: 2 key(s)"), "{err}");
    set["keys"][1]["alg"] = json!("ES256");
    set["keys"][1]["crv"] = json!("P-384");
    let text = set.to_string();
    assert!(Keys::new(&all(), Some(text.as_bytes()), None).is_err());
}

#[test]
fn kid_selects_the_key() {
    let jwks = jwks();
    let keys = Keys::new(&all(), Some(jwks.as_bytes()), Some(SECRET)).expect("keys");
    let good = claims("alice");
    let ok = |t: &str| keys.verify(t).map(|c| c["sub"].clone());
    assert_eq!(
        ok(&mint(RS256, 1, Some("rsa-1"), &good)),
        Ok(json!("alice"))
    );
    assert_eq!(ok(&mint(ES256, 1, None, &good)), Ok(json!("alice")));
    assert_eq!(ok(&mint(HS256, 1, None, &good)), Ok(json!("alice")));
    assert_eq!(
        keys.verify(&mint(RS256, 1, Some("ec-1"), &good)),
        Err(Rejection::NoKey {
            alg: "RS256".into(),
            kid: Some("ec-1".into())
        })
    );
    assert_eq!(
        keys.verify(&mint(RS256, 2, Some("rsa-1"), &good)),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn malformed_headers() {
    let keys = Keys::new(&all(), None, Some(SECRET)).expect("keys");
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let body = b64(&claims("alice").to_string());
    let cases = [
        (
            format!("{}.{body}.c2ln", b64("not json")),
            Rejection::Malformed,
        ),
        (
            format!("{}.{body}.c2ln", b64(r#"{"typ":"JWT"}"#)),
            Rejection::Malformed,
        ),
        (
            format!("{}.{body}.c2ln", b64(r#"{"alg":7}"#)),
            Rejection::Malformed,
        ),
        (
            format!("{}.{body}.c2ln", b64(r#"{"alg":"HS256","kid":1}"#)),
            Rejection::Malformed,
        ),
        (format!("!!.{body}.c2ln"), Rejection::Malformed),
        (
            format!("{}.{body}.", b64(r#"{"alg":"none"}"#)),
            Rejection::Algorithm("none".into()),
        ),
        (
            format!("{}.{body}.", b64(r#"{"alg":"HS512"}"#)),
            Rejection::Algorithm("HS512".into()),
        ),
        (
            format!("{}.{body}.c2ln", b64(r#"{"alg":"HS256"}"#)),
            Rejection::BadSignature,
        ),
        (
            format!("{}.!!.c2ln", b64(r#"{"alg":"HS256"}"#)),
            Rejection::Malformed,
        ),
        (
            format!("{}.{body}.c2ln", "e".repeat(MAX_HEADER_LEN + 1)),
            Rejection::Malformed,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(keys.verify(&token), Err(want), "{token}");
    }
    // RS256 accepted, but no JWKS: a signed token finds no key (introspection may take it).
    let no_jwks = Keys::new(&all(), None, None).expect("keys");
    assert!(no_jwks.is_empty());
    assert!(matches!(
        no_jwks.verify(&mint(RS256, 1, None, &claims("alice"))),
        Err(Rejection::NoKey { .. })
    ));
}
