//! The PLAIN mechanism (RFC 4616): one client message `[authzid] NUL authcid NUL passwd`.
//!
//! Parsing is strict (RFC 4616 §2): exactly two NULs, UTF-8, a non-empty authentication
//! identity and password. The authcid and password are prepared with SASLprep (RFC 4013) before
//! they are verified; a string SASLprep rejects is malformed. This gateway does no proxy
//! authorization, so a non-empty authzid must name the authenticated user itself (RFC 4616 §2:
//! the server fails the exchange otherwise). With no initial response the server sends an empty
//! challenge (RFC 4616 §3, RFC 4954 §4). The password is checked through [`Check::Password`],
//! which carries the authzid so that the verifier can hold it to the same user.

use std::borrow::Cow;

use zeroize::Zeroizing;

use super::one_message::{OneMessage, malformed};
use super::{Answer, Check, Context, Failure, Identity, MAX_TOKEN_LEN, Mechanism, Step};
use crate::auth::{Secret, Verdict};

/// Starts an exchange.
pub fn start(_ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(Plain {
        state: OneMessage::Start,
        user: None,
    })
}

/// Maps a verdict to the final step.
pub(super) fn verdict_step(verdict: Verdict) -> Step {
    match verdict {
        Verdict::Ok(user) => Step::Success(Identity::new(user)),
        Verdict::BadCredentials => Step::Failure(Failure::BadCredentials),
        Verdict::Unavailable(why) => Step::Failure(Failure::Unavailable(why)),
        Verdict::Temporary(why) => Step::Failure(Failure::Temporary(why)),
    }
}

struct Plain {
    state: OneMessage,
    user: Option<String>,
}

impl Mechanism for Plain {
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        let mut state = self.state;
        let step = state.step(input, |message| self.finish(message));
        self.state = state;
        step
    }

    fn resume(&mut self, answer: Answer) -> Step {
        if self.state.take_verdict() {
            verdict_step(answer.into_verdict())
        } else {
            malformed("no credential check was pending")
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl Plain {
    fn finish(&mut self, message: &[u8]) -> Step {
        let (authzid, authcid, password) = match parse(message) {
            Ok(fields) => fields,
            Err(why) => return malformed(why),
        };
        self.user = Some(authcid.chars().take(crate::auth::MAX_USER_LEN).collect());
        let Ok(authcid) = stringprep::saslprep(authcid) else {
            return malformed("authentication identity rejected by SASLprep");
        };
        let password = match stringprep::saslprep(password) {
            Ok(Cow::Owned(prepared)) => Zeroizing::new(prepared),
            Ok(Cow::Borrowed(same)) => Zeroizing::new(same.to_owned()),
            Err(_) => return malformed("password rejected by SASLprep"),
        };
        if authcid.is_empty() || password.is_empty() {
            return malformed("identity or password empty after SASLprep");
        }
        Step::Verify(Check::Password {
            user: authcid.into_owned(),
            password: Secret::new(password.as_bytes().to_vec()),
            authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        })
    }
}

/// Splits the message into (authzid, authcid, passwd).
fn parse(message: &[u8]) -> Result<(&str, &str, &str), &'static str> {
    if message.len() > MAX_TOKEN_LEN {
        return Err("message too long");
    }
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected authzid NUL authcid NUL passwd (exactly two NULs)");
    };
    let utf8 = |field| std::str::from_utf8(field).map_err(|_| "message is not UTF-8");
    let (authzid, authcid, password) = (utf8(authzid)?, utf8(authcid)?, utf8(password)?);
    if authcid.is_empty() {
        return Err("empty authentication identity");
    }
    if password.is_empty() {
        return Err("empty password");
    }
    Ok((authzid, authcid, password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::testing::{Driven, TestContext, test_context};

    fn start(ctx: &TestContext) -> Box<dyn Mechanism> {
        Driven::boxed(super::start(ctx), ctx)
    }

    fn bad() -> Step {
        Step::Failure(Failure::BadCredentials)
    }

    const USERS: &str = "tim:{PLAIN}tanstaaftanstaaf\n\
                         kurt:{PLAIN}xipj3plmq\n\
                         ursel:{PLAIN}other\n\
                         prep:{PLAIN}IX\n\
                         hashed:{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                         nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4\n";

    fn ok(user: &str) -> Step {
        Step::Success(Identity::new(user))
    }

    fn run(message: &[u8]) -> Step {
        start(&test_context(USERS, "n", "h")).step(Some(message))
    }

    #[test]
    fn rfc4616_examples_and_edge_cases() {
        let cases: Vec<(&[u8], Step)> = vec![
            // RFC 4616 §4: "tim" with password "tanstaaftanstaaf", no authzid.
            (b"\0tim\0tanstaaftanstaaf", ok("tim")),
            // RFC 4616 §4: Kurt authenticates and asks to act as Ursel: no proxying here.
            (b"Ursel\0Kurt\0xipj3plmq", bad()),
            (b"kurt\0Kurt\0xipj3plmq", ok("kurt")),
            (b"KURT\0kurt\0xipj3plmq", ok("kurt")),
            (b"\0kurt\0wrong", bad()),
            (b"\0nobody\0xipj3plmq", bad()),
            (b"\0hashed\0password", ok("hashed")),
            // RFC 4013 §3: SOFT HYPHEN maps to nothing, so "I\u{AD}X" prepares to "IX".
            ("\0prep\0I\u{AD}X".as_bytes(), ok("prep")),
        ];
        for (message, want) in cases {
            assert_eq!(run(message), want, "{message:?}");
        }
    }

    #[test]
    fn malformed_messages() {
        let cases: &[(&[u8], &str)] = &[
            (b"tim\0tanstaaftanstaaf", "exactly two NULs"),
            (b"\0tim\0pw\0extra", "exactly two NULs"),
            (b"", "exactly two NULs"),
            (b"\0\0pw", "empty authentication identity"),
            (b"\0tim\0", "empty password"),
            (b"\0tim\0\xff\xfe", "not UTF-8"),
            (b"\xff\0tim\0pw", "not UTF-8"),
            // RFC 4013 §3: BELL (U+0007) is prohibited.
            (b"\0tim\0a\x07b", "password rejected by SASLprep"),
            (b"\0t\x07m\0pw", "identity rejected by SASLprep"),
            ("\0tim\0\u{AD}".as_bytes(), "empty after SASLprep"),
        ];
        for (message, want) in cases {
            match run(message) {
                Step::Failure(Failure::Malformed(why)) => assert!(why.contains(want), "{why}"),
                other => panic!("{message:?}: {other:?}"),
            }
        }
        let long = vec![b'a'; MAX_TOKEN_LEN + 1];
        assert_eq!(
            run(&long),
            Step::Failure(Failure::Malformed("message too long"))
        );
    }

    #[test]
    fn no_initial_response_gets_empty_challenge() {
        let mut m = start(&test_context(USERS, "n", "h"));
        assert_eq!(m.step(None), Step::Challenge(Vec::new()));
        assert_eq!(m.step(Some(b"\0tim\0tanstaaftanstaaf")), ok("tim"));
        assert!(matches!(
            m.step(Some(b"\0tim\0x")),
            Step::Failure(Failure::Malformed(_))
        ));
    }

    #[test]
    fn empty_response_after_challenge_is_malformed() {
        let mut m = start(&test_context(USERS, "n", "h"));
        assert_eq!(m.step(None), Step::Challenge(Vec::new()));
        assert!(matches!(
            m.step(Some(b"")),
            Step::Failure(Failure::Malformed(_))
        ));
    }
}
