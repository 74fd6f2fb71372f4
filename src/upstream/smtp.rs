//! The SMTP login dialogue (RFC 5321 EHLO, RFC 3207 STARTTLS, RFC 4954 AUTH): the greeting,
//! EHLO, STARTTLS and EHLO again if asked, then AUTH PLAIN (initial response when the line
//! fits in 512 octets) or AUTH LOGIN, whichever the server offers. `235` logs in; `535` and
//! other 5xx refuse; a 4xx (RFC 4954's `454 4.7.0`) is temporary.

use zeroize::Zeroizing;

use super::{Dialogue, Login, Next, Outcome, excerpt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Done,
}

/// Logs in to an SMTP server.
pub struct SmtpLogin {
    login: Login,
    helo: String,
    starttls: bool,
    tls_up: bool,
    state: State,
    plain: bool,
    login_mech: bool,
    starttls_offered: bool,
    /// What to send at each `334` challenge, in order.
    pending: Vec<Zeroizing<Vec<u8>>>,
}

/// The reply code of a line and whether it is the last line of its reply.
fn code(line: &[u8]) -> Option<(u16, bool)> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = std::str::from_utf8(digits).ok()?.parse().ok()?;
    match line.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

fn b64_line(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    use base64::Engine;
    let mut line = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes(),
    );
    line.extend_from_slice(b"\r\n");
    line
}

impl SmtpLogin {
    /// A dialogue logging in with `login`, greeting as `helo`, after STARTTLS when
    /// `starttls`.
    pub fn new(login: Login, helo: &str, starttls: bool) -> SmtpLogin {
        SmtpLogin {
            login,
            helo: helo.to_owned(),
            starttls,
            tls_up: false,
            state: State::Greeting,
            plain: false,
            login_mech: false,
            starttls_offered: false,
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

    fn ehlo(&mut self) -> Next {
        self.plain = false;
        self.login_mech = false;
        self.starttls_offered = false;
        let line = format!("EHLO {}\r\n", self.helo);
        self.go(State::Ehlo, Next::send(line))
    }

    fn credentials(&mut self) -> Next {
        if self.plain || self.login.authzid.is_some() {
            let b64 = self.login.plain_b64();
            let mut line = Zeroizing::new(b"AUTH PLAIN ".to_vec());
            // RFC 4954 §4: a command line longer than 512 octets sends the response after
            // an empty challenge instead.
            if line.len() + b64.len() + 2 <= 512 {
                line.extend_from_slice(b64.as_bytes());
            } else {
                line.truncate(b"AUTH PLAIN".len());
                let mut answer = Zeroizing::new(b64.as_bytes().to_vec());
                answer.extend_from_slice(b"\r\n");
                self.pending.push(answer);
            }
            line.extend_from_slice(b"\r\n");
            self.go(State::Auth, Next::Send(line))
        } else if self.login_mech {
            self.pending = vec![
                b64_line(self.login.user.as_bytes()),
                b64_line(self.login.password.expose()),
            ];
            self.go(State::Auth, Next::send("AUTH LOGIN\r\n"))
        } else {
            let why = "SMTP server offers neither AUTH PLAIN nor AUTH LOGIN here";
            self.go(State::Done, Next::temporary(why))
        }
    }
}

impl Dialogue for SmtpLogin {
    fn line(&mut self, line: &[u8]) -> Next {
        let Some((code, last)) = code(line) else {
            let why = format!("SMTP server sent {:?}", excerpt(line));
            return self.go(State::Done, Next::temporary(why));
        };
        match self.state {
            _ if !last && self.state != State::Ehlo => Next::Read,
            State::Greeting if code == 220 => self.ehlo(),
            State::Ehlo if code == 250 => {
                let text = String::from_utf8_lossy(&line[4.min(line.len())..]).to_ascii_uppercase();
                let mut words = text.split_ascii_whitespace();
                match words.next() {
                    Some("AUTH") => {
                        for w in words {
                            self.plain |= w == "PLAIN";
                            self.login_mech |= w == "LOGIN";
                        }
                    }
                    Some("STARTTLS") => self.starttls_offered = true,
                    _ => {}
                }
                if !last {
                    Next::Read
                } else if self.starttls && !self.tls_up {
                    if self.starttls_offered {
                        self.go(State::StartTls, Next::send("STARTTLS\r\n"))
                    } else {
                        let why = "SMTP server does not offer STARTTLS";
                        self.go(State::Done, Next::temporary(why))
                    }
                } else {
                    self.credentials()
                }
            }
            State::StartTls if code == 220 => {
                self.tls_up = true;
                self.go(State::StartTls, Next::StartTls)
            }
            State::Auth if code == 334 && !self.pending.is_empty() => {
                let chunk = self.pending.remove(0);
                self.go(State::Auth, Next::Send(chunk))
            }
            State::Auth if code == 235 => self.go(State::Done, Next::Done(Outcome::LoggedIn)),
            State::Auth if (500..600).contains(&code) => {
                self.go(State::Done, Next::Done(Outcome::Refused(excerpt(line))))
            }
            State::Done => Next::temporary("SMTP server spoke after the login ended"),
            _ if !last => Next::Read,
            _ => {
                let why = format!("SMTP server answered {:?}", excerpt(line));
                self.go(State::Done, Next::temporary(why))
            }
        }
    }

    fn tls_started(&mut self) -> Next {
        self.ehlo()
    }

    fn logout(&self) -> &'static [u8] {
        b"QUIT\r\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;

    fn login() -> Login {
        Login {
            user: "alice".into(),
            password: Secret::new(b"pw".to_vec()),
            authzid: None,
        }
    }

    fn sent(next: Next) -> String {
        match next {
            Next::Send(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn auth_plain_after_starttls() {
        let mut d = SmtpLogin::new(login(), "gw.example", true);
        assert_eq!(d.line(b"220-old.example"), Next::Read);
        assert_eq!(
            sent(d.line(b"220 old.example ESMTP")),
            "EHLO gw.example\r\n"
        );
        assert_eq!(d.line(b"250-old.example"), Next::Read);
        assert_eq!(d.line(b"250-AUTH PLAIN LOGIN"), Next::Read);
        assert_eq!(sent(d.line(b"250 STARTTLS")), "STARTTLS\r\n");
        assert_eq!(d.line(b"220 go ahead"), Next::StartTls);
        assert_eq!(sent(d.tls_started()), "EHLO gw.example\r\n");
        d.line(b"250-old.example");
        assert_eq!(
            sent(d.line(b"250 AUTH LOGIN PLAIN")),
            "AUTH PLAIN AGFsaWNlAHB3\r\n"
        );
        assert_eq!(
            d.line(b"235 2.7.0 Authentication successful"),
            Next::Done(Outcome::LoggedIn)
        );
    }

    #[test]
    fn auth_login_and_its_refusal() {
        let mut d = SmtpLogin::new(login(), "gw", false);
        d.line(b"220 hi");
        assert_eq!(sent(d.line(b"250 AUTH LOGIN")), "AUTH LOGIN\r\n");
        assert_eq!(sent(d.line(b"334 VXNlcm5hbWU6")), "YWxpY2U=\r\n");
        assert_eq!(sent(d.line(b"334 UGFzc3dvcmQ6")), "cHc=\r\n");
        assert!(matches!(
            d.line(b"535 5.7.8 Authentication credentials invalid"),
            Next::Done(Outcome::Refused(_))
        ));
    }

    #[test]
    fn what_cannot_be_judged_is_temporary() {
        let temporary = |lines: &[&[u8]], starttls: bool| {
            let mut d = SmtpLogin::new(login(), "gw", starttls);
            let mut last = Next::Read;
            for l in lines {
                last = d.line(l);
            }
            matches!(last, Next::Done(Outcome::Temporary(_)))
        };
        assert!(temporary(&[b"554 no service"], false));
        assert!(temporary(&[b"220 hi", b"250 SIZE 1000"], false));
        assert!(temporary(&[b"220 hi", b"250 AUTH PLAIN"], true));
        assert!(temporary(
            &[b"220 hi", b"250 AUTH PLAIN", b"454 4.7.0 try later"],
            false
        ));
        assert!(temporary(&[b"220 hi", b"nonsense"], false));
    }
}
