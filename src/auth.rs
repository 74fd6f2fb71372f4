//! Users and their stored credentials, and the [`Authenticator`] seam that SASL mechanisms,
//! POP3 USER/PASS and APOP verify through.
//!
//! SKELETON: the trait and verdict below are the fixed interface; the users-file store
//! (Dovecot passwd-file format) implements it.

use std::fmt;

/// The result of a credential check.
#[derive(Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials are right; the canonical user name.
    Ok(String),
    /// Unknown user or wrong secret (never say which).
    BadCredentials,
    /// The user exists but no stored form can serve this check; the reason is for the log.
    Unavailable(&'static str),
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok(u) => write!(f, "Ok({u})"),
            Verdict::BadCredentials => f.write_str("BadCredentials"),
            Verdict::Unavailable(w) => write!(f, "Unavailable({w})"),
        }
    }
}

/// Verifies credentials. Implementations compare secrets in constant time and never log them.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks a cleartext password (PLAIN, LOGIN, POP3 PASS).
    fn verify_password(&self, user: &str, password: &[u8]) -> Verdict;
    /// Checks a CRAM-MD5 response (RFC 2195): `digest` is the lowercase hex HMAC-MD5 of
    /// `challenge` keyed with the password.
    fn verify_cram_md5(&self, user: &str, challenge: &[u8], digest: &[u8]) -> Verdict;
    /// Checks a POP3 APOP digest (RFC 1939 §7): hex MD5 of `timestamp` followed by the password.
    fn verify_apop(&self, user: &str, timestamp: &[u8], digest: &[u8]) -> Verdict;
    /// The canonical name of an existing user, for recipient checks.
    fn lookup(&self, user: &str) -> Option<String>;
}
