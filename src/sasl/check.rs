//! The credential checks a mechanism asks for ([`Check`]) and their answers ([`Answer`]): the
//! round trip that keeps mechanisms sans-IO. A check names what to verify and against whom;
//! the session driver decides where it runs (inline when cheap, on the blocking pool for a
//! slow password hash, asynchronously for a call to an identity provider) and feeds the answer
//! back through [`Mechanism::resume`](super::Mechanism::resume).
//!
//! Secrets travel in [`Secret`] (zeroed on drop, never printed), so the `Debug` of a check is
//! safe to log.

use crate::auth::{ScramCredentials, ScramHash, Secret, Verdict};

use super::TokenError;

/// A credential to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A cleartext password (PLAIN, LOGIN; POP3 USER/PASS). A non-empty `authzid` (PLAIN's
    /// authorization identity) must name the same user, or the check fails (no proxying).
    /// Answered with [`Answer::Verdict`].
    Password {
        /// The user name as the client gave it.
        user: String,
        /// The password as the client sent it (after SASLprep where the mechanism has one).
        password: Secret,
        /// The authorization identity, if the client asked for one.
        authzid: Option<String>,
    },
    /// A CRAM-MD5 response (RFC 2195 §2): `digest` is the hex HMAC-MD5 of `challenge` keyed
    /// with the password. Answered with [`Answer::Verdict`].
    CramMd5 {
        /// The user name as the client gave it.
        user: String,
        /// The challenge the server sent.
        challenge: Vec<u8>,
        /// The client's hex digest.
        digest: Vec<u8>,
    },
    /// A POP3 APOP digest (RFC 1939 §7): hex MD5 of `timestamp` followed by the password.
    /// Answered with [`Answer::Verdict`].
    Apop {
        /// The user name as the client gave it.
        user: String,
        /// The greeting's timestamp.
        timestamp: Vec<u8>,
        /// The client's hex digest.
        digest: Vec<u8>,
    },
    /// The stored NT hash of `user` (NTLM, MS-NLMP §3.3.1), for the mechanism to check the
    /// response with. When `user` is no known name, `fallback` (the local part of a
    /// `user@our-domain` name) is tried. Answered with [`Answer::NtHash`].
    NtHash {
        /// The name the client gave.
        user: String,
        /// The name to try when `user` is unknown.
        fallback: Option<String>,
    },
    /// The SCRAM keys of `user` for `hash` (RFC 5802 §3), or a decoy when there are none, so
    /// that the exchange goes on to the proof without revealing an unknown user. A given
    /// `authzid` must name the same user. Answered with [`Answer::Scram`].
    Scram {
        /// The user name (SASLprep'd).
        user: String,
        /// The SCRAM hash.
        hash: ScramHash,
        /// The authorization identity, if the client asked for one.
        authzid: Option<String>,
    },
    /// An OAuth 2.0 bearer token (XOAUTH2, OAUTHBEARER). `claimed` is the user the client
    /// named, which must match the token's. Answered with [`Answer::Token`].
    Token {
        /// The bearer token.
        token: Secret,
        /// The user the client named, if any.
        claimed: Option<String>,
    },
}

impl Check {
    /// A short name of the kind of check, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Password { .. } => "password",
            Check::CramMd5 { .. } => "cram-md5",
            Check::Apop { .. } => "apop",
            Check::NtHash { .. } => "nt-hash",
            Check::Scram { .. } => "scram",
            Check::Token { .. } => "token",
        }
    }
}

/// The answer to a [`Check`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// For [`Check::Password`], [`Check::CramMd5`] and [`Check::Apop`].
    Verdict(Verdict),
    /// For [`Check::NtHash`]: the canonical user and the stored NT hash, or why not.
    NtHash(Result<(String, Secret), Verdict>),
    /// For [`Check::Scram`]: the keys to run the exchange with (a decoy's when `outcome` is an
    /// error), and the canonical user or the verdict the exchange must end with.
    Scram {
        /// The keys (salt, iterations, StoredKey, ServerKey).
        credentials: ScramCredentials,
        /// The canonical user, or the verdict a mock exchange ends with.
        outcome: Result<String, Verdict>,
    },
    /// For [`Check::Token`]: the canonical user, or why the token was refused.
    Token(Result<String, TokenError>),
}

impl Answer {
    /// The verdict of an answer for a check that expects one; any other answer (a driver
    /// bug) fails closed.
    pub fn into_verdict(self) -> Verdict {
        match self {
            Answer::Verdict(v) => v,
            _ => Verdict::Unavailable("credential check answered with the wrong kind"),
        }
    }
}
