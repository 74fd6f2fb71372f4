//! Users and their stored credentials, and the [`Authenticator`] seam that SASL mechanisms,
//! POP3 USER/PASS and APOP verify through.
//!
//! [`UserStore`] reads a Dovecot passwd-file: `user:password[:uid:gid:gecos:home:shell:extra]`
//! lines, `#` comments and blank lines. User names are case-insensitive (kept lower-case). A
//! user may appear on several lines, each carrying one stored form of the same password
//! (`scheme.rs` lists the schemes); the forms are merged. Which forms serve which check:
//!
//! | check                                   | stored forms that serve it |
//! |-----------------------------------------|----------------------------|
//! | cleartext password (PLAIN, LOGIN, PASS) | any                        |
//! | CRAM-MD5 (RFC 2195 §2)                  | `{PLAIN}` or `{CRAM-MD5}`  |
//! | APOP (RFC 1939 §7)                      | `{PLAIN}`                  |
//! | NTLM (MS-NLMP §3.3.1, [`UserStore::nt_hash`]) | `{PLAIN}` or `{NTLM}` |
//! | SCRAM-SHA-1(-PLUS) (RFC 5802)           | `{PLAIN}` or `{SCRAM-SHA-1}` |
//! | SCRAM-SHA-256(-PLUS) (RFC 7677)         | `{PLAIN}` or `{SCRAM-SHA-256}` |
//! | DIGEST-MD5 (RFC 2831)                   | `{PLAIN}`, or `{DIGEST-MD5}` made for the user name as stored and the configured realm |
//!
//! Secrets are compared in constant time, held in [`Secret`] (zeroed on drop, never printed),
//! and an unknown user costs about as much as a known one. This file holds the scheme table,
//! the [`Authenticator`] seam and the secret types; `store.rs` the [`UserStore`] itself (loading,
//! reloading, the checks answered from its forms). `file.rs` owns the on-disk side:
//! line syntax, user-name rules and the atomic rewrite behind `mailgate passwd`; `scram.rs` the
//! SCRAM keys; `derive.rs` the `derive_on_login` upgrade, which adds the forms the enabled
//! mechanisms need after a successful cleartext login. The users map sits behind a lock so that
//! such an upgrade is seen by later logins without a restart.

mod deferred;
mod derive;
pub(crate) mod digest_md5;
mod file;
mod legacy;
pub mod principal;
mod scheme;
pub mod scram;
mod store;

use std::fmt;

use zeroize::Zeroizing;

pub use deferred::DeferredDerivation;
pub use file::{remove_user, set_user};
pub use store::{
    Error, MAX_FILE_BYTES, MAX_FORMS_PER_USER, MAX_LINE_LEN, MAX_USER_LEN, MAX_USERS, Probe,
    Problem, UserStore, UsersStamp, stored_forms, users_file_stamp,
};

const CRAM_UNAVAILABLE: &str = "CRAM-MD5 needs a {PLAIN} or {CRAM-MD5} stored form";
const APOP_UNAVAILABLE: &str = "APOP needs a {PLAIN} stored form";
const NTLM_UNAVAILABLE: &str = "NTLM needs a {PLAIN} or {NTLM} stored form";
const SCRAM_SHA1_UNAVAILABLE: &str = "SCRAM-SHA-1 needs a {PLAIN} or {SCRAM-SHA-1} stored form";
const SCRAM_SHA256_UNAVAILABLE: &str =
    "SCRAM-SHA-256 needs a {PLAIN} or {SCRAM-SHA-256} stored form";
const DIGEST_MD5_UNAVAILABLE: &str = "DIGEST-MD5 needs a {PLAIN} or {DIGEST-MD5} stored form";

/// `name` as the users file holds user names (lower case), if it is one it could hold.
pub fn user_name(name: &str) -> Option<String> {
    file::normalize_user(name).ok()
}

/// One scheme the users file may hold, for `mailgate passwd --scheme` and
/// [`UserStore::can_serve`].
#[derive(Debug, Clone, Copy)]
pub struct SchemeInfo {
    /// The scheme name as [`UserStore::schemes`] reports it.
    pub name: &'static str,
    /// Other names Dovecot writes for it (each may also carry a `.HEX` / `.B64` suffix where
    /// the data is binary).
    pub aliases: &'static [&'static str],
    /// The mechanisms (SASL names, plus `USER` and `APOP` for POP3) it can serve.
    pub serves: &'static [&'static str],
    /// Why the stored form is weak, if it is.
    pub weak: Option<&'static str>,
}

const FAST_HASH: Option<&str> =
    Some("weak: a fast hash, guessable from a stolen file; import only, never written");
const PASSWORD_EQUIVALENT: Option<&str> =
    Some("password-equivalent: a stolen file logs in with it directly");

const fn scheme(
    name: &'static str,
    aliases: &'static [&'static str],
    serves: &'static [&'static str],
    weak: Option<&'static str>,
) -> SchemeInfo {
    SchemeInfo {
        name,
        aliases,
        serves,
        weak,
    }
}

/// Every scheme the users file may hold, with its aliases, the mechanisms it serves and
/// whether it is weak.
pub const SCHEMES: &[SchemeInfo] = &[
    scheme(
        "PLAIN",
        &["CLEARTEXT"],
        &[
            "PLAIN",
            "LOGIN",
            "USER",
            "CRAM-MD5",
            "APOP",
            "NTLM",
            "SCRAM-SHA-1",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256-PLUS",
            "DIGEST-MD5",
        ],
        Some("cleartext: a stolen file gives every password"),
    ),
    scheme(
        "CRAM-MD5",
        &["HMAC-MD5"],
        &["PLAIN", "LOGIN", "USER", "CRAM-MD5"],
        PASSWORD_EQUIVALENT,
    ),
    scheme("SHA512-CRYPT", &["CRYPT ($6$)"], CLEARTEXT_ONLY, None),
    scheme("SHA256-CRYPT", &["CRYPT ($5$)"], CLEARTEXT_ONLY, None),
    scheme("BLF-CRYPT", &["CRYPT ($2y$)"], CLEARTEXT_ONLY, None),
    scheme("ARGON2ID", &["CRYPT ($argon2id$)"], CLEARTEXT_ONLY, None),
    scheme("ARGON2I", &["CRYPT ($argon2i$)"], CLEARTEXT_ONLY, None),
    scheme(
        "NTLM",
        &[],
        &["PLAIN", "LOGIN", "USER", "NTLM"],
        PASSWORD_EQUIVALENT,
    ),
    scheme(
        "SCRAM-SHA-1",
        &[],
        &["PLAIN", "LOGIN", "USER", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"],
        None,
    ),
    scheme(
        "SCRAM-SHA-256",
        &[],
        &[
            "PLAIN",
            "LOGIN",
            "USER",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256-PLUS",
        ],
        None,
    ),
    // Bound to the user name and realm it was made for, so it cannot check a cleartext
    // password (that needs the realm it was made in) and serves only DIGEST-MD5.
    scheme(
        "DIGEST-MD5",
        &[],
        &["DIGEST-MD5"],
        Some(
            "password-equivalent: a stolen file logs in with it directly (DIGEST-MD5 in its realm)",
        ),
    ),
    scheme(
        "MD5-CRYPT",
        &["MD5 ($1$)", "CRYPT ($1$)"],
        CLEARTEXT_ONLY,
        Some("weak: MD5-crypt, guessable from a stolen file; import only, never written"),
    ),
    scheme(
        "PLAIN-MD5",
        &["LDAP-MD5", "MD5 (no $1$)"],
        CLEARTEXT_ONLY,
        FAST_HASH,
    ),
    scheme("SMD5", &[], CLEARTEXT_ONLY, FAST_HASH),
    scheme("PLAIN-MD4", &[], CLEARTEXT_ONLY, FAST_HASH),
    scheme("SHA", &["SHA1"], CLEARTEXT_ONLY, FAST_HASH),
    scheme("SSHA", &[], CLEARTEXT_ONLY, FAST_HASH),
    scheme("SHA256", &[], CLEARTEXT_ONLY, FAST_HASH),
    scheme("SSHA256", &[], CLEARTEXT_ONLY, FAST_HASH),
    scheme("SHA512", &[], CLEARTEXT_ONLY, FAST_HASH),
    scheme("SSHA512", &[], CLEARTEXT_ONLY, FAST_HASH),
];

/// The mechanisms that check a bearer token rather than anything stored here (the SASL
/// registry's `bearer_token` entries; a test in `sasl/` holds the two lists equal).
pub const BEARER_MECHANISMS: &[&str] = &["XOAUTH2", "OAUTHBEARER"];

/// What a one-way password hash serves: the checks that receive the cleartext password.
const CLEARTEXT_ONLY: &[&str] = &["PLAIN", "LOGIN", "USER"];

/// The mechanisms the stored `scheme` can serve (see [`SCHEMES`]); empty for an unknown scheme.
pub fn mechanisms_served(scheme: &str) -> &'static [&'static str] {
    SCHEMES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(scheme))
        .map_or(&[], |s| s.serves)
}

/// The enabled checks that none of the stored `schemes` can serve, each with why, for
/// `mailgate check-config` and `mailgate passwd`: every SASL name of `mechanisms`, and `APOP`
/// when `apop` is on. The bearer-token mechanisms (XOAUTH2, OAUTHBEARER) are left out: they
/// check a token, whatever is stored. PLAIN, LOGIN and USER are served by every scheme.
pub fn unserved(
    schemes: &[&str],
    mechanisms: &[String],
    apop: bool,
) -> Vec<(String, &'static str)> {
    // Bearer tokens, client certificates (EXTERNAL) and Kerberos tickets (GSSAPI) need
    // nothing stored beyond the user's name.
    let bearer = |m: &str| {
        BEARER_MECHANISMS.iter().any(|b| b.eq_ignore_ascii_case(m))
            || m.eq_ignore_ascii_case("EXTERNAL")
            || m.eq_ignore_ascii_case("GSSAPI")
    };
    let apop = apop.then(|| "APOP".to_owned());
    mechanisms
        .iter()
        .filter(|m| !bearer(m))
        .cloned()
        .chain(apop)
        .filter_map(|m| {
            let upper = m.to_ascii_uppercase();
            let served = schemes
                .iter()
                .any(|s| mechanisms_served(s).contains(&upper.as_str()));
            (!served).then(|| (m, unavailable(&upper)))
        })
        .collect()
}

/// Why no stored form serves `mechanism` (upper case).
fn unavailable(mechanism: &str) -> &'static str {
    match mechanism {
        "CRAM-MD5" => CRAM_UNAVAILABLE,
        "APOP" => APOP_UNAVAILABLE,
        "NTLM" => NTLM_UNAVAILABLE,
        "SCRAM-SHA-1" | "SCRAM-SHA-1-PLUS" => SCRAM_SHA1_UNAVAILABLE,
        "SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS" => SCRAM_SHA256_UNAVAILABLE,
        "DIGEST-MD5" => DIGEST_MD5_UNAVAILABLE,
        _ => "mechanism is not served from the users file",
    }
}

/// The result of a credential check.
#[derive(Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials are right; the canonical user name.
    Ok(String),
    /// Unknown user or wrong secret (never say which).
    BadCredentials,
    /// The user exists but no stored form can serve this check; the reason is for the log.
    Unavailable(&'static str),
    /// The check could not be made now (the server that judges the password is down or
    /// slow): a temporary failure, so that the client keeps its password and retries.
    Temporary(&'static str),
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok(u) => write!(f, "Ok({u})"),
            Verdict::BadCredentials => f.write_str("BadCredentials"),
            Verdict::Unavailable(w) => write!(f, "Unavailable({w})"),
            Verdict::Temporary(w) => write!(f, "Temporary({w})"),
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

    /// The NT hash (MD4 of the UTF-16LE password, MS-NLMP §3.3.1) of `user`, with the
    /// canonical name, for NTLM. Unknown user: `Err(BadCredentials)`; no usable stored form:
    /// `Err(Unavailable)`.
    fn ntlm_hash(&self, user: &str) -> Result<(String, Secret), Verdict> {
        let _ = user;
        Err(Verdict::Unavailable(
            "NTLM is not served by this credential store",
        ))
    }

    /// The SCRAM credentials (RFC 5802 §3: salt, iterations, StoredKey, ServerKey) of `user`
    /// for `hash`, with the canonical name. Unknown user: `Err(BadCredentials)`; no usable
    /// stored form: `Err(Unavailable)`.
    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<(String, ScramCredentials), Verdict> {
        let _ = (user, hash);
        Err(Verdict::Unavailable(
            "SCRAM is not served by this credential store",
        ))
    }

    /// The DIGEST-MD5 secret MD5(user:realm:password) (RFC 2831 §2.1.2.1) for `user` exactly
    /// as the client named it (the secret depends on the spelling) in `realm`, with the
    /// canonical name. Unknown user: `Err(BadCredentials)`; no usable stored form:
    /// `Err(Unavailable)`.
    fn digest_md5_secret(&self, user: &str, realm: &str) -> Result<(String, Secret), Verdict> {
        let _ = (user, realm);
        Err(Verdict::Unavailable(
            "DIGEST-MD5 is not served by this credential store",
        ))
    }

    /// Credentials for the mock exchange SCRAM runs when [`Authenticator::scram_credentials`]
    /// fails (RFC 5802 §5.1: an unknown user must not be revealed before the proof): the salt
    /// MUST be the same each time for the same `user`. This default derives it from the name
    /// alone, so an observer who knows the rule can tell an unknown user; stores override it
    /// with a keyed derivation.
    fn scram_decoy(&self, user: &str, hash: ScramHash) -> ScramCredentials {
        let seed = hash.digest(format!("mailgate SCRAM decoy\0{}\0{user}", hash.name()).as_bytes());
        ScramCredentials {
            salt: seed[..scram::SALT_LEN].to_vec(),
            iterations: scram::SCRAM_ITERATIONS,
            stored_key: Secret::new(hash.digest(&seed)),
            server_key: Secret::new(hash.digest(&seed)),
        }
    }

    /// Told after a successful login that carried the cleartext `password` (PLAIN, LOGIN,
    /// USER/PASS), so a store may derive and keep stronger forms (`derive_on_login`).
    fn plaintext_login(&self, user: &str, password: &[u8]) {
        let _ = (user, password);
    }

    /// Told after the old server (`[auth.upstream]`) accepted `password` for `user`, so a
    /// store that captures may keep the forms that let the next login be checked here. Slow
    /// (hashing, the file lock, fsync): call it off the async workers.
    fn capture(&self, user: &str, password: &[u8]) {
        let _ = (user, password);
    }

    /// Whether [`Authenticator::capture`] would store anything at all (capture is on).
    fn wants_capture(&self) -> bool {
        false
    }

    /// Whether checking a cleartext password for `user` is slow (a deliberately costly hash
    /// is stored, or a miss costs one): the session driver then runs the check on the
    /// blocking pool instead of inline. Cheap; the default says no.
    fn password_check_is_slow(&self, user: &str) -> bool {
        let _ = user;
        false
    }

    /// Whether [`Authenticator::plaintext_login`] would do slow work (hashing, the file lock,
    /// fsync) for `user` now; cheap, so callers can run that work elsewhere only when needed.
    fn wants_derivation(&self, user: &str) -> bool {
        let _ = user;
        false
    }
}

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

/// Stored SCRAM credentials (RFC 5802 §3); the password itself is not needed.
#[derive(Clone)]
pub struct ScramCredentials {
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Secret,
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub server_key: Secret,
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A secret held in memory (a cleartext password, a digest or an HMAC context): zeroed on drop,
/// and its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The secret bytes. Compare them in constant time and never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Equality in constant time (for equal lengths), so comparing secrets leaks no timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for Secret {}

/// Why a password field was rejected, and what to write instead. Never echoes the field, which
/// may hold a cleartext password. (Here rather than in `scheme.rs`, so that the scheme parsers
/// in `legacy.rs` and `scram.rs` and `scheme.rs` itself share it without importing each other.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub message: String,
    pub hint: String,
}

#[cfg(test)]
mod tests;
