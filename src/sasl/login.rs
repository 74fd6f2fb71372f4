//! The LOGIN mechanism (draft-murchison-sasl-login-00): the server asks `Username:` then
//! `Password:`, and the client answers each in turn.
//!
//! LOGIN has no RFC; this follows what deployed clients (and the copiers and scanners this
//! gateway serves) do. An initial response (`AUTH LOGIN dXNlcg==`) is the user name, so the
//! first challenge is then `Password:`. Challenges are raw bytes; the framing layer
//! base64-encodes them. The password is passed to the authenticator as sent (no SASLprep: LOGIN
//! defines none, and legacy clients may send non-UTF-8 passwords).

use super::plain::verdict_step;
use super::{Answer, Check, Context, Failure, MAX_TOKEN_LEN, Mechanism, Step};
use crate::auth::Secret;

/// The first challenge.
pub const USERNAME_CHALLENGE: &[u8] = b"Username:";
/// The second challenge.
pub const PASSWORD_CHALLENGE: &[u8] = b"Password:";

/// Starts an exchange.
pub fn start(_ctx: &Context) -> Box<dyn Mechanism> {
    Box::new(Login {
        state: State::Start,
        user: None,
    })
}

struct Login {
    state: State,
    user: Option<String>,
}

enum State {
    /// Nothing received yet.
    Start,
    /// `Username:` was sent.
    AwaitingUser,
    /// `Password:` was sent for this user.
    AwaitingPassword { user: String },
    /// The password is being checked.
    AwaitingVerdict,
    /// Success or failure was returned.
    Done,
}

impl Mechanism for Login {
    fn verifies_next(&self) -> bool {
        // The user name step checks nothing; the password step does.
        matches!(self.state, State::AwaitingPassword { .. })
    }

    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingUser;
                Step::Challenge(USERNAME_CHALLENGE.to_vec())
            }
            (State::Start | State::AwaitingUser, Some(user)) => match parse_user(user) {
                Ok(user) => {
                    self.user = Some(user.chars().take(crate::auth::MAX_USER_LEN).collect());
                    self.state = State::AwaitingPassword { user };
                    Step::Challenge(PASSWORD_CHALLENGE.to_vec())
                }
                Err(why) => malformed(why),
            },
            (State::AwaitingPassword { user }, Some(password)) => {
                if password.len() > MAX_TOKEN_LEN {
                    return malformed("password too long");
                }
                if password.is_empty() {
                    return malformed("empty password");
                }
                self.state = State::AwaitingVerdict;
                Step::Verify(Check::Password {
                    user,
                    password: Secret::new(password.to_vec()),
                    authzid: None,
                })
            }
            (State::AwaitingUser | State::AwaitingPassword { .. }, None) => {
                malformed("missing client response")
            }
            (State::AwaitingVerdict | State::Done, _) => malformed("exchange already finished"),
        }
    }

    fn resume(&mut self, answer: Answer) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingVerdict => verdict_step(answer.into_verdict()),
            _ => malformed("no credential check was pending"),
        }
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

fn parse_user(user: &[u8]) -> Result<String, &'static str> {
    if user.len() > MAX_TOKEN_LEN {
        return Err("user name too long");
    }
    if user.is_empty() {
        return Err("empty user name");
    }
    let user = std::str::from_utf8(user).map_err(|_| "user name is not UTF-8")?;
    Ok(user.to_owned())
}

fn malformed(why: &'static str) -> Step {
    Step::Failure(Failure::Malformed(why))
}

#[cfg(test)]
mod tests {
    use super::super::Identity;
    use super::*;
    use crate::sasl::testing::{Driven, TestContext, test_context};

    fn start(ctx: &TestContext) -> Box<dyn Mechanism> {
        Driven::boxed(super::start(ctx), ctx)
    }

    fn bad() -> Step {
        Step::Failure(Failure::BadCredentials)
    }

    const USERS: &str = "alice:{PLAIN}wonder land\nlatin:{PLAIN}caf\u{e9}\n";

    fn ok(user: &str) -> Step {
        Step::Success(Identity::new(user))
    }

    fn challenge(bytes: &[u8]) -> Step {
        Step::Challenge(bytes.to_vec())
    }

    fn malformed_step(why: &'static str) -> Step {
        Step::Failure(Failure::Malformed(why))
    }

    /// One client input and the step expected after it.
    struct Turn<'a>(Option<&'a [u8]>, Step);

    /// Each transcript: the inputs in order and the step expected after each.
    #[test]
    fn transcripts() {
        let cases: Vec<Vec<Turn>> = vec![
            vec![
                Turn(None, challenge(b"Username:")),
                Turn(Some(b"alice"), challenge(b"Password:")),
                Turn(Some(b"wonder land"), ok("alice")),
            ],
            // Initial response carries the user name (`AUTH LOGIN YWxpY2U=`).
            vec![
                Turn(Some(b"Alice"), challenge(b"Password:")),
                Turn(Some(b"wonder land"), ok("alice")),
            ],
            vec![
                Turn(Some(b"alice"), challenge(b"Password:")),
                Turn(Some(b"wonderland"), bad()),
            ],
            vec![
                Turn(Some(b"bob"), challenge(b"Password:")),
                Turn(Some(b"x"), bad()),
            ],
            // UTF-8 password bytes are compared as sent.
            vec![
                Turn(Some(b"latin"), challenge(b"Password:")),
                Turn(Some(b"caf\xc3\xa9"), ok("latin")),
            ],
            vec![
                Turn(Some(b"latin"), challenge(b"Password:")),
                Turn(Some(b"caf\xe9"), bad()),
            ],
            vec![Turn(Some(b""), malformed_step("empty user name"))],
            vec![
                Turn(None, challenge(b"Username:")),
                Turn(Some(b""), malformed_step("empty user name")),
            ],
            vec![Turn(
                Some(b"\xff"),
                malformed_step("user name is not UTF-8"),
            )],
            vec![
                Turn(Some(b"alice"), challenge(b"Password:")),
                Turn(Some(b""), malformed_step("empty password")),
            ],
            vec![
                Turn(None, challenge(b"Username:")),
                Turn(None, malformed_step("missing client response")),
                Turn(Some(b"alice"), malformed_step("exchange already finished")),
            ],
        ];
        for (i, transcript) in cases.into_iter().enumerate() {
            let mut m = start(&test_context(USERS, "n", "h"));
            for Turn(input, want) in transcript {
                assert_eq!(m.step(input), want, "transcript {i}, input {input:?}");
            }
        }
    }

    #[test]
    fn oversized_messages_are_malformed() {
        let long = vec![b'a'; MAX_TOKEN_LEN + 1];
        let mut m = start(&test_context(USERS, "n", "h"));
        assert_eq!(m.step(Some(&long)), malformed_step("user name too long"));
        let mut m = start(&test_context(USERS, "n", "h"));
        assert_eq!(m.step(Some(b"alice")), challenge(b"Password:"));
        assert_eq!(m.step(Some(&long)), malformed_step("password too long"));
    }
}
