//! What XOAUTH2 and OAUTHBEARER share: the `key=value ^A` pairs carrying the bearer token
//! (RFC 7628 §3.1), the token type that never prints, and the exchange both run.
//!
//! The exchange (RFC 7628 §3.2): the client's message carries `auth=Bearer <token>`; the token
//! goes to the configured [`TokenValidator`](super::TokenValidator). On success the exchange
//! ends at once. On failure the server sends one challenge holding a JSON error (§3.2.2), the
//! client answers with a dummy response (`^A` for OAUTHBEARER, empty for XOAUTH2), and only
//! then does the exchange fail. Parsing is bounded by [`MAX_TOKEN_LEN`] and [`MAX_PAIRS`].

use std::fmt;

use zeroize::Zeroizing;

use super::{
    Answer, Check, Context, Failure, Identity, MAX_TOKEN_LEN, Mechanism, Step, TokenError,
};
use crate::auth::Secret;

/// The key-value separator, `^A` (RFC 7628 §3.1 `kvsep`).
pub const KVSEP: u8 = 0x01;

/// Most key-value pairs accepted in one client message.
pub const MAX_PAIRS: usize = 16;

/// A bearer token (RFC 6750 §2.1 `b64token`) taken from a client message. It is wiped on drop
/// and its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Zeroizing<Vec<u8>>);

impl BearerToken {
    /// The token bytes, to hand to a validator. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// A parsed client message of either mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerMessage {
    /// The user the client names (XOAUTH2 `user=`, OAUTHBEARER `a=`), if any.
    pub user: Option<String>,
    /// The token from `auth=Bearer <token>`.
    pub token: BearerToken,
    /// The `host` pair, if sent (OAUTHBEARER; informational).
    pub host: Option<String>,
    /// The `port` pair, if sent (OAUTHBEARER; informational).
    pub port: Option<u16>,
}

/// The pairs of a `*kvpair kvsep` body, in order: `key=value^A ... ^A` (RFC 7628 §3.1).
/// Keys are `1*ALPHA`; values are UTF-8 without control characters other than HTAB, CR and LF
/// (the RFC's `VCHAR / SP / HTAB / CR / LF`, widened to UTF-8 for XOAUTH2 user names).
pub fn parse_pairs(body: &[u8]) -> Result<Vec<(&str, &str)>, &'static str> {
    let Some(inner) = body.strip_suffix(&[KVSEP]) else {
        return Err("message does not end with ^A");
    };
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    let Some(inner) = inner.strip_suffix(&[KVSEP]) else {
        return Err("message does not end with ^A^A");
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for pair in inner.split(|&b| b == KVSEP) {
        if pairs.len() == MAX_PAIRS {
            return Err("too many key-value pairs");
        }
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return Err("key-value pair without '='");
        };
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
            return Err("key is not 1*ALPHA");
        }
        if value
            .iter()
            .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
        {
            return Err("control character in a value");
        }
        let value = std::str::from_utf8(value).map_err(|_| "value is not UTF-8")?;
        // The key is ASCII letters, checked above.
        let key = std::str::from_utf8(key).map_err(|_| "key is not 1*ALPHA")?;
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err("duplicate key");
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The token of an `auth` value `Bearer 1*SP b64token` (RFC 7628 §3.1, RFC 6750 §2.1). The
/// scheme name is case-insensitive (RFC 9110 §11.1).
pub fn bearer_token(auth: &str) -> Result<BearerToken, &'static str> {
    let (scheme, rest) = auth
        .split_once(' ')
        .ok_or("auth value is not \"Bearer <token>\"")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("auth scheme is not Bearer");
    }
    let token = rest.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    let b64 = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c);
    if body.is_empty() || !body.bytes().all(b64) {
        return Err("token is not a b64token");
    }
    Ok(BearerToken(Zeroizing::new(token.as_bytes().to_vec())))
}

/// Which of the two mechanisms an exchange speaks: they differ in the message syntax and in
/// the error challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    /// Google's XOAUTH2.
    Xoauth2,
    /// RFC 7628 OAUTHBEARER.
    OauthBearer,
}

/// The error challenge for a refused token: RFC 7628 §3.2.2 for OAUTHBEARER (`status` from
/// the RFC 6750 §3.1 error codes), and Google's XOAUTH2 form (`status` an HTTP code, with
/// `schemes`). `scope` is sent when the token lacked a required scope.
pub fn error_challenge(flavor_is_xoauth2: bool, error: &TokenError) -> Vec<u8> {
    let (status, http, scope) = match error {
        TokenError::Invalid(_) => ("invalid_token", "401", None),
        TokenError::InsufficientScope(scope) => ("insufficient_scope", "403", Some(scope)),
        TokenError::Unavailable(_) => ("temporarily_unavailable", "503", None),
    };
    let mut json = serde_json::Map::new();
    if flavor_is_xoauth2 {
        json.insert("status".into(), http.into());
        json.insert("schemes".into(), "bearer".into());
    } else {
        json.insert("status".into(), status.into());
    }
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
        json.insert("scope".into(), scope.as_str().into());
    }
    serde_json::Value::Object(json).to_string().into_bytes()
}

/// A mechanism's parser of its one client message.
pub(super) type Parser = fn(&[u8]) -> Result<BearerMessage, &'static str>;

/// One XOAUTH2 or OAUTHBEARER exchange.
pub(super) struct BearerExchange {
    /// The mechanism's client-message parser (given by `xoauth2.rs` or `oauthbearer.rs`).
    parse: Parser,
    flavor: Flavor,
    state: State,
    user: Option<String>,
}

enum State {
    /// Nothing received yet.
    Start,
    /// The empty challenge was sent; the client message comes next.
    AwaitingMessage,
    /// The token is being validated.
    AwaitingValidation,
    /// The error challenge was sent; the client's dummy response comes next, then this failure.
    AwaitingErrorAck(Failure),
    /// Success or failure was returned.
    Done,
}

impl BearerExchange {
    /// Starts an exchange.
    pub(super) fn start(_ctx: &Context, flavor: Flavor, parse: Parser) -> Box<dyn Mechanism> {
        Box::new(BearerExchange {
            parse,
            flavor,
            state: State::Start,
            user: None,
        })
    }

    fn finish(&mut self, message: &[u8]) -> Step {
        let parsed = (self.parse)(message);
        let message = match parsed {
            Ok(message) => message,
            Err(why) => return Step::Failure(Failure::Malformed(why)),
        };
        self.user = message
            .user
            .as_ref()
            .map(|u| u.chars().take(crate::auth::MAX_USER_LEN).collect());
        self.state = State::AwaitingValidation;
        Step::Verify(Check::Token {
            token: Secret::new(message.token.expose().to_vec()),
            claimed: message.user,
        })
    }

    /// Ends the exchange with the validator's answer: success, or the RFC 7628 §3.2.2 error
    /// challenge (the client's dummy response then ends it with the failure).
    fn validated(&mut self, answer: Answer) -> Step {
        let result = match answer {
            Answer::Token(result) => result,
            _ => Err(TokenError::Unavailable(
                "token check answered with the wrong kind".into(),
            )),
        };
        match result {
            Ok(user) => Step::Success(Identity::new(user)),
            Err(error) => {
                let failure = match error {
                    TokenError::Unavailable(_) => {
                        Failure::Unavailable("bearer-token validation unavailable")
                    }
                    TokenError::Invalid(_) | TokenError::InsufficientScope(_) => {
                        Failure::BadCredentials
                    }
                };
                self.state = State::AwaitingErrorAck(failure);
                Step::Challenge(error_challenge(self.flavor == Flavor::Xoauth2, &error))
            }
        }
    }
}

impl Mechanism for BearerExchange {
    fn verifies_next(&self) -> bool {
        // The token comes in the client message; the dummy response after the error
        // challenge checks nothing.
        matches!(self.state, State::AwaitingMessage)
    }

    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingMessage;
                Step::Challenge(Vec::new())
            }
            (State::Start | State::AwaitingMessage, Some(message)) => self.finish(message),
            // RFC 7628 §3.2.3: whatever the client answers to the error, the exchange fails.
            (State::AwaitingErrorAck(failure), Some(_)) => Step::Failure(failure),
            (State::AwaitingMessage | State::AwaitingErrorAck(_), None) => {
                Step::Failure(Failure::Malformed("missing client response"))
            }
            (State::AwaitingValidation | State::Done, _) => {
                Step::Failure(Failure::Malformed("exchange already finished"))
            }
        }
    }

    fn resume(&mut self, answer: Answer) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingValidation => self.validated(answer),
            _ => Step::Failure(Failure::Malformed("no credential check was pending")),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// Checks the length bound every bearer message shares.
pub(super) fn check_len(message: &[u8]) -> Result<(), &'static str> {
    if message.len() > MAX_TOKEN_LEN {
        return Err("message too long");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pairs() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let ok: &[(&[u8], Pairs)] = &[
            (b"\x01", &[]),
            (b"a=b\x01\x01", &[("a", "b")]),
            (
                b"auth=Bearer x\x01host=h\x01\x01",
                &[("auth", "Bearer x"), ("host", "h")],
            ),
            (b"a=\x01\x01", &[("a", "")]),
            (b"a=x=y\x01\x01", &[("a", "x=y")]),
            (
                "user=j\u{f6}rg\x01\x01".as_bytes(),
                &[("user", "j\u{f6}rg")],
            ),
        ];
        for (input, want) in ok {
            assert_eq!(parse_pairs(input).as_deref(), Ok(*want), "{input:?}");
        }
        let bad: &[(&[u8], &str)] = &[
            (b"", "end with ^A"),
            (b"a=b", "end with ^A"),
            (b"a=b\x01", "end with ^A^A"),
            (b"ab\x01\x01", "without '='"),
            (b"=b\x01\x01", "1*ALPHA"),
            (b"a1=b\x01\x01", "1*ALPHA"),
            (b"a=b\x00\x01\x01", "control"),
            (b"a=\xff\x01\x01", "UTF-8"),
            (b"a=1\x01a=2\x01\x01", "duplicate"),
            (b"\x01\x01", "without '='"),
        ];
        for (input, want) in bad {
            match parse_pairs(input) {
                Err(why) => assert!(why.contains(want), "{input:?}: {why}"),
                Ok(p) => panic!("{input:?}: {p:?}"),
            }
        }
        let many: Vec<u8> = (0..=MAX_PAIRS)
            .flat_map(|i| format!("{}=v\x01", "k".repeat(i + 1)).into_bytes())
            .chain([KVSEP])
            .collect();
        assert_eq!(parse_pairs(&many), Err("too many key-value pairs"));
    }

    #[test]
    fn bearer_values() {
        for (auth, token) in [
            ("Bearer abc", "abc"),
            ("bearer a.b-c_d~e+f/g==", "a.b-c_d~e+f/g=="),
            ("BEARER  x", "x"),
        ] {
            assert_eq!(
                bearer_token(auth).map(|t| t.expose().to_vec()),
                Ok(token.into())
            );
        }
        for auth in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearer a b",
            "Bearer ==",
            "Bearer \u{e9}",
        ] {
            assert!(bearer_token(auth).is_err(), "{auth}");
        }
        let t = bearer_token("Bearer sekrit").expect("valid");
        assert_eq!(format!("{t:?}"), "BearerToken(..)");
    }

    #[test]
    fn error_challenges() {
        let invalid = TokenError::Invalid("expired".into());
        let scope = TokenError::InsufficientScope("mail".into());
        let down = TokenError::Unavailable("timeout".into());
        let cases = [
            (false, &invalid, json!({"status": "invalid_token"})),
            (
                false,
                &scope,
                json!({"status": "insufficient_scope", "scope": "mail"}),
            ),
            (false, &down, json!({"status": "temporarily_unavailable"})),
            (
                true,
                &invalid,
                json!({"status": "401", "schemes": "bearer"}),
            ),
            (
                true,
                &scope,
                json!({"status": "403", "schemes": "bearer", "scope": "mail"}),
            ),
        ];
        for (xoauth2, error, want) in cases {
            let got: serde_json::Value =
                serde_json::from_slice(&error_challenge(xoauth2, error)).expect("JSON");
            assert_eq!(got, want, "{error:?}");
        }
    }
}
