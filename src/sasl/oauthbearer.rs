//! The OAUTHBEARER mechanism (RFC 7628 §3): one client message, a GS2 header followed by
//! `key=value` pairs, e.g. `n,a=user@example.com,^Ahost=mx^Aport=587^Aauth=Bearer <token>^A^A`.
//!
//! Implements the client response syntax of §3.1 (the GS2 header of RFC 5801 §4 without
//! channel binding: a `p=` flag is refused, `y` and `n` accepted; `a=` with the `=2C`/`=3D`
//! escapes of RFC 5801 §5) and the server side of §3.2: success at once, or on a refused token
//! the §3.2.2 JSON error challenge (`{"status":"invalid_token"}` and the like), the client's
//! `^A` response, then failure (535). The shared exchange lives in `oauth_message.rs`.

use super::oauth_message::{self, BearerExchange, BearerMessage, Flavor, KVSEP};
use super::{Context, Mechanism};

/// Starts an exchange.
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    BearerExchange::start(ctx, Flavor::OauthBearer, parse_oauthbearer)
}

/// Parses an OAUTHBEARER client response (RFC 7628 §3.1). `auth` is required; `host` and
/// `port` are optional; other keys are ignored. Bounded by
/// [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN); never panics.
pub fn parse_oauthbearer(message: &[u8]) -> Result<BearerMessage, &'static str> {
    oauth_message::check_len(message)?;
    let rest = match message {
        [b'n' | b'y', b',', rest @ ..] => rest,
        [b'p', b'=', ..] => return Err("channel binding is not supported by OAUTHBEARER"),
        _ => return Err("GS2 header must start with \"n,\" or \"y,\""),
    };
    let comma = rest
        .iter()
        .position(|&b| b == b',')
        .ok_or("GS2 header not terminated by ','")?;
    let (authzid, rest) = (&rest[..comma], &rest[comma + 1..]);
    let user = match authzid {
        [] => None,
        [b'a', b'=', name @ ..] => Some(saslname(name)?),
        _ => return Err("GS2 authzid must be \"a=...\""),
    };
    let Some(body) = rest.strip_prefix(&[KVSEP]) else {
        return Err("GS2 header not followed by ^A");
    };
    let pairs = oauth_message::parse_pairs(body)?;
    let find = |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let auth = find("auth").ok_or("missing auth=")?;
    let port = match find("port") {
        Some(p) => Some(p.parse::<u16>().map_err(|_| "port is not a number")?),
        None => None,
    };
    Ok(BearerMessage {
        user: user.filter(|u| !u.is_empty()),
        token: oauth_message::bearer_token(auth)?,
        host: find("host").map(str::to_string),
        port,
    })
}

/// Decodes an RFC 5801 §4 `saslname`: UTF-8 where ',' is written `=2C` and '=' `=3D`.
fn saslname(raw: &[u8]) -> Result<String, &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "authzid is not UTF-8")?;
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('=');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        match part.get(..2) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err("bad '=' escape in authzid"),
        }
        out.push_str(&part[2..]);
    }
    if out.chars().any(char::is_control) {
        return Err("control character in authzid");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use base64::Engine as _;
    use jsonwebtoken::Algorithm::{ES256, RS256};
    use serde_json::json;

    use super::*;

    fn start(ctx: &crate::sasl::testing::TestContext) -> Box<dyn crate::sasl::Mechanism> {
        crate::sasl::testing::Driven::boxed(super::start(ctx), ctx)
    }
    use crate::oauth::testing::{NOW, claims, config, mint, validator, with};
    use crate::sasl::{Failure, Identity, MAX_TOKEN_LEN, Step};

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64")
    }

    #[test]
    fn rfc7628_examples() {
        // §4.1, IMAP: the initial client response.
        let imap = b64(
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVh\
             cmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB",
        );
        let m = parse_oauthbearer(&imap).expect("parses");
        assert_eq!(m.user.as_deref(), Some("user@example.com"));
        assert_eq!(m.host.as_deref(), Some("server.example.com"));
        assert_eq!(m.port, Some(143));
        assert_eq!(
            m.token.expose(),
            b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
        );
        // §4.3 SMTP form, and §3.2.2's dummy response.
        let smtp = b"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01\
                     auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        assert_eq!(parse_oauthbearer(smtp).map(|m| m.port), Ok(Some(587)));
        assert!(parse_oauthbearer(b"\x01").is_err());
    }

    #[test]
    fn gs2_headers_and_pairs() {
        let ok: &[(&[u8], Option<&str>)] = &[
            (b"n,,\x01auth=Bearer t\x01\x01", None),
            (b"y,,\x01auth=Bearer t\x01\x01", None),
            (b"n,a=,\x01auth=Bearer t\x01\x01", None),
            (b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01", Some("a,b=c")),
            (
                b"n,a=j\xc3\xb6rg,\x01auth=Bearer t\x01x=y\x01\x01",
                Some("j\u{f6}rg"),
            ),
        ];
        for (input, user) in ok {
            let m = parse_oauthbearer(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(m.user.as_deref(), *user, "{input:?}");
        }
        let bad: &[(&[u8], &str)] = &[
            (
                b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01",
                "channel binding",
            ),
            (b"x,,\x01auth=Bearer t\x01\x01", "GS2 header"),
            (b"n,a=u\x01auth=Bearer t\x01\x01", "not terminated"),
            (b"n,u,\x01auth=Bearer t\x01\x01", "a=..."),
            (b"n,a=a=2X,\x01auth=Bearer t\x01\x01", "escape"),
            (b"n,a=a=,\x01auth=Bearer t\x01\x01", "escape"),
            (b"n,a=\xff,\x01auth=Bearer t\x01\x01", "UTF-8"),
            (b"n,,auth=Bearer t\x01\x01", "followed by ^A"),
            (b"n,,\x01host=h\x01\x01", "missing auth"),
            (b"n,,\x01auth=Bearer t\x01port=x\x01\x01", "port"),
            (b"n,,\x01auth=Bearer t\x01port=70000\x01\x01", "port"),
            (b"n,,\x01auth=Bearer t\x01", "^A^A"),
            (b"n,,\x01auth=OAuth t\x01\x01", "Bearer"),
            (b"", "GS2 header"),
        ];
        for (input, want) in bad {
            match parse_oauthbearer(input) {
                Err(why) => assert!(why.contains(want), "{input:?}: {why}"),
                Ok(m) => panic!("{input:?}: {m:?}"),
            }
        }
        let long = [b"n,,\x01auth=Bearer ".as_slice(), &[b'x'; MAX_TOKEN_LEN]].concat();
        assert_eq!(parse_oauthbearer(&long), Err("message too long"));
    }

    #[test]
    fn never_panics_on_prefixes() {
        let smtp = b"n,a=a=2Cb,\x01host=h\x01port=587\x01auth=Bearer abc==\x01\x01";
        for end in 0..smtp.len() {
            assert!(parse_oauthbearer(&smtp[..end]).is_err(), "{end}");
        }
        assert!(parse_oauthbearer(smtp).is_ok());
    }

    fn ctx(dir: &std::path::Path) -> crate::sasl::testing::TestContext {
        let (v, _) = validator(&config(dir));
        let mut ctx = crate::sasl::testing::test_context("alice:{PLAIN}pw\n", "n", "h");
        ctx.tokens = Some(Arc::new(v));
        ctx
    }

    fn message(authzid: &str, token: &str) -> Vec<u8> {
        format!("n,{authzid},\x01host=mx\x01port=587\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    #[test]
    fn exchanges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = mint(RS256, 1, Some("rsa-1"), &claims("alice"));
        let mut m = start(&ctx(dir.path()));
        assert_eq!(
            m.step(Some(&message("a=alice", &good))),
            Step::Success(Identity::new("alice"))
        );
        let mut m = start(&ctx(dir.path()));
        assert_eq!(m.step(None), Step::Challenge(Vec::new()));
        assert!(matches!(
            m.step(Some(&message("", &good))),
            Step::Success(_)
        ));

        let expired = mint(
            ES256,
            1,
            None,
            &with(claims("alice"), json!({"exp": NOW - 120})),
        );
        let wrong_key = mint(RS256, 2, Some("rsa-1"), &claims("alice"));
        let wrong_aud = mint(RS256, 1, None, &with(claims("alice"), json!({"aud": "x"})));
        let no_scope = mint(
            RS256,
            1,
            None,
            &with(claims("alice"), json!({"scope": null})),
        );
        let cases = [
            (
                message("a=alice", &expired),
                json!({"status": "invalid_token"}),
            ),
            (message("", &wrong_key), json!({"status": "invalid_token"})),
            (message("", &wrong_aud), json!({"status": "invalid_token"})),
            (message("a=bob", &good), json!({"status": "invalid_token"})),
            (
                message("", &no_scope),
                json!({"status": "insufficient_scope", "scope": "mail"}),
            ),
        ];
        for (msg, want) in cases {
            let mut m = start(&ctx(dir.path()));
            let Step::Challenge(got) = m.step(Some(&msg)) else {
                panic!("no challenge for {want}");
            };
            let got: serde_json::Value = serde_json::from_slice(&got).expect("JSON");
            assert_eq!(got, want);
            // RFC 7628 §3.2.3: the client answers ^A; the server then fails.
            assert_eq!(
                m.step(Some(b"\x01")),
                Step::Failure(Failure::BadCredentials)
            );
        }
        let mut m = start(&ctx(dir.path()));
        assert!(matches!(
            m.step(Some(b"p=tls-unique,,\x01auth=Bearer t\x01\x01")),
            Step::Failure(Failure::Malformed(_))
        ));
    }
}
