//! The SASL engine shared by SMTP AUTH (RFC 4954) and POP3 AUTH (RFC 5034).
//!
//! A mechanism is a sans-IO state machine with a single [`Mechanism::step`]: decoded client
//! bytes in, a [`Step`] out. Base64 and the `334` / `+` framing belong to `smtp/` and `pop3/`.
//! Policy (which user exists, which password is right) lives behind [`Authenticator`].
//!
//! # Contract for mechanisms
//! - `step` MUST be called first with the initial response (`Some`) if the client sent one,
//!   or `None` if it did not; afterwards always with `Some(bytes)`.
//! - A mechanism MUST NOT panic on any input, and MUST bound what it buffers.
//! - A mechanism MUST compare secrets in constant time and MUST NOT log secrets.
//! - After `Success` or `Failure` the mechanism MUST NOT be stepped again.
//! - Client cancellation (`*`) is handled by the framing layer, not by mechanisms.

pub mod cram_md5;
pub mod login;
pub mod plain;

use std::fmt;
use std::sync::Arc;

use crate::auth::Authenticator;

/// Largest decoded SASL message a mechanism accepts (RFC 4954 §4 lets servers bound this).
pub const MAX_TOKEN_LEN: usize = 12 * 1024;

/// The outcome of one [`Mechanism::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (raw bytes; the framing layer base64-encodes it).
    Challenge(Vec<u8>),
    /// Authentication succeeded as this identity.
    Success(Identity),
    /// Authentication failed.
    Failure(Failure),
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The canonical user name (the users-file key; also the mailbox name).
    pub user: String,
}

/// Why a mechanism failed; the framing layer maps each to a wire reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The client message could not be parsed (SMTP 501 5.5.2).
    Malformed(&'static str),
    /// Wrong user or password (SMTP 535 5.7.8).
    BadCredentials,
    /// The user exists but nothing stored for them can serve this mechanism (SMTP 535 5.7.8,
    /// with a log line naming the reason).
    Unavailable(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed(why) => write!(f, "malformed client message: {why}"),
            Failure::BadCredentials => f.write_str("invalid credentials"),
            Failure::Unavailable(why) => write!(f, "mechanism unavailable for user: {why}"),
        }
    }
}

/// A server-side SASL mechanism in progress.
pub trait Mechanism: Send + Sync {
    /// Feeds one decoded client message (or `None`: no initial response) and returns what to
    /// do next. See the module docs for the contract.
    fn step(&mut self, input: Option<&[u8]>) -> Step;
}

/// What a mechanism may use besides the client's bytes; supplied by the session.
#[derive(Clone)]
pub struct Context {
    /// Verifies credentials.
    pub auth: Arc<dyn Authenticator>,
    /// The server's host name, for challenges.
    pub hostname: String,
    /// A fresh unique token for this attempt (random and time based, made by the session),
    /// used in challenges such as CRAM-MD5's `<token@hostname>`.
    pub nonce: String,
}

/// A registry entry: one per mechanism.
pub struct Descriptor {
    /// The IANA name, upper case.
    pub name: &'static str,
    /// Whether the client sends the password in the clear (PLAIN, LOGIN): offered only over
    /// TLS or to `insecure_plaintext_networks`.
    pub plaintext: bool,
    /// Starts a new exchange.
    pub start: fn(&Context) -> Box<dyn Mechanism>,
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("name", &self.name)
            .field("plaintext", &self.plaintext)
            .finish()
    }
}

/// Every mechanism this build knows.
pub static MECHANISMS: &[Descriptor] = &[
    Descriptor {
        name: "PLAIN",
        plaintext: true,
        start: plain::start,
    },
    Descriptor {
        name: "LOGIN",
        plaintext: true,
        start: login::start,
    },
    Descriptor {
        name: "CRAM-MD5",
        plaintext: false,
        start: cram_md5::start,
    },
];

/// Looks a mechanism up by name, case-insensitively.
pub fn find(name: &str) -> Option<&'static Descriptor> {
    MECHANISMS
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
}
