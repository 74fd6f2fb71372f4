//! `[pop3.proxy]`: a mailbox that has not moved yet is served from the old server. After the
//! client's login succeeds at the gateway, the gateway logs in to the old server's POP3 (with
//! the client's own password when the login carried one, else as the master user) and relays
//! the transaction commands. This file holds the login side ([`Pop3Proxy::open`]) and the
//! sans-IO pieces of the relay: which client commands go upstream and in what form
//! ([`forward`]), and where a multi-line answer ends ([`MultiLine`]). The relay loop itself is
//! `pop3/proxy.rs`, on the session driver.

use crate::auth::Secret;
use crate::config::{MasterLogin, Pop3Proxy as Config, UpstreamTls};
use crate::pop3::command::Command;

use super::conn::{self, Connection};
use super::pop3::Pop3Login;
use super::{Login, Outcome};

/// The old server's POP3, ready to open proxied sessions.
pub struct Pop3Proxy {
    config: Config,
    tls: tokio_rustls::TlsConnector,
    master: Option<(String, Secret)>,
}

impl Pop3Proxy {
    /// Loads the TLS settings and the master password. Fails with a message for the admin.
    pub fn new(config: &Config) -> Result<Pop3Proxy, String> {
        let master = match &config.master {
            Some((user, file)) => {
                let text = std::fs::read(file).map_err(|e| {
                    format!("[pop3.proxy] master_password_file {}: {e}", file.display())
                })?;
                let end = text
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |i| i + 1);
                if end == 0 {
                    return Err(format!(
                        "[pop3.proxy] master_password_file {} is empty",
                        file.display()
                    ));
                }
                Some((user.clone(), Secret::new(text[..end].to_vec())))
            }
            None => None,
        };
        Ok(Pop3Proxy {
            tls: conn::tls_connector(&config.server).map_err(|e| format!("[pop3.proxy] {e}"))?,
            config: config.clone(),
            master,
        })
    }

    /// How long the old server may take to answer one command.
    pub fn timeout(&self) -> std::time::Duration {
        self.config.server.timeout
    }

    /// Logs in to the old server as `user`: with `password` (the client's) when given, then,
    /// if that is refused or there is none, as the master user when one is configured.
    pub async fn open(
        &self,
        user: &str,
        password: Option<&Secret>,
    ) -> (Option<Connection>, Outcome) {
        let mut outcome = Outcome::Temporary(
            "the login carried no password and [pop3.proxy] has no master user".into(),
        );
        if let Some(password) = password {
            let login = Login {
                user: user.to_owned(),
                password: password.clone(),
                authzid: None,
            };
            let (conn, o) = self.login(login).await;
            // Logged in, or the old server cannot answer (the master would fare no better).
            if conn.is_some() || matches!(o, Outcome::Temporary(_)) {
                return (conn, o);
            }
            outcome = o;
        }
        let Some((master, secret)) = &self.master else {
            return (None, outcome);
        };
        let login = match self.config.master_login {
            MasterLogin::DovecotStar => Login {
                user: format!("{user}*{master}"),
                password: secret.clone(),
                authzid: None,
            },
            MasterLogin::Authzid => Login {
                user: master.clone(),
                password: secret.clone(),
                authzid: Some(user.to_owned()),
            },
        };
        self.login(login).await
    }

    async fn login(&self, login: Login) -> (Option<Connection>, Outcome) {
        if !login.sendable() {
            return (None, Outcome::Refused("credentials cannot be sent".into()));
        }
        let starttls = self.config.server.tls == UpstreamTls::Starttls;
        let dialogue = Box::new(Pop3Login::new(login, starttls));
        Connection::login(&self.config.server, &self.tls, dialogue).await
    }
}

/// What a client command becomes upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// Send this line (rebuilt from the parsed command, never the client's bytes); the answer
    /// is multi-line when it starts with `+OK` and `multiline` is set.
    Send {
        /// The command line, CRLF included.
        line: String,
        /// Whether a `+OK` answer goes on until the `.` line.
        multiline: bool,
    },
    /// QUIT: send it, relay the answer, end the session.
    Quit,
    /// Not a transaction command: the gateway answers it itself.
    Local,
}

/// The upstream form of a client command in the TRANSACTION state (RFC 1939 §5, §7; CAPA
/// from RFC 2449).
pub fn forward(cmd: &Command) -> Forward {
    let send = |line: String, multiline: bool| Forward::Send {
        line: line + "\r\n",
        multiline,
    };
    match cmd {
        Command::Stat => send("STAT".into(), false),
        Command::List(None) => send("LIST".into(), true),
        Command::List(Some(n)) => send(format!("LIST {n}"), false),
        Command::Uidl(None) => send("UIDL".into(), true),
        Command::Uidl(Some(n)) => send(format!("UIDL {n}"), false),
        Command::Retr(n) => send(format!("RETR {n}"), true),
        Command::Top(n, lines) => send(format!("TOP {n} {lines}"), true),
        Command::Dele(n) => send(format!("DELE {n}"), false),
        Command::Rset => send("RSET".into(), false),
        Command::Noop => send("NOOP".into(), false),
        Command::Capa => send("CAPA".into(), true),
        Command::Quit => Forward::Quit,
        _ => Forward::Local,
    }
}

/// Finds the end of a multi-line answer (RFC 1939 §3: a line holding only `.`), fed the bytes
/// after its first line as they arrive. A bare LF ends a line as CRLF does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MultiLine {
    state: Scan,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Scan {
    #[default]
    LineStart,
    Dot,
    DotCr,
    Mid,
}

impl MultiLine {
    /// Scans `bytes`; `Some(n)` when the terminating line ends at `bytes[n - 1]`.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (Scan::Dot | Scan::DotCr, b'\n') => {
                    self.state = Scan::LineStart;
                    return Some(i + 1);
                }
                (_, b'\n') => Scan::LineStart,
                (Scan::LineStart, b'.') => Scan::Dot,
                (Scan::Dot, b'\r') => Scan::DotCr,
                _ => Scan::Mid,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_is_found_however_the_bytes_split() {
        let answer = b"line one\r\n..stuffed\r\n.\r\nnext";
        for split in 0..answer.len() {
            let mut m = MultiLine::default();
            let (a, b) = answer.split_at(split);
            let end = m.feed(a).or_else(|| m.feed(b).map(|n| n + a.len()));
            assert_eq!(end, Some(answer.len() - 4), "split at {split}");
        }
        let mut m = MultiLine::default();
        assert_eq!(m.feed(b".\r\n"), Some(3), "an empty listing");
        let mut m = MultiLine::default();
        assert_eq!(m.feed(b"a.\r\n. \r\n.x\r\n"), None);
        assert_eq!(m.feed(b".\n"), Some(2), "a bare LF");
    }

    #[test]
    fn only_transaction_commands_go_upstream_rebuilt() {
        assert_eq!(
            forward(&Command::Top(2, 10)),
            Forward::Send {
                line: "TOP 2 10\r\n".into(),
                multiline: true
            }
        );
        assert_eq!(
            forward(&Command::Uidl(Some(3))),
            Forward::Send {
                line: "UIDL 3\r\n".into(),
                multiline: false
            }
        );
        assert_eq!(forward(&Command::Quit), Forward::Quit);
        assert_eq!(forward(&Command::Stls), Forward::Local);
        assert_eq!(forward(&Command::User("x".into())), Forward::Local);
    }
}
