//! The POP3 login dialogue (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH): the
//! greeting, STLS if asked, CAPA, then USER/PASS, or AUTH PLAIN with an initial response when
//! the server offers SASL PLAIN and not USER (or an authorization identity must be sent).
//! A refusal carrying `[SYS/TEMP]`, `[IN-USE]` or `[LOGIN-DELAY]` (RFC 2449 §8, RFC 3206) is
//! temporary: the password was not judged wrong.

use super::{Dialogue, Login, Next, Outcome, excerpt};

/// Where the dialogue stands: what the next line answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Stls,
    Capa,
    CapaList,
    User,
    Pass,
    Auth,
    Done,
}

/// Logs in to a POP3 server.
pub struct Pop3Login {
    login: Login,
    starttls: bool,
    state: State,
    user_offered: bool,
    plain_offered: bool,
}

impl Pop3Login {
    /// A dialogue logging in with `login`, after STLS when `starttls`.
    pub fn new(login: Login, starttls: bool) -> Pop3Login {
        Pop3Login {
            login,
            starttls,
            state: State::Greeting,
            user_offered: false,
            plain_offered: false,
        }
    }

    fn go(&mut self, state: State, next: Next) -> Next {
        self.state = if matches!(next, Next::Done(_)) {
            State::Done
        } else {
            state
        };
        next
    }

    fn capa(&mut self) -> Next {
        self.go(State::Capa, Next::send("CAPA\r\n"))
    }

    /// USER/PASS unless only SASL PLAIN is offered or an authorization identity is needed.
    fn credentials(&mut self) -> Next {
        let sasl = self.login.authzid.is_some() || (self.plain_offered && !self.user_offered);
        if sasl {
            let mut line = b"AUTH PLAIN ".to_vec();
            line.extend_from_slice(self.login.plain_b64().as_bytes());
            line.extend_from_slice(b"\r\n");
            let next = Next::Send(zeroize::Zeroizing::new(line));
            self.go(State::Auth, next)
        } else {
            let line = format!("USER {}\r\n", self.login.user);
            self.go(State::User, Next::send(line))
        }
    }
}

/// The outcome of an `-ERR` to the credentials.
fn refusal(line: &[u8]) -> Outcome {
    let text = excerpt(line);
    let code = text
        .strip_prefix("-ERR [")
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_default()
        .to_ascii_uppercase();
    if ["SYS/TEMP", "IN-USE", "LOGIN-DELAY"].contains(&code.as_str()) {
        Outcome::Temporary(format!("POP3 server: {text}"))
    } else {
        Outcome::Refused(text)
    }
}

impl Dialogue for Pop3Login {
    fn line(&mut self, line: &[u8]) -> Next {
        let ok = line.starts_with(b"+OK");
        let err = line.starts_with(b"-ERR");
        match self.state {
            State::Greeting if ok && self.starttls => self.go(State::Stls, Next::send("STLS\r\n")),
            State::Greeting if ok => self.capa(),
            State::Greeting => {
                let why = format!("POP3 greeting: {}", excerpt(line));
                self.go(State::Done, Next::temporary(why))
            }
            State::Stls if ok => self.go(State::Stls, Next::StartTls),
            State::Stls => {
                let why = format!("POP3 STLS refused: {}", excerpt(line));
                self.go(State::Done, Next::temporary(why))
            }
            State::Capa if ok => self.go(State::CapaList, Next::Read),
            // No CAPA (a pure RFC 1939 server): USER/PASS is all there is.
            State::Capa if err => {
                self.user_offered = true;
                self.credentials()
            }
            State::CapaList if line == b"." => self.credentials(),
            State::CapaList => {
                let text = String::from_utf8_lossy(line).to_ascii_uppercase();
                let mut words = text.split_ascii_whitespace();
                match words.next() {
                    Some("USER") => self.user_offered = true,
                    Some("SASL") => self.plain_offered |= words.any(|m| m == "PLAIN"),
                    _ => {}
                }
                Next::Read
            }
            State::User if ok => {
                let mut cmd = b"PASS ".to_vec();
                cmd.extend_from_slice(self.login.password.expose());
                cmd.extend_from_slice(b"\r\n");
                self.go(State::Pass, Next::Send(zeroize::Zeroizing::new(cmd)))
            }
            State::User if err && self.plain_offered => {
                self.user_offered = false;
                self.credentials()
            }
            State::Pass | State::Auth | State::User if ok => {
                self.go(State::Done, Next::Done(Outcome::LoggedIn))
            }
            // A server without initial-response support asks for the message after "+ ".
            State::Auth if line.starts_with(b"+") => {
                let mut cmd = self.login.plain_b64().as_bytes().to_vec();
                cmd.extend_from_slice(b"\r\n");
                self.go(State::Auth, Next::Send(zeroize::Zeroizing::new(cmd)))
            }
            State::User | State::Pass | State::Auth if err => {
                self.go(State::Done, Next::Done(refusal(line)))
            }
            State::Capa | State::User | State::Pass | State::Auth => {
                let why = format!("POP3 server answered {:?}", excerpt(line));
                self.go(State::Done, Next::temporary(why))
            }
            State::Done => Next::temporary("POP3 server spoke after the login ended"),
        }
    }

    fn tls_started(&mut self) -> Next {
        self.capa()
    }

    fn logout(&self) -> &'static [u8] {
        b"QUIT\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn login(authzid: Option<&str>) -> Login {
        Login {
            user: "alice".into(),
            password: Secret::new(b"pass word".to_vec()),
            authzid: authzid.map(str::to_owned),
        }
    }

    fn sent(next: Next) -> String {
        match next {
            Next::Send(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn user_pass_after_capa() {
        let mut d = Pop3Login::new(login(None), false);
        assert_eq!(sent(d.line(b"+OK ready")), "CAPA\r\n");
        assert_eq!(d.line(b"+OK capabilities"), Next::Read);
        assert_eq!(d.line(b"TOP"), Next::Read);
        assert_eq!(d.line(b"USER"), Next::Read);
        assert_eq!(d.line(b"SASL PLAIN LOGIN"), Next::Read);
        assert_eq!(sent(d.line(b".")), "USER alice\r\n");
        assert_eq!(sent(d.line(b"+OK")), "PASS pass word\r\n");
        assert_eq!(d.line(b"+OK logged in"), Next::Done(Outcome::LoggedIn));
    }

    #[test]
    fn stls_first_then_capa() {
        let mut d = Pop3Login::new(login(None), true);
        assert_eq!(sent(d.line(b"+OK ready")), "STLS\r\n");
        assert_eq!(d.line(b"+OK begin TLS"), Next::StartTls);
        assert_eq!(sent(d.tls_started()), "CAPA\r\n");
        let mut d = Pop3Login::new(login(None), true);
        d.line(b"+OK ready");
        assert!(matches!(
            d.line(b"-ERR no TLS here"),
            Next::Done(Outcome::Temporary(_))
        ));
    }

    #[test]
    fn sasl_plain_when_user_is_not_offered_or_an_authzid_is_needed() {
        let mut d = Pop3Login::new(login(None), false);
        d.line(b"+OK");
        d.line(b"+OK");
        d.line(b"SASL PLAIN");
        // "\0alice\0pass word"
        assert_eq!(
            sent(d.line(b".")),
            "AUTH PLAIN AGFsaWNlAHBhc3Mgd29yZA==\r\n"
        );
        assert_eq!(d.line(b"+OK"), Next::Done(Outcome::LoggedIn));

        let mut d = Pop3Login::new(login(Some("bob")), false);
        d.line(b"+OK");
        // No CAPA, yet a master login needs SASL PLAIN.
        assert!(sent(d.line(b"-ERR what is CAPA")).starts_with("AUTH PLAIN "));
        let mut d2 = Pop3Login::new(login(Some("bob")), false);
        d2.line(b"+OK");
        d2.line(b"+OK");
        let cmd = sent(d2.line(b"."));
        assert!(cmd.starts_with("AUTH PLAIN Ym9iAGFsaWNl"), "{cmd}");
        // A server that wants the message after a continuation gets it.
        assert_eq!(sent(d2.line(b"+ ")), "Ym9iAGFsaWNlAHBhc3Mgd29yZA==\r\n");
        assert_eq!(d2.line(b"+OK"), Next::Done(Outcome::LoggedIn));
    }

    #[test]
    fn refusals_and_temporary_failures() {
        let at_pass = |reply: &[u8]| {
            let mut d = Pop3Login::new(login(None), false);
            d.line(b"+OK");
            d.line(b"-ERR unknown command");
            d.line(b"+OK");
            match d.line(reply) {
                Next::Done(o) => o,
                other => panic!("{other:?}"),
            }
        };
        assert!(matches!(
            at_pass(b"-ERR [AUTH] Authentication failed."),
            Outcome::Refused(_)
        ));
        assert!(matches!(at_pass(b"-ERR nope"), Outcome::Refused(_)));
        for temp in [
            &b"-ERR [SYS/TEMP] try later"[..],
            b"-ERR [IN-USE] mailbox locked",
            b"-ERR [LOGIN-DELAY] wait",
            b"garbage",
        ] {
            assert!(matches!(at_pass(temp), Outcome::Temporary(_)), "{temp:?}");
        }
        let mut d = Pop3Login::new(login(None), false);
        assert!(matches!(
            d.line(b"-ERR go away"),
            Next::Done(Outcome::Temporary(_))
        ));
        assert!(matches!(d.line(b"+OK"), Next::Done(Outcome::Temporary(_))));
    }
}
