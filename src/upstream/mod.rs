//! The old mail server mailgate stands in front of during a migration (not the smarthost,
//! which is `relay/`): passwords of users who have not moved yet are checked by logging in to
//! it ([`Checker`], for `[auth.upstream]`).
//!
//! - `pop3.rs`, `imap.rs`, `smtp.rs`: sans-IO login dialogues, one per protocol, behind the
//!   [`Dialogue`] trait: server lines in, the next command (or STARTTLS, or the outcome) out.
//!   Each parses only what a login needs, within [`MAX_LINE`] and [`MAX_LINES`].
//! - `conn.rs`: the thin async end: TCP, implicit TLS or STARTTLS, the dialogue run under one
//!   deadline, the logout.
//! - `ldap.rs`: `[auth.ldap]`, the same check as a search-then-bind in the old box's
//!   directory.
//! - `check.rs`: the [`Checker`] the session driver's verification path calls: the caches,
//!   the concurrency limit, the temporary-failure log and metric.
//! - `proxy.rs`: `[pop3.proxy]`, mailboxes not moved yet served from the old server: the
//!   upstream login and the sans-IO parts of the relay.
//!
//! Threat model: the old server is trusted to judge passwords, not to behave. Its lines are
//! bounded, its silence ends at the deadline, and nothing it sends is logged beyond a short,
//! printable excerpt. A password never travels to it with a CR, LF or NUL in it (which would
//! smuggle a second command); the check fails closed instead.

mod cache;
mod check;
mod conn;
mod imap;
pub mod ldap;
mod pop3;
pub mod proxy;
mod smtp;

use zeroize::Zeroizing;

use crate::auth::Secret;
use crate::config::{OldProtocol, OldServer, UpstreamTls};

pub use check::Checker;
pub use conn::{Connection, Error as ConnError};

/// Longest line accepted from the old server (RFC 5321 §4.5.3.1.5 allows 512 octets for an
/// SMTP reply line; IMAP capability lines run longer, so a generous bound).
pub const MAX_LINE: usize = 8192;

/// Most lines one login dialogue reads (greeting, capabilities, replies): a server that talks
/// on past this is not logging anyone in.
pub const MAX_LINES: usize = 256;

/// The credentials a dialogue logs in with.
#[derive(Debug, Clone)]
pub struct Login {
    /// The name to log in as (the user, or a master user's login name).
    pub user: String,
    /// The password.
    pub password: Secret,
    /// An authorization identity for SASL PLAIN (a master user acting for a user).
    pub authzid: Option<String>,
}

impl Login {
    /// Whether these credentials can be sent without smuggling a command: no CR, LF or NUL
    /// anywhere, and a non-empty user.
    pub fn sendable(&self) -> bool {
        let clean = |b: &[u8]| !b.iter().any(|c| matches!(c, b'\r' | b'\n' | 0));
        !self.user.is_empty()
            && clean(self.user.as_bytes())
            && clean(self.password.expose())
            && self.authzid.as_deref().is_none_or(|a| clean(a.as_bytes()))
    }

    /// The SASL PLAIN message (RFC 4616): authzid NUL authcid NUL password, base64-encoded.
    fn plain_b64(&self) -> Zeroizing<String> {
        use base64::Engine;
        let mut raw = Zeroizing::new(Vec::new());
        raw.extend_from_slice(self.authzid.as_deref().unwrap_or_default().as_bytes());
        raw.push(0);
        raw.extend_from_slice(self.user.as_bytes());
        raw.push(0);
        raw.extend_from_slice(self.password.expose());
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*raw))
    }
}

/// How a login ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The old server accepted the credentials.
    LoggedIn,
    /// The old server refused them: wrong user or password.
    Refused(String),
    /// No answer on the credentials: the server is down, slow, busy, or spoke something
    /// this side does not follow. The text says what, for the log.
    Temporary(String),
}

/// What the driver does next for a dialogue.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write this (a whole command line, CRLF included), then read a line.
    Send(Zeroizing<Vec<u8>>),
    /// Read a line.
    Read,
    /// Start TLS on the connection now, then call [`Dialogue::tls_started`].
    StartTls,
    /// The login is over.
    Done(Outcome),
}

impl Next {
    fn send(line: impl Into<Vec<u8>>) -> Next {
        Next::Send(Zeroizing::new(line.into()))
    }

    fn temporary(why: impl Into<String>) -> Next {
        Next::Done(Outcome::Temporary(why.into()))
    }
}

/// A login dialogue: the server's lines in (without their CRLF), the next step out.
pub trait Dialogue: Send {
    /// Takes one line from the server.
    fn line(&mut self, line: &[u8]) -> Next;
    /// TLS is up after [`Next::StartTls`]; the dialogue goes on.
    fn tls_started(&mut self) -> Next;
    /// The command that ends the session politely (sent after a login, best effort).
    fn logout(&self) -> &'static [u8];
}

/// The login dialogue for `server`'s protocol, with `login` (SMTP greets as `helo`);
/// STARTTLS first when the server is configured for it.
pub fn dialogue(server: &OldServer, login: Login, helo: &str) -> Box<dyn Dialogue> {
    let starttls = server.tls == UpstreamTls::Starttls;
    match server.protocol {
        OldProtocol::Pop3 => Box::new(pop3::Pop3Login::new(login, starttls)),
        OldProtocol::Imap => Box::new(imap::ImapLogin::new(login, starttls)),
        OldProtocol::Smtp => Box::new(smtp::SmtpLogin::new(login, helo, starttls)),
    }
}

/// A short, printable excerpt of a server line for the log: at most 120 characters, every
/// control or non-ASCII byte shown as `?`.
pub fn excerpt(line: &[u8]) -> String {
    line.iter()
        .take(120)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}
