//! The CRAM-MD5 mechanism (RFC 2195): the server sends a unique `<token@hostname>` challenge,
//! the client answers `user SP digest`, the digest being the lower-case hex HMAC-MD5 (RFC 2104)
//! of the challenge keyed with the password.
//!
//! RFC 2195 §2 defines no initial response, so one is malformed. The response is split at its
//! last space (RFC 2195 §2 puts no limit on spaces in the user name); upper-case hex is accepted
//! too and passed on lower-cased. The authenticator computes the HMAC from what it stores.

use super::plain::verdict_step;
use super::{Answer, Check, Context, Failure, MAX_TOKEN_LEN, Mechanism, Step};

/// Starts an exchange with the challenge `<{nonce}@{hostname}>`.
pub fn start(ctx: &Context) -> Box<dyn Mechanism> {
    let challenge = format!("<{}@{}>", ctx.nonce, ctx.hostname).into_bytes();
    Box::new(CramMd5 {
        challenge,
        state: State::Start,
        user: None,
    })
}

struct CramMd5 {
    challenge: Vec<u8>,
    state: State,
    user: Option<String>,
}

enum State {
    /// Nothing sent yet.
    Start,
    /// The challenge was sent.
    AwaitingResponse,
    /// The response is being checked.
    AwaitingVerdict,
    /// Success or failure was returned.
    Done,
}

impl Mechanism for CramMd5 {
    fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Start, None) => {
                self.state = State::AwaitingResponse;
                Step::Challenge(self.challenge.clone())
            }
            (State::Start, Some(_)) => malformed("CRAM-MD5 takes no initial response"),
            (State::AwaitingResponse, Some(response)) => match parse(response) {
                Ok((user, digest)) => {
                    self.user = Some(user.chars().take(crate::auth::MAX_USER_LEN).collect());
                    self.state = State::AwaitingVerdict;
                    Step::Verify(Check::CramMd5 {
                        user: user.to_owned(),
                        challenge: self.challenge.clone(),
                        digest: digest.to_vec(),
                    })
                }
                Err(why) => malformed(why),
            },
            (State::AwaitingResponse, None) => malformed("missing client response"),
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

/// Splits `user SP digest` at the last space; returns the user and the lower-case hex digest.
fn parse(response: &[u8]) -> Result<(&str, [u8; 32]), &'static str> {
    if response.len() > MAX_TOKEN_LEN {
        return Err("response too long");
    }
    let text = std::str::from_utf8(response).map_err(|_| "response is not UTF-8")?;
    let (user, digest) = text.rsplit_once(' ').ok_or("expected `user digest`")?;
    if user.is_empty() {
        return Err("empty user name");
    }
    let digest: [u8; 32] = digest
        .as_bytes()
        .try_into()
        .map_err(|_| "digest is not 32 hex digits")?;
    if !digest.iter().all(u8::is_ascii_hexdigit) {
        return Err("digest is not 32 hex digits");
    }
    Ok((user, digest.map(|b| b.to_ascii_lowercase())))
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

    // RFC 2195 §2 example.
    const USERS: &str = "tim:{PLAIN}tanstaaftanstaaf\n\
                         hashed:{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                         nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4\n";
    const NONCE: &str = "1896.697170952";
    const HOST: &str = "postoffice.reston.mci.net";
    const CHALLENGE: &[u8] = b"<1896.697170952@postoffice.reston.mci.net>";

    fn ok(user: &str) -> Step {
        Step::Success(Identity::new(user))
    }

    fn exchange(response: &[u8]) -> Step {
        let mut m = start(&test_context(USERS, NONCE, HOST));
        assert_eq!(m.step(None), Step::Challenge(CHALLENGE.to_vec()));
        m.step(Some(response))
    }

    #[test]
    fn rfc2195_example_and_variants() {
        let cases: Vec<(&[u8], Step)> = vec![
            (b"tim b913a602c7eda7a495b4e6e7334d3890", ok("tim")),
            (b"TIM B913A602C7EDA7A495B4E6E7334D3890", ok("tim")),
            (b"tim b913a602c7eda7a495b4e6e7334d3891", bad()),
            (b"tim smith b913a602c7eda7a495b4e6e7334d3890", bad()),
            (b"nobody b913a602c7eda7a495b4e6e7334d3890", bad()),
            (
                b"hashed b913a602c7eda7a495b4e6e7334d3890",
                Step::Failure(Failure::Unavailable(
                    "CRAM-MD5 needs a {PLAIN} or {CRAM-MD5} stored form",
                )),
            ),
        ];
        for (response, want) in cases {
            assert_eq!(exchange(response), want, "{response:?}");
        }
    }

    #[test]
    fn malformed_responses() {
        let long = vec![b'a'; MAX_TOKEN_LEN + 1];
        let cases: Vec<(&[u8], &str)> = vec![
            (
                b"timb913a602c7eda7a495b4e6e7334d3890",
                "expected `user digest`",
            ),
            (b" b913a602c7eda7a495b4e6e7334d3890", "empty user name"),
            (b"tim b913a602c7eda7a495b4e6e7334d389", "32 hex digits"),
            (b"tim b913a602c7eda7a495b4e6e7334d3890 ", "32 hex digits"),
            (b"tim g913a602c7eda7a495b4e6e7334d3890", "32 hex digits"),
            (b"t\xffm b913a602c7eda7a495b4e6e7334d3890", "not UTF-8"),
            (b"", "expected `user digest`"),
            (&long, "too long"),
        ];
        for (response, want) in cases {
            match exchange(response) {
                Step::Failure(Failure::Malformed(why)) => assert!(why.contains(want), "{why}"),
                other => panic!("{response:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn initial_response_and_restepping_are_malformed() {
        let ctx = test_context(USERS, NONCE, HOST);
        let mut m = start(&ctx);
        let initial = m.step(Some(b"tim b913a602c7eda7a495b4e6e7334d3890"));
        assert_eq!(initial, malformed("CRAM-MD5 takes no initial response"));
        let mut m = start(&ctx);
        assert_eq!(m.step(None), Step::Challenge(CHALLENGE.to_vec()));
        assert_eq!(m.step(None), malformed("missing client response"));
        assert_eq!(m.step(Some(b"x")), malformed("exchange already finished"));
    }
}
