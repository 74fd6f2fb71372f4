//! Helpers shared by the fuzz targets in `fuzz_targets/`: splitting input at fuzzer-chosen
//! points, and mapping raw bytes into a protocol's alphabet of tokens.
//!
//! It also drives a SASL mechanism the way the SMTP and POP3 sessions do ([`sasl_exchange`]),
//! with a real bearer-token validator on a fixed HS256 key ([`validator`], [`signed_jwt`];
//! tokens are minted with the test kit's `mailgate_testkit::jwt`).
//!
//! Inputs keep a two-byte prefix that steers these helpers; everything after it is the payload,
//! so a seed is the prefix followed by readable protocol text.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use mailgate::auth::UserStore;
use mailgate::clock::ManualClock;
use mailgate::config::OAuthConfig;
use mailgate::oauth::Validator;
use mailgate::sasl::{self, Step, TokenValidator};
use mailgate_testkit::jwt::Minter;

/// Splits `data` into a two-byte control prefix and the payload. Short inputs have a zero
/// prefix and no payload.
pub fn control(data: &[u8]) -> ([u8; 2], &[u8]) {
    match data {
        [a, b, rest @ ..] => ([*a, *b], rest),
        _ => ([0, 0], &[]),
    }
}

/// Cuts `payload` into consecutive chunks whose sizes follow from `seed`: a small xorshift
/// generator picks each size between 0 and a seed-chosen maximum (1 to 512), so the same
/// payload can be replayed as one byte per call, as odd-sized pieces, or nearly whole. Empty
/// chunks are included on purpose: feeding nothing must change nothing.
pub fn chunks(seed: [u8; 2], payload: &[u8]) -> Vec<&[u8]> {
    let max = [1usize, 2, 3, 4, 7, 16, 64, 512][usize::from(seed[0] & 7)];
    let mut state = u32::from(u16::from_le_bytes(seed)) | 0x1_0000;
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize) % (max + 1);
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Maps each payload byte to one of `tokens` (by value modulo the table length) and joins the
/// results, so that short inputs spell keyword-rich protocol text.
pub fn tokens(payload: &[u8], table: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() * 4);
    for &b in payload {
        out.extend_from_slice(table[usize::from(b) % table.len()]);
    }
    out
}

/// Splits `payload` at every `sep` byte into separate messages (empty ones included).
pub fn messages(payload: &[u8], sep: u8) -> Vec<&[u8]> {
    payload.split(|&b| b == sep).collect()
}

/// Whether `bytes` holds a CR not followed by LF, or an LF not preceded by CR.
pub fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

/// The one user the SASL targets know: `alice`, password `pw`.
pub const USERS: &str = "alice:{PLAIN}pw\n";

/// The HS256 key of the fuzz targets' token validator. Fixed, so that seeds can carry tokens
/// that verify and the fuzzer reaches the claim checks behind the signature.
pub const HS256_SECRET: &[u8] = b"mailgate fuzz HS256 key, at least 32 bytes";
/// The validator's clock: 2023-11-14T22:13:20Z. Seed tokens expire long after it.
pub const NOW: u64 = 1_700_000_000;
/// The issuer and the audience the validator requires.
pub const ISSUER: &str = "https://idp.fuzz.test";
/// See [`ISSUER`].
pub const AUDIENCE: &str = "mailgate";

fn users() -> Arc<UserStore> {
    static AUTH: OnceLock<Arc<UserStore>> = OnceLock::new();
    AUTH.get_or_init(|| match UserStore::parse(USERS, "fuzz") {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("the fuzz users file does not parse: {e}"),
    })
    .clone()
}

/// The token validator of the bearer targets: HS256 with [`HS256_SECRET`], issuer
/// [`ISSUER`], audience [`AUDIENCE`], user claim `sub`, required scope `mail`, 60 s skew, a
/// manual clock at [`NOW`]; users from [`USERS`]. No JWKS and no introspection (no network).
pub fn validator() -> Arc<Validator> {
    static VALIDATOR: OnceLock<Arc<Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            // The validator reads its secret from a file, once: write it, build, remove it.
            let path =
                std::env::temp_dir().join(format!("mailgate-fuzz-hs256-{}", std::process::id()));
            if let Err(e) = std::fs::write(&path, HS256_SECRET) {
                panic!("{}: {e}", path.display());
            }
            let cfg = OAuthConfig {
                jwks_file: None,
                hs256_secret_file: Some(path.clone()),
                issuer: Some(ISSUER.into()),
                audience: vec![AUDIENCE.into()],
                algorithms: vec!["HS256".into()],
                clock_skew: Duration::from_secs(60),
                user_claim: "sub".into(),
                required_scope: Some("mail".into()),
                introspection: None,
            };
            let clock = Arc::new(ManualClock::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
            ));
            let built = Validator::from_config(&cfg, users(), clock);
            let _ = std::fs::remove_file(&path);
            match built {
                Ok(v) => Arc::new(v),
                Err(e) => panic!("the fuzz token validator does not build: {e}"),
            }
        })
        .clone()
}

/// A JWT `header.claims.signature` over the given JSON texts (any bytes), signed HS256 with
/// [`HS256_SECRET`], so that the signature holds whatever the header and claims say.
pub fn signed_jwt(header: &[u8], claims: &[u8]) -> String {
    static MINTER: OnceLock<Minter> = OnceLock::new();
    MINTER
        .get_or_init(|| Minter::hs256(HS256_SECRET))
        .sign_raw(header, claims)
}

/// Validates a token made from fuzzer input with [`validator`]. If the first control byte's
/// low bit is set, the payload is split at `0xFF` into a header, claims and a claimed user, and
/// the token is [`signed_jwt`] over the first two (so the claim checks run); otherwise the
/// payload is the token, and its remainder after a `0xFF` the claimed user. A success must
/// name the one known user.
pub fn validate_token(data: &[u8]) -> Result<String, sasl::TokenError> {
    let (ctl, payload) = control(data);
    let parts = messages(payload, 0xff);
    let (token, claimed) = if ctl[0] & 1 == 1 {
        let header = parts.first().copied().unwrap_or_default();
        let claims = parts.get(1).copied().unwrap_or_default();
        (
            signed_jwt(header, claims).into_bytes(),
            parts.get(2).copied(),
        )
    } else {
        (parts[0].to_vec(), parts.get(1).copied())
    };
    let claimed = claimed.map(String::from_utf8_lossy);
    let verdict = ready(validator().validate(&token, claimed.as_deref()));
    if let Ok(user) = &verdict {
        assert_eq!(user, "alice");
    }
    verdict
}

/// Runs one exchange of the mechanism called `name` over `data`, as a session would.
///
/// The first control byte's low bit says whether the first message is an initial response;
/// the payload is split at each `0xFF` byte into client messages. Stepping stops at `Success`
/// or `Failure`, as the contract requires. Checks that a success names the known user, that
/// an exchange ends within the messages given or waits for more, and that challenges are
/// bounded. Returns `Some(true)` on success, `Some(false)` on failure, `None` if the mechanism
/// still waits for a message.
pub fn sasl_exchange(name: &str, data: &[u8]) -> Option<bool> {
    let auth: Arc<dyn mailgate::auth::Authenticator> = users();
    let mut env = sasl::Environment::basic(auth.clone(), "mx.fuzz.test", "fuzz", [7; 32]);
    // The bearer mechanisms reach a real validator (HS256, fixed key: see [`validator`]).
    let tokens: Arc<dyn TokenValidator> = validator();
    env.bearer_tokens = true;
    let mut ctx = env.context(1);
    ctx.nonce = "1234.5678".to_owned();
    let Some(descriptor) = sasl::find(name) else {
        panic!("no mechanism {name}");
    };
    let mut mechanism = (descriptor.start)(&ctx);
    let (ctl, payload) = control(data);
    let mut inputs: Vec<Option<&[u8]>> = Vec::new();
    if ctl[0] & 1 == 0 {
        inputs.push(None);
    }
    inputs.extend(messages(payload, 0xff).into_iter().map(Some));
    for input in inputs {
        let mut step = mechanism.step(input);
        // Credential checks are answered at once, as the session driver does.
        while let Step::Verify(check) = step {
            let answer = match check {
                sasl::Check::Token { token, claimed } => sasl::Answer::Token(ready(
                    tokens.validate(token.expose(), claimed.as_deref()),
                )),
                check => mailgate::sasl::answer(&*auth, check),
            };
            step = mechanism.resume(answer);
        }
        match step {
            Step::Challenge(c) => assert!(c.len() <= sasl::MAX_TOKEN_LEN),
            Step::Success(identity) => {
                assert_eq!(identity.user, "alice");
                return Some(true);
            }
            Step::Failure(_) => return Some(false),
            Step::Verify(_) => unreachable!("answered above"),
        }
    }
    None
}

/// The output of a future that never waits (a validator that only checks signatures and
/// claims, as the fuzz validator does): polled once.
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => unreachable!("the fuzz validator never waits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailgate_testkit::sasl as client;

    #[test]
    fn chunks_cover_the_payload_in_order() {
        let payload: Vec<u8> = (0..=255).collect();
        for a in 0..=255u8 {
            let parts = chunks([a, a.wrapping_mul(7)], &payload);
            assert_eq!(parts.concat(), payload);
        }
    }

    #[test]
    fn bare_line_endings() {
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (b"a\r\nb\r\n", false),
            (b"a\nb", true),
            (b"a\rb", true),
            (b"\r", true),
            (b"\n", true),
            (b"\r\r\n", true),
        ];
        for (input, want) in cases {
            assert_eq!(has_bare_cr_or_lf(input), *want, "{input:?}");
        }
    }

    #[test]
    fn sasl_exchanges() {
        let cases: &[(&str, &[u8], Option<bool>)] = &[
            ("PLAIN", b"\x01\0\0alice\0pw", Some(true)),
            ("PLAIN", b"\0\0\0alice\0pw", Some(true)),
            ("PLAIN", b"\x01\0\0alice\0nope", Some(false)),
            ("PLAIN", b"\0\0", Some(false)),
            ("LOGIN", b"\0\0alice\xffpw", Some(true)),
            ("LOGIN", b"\x01\0alice\xffpw", Some(true)),
            ("LOGIN", b"\0\0alice", None),
            (
                "CRAM-MD5",
                b"\0\0alice 51c3033c70e7ea68b402848c9d745978",
                Some(true),
            ),
            (
                "cram-md5",
                b"\0\0alice 0123456789abcdef0123456789abcdef",
                Some(false),
            ),
            ("CRAM-MD5", b"\x01\0alice", Some(false)),
        ];
        for (name, data, want) in cases {
            assert_eq!(sasl_exchange(name, data), *want, "{name} {data:?}");
        }
    }

    /// Good claims for `sub`, with `extra` members added.
    fn claims(sub: &str, extra: &str) -> String {
        format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"{sub}","scope":"mail","exp":{},"iat":{}{extra}}}"#,
            NOW + 600,
            NOW - 10
        )
    }

    const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    /// The validator is reached: a token signed with the fixed key logs in, and each claim
    /// check can refuse. Without a validator, the bearer targets never got past "not
    /// configured".
    #[test]
    fn bearer_exchanges_reach_the_validator() {
        let good = signed_jwt(HEADER.as_bytes(), claims("alice", "").as_bytes());
        let bearer = |token: &str| client::oauthbearer("alice", None, token);
        let xoauth2 = |token: &str| client::xoauth2("alice", token);
        let run = |name: &str, msg: String| {
            let data = [b"\x01\0".as_slice(), msg.as_bytes()].concat();
            sasl_exchange(name, &data)
        };
        assert_eq!(run("OAUTHBEARER", bearer(&good)), Some(true));
        assert_eq!(run("XOAUTH2", xoauth2(&good)), Some(true));
        for bad in [
            claims("alice", r#","aud":"other""#),
            claims("alice", &format!(r#","exp":{}"#, NOW - 3600)),
            claims("bob", ""),
            claims("alice", r#","iss":"https://evil.test""#),
            claims("alice", r#","scope":"openid""#),
        ] {
            let token = signed_jwt(HEADER.as_bytes(), bad.as_bytes());
            // The error challenge; the exchange then waits for the client's answer.
            assert_eq!(run("OAUTHBEARER", bearer(&token)), None, "{bad}");
            assert_eq!(run("XOAUTH2", xoauth2(&token)), None, "{bad}");
        }
    }

    /// The committed seeds reach the success paths (and stay valid as the code changes).
    #[test]
    fn seeds_reach_the_validator() {
        let seed = |path: &str| {
            let full = format!("{}/seeds/{path}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
        };
        assert_eq!(
            sasl_exchange("OAUTHBEARER", &seed("sasl_oauthbearer/good")),
            Some(true)
        );
        assert_eq!(
            sasl_exchange("OAUTHBEARER", &seed("sasl_oauthbearer/expired")),
            Some(false)
        );
        assert_eq!(
            sasl_exchange("XOAUTH2", &seed("sasl_xoauth2/good")),
            Some(true)
        );
        assert_eq!(
            sasl_exchange("XOAUTH2", &seed("sasl_xoauth2/refused")),
            Some(false)
        );
        for ok in ["signed", "signed_claimed", "raw"] {
            let got = validate_token(&seed(&format!("jwt_validate/{ok}")));
            assert_eq!(got.as_deref(), Ok("alice"), "{ok}");
        }
        assert!(validate_token(&seed("jwt_validate/raw_none")).is_err());
    }

    #[test]
    fn tokens_from_fuzzer_input() {
        let signed = |header: &str, claims: &str| {
            [
                b"\x01\0".as_slice(),
                header.as_bytes(),
                b"\xff",
                claims.as_bytes(),
            ]
            .concat()
        };
        assert_eq!(
            validate_token(&signed(HEADER, &claims("alice", ""))).as_deref(),
            Ok("alice")
        );
        let none = r#"{"alg":"none"}"#;
        assert!(validate_token(&signed(none, &claims("alice", ""))).is_err());
        assert!(validate_token(&signed(HEADER, "not json")).is_err());
        assert!(validate_token(b"\0\0a.b.c").is_err());
        let raw = [
            b"\0\0".as_slice(),
            signed_jwt(HEADER.as_bytes(), claims("alice", "").as_bytes()).as_bytes(),
            b"\xffbob",
        ]
        .concat();
        assert!(validate_token(&raw).is_err(), "the claimed user must match");
    }
}
