//! The scenarios: one lockstep client session each, every reply code checked.
//!
//! - `relay`: connect, EHLO, MAIL, RCPT, DATA (1 KiB), QUIT (RFC 5321 §3.3).
//! - `auth-plain`, `auth-login`, `auth-cram`, `auth-ntlm`: the same with AUTH first (RFC 4954;
//!   PLAIN RFC 4616, LOGIN draft-murchison-sasl-login, CRAM-MD5 RFC 2195, NTLMv2 MS-NLMP /
//!   MS-SMTPNTLM).
//! - `pop3`: USER, PASS, STAT, QUIT (RFC 1939).
//! - `pop3-uidl`: USER, PASS, STAT, UIDL (the whole listing, one line per message, checked
//!   against STAT's count), QUIT: what a "leave mail on the server" client does each time.
//! - `pbs`: a POP3 login, then a relay session from the same address (POP-before-SMTP).
//!
//! TLS applies to every connection of a session: implicit (RFC 8314) or upgraded with
//! STARTTLS (RFC 3207) / STLS (RFC 2595).

use std::net::{IpAddr, SocketAddr};

use mailgate_testkit::sasl;

use crate::conn::{Conn, Error, Tls};

/// A scenario name as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Relay without authentication.
    Relay,
    /// AUTH PLAIN, then relay.
    AuthPlain,
    /// AUTH LOGIN, then relay.
    AuthLogin,
    /// AUTH CRAM-MD5, then relay.
    AuthCram,
    /// AUTH NTLM (NTLMv2 response), then relay.
    AuthNtlm,
    /// POP3 USER, PASS, STAT, QUIT.
    Pop3,
    /// POP3 USER, PASS, STAT, UIDL, QUIT.
    Pop3Uidl,
    /// POP3 login, then relay from the same address.
    Pbs,
}

/// How connections use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Plaintext.
    None,
    /// STARTTLS (SMTP) or STLS (POP3) after the greeting.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// Everything a session needs; shared by all workers.
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// TLS use.
    pub tls_mode: TlsMode,
    /// The TLS client, when `tls_mode` is not `None`.
    pub tls: Option<Tls>,
    /// The SMTP server.
    pub smtp: SocketAddr,
    /// The POP3 server (pop3 and pbs scenarios).
    pub pop3: SocketAddr,
    /// User names are `format!("{prefix}{i:04}")` for i below `users`.
    pub user_prefix: String,
    /// Number of users.
    pub users: u64,
    /// Every user's password.
    pub password: String,
    /// The sender's domain.
    pub sender_domain: String,
    /// The recipient of every message.
    pub rcpt: String,
    /// The EHLO name.
    pub helo: String,
    /// The message, dot-stuffed, ending with CRLF.CRLF.
    pub message: Vec<u8>,
}

impl Plan {
    fn user(&self, n: u64) -> String {
        format!("{}{:04}", self.user_prefix, n % self.users.max(1))
    }

    /// Runs session number `n` from `source`.
    pub async fn run(&self, n: u64, source: IpAddr) -> Result<(), Error> {
        let user = self.user(n);
        match self.scenario {
            Scenario::Relay => self.smtp_session(source, &user, None).await,
            Scenario::AuthPlain => self.smtp_session(source, &user, Some(Auth::Plain)).await,
            Scenario::AuthLogin => self.smtp_session(source, &user, Some(Auth::Login)).await,
            Scenario::AuthCram => self.smtp_session(source, &user, Some(Auth::Cram)).await,
            Scenario::AuthNtlm => self.smtp_session(source, &user, Some(Auth::Ntlm)).await,
            Scenario::Pop3 => self.pop3_session(source, &user, false).await,
            Scenario::Pop3Uidl => self.pop3_session(source, &user, true).await,
            Scenario::Pbs => {
                self.pop3_session(source, &user, false).await?;
                self.smtp_session(source, &user, None).await
            }
        }
    }

    /// The target the idle mode connects to.
    pub fn idle_target(&self) -> SocketAddr {
        match self.scenario {
            Scenario::Pop3 | Scenario::Pop3Uidl => self.pop3,
            _ => self.smtp,
        }
    }

    /// Connects and reads the greeting, for the idle mode; the caller holds the connection.
    pub async fn open_idle(&self, source: IpAddr) -> Result<Conn, Error> {
        let implicit = (self.tls_mode == TlsMode::Implicit)
            .then_some(self.tls.as_ref())
            .flatten();
        let mut conn = Conn::connect(source, self.idle_target(), implicit).await?;
        match self.scenario {
            Scenario::Pop3 | Scenario::Pop3Uidl => conn.pop_ok("greeting").await.map(|_| ())?,
            _ => conn.expect("greeting", 220).await.map(|_| ())?,
        }
        Ok(conn)
    }

    async fn open(&self, target: SocketAddr, source: IpAddr) -> Result<Conn, Error> {
        let implicit = match self.tls_mode {
            TlsMode::Implicit => self.tls.as_ref(),
            _ => None,
        };
        Conn::connect(source, target, implicit).await
    }

    fn starttls(&self) -> Option<&Tls> {
        match self.tls_mode {
            TlsMode::Starttls => self.tls.as_ref(),
            _ => None,
        }
    }

    async fn smtp_session(
        &self,
        source: IpAddr,
        user: &str,
        auth: Option<Auth>,
    ) -> Result<(), Error> {
        let mut c = self.open(self.smtp, source).await?;
        c.expect("greeting", 220).await?;
        let ehlo = format!("EHLO {}", self.helo);
        c.command("EHLO", &ehlo, 250).await?;
        if let Some(tls) = self.starttls() {
            c.command("STARTTLS", "STARTTLS", 220).await?;
            c = c.upgrade(tls).await?;
            c.command("EHLO after TLS", &ehlo, 250).await?;
        }
        if let Some(auth) = auth {
            self.authenticate(&mut c, user, auth).await?;
        }
        let from = format!("MAIL FROM:<{user}@{}>", self.sender_domain);
        c.command("MAIL", &from, 250).await?;
        c.command("RCPT", &format!("RCPT TO:<{}>", self.rcpt), 250)
            .await?;
        c.command("DATA", "DATA", 354).await?;
        c.send("message", &self.message).await?;
        c.expect("end of data", 250).await?;
        c.command("QUIT", "QUIT", 221).await?;
        Ok(())
    }

    async fn authenticate(&self, c: &mut Conn, user: &str, auth: Auth) -> Result<(), Error> {
        let pass = &self.password;
        match auth {
            Auth::Plain => {
                let token = sasl::plain_b64(user, pass);
                c.command("AUTH PLAIN", &format!("AUTH PLAIN {token}"), 235)
                    .await?;
            }
            Auth::Login => {
                let [user_b64, pass_b64] = sasl::login_b64(user, pass);
                c.command("AUTH LOGIN", "AUTH LOGIN", 334).await?;
                c.command("LOGIN user", &user_b64, 334).await?;
                c.command("LOGIN password", &pass_b64, 235).await?;
            }
            Auth::Cram => {
                let challenge = c.command("AUTH CRAM-MD5", "AUTH CRAM-MD5", 334).await?;
                let answer = sasl::cram_md5_b64(user, pass.as_bytes(), challenge.trim())
                    .map_err(Error::Other)?;
                c.command("CRAM-MD5 response", &answer, 235).await?;
            }
            Auth::Ntlm => {
                let negotiate = format!("AUTH NTLM {}", sasl::ntlm_negotiate_b64());
                let challenge = c.command("AUTH NTLM", &negotiate, 334).await?;
                let creds = sasl::ntlm_credentials(user, "", pass);
                let answer =
                    sasl::ntlm_authenticate_b64(challenge.trim(), &creds).map_err(Error::Other)?;
                c.command("NTLM authenticate", &answer, 235).await?;
            }
        }
        Ok(())
    }

    async fn pop3_session(&self, source: IpAddr, user: &str, uidl: bool) -> Result<(), Error> {
        let mut c = self.open(self.pop3, source).await?;
        c.pop_ok("greeting").await?;
        if let Some(tls) = self.starttls() {
            c.pop_command("STLS", "STLS").await?;
            c = c.upgrade(tls).await?;
        }
        c.pop_command("USER", &format!("USER {user}")).await?;
        c.pop_command("PASS", &format!("PASS {}", self.password))
            .await?;
        let stat = c.pop_command("STAT", "STAT").await?;
        if uidl {
            let count: usize =
                stat.split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or(Error::Malformed {
                        step: "STAT",
                        got: stat.clone(),
                    })?;
            c.pop_command("UIDL", "UIDL").await?;
            let mut lines = 0;
            while c.line("UIDL listing").await? != "." {
                lines += 1;
            }
            if lines != count {
                return Err(Error::Unexpected {
                    step: "UIDL",
                    expected: format!("{count} lines"),
                    got: format!("{lines} lines"),
                });
            }
        }
        c.pop_command("QUIT", "QUIT").await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Auth {
    Plain,
    Login,
    Cram,
    Ntlm,
}

/// A 1 KiB message (headers and body), dot-stuffed and terminated, for DATA.
pub fn message(from: &str, rcpt: &str) -> Vec<u8> {
    let mut text = format!(
        "From: <{from}>\r\nTo: <{rcpt}>\r\nSubject: load test\r\n\
         Message-ID: <load@mailgate.bench>\r\n\r\n"
    );
    let mut n = 0;
    while text.len() < 1024 - 40 {
        n += 1;
        text.push_str(&format!(
            "line {n:03} of the load-test message body .........\r\n"
        ));
    }
    text.truncate(1024 - 2);
    // Keep the last line whole: cut back to the last CRLF, then pad with one short line.
    if let Some(end) = text.rfind("\r\n") {
        text.truncate(end + 2);
    }
    while text.len() < 1024 - 2 {
        text.push('x');
    }
    text.push_str("\r\n");
    let mut out = text.into_bytes();
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_kib_and_terminated() {
        let m = message("a@example.test", "b@example.org");
        assert_eq!(m.len(), 1024 + 3);
        assert!(m.ends_with(b"\r\n.\r\n"));
        // No line may start with a dot (it would need stuffing) or exceed 998 octets.
        for line in m[..1024].split(|&b| b == b'\n') {
            assert!(!line.starts_with(b"."), "{line:?}");
            assert!(line.len() <= 1000);
        }
    }
}
