//! The IMAP login dialogue (RFC 9051 and RFC 3501; RFC 4959 SASL-IR; RFC 5530 response
//! codes): the greeting, STARTTLS if asked, CAPABILITY, then AUTHENTICATE PLAIN when offered
//! (with an initial response under SASL-IR), else LOGIN with quoted strings, or literals
//! for what a quoted string cannot carry. A `NO` with `[UNAVAILABLE]`, `[SERVERBUG]`,
//! `[INUSE]` or `[LIMIT]` is temporary: the password was not judged wrong.

use zeroize::Zeroizing;

use super::{Dialogue, Login, Next, Outcome, excerpt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    StartTls,
    Capability,
    Login,
    Done,
}

/// Logs in to an IMAP server.
pub struct ImapLogin {
    login: Login,
    starttls: bool,
    state: State,
    plain: bool,
    sasl_ir: bool,
    login_disabled: bool,
    /// What to send at each `+` continuation of the login command, in order.
    pending: Vec<Zeroizing<Vec<u8>>>,
}

/// A string as IMAP sends it: quoted when it can be (RFC 9051 §4.3: 7-bit, no CR, LF, NUL),
/// otherwise `None` (it goes as a literal).
fn quoted(s: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if s.iter().any(|&b| b >= 0x80 || b == 0) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() + 2));
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Some(out)
}

impl ImapLogin {
    /// A dialogue logging in with `login`, after STARTTLS when `starttls`.
    pub fn new(login: Login, starttls: bool) -> ImapLogin {
        ImapLogin {
            login,
            starttls,
            state: State::Greeting,
            plain: false,
            sasl_ir: false,
            login_disabled: false,
            pending: Vec::new(),
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

    fn capability(&mut self) -> Next {
        self.go(State::Capability, Next::send("A2 CAPABILITY\r\n"))
    }

    fn note_capabilities(&mut self, words: &str) {
        for word in words.split_ascii_whitespace() {
            match word.to_ascii_uppercase().as_str() {
                "AUTH=PLAIN" => self.plain = true,
                "SASL-IR" => self.sasl_ir = true,
                "LOGINDISABLED" => self.login_disabled = true,
                _ => {}
            }
        }
    }

    fn credentials(&mut self) -> Next {
        if self.plain || self.login.authzid.is_some() {
            let b64 = self.login.plain_b64();
            let mut line = Zeroizing::new(b"A3 AUTHENTICATE PLAIN".to_vec());
            if self.sasl_ir {
                line.push(b' ');
                line.extend_from_slice(b64.as_bytes());
            } else {
                let mut answer = Zeroizing::new(b64.as_bytes().to_vec());
                answer.extend_from_slice(b"\r\n");
                self.pending.push(answer);
            }
            line.extend_from_slice(b"\r\n");
            return self.go(State::Login, Next::Send(line));
        }
        if self.login_disabled {
            let why = "IMAP server refuses LOGIN on this connection (LOGINDISABLED): set tls";
            return self.go(State::Done, Next::temporary(why));
        }
        // LOGIN user password, each quoted or as a literal; a literal ends the line and the
        // rest follows the server's "+".
        let mut chunks = vec![Zeroizing::new(b"A3 LOGIN ".to_vec())];
        let password = self.login.password.expose().to_vec();
        for (i, arg) in [self.login.user.as_bytes().to_vec(), password]
            .into_iter()
            .enumerate()
        {
            let arg = Zeroizing::new(arg);
            let last = chunks.last_mut().expect("never empty");
            if i > 0 {
                last.push(b' ');
            }
            match quoted(&arg) {
                Some(q) => last.extend_from_slice(&q),
                None => {
                    last.extend_from_slice(format!("{{{}}}\r\n", arg.len()).as_bytes());
                    chunks.push(arg);
                }
            }
        }
        chunks
            .last_mut()
            .expect("never empty")
            .extend_from_slice(b"\r\n");
        let first = chunks.remove(0);
        self.pending = chunks;
        self.go(State::Login, Next::Send(first))
    }

    /// The outcome of the tagged response to the login command.
    fn verdict(&mut self, rest: &[u8]) -> Next {
        let text = excerpt(rest);
        let upper = text.to_ascii_uppercase();
        let outcome = if upper.starts_with("OK") {
            Outcome::LoggedIn
        } else if upper.starts_with("NO") {
            let temporary = ["[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]"];
            if temporary
                .iter()
                .any(|c| upper[2..].trim_start().starts_with(c))
            {
                Outcome::Temporary(format!("IMAP server: {text}"))
            } else {
                Outcome::Refused(text)
            }
        } else {
            Outcome::Temporary(format!("IMAP server: {text}"))
        };
        self.go(State::Done, Next::Done(outcome))
    }
}

impl Dialogue for ImapLogin {
    fn line(&mut self, line: &[u8]) -> Next {
        let text = String::from_utf8_lossy(line);
        let upper = text.to_ascii_uppercase();
        if upper.starts_with("* BYE") {
            let why = format!("IMAP server closed: {}", excerpt(line));
            return self.go(State::Done, Next::temporary(why));
        }
        match self.state {
            State::Greeting if upper.starts_with("* OK") => {
                if let Some(caps) = upper.split("[CAPABILITY ").nth(1) {
                    self.note_capabilities(caps.split(']').next().unwrap_or_default());
                }
                if self.starttls {
                    self.go(State::StartTls, Next::send("A1 STARTTLS\r\n"))
                } else {
                    self.capability()
                }
            }
            State::Greeting => {
                let why = format!("IMAP greeting: {}", excerpt(line));
                self.go(State::Done, Next::temporary(why))
            }
            State::StartTls if upper.starts_with("A1 OK") => {
                // Capabilities seen before TLS are not to be trusted after it.
                self.plain = false;
                self.sasl_ir = false;
                self.login_disabled = false;
                self.go(State::StartTls, Next::StartTls)
            }
            State::Capability if upper.starts_with("* CAPABILITY ") => {
                self.note_capabilities(&upper["* CAPABILITY ".len()..]);
                Next::Read
            }
            State::Capability if upper.starts_with("A2 ") => self.credentials(),
            State::Login if line.starts_with(b"+") && !self.pending.is_empty() => {
                let chunk = self.pending.remove(0);
                self.go(State::Login, Next::Send(chunk))
            }
            State::Login if upper.starts_with("A3 ") => self.verdict(&line[3..]),
            State::StartTls | State::Capability | State::Login if upper.starts_with("* ") => {
                Next::Read
            }
            State::Done => Next::temporary("IMAP server spoke after the login ended"),
            _ => {
                let why = format!("IMAP server answered {:?}", excerpt(line));
                self.go(State::Done, Next::temporary(why))
            }
        }
    }

    fn tls_started(&mut self) -> Next {
        self.capability()
    }

    fn logout(&self) -> &'static [u8] {
        b"A9 LOGOUT\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn login(user: &str, password: &[u8]) -> Login {
        Login {
            user: user.into(),
            password: Secret::new(password.to_vec()),
            authzid: None,
        }
    }

    fn sent(next: Next) -> Vec<u8> {
        match next {
            Next::Send(bytes) => bytes.to_vec(),
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn authenticate_plain_with_sasl_ir() {
        let mut d = ImapLogin::new(login("alice", b"pw"), false);
        assert_eq!(
            sent(d.line(b"* OK [CAPABILITY IMAP4rev1] ready")),
            b"A2 CAPABILITY\r\n"
        );
        assert_eq!(
            d.line(b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN"),
            Next::Read
        );
        assert_eq!(
            sent(d.line(b"A2 OK done")),
            b"A3 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n"
        );
        assert_eq!(d.line(b"* CAPABILITY IMAP4rev1"), Next::Read);
        assert_eq!(d.line(b"A3 OK Logged in"), Next::Done(Outcome::LoggedIn));
    }

    #[test]
    fn authenticate_plain_after_a_continuation() {
        let mut d = ImapLogin::new(login("alice", b"pw"), true);
        assert_eq!(sent(d.line(b"* OK ready")), b"A1 STARTTLS\r\n");
        assert_eq!(d.line(b"A1 OK begin"), Next::StartTls);
        assert_eq!(sent(d.tls_started()), b"A2 CAPABILITY\r\n");
        d.line(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN");
        assert_eq!(sent(d.line(b"A2 OK")), b"A3 AUTHENTICATE PLAIN\r\n");
        assert_eq!(sent(d.line(b"+ ")), b"AGFsaWNlAHB3\r\n");
        assert!(matches!(
            d.line(b"A3 NO [AUTHENTICATIONFAILED] Authentication failed."),
            Next::Done(Outcome::Refused(_))
        ));
    }

    #[test]
    fn login_quotes_and_literals() {
        let mut d = ImapLogin::new(login("alice", b"a \"q\" \\ b"), false);
        d.line(b"* OK");
        d.line(b"* CAPABILITY IMAP4rev1");
        assert_eq!(
            sent(d.line(b"A2 OK")),
            b"A3 LOGIN \"alice\" \"a \\\"q\\\" \\\\ b\"\r\n"
        );
        assert!(matches!(
            d.line(b"A3 NO [UNAVAILABLE] backend down"),
            Next::Done(Outcome::Temporary(_))
        ));

        let mut d = ImapLogin::new(login("alice", "pässword".as_bytes()), false);
        d.line(b"* OK");
        assert_eq!(sent(d.line(b"A2 OK")), b"A3 LOGIN \"alice\" {9}\r\n");
        assert_eq!(sent(d.line(b"+ go ahead")), "pässword\r\n".as_bytes());
        assert_eq!(d.line(b"A3 OK"), Next::Done(Outcome::LoggedIn));
    }

    #[test]
    fn what_cannot_be_judged_is_temporary() {
        let mut d = ImapLogin::new(login("alice", b"pw"), false);
        assert!(matches!(
            d.line(b"* PREAUTH hi"),
            Next::Done(Outcome::Temporary(_))
        ));
        let mut d = ImapLogin::new(login("alice", b"pw"), false);
        d.line(b"* OK");
        d.line(b"* CAPABILITY IMAP4rev1 LOGINDISABLED");
        assert!(matches!(
            d.line(b"A2 OK"),
            Next::Done(Outcome::Temporary(_))
        ));
        let mut d = ImapLogin::new(login("alice", b"pw"), false);
        d.line(b"* OK");
        d.line(b"A2 OK");
        assert!(matches!(
            d.line(b"* BYE shutting down"),
            Next::Done(Outcome::Temporary(_))
        ));
    }
}
