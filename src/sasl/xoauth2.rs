//! The XOAUTH2 mechanism (Google's SASL profile for OAuth 2.0 bearer tokens): one client
//! message `user=<user>^Aauth=Bearer <token>^A^A`.
//!
//! The token goes to the configured token validator; the named user must be the token's
//! user. A refused token gets Google's error exchange: a challenge holding
//! `{"status":"401","schemes":"bearer"}` (with `scope` when a required scope was missing), the
//! client's empty response, then failure (535). The shared exchange lives in
//! `oauth_message.rs`; this file owns the message syntax. Both mechanisms carry a bearer
//! secret, so they are offered only where plaintext mechanisms are.

use super::oauth_message::{self, BearerExchange, BearerMessage, Flavor};
use super::{Context, Mechanism};

/// Starts an exchange.
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    BearerExchange::start(ctx, Flavor::Xoauth2, parse_xoauth2)
}

/// Parses an XOAUTH2 client message. `user` and `auth` are required (an empty `user=` is
/// taken as naming no one); other keys are ignored. Bounded by
/// [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN); never panics.
pub fn parse_xoauth2(message: &[u8]) -> Result<BearerMessage, &'static str> {
    oauth_message::check_len(message)?;
    let pairs = oauth_message::parse_pairs(message)?;
    let find = |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let user = find("user").ok_or("missing user=")?;
    let auth = find("auth").ok_or("missing auth=")?;
    Ok(BearerMessage {
        user: (!user.is_empty()).then(|| user.to_string()),
        token: oauth_message::bearer_token(auth)?,
        host: None,
        port: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::Algorithm::HS256;

    use super::*;

    fn start(ctx: &crate::sasl::testing::TestContext) -> Box<dyn crate::sasl::Mechanism> {
        crate::sasl::testing::Driven::boxed(super::start(ctx), ctx)
    }
    use crate::oauth::testing::{NOW, claims, config, mint, validator, with};
    use crate::sasl::{Failure, Identity, MAX_TOKEN_LEN, Step};

    fn message(user: &str, token: &str) -> Vec<u8> {
        format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    #[test]
    fn parses_google_format() {
        let m = parse_xoauth2(&message(
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg",
        ))
        .expect("parses");
        assert_eq!(m.user.as_deref(), Some("someuser@example.com"));
        assert_eq!(
            m.token.expose(),
            b"ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg"
        );
        let m = parse_xoauth2(b"auth=bearer t\x01user=\x01\x01").expect("parses");
        assert_eq!((m.user, m.token.expose()), (None, &b"t"[..]));
        let bad: &[(&[u8], &str)] = &[
            (b"user=a\x01\x01", "missing auth"),
            (b"auth=Bearer t\x01\x01", "missing user"),
            (b"user=a\x01auth=Bearer t\x01", "^A^A"),
            (b"user=a\x01auth=Basic dDp0\x01\x01", "Bearer"),
            (b"user=a\x01auth=Bearer t t\x01\x01", "b64token"),
            (b"\x01", "missing user"),
            (b"", "end with"),
        ];
        for (input, want) in bad {
            match parse_xoauth2(input) {
                Err(why) => assert!(why.contains(want), "{input:?}: {why}"),
                Ok(m) => panic!("{input:?}: {m:?}"),
            }
        }
        let long = message("a", &"t".repeat(MAX_TOKEN_LEN));
        assert_eq!(parse_xoauth2(&long), Err("message too long"));
        let debug = format!("{:?}", parse_xoauth2(&message("a", "sekrit")));
        assert!(!debug.contains("sekrit"), "{debug}");
    }

    fn ctx(dir: &std::path::Path) -> crate::sasl::testing::TestContext {
        let (v, _) = validator(&config(dir));
        let mut ctx = crate::sasl::testing::test_context("alice:{PLAIN}pw\n", "n", "h");
        ctx.tokens = Some(Arc::new(v));
        ctx
    }

    #[test]
    fn good_token_succeeds_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = mint(HS256, 1, None, &claims("alice"));
        let mut m = start(&ctx(dir.path()));
        assert_eq!(
            m.step(Some(&message("alice@example.test", &token))),
            Step::Success(Identity::new("alice"))
        );
        assert_eq!(m.user(), Some("alice@example.test"));
        // Without an initial response: an empty challenge first.
        let mut m = start(&ctx(dir.path()));
        assert_eq!(m.step(None), Step::Challenge(Vec::new()));
        assert!(matches!(
            m.step(Some(&message("alice", &token))),
            Step::Success(_)
        ));
    }

    #[test]
    fn refused_token_gets_the_error_exchange() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expired = mint(
            HS256,
            1,
            None,
            &with(claims("alice"), serde_json::json!({"exp": NOW - 600})),
        );
        let no_scope = mint(
            HS256,
            1,
            None,
            &with(claims("alice"), serde_json::json!({"scope": "x"})),
        );
        let for_bob = mint(HS256, 1, None, &claims("bob"));
        let cases = [
            (
                message("alice", &expired),
                r#"{"schemes":"bearer","status":"401"}"#,
            ),
            (
                message("alice", &no_scope),
                r#"{"schemes":"bearer","scope":"mail","status":"403"}"#,
            ),
            (
                message("alice", &for_bob),
                r#"{"schemes":"bearer","status":"401"}"#,
            ),
            (
                message("alice", "not-a-jwt"),
                r#"{"schemes":"bearer","status":"401"}"#,
            ),
        ];
        for (msg, json) in cases {
            let mut m = start(&ctx(dir.path()));
            let Step::Challenge(got) = m.step(Some(&msg)) else {
                panic!("no challenge for {json}");
            };
            let got: serde_json::Value = serde_json::from_slice(&got).expect("JSON");
            let want: serde_json::Value = serde_json::from_str(json).expect("JSON");
            assert_eq!(got, want);
            assert_eq!(m.step(Some(b"")), Step::Failure(Failure::BadCredentials));
            assert!(matches!(
                m.step(Some(b"")),
                Step::Failure(Failure::Malformed(_))
            ));
        }
    }

    #[test]
    fn malformed_and_unconfigured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = start(&ctx(dir.path()));
        assert!(matches!(
            m.step(Some(b"user=a\x01\x01")),
            Step::Failure(Failure::Malformed(_))
        ));
        let plain = crate::sasl::testing::test_context("alice:{PLAIN}pw\n", "n", "h");
        let mut m = start(&plain);
        // No validator: the token cannot be checked, which the client hears as a temporary
        // failure (RFC 7628 §3.2.2 `temporarily_unavailable`, HTTP 503 in XOAUTH2's status).
        let Step::Challenge(error) = m.step(Some(&message("alice", "t"))) else {
            panic!("no error challenge");
        };
        assert!(String::from_utf8_lossy(&error).contains("503"));
        assert!(matches!(
            m.step(Some(b"")),
            Step::Failure(Failure::Unavailable(_))
        ));
    }
}
