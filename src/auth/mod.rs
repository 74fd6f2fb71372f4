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
//!
//! Secrets are compared in constant time, held in [`Secret`] (zeroed on drop, never printed),
//! and an unknown user costs about as much as a known one. `file.rs` owns the on-disk side:
//! line syntax, user-name rules and the atomic rewrite behind `mailgate passwd`; `scram.rs` the
//! SCRAM keys; `derive.rs` the `derive_on_login` upgrade, which adds the forms the enabled
//! mechanisms need after a successful cleartext login. The users map sits behind a lock so that
//! such an upgrade is seen by later logins without a restart.

mod deferred;
mod derive;
mod file;
mod legacy;
mod scheme;
pub mod scram;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use argon2::{Argon2, PasswordHasher as _};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use deferred::DeferredDerivation;
pub use file::set_user;
use scheme::{Form, HmacMd5State};

/// Largest users file accepted, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest line accepted in the users file, in bytes.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Most stored forms one user may have.
pub const MAX_FORMS_PER_USER: usize = 16;
/// Most users one file may hold.
pub const MAX_USERS: usize = 250_000;
/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 255;

const CRAM_UNAVAILABLE: &str = "CRAM-MD5 needs a {PLAIN} or {CRAM-MD5} stored form";
const APOP_UNAVAILABLE: &str = "APOP needs a {PLAIN} stored form";
const NTLM_UNAVAILABLE: &str = "NTLM needs a {PLAIN} or {NTLM} stored form";
const SCRAM_SHA1_UNAVAILABLE: &str = "SCRAM-SHA-1 needs a {PLAIN} or {SCRAM-SHA-1} stored form";
const SCRAM_SHA256_UNAVAILABLE: &str =
    "SCRAM-SHA-256 needs a {PLAIN} or {SCRAM-SHA-256} stored form";

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
    let bearer = |m: &str| BEARER_MECHANISMS.iter().any(|b| b.eq_ignore_ascii_case(m));
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

/// The users file as last seen: modification time, length and inode; a change to any of them
/// (an edit in place, `mailgate passwd`'s rename) means the file is read again.
pub type UsersStamp = (std::time::SystemTime, u64, u64);

/// The users file's stamp now, if it can be read.
pub fn users_file_stamp(path: &std::path::Path) -> Option<UsersStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// One problem found in a users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong (never quotes a password).
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}; {}", self.line, self.message, self.hint)
    }
}

/// Errors of the users-file layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read users file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file could not be written (temp file, fsync, rename or directory fsync).
    #[error("cannot write users file {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file exceeds [`MAX_FILE_BYTES`].
    #[error("users file {} is larger than {limit} bytes", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The file has problems; all of them are listed.
    #[error("{origin}: {} problem(s):{}", .problems.len(), list_problems(.problems))]
    Invalid {
        /// The file name (or other origin) the text came from.
        origin: String,
        /// Every problem found, in line order.
        problems: Vec<Problem>,
    },
    /// An argument to [`set_user`] is unusable.
    #[error("invalid {what}: {message}; {hint}")]
    Argument {
        /// Which argument.
        what: &'static str,
        /// What is wrong.
        message: String,
        /// What to pass instead.
        hint: String,
    },
}

fn list_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// The users of a passwd-file and their stored password forms.
pub struct UserStore {
    /// The users; replaced as a whole (copy on write) when `derive_on_login` adds forms, so
    /// readers only hold the lock to clone the `Arc`.
    users: RwLock<Arc<HashMap<String, Vec<Form>>>>,
    /// The first slow hash of the file: verified (and the result ignored) for unknown users,
    /// so that a miss costs what a hit costs. Replaced with the users on [`UserStore::reload`].
    decoy: RwLock<Option<Form>>,
    /// Random for each load: keys the SCRAM salts made for `{PLAIN}` users and for the mock
    /// exchange of unknown users, so that neither can be told from outside.
    salt_key: Secret,
    /// Whether some user has a `{PLAIN}` form (SCRAM keys are then derived at login, and the
    /// mock exchange spends as much).
    plain_users: AtomicBool,
    /// Where and what `derive_on_login` writes, if enabled.
    derivation: Option<derive::Derivation>,
    /// Users whose derivation failed in this run (e.g. a read-only folder): not tried again.
    derive_failed: Mutex<HashSet<String>>,
    /// Users whose derivation is in progress (held only to enter and leave, never while
    /// deriving).
    deriving: Mutex<HashSet<String>>,
    /// Lines skipped at the last load (a scheme not supported here), in line order.
    warnings: RwLock<Vec<Problem>>,
}

impl fmt::Debug for UserStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserStore")
            .field("users", &self.len())
            .field("derive_on_login", &self.derivation.is_some())
            .finish()
    }
}

impl UserStore {
    /// Reads and parses a users file (at most [`MAX_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<UserStore, Error> {
        let read_err = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(Error::TooLarge {
                path: path.to_owned(),
                limit: MAX_FILE_BYTES,
            });
        }
        // Judge UTF-8 line by line, so that every bad line is reported with its number.
        let mut problems = Vec::new();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if std::str::from_utf8(line).is_err() {
                problems.push(Problem {
                    line: i + 1,
                    message: "line is not valid UTF-8".into(),
                    hint: "save the users file as UTF-8".into(),
                });
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        parse_with(&text, &path.display().to_string(), problems)
    }

    /// Parses users-file text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<UserStore, Error> {
        parse_with(text, origin, Vec::new())
    }

    /// Reads the users file at `path` again and, if it is valid, serves its users from now
    /// on (logins already verified are not affected); returns how many there are. If it is
    /// not valid, nothing changes and the error lists every problem. The SCRAM salts made for
    /// `{PLAIN}` users stay the same, so a client's cached SCRAM keys keep working.
    pub fn reload(&self, path: &Path) -> Result<usize, Error> {
        let fresh = UserStore::load(path)?;
        let users = fresh.snapshot();
        let count = users.len();
        *self.decoy.write().unwrap_or_else(|p| p.into_inner()) =
            fresh.decoy.into_inner().unwrap_or_else(|p| p.into_inner());
        self.plain_users
            .store(fresh.plain_users.load(Ordering::Relaxed), Ordering::Relaxed);
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = users;
        *self.warnings.write().unwrap_or_else(|p| p.into_inner()) = fresh
            .warnings
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        // A user whose derivation failed may have been fixed by hand: try again.
        self.derive_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(count)
    }

    /// Enables `derive_on_login`: after a successful cleartext login, the forms that
    /// `mechanisms` (the configured list) need and the user lacks are derived from the password
    /// and added to the users file at `path` (see [`Authenticator::plaintext_login`]).
    pub fn with_derivation(mut self, path: &Path, mechanisms: &[String]) -> UserStore {
        self.derivation = Some(derive::Derivation::new(path, mechanisms));
        self
    }

    /// The lines skipped at the last load or reload because their password scheme is not
    /// supported here (each names the user and the scheme), in line order; the rest of the
    /// file was loaded. Log them, and `mailgate check-config` prints them.
    pub fn warnings(&self) -> Vec<Problem> {
        self.warnings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The user names, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut names: Vec<String> = self.snapshot().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether the store has no users.
    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    /// The stored schemes of `user` (e.g. `["ARGON2ID", "CRAM-MD5"]`), in file order; empty for
    /// an unknown user.
    pub fn schemes(&self, user: &str) -> Vec<&'static str> {
        self.forms(user)
            .map(|forms| forms.iter().map(Form::scheme).collect())
            .unwrap_or_default()
    }

    /// Whether `mechanism` (a SASL name, or `APOP` / `USER` for POP3) can authenticate `user`
    /// with what is stored; the error says why not, for check-config warnings.
    pub fn can_serve(&self, user: &str, mechanism: &str) -> Result<(), &'static str> {
        let forms = self.forms(user).ok_or("no such user")?;
        let mechanism = mechanism.to_ascii_uppercase();
        let served = |f: &Form| mechanisms_served(f.scheme()).contains(&mechanism.as_str());
        if forms.iter().any(served) {
            return Ok(());
        }
        Err(unavailable(&mechanism))
    }

    /// The enabled checks that cannot authenticate `user` with what is stored, each with why
    /// (see [`unserved`]); empty for an unknown user.
    pub fn unserved(
        &self,
        user: &str,
        mechanisms: &[String],
        apop: bool,
    ) -> Vec<(String, &'static str)> {
        match self.forms(user) {
            Some(forms) => {
                let schemes: Vec<&str> = forms.iter().map(Form::scheme).collect();
                unserved(&schemes, mechanisms, apop)
            }
            None => Vec::new(),
        }
    }

    /// The NT hash of `user`'s password (MS-NLMP §3.3.1, the NTOWFv1 / key input of NTOWFv2),
    /// from a `{NTLM}` or `{PLAIN}` form; `None` for an unknown user or if neither is stored.
    pub fn nt_hash(&self, user: &str) -> Option<Secret> {
        self.forms(user)?.iter().find_map(|form| match form {
            Form::Ntlm(nt) => Some(nt.clone()),
            Form::Plain(pw) => scheme::nt_hash(pw.expose()).map(|nt| Secret::new(nt.to_vec())),
            _ => None,
        })
    }

    /// The current users map (cheap: an `Arc` clone).
    fn snapshot(&self) -> Arc<HashMap<String, Vec<Form>>> {
        // A panic while holding the lock cannot leave the map half-changed (it is replaced
        // whole), so a poisoned lock is still sound to read.
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the forms of `user` (canonical name) in memory.
    fn set_forms(&self, user: &str, forms: Vec<Form>) {
        let mut guard = self
            .users
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut map = HashMap::clone(&guard);
        map.insert(user.to_owned(), forms);
        *guard = Arc::new(map);
    }

    fn forms(&self, user: &str) -> Option<Vec<Form>> {
        self.snapshot().get(&user.to_lowercase()).cloned()
    }

    /// A salt for `user` that stays the same for the life of this store but cannot be
    /// predicted from outside: HMAC-SHA-256 keyed with `salt_key`.
    fn derived_salt(&self, user: &str, hash: ScramHash) -> Vec<u8> {
        let mut salt = ScramHash::Sha256.hmac(
            self.salt_key.expose(),
            &[
                b"SCRAM salt\0",
                hash.name().as_bytes(),
                b"\0",
                user.as_bytes(),
            ],
        );
        salt.truncate(scram::SALT_LEN);
        salt
    }

    /// Spends about what a known user's password check costs, for an unknown user.
    fn decoy_password(&self, password: &[u8]) {
        let decoy = self.decoy.read().unwrap_or_else(|p| p.into_inner()).clone();
        match &decoy {
            Some(form) => {
                let _ = form.verify_password(password);
            }
            None => {
                let _ = scheme::eq_hashed(b"decoy password", password);
            }
        }
    }
}

impl Authenticator for UserStore {
    fn verify_password(&self, user: &str, password: &[u8]) -> Verdict {
        let name = user.to_lowercase();
        let users = self.snapshot();
        let Some(forms) = users.get(&name) else {
            self.decoy_password(password);
            return Verdict::BadCredentials;
        };
        if forms.iter().any(|f| f.verify_password(password)) {
            Verdict::Ok(name)
        } else {
            Verdict::BadCredentials
        }
    }

    fn verify_cram_md5(&self, user: &str, challenge: &[u8], digest: &[u8]) -> Verdict {
        let name = user.to_lowercase();
        let want = decode_digest(digest);
        let users = self.snapshot();
        let Some(forms) = users.get(&name) else {
            let _ = HmacMd5State::new(b"decoy password").finish(challenge);
            return Verdict::BadCredentials;
        };
        let mut served = false;
        for form in forms {
            if let Some(got) = form.cram_md5(challenge) {
                served = true;
                if want.is_some_and(|w| bool::from(got.ct_eq(&w))) {
                    return Verdict::Ok(name);
                }
            }
        }
        if served {
            Verdict::BadCredentials
        } else {
            Verdict::Unavailable(CRAM_UNAVAILABLE)
        }
    }

    fn verify_apop(&self, user: &str, timestamp: &[u8], digest: &[u8]) -> Verdict {
        let name = user.to_lowercase();
        let want = decode_digest(digest);
        let users = self.snapshot();
        let Some(forms) = users.get(&name) else {
            let _ = scheme::apop_digest(timestamp, b"decoy password");
            return Verdict::BadCredentials;
        };
        let Some(password) = forms.iter().find_map(Form::plain) else {
            return Verdict::Unavailable(APOP_UNAVAILABLE);
        };
        let got = scheme::apop_digest(timestamp, password);
        if want.is_some_and(|w| bool::from(got.ct_eq(&w))) {
            Verdict::Ok(name)
        } else {
            Verdict::BadCredentials
        }
    }

    fn lookup(&self, user: &str) -> Option<String> {
        let name = user.to_lowercase();
        self.snapshot().contains_key(&name).then_some(name)
    }

    fn ntlm_hash(&self, user: &str) -> Result<(String, Secret), Verdict> {
        let name = self.lookup(user).ok_or(Verdict::BadCredentials)?;
        match self.nt_hash(&name) {
            Some(hash) => Ok((name, hash)),
            None => Err(Verdict::Unavailable(NTLM_UNAVAILABLE)),
        }
    }

    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<(String, ScramCredentials), Verdict> {
        let name = user.to_lowercase();
        let forms = self.forms(&name).ok_or(Verdict::BadCredentials)?;
        if let Some(keys) = forms.iter().find_map(|f| f.scram(hash)) {
            return Ok((name, keys.clone()));
        }
        if let Some(password) = forms.iter().find_map(Form::plain) {
            let salt = self.derived_salt(&name, hash);
            let keys = hash.credentials(password, salt, scram::SCRAM_ITERATIONS);
            return Ok((name, keys));
        }
        Err(Verdict::Unavailable(match hash {
            ScramHash::Sha1 => SCRAM_SHA1_UNAVAILABLE,
            ScramHash::Sha256 => SCRAM_SHA256_UNAVAILABLE,
        }))
    }

    fn scram_decoy(&self, user: &str, hash: ScramHash) -> ScramCredentials {
        let name = user.to_lowercase();
        let salt = self.derived_salt(&name, hash);
        if self.plain_users.load(Ordering::Relaxed) {
            // Spend what deriving a {PLAIN} user's keys costs.
            hash.credentials(self.salt_key.expose(), salt, scram::SCRAM_ITERATIONS)
        } else {
            let key = |label: &[u8]| Secret::new(hash.hmac(self.salt_key.expose(), &[label]));
            ScramCredentials {
                stored_key: key(b"decoy StoredKey"),
                server_key: key(b"decoy ServerKey"),
                salt,
                iterations: scram::SCRAM_ITERATIONS,
            }
        }
    }

    fn plaintext_login(&self, user: &str, password: &[u8]) {
        self.derive_on_login(user, password);
    }

    fn password_check_is_slow(&self, user: &str) -> bool {
        match self.snapshot().get(&user.to_lowercase()) {
            Some(forms) => forms.iter().any(Form::is_slow),
            // A miss verifies the decoy, the file's first slow hash.
            None => self
                .decoy
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(Form::is_slow),
        }
    }

    fn wants_derivation(&self, user: &str) -> bool {
        self.derivation_pending(user)
    }
}

/// The password fields `mailgate passwd` writes for `password`: always an `{ARGON2ID}` hash
/// (the argon2 crate's defaults, which follow OWASP: m=19 MiB, t=2, p=1, random salt), then
/// what the enabled `mechanisms` need: a `{CRAM-MD5}` context for `CRAM-MD5`, `{SCRAM-SHA-256}`
/// and `{SCRAM-SHA-1}` keys (random salt, 4096 iterations) for SCRAM-SHA-256(-PLUS) and
/// SCRAM-SHA-1(-PLUS), and an `{NTLM}` hash for `NTLM` (if the password is UTF-8).
///
/// # Panics
/// If the operating system's random source fails, or the password exceeds 4 GiB (Argon2's
/// limit): there is no sensible field to write then.
pub fn stored_forms(password: &[u8], mechanisms: &[String]) -> Vec<String> {
    let hash = Argon2::default()
        .hash_password(password)
        .expect("Argon2 with default parameters fails only on RNG failure or a 4 GiB password");
    let mut forms = vec![format!("{{ARGON2ID}}{hash}")];
    forms.extend(
        derive::Wanted::for_mechanisms(mechanisms)
            .into_iter()
            .filter_map(|w| w.field(password)),
    );
    forms
}

/// Decodes a 32-hex-digit digest (either case).
fn decode_digest(digest: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(digest, &mut out).ok()?;
    Some(out)
}

/// Parses the text, adding to the `problems` already found; fails if any.
fn parse_with(text: &str, origin: &str, mut problems: Vec<Problem>) -> Result<UserStore, Error> {
    let mut problem = |line: usize, r: Rejection| {
        problems.push(Problem {
            line,
            message: r.message,
            hint: r.hint,
        });
    };
    let mut warnings = Vec::new();
    // Each form with the line it came from, to check and report consistency afterwards.
    let mut users: HashMap<String, Vec<(usize, Form)>> = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.len() > MAX_LINE_LEN {
            problem(
                n,
                too(
                    format!("line is longer than {MAX_LINE_LEN} bytes"),
                    "shorten it",
                ),
            );
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = file::split_line(line).and_then(|l| {
            let name = file::normalize_user(l.user)?;
            if let Some(scheme) = Form::unsupported(l.password) {
                return Ok((name, Err(scheme)));
            }
            Ok((name, Ok(Form::parse(l.password)?)))
        });
        let (name, form) = match parsed {
            Ok((name, Ok(form))) => (name, form),
            Ok((name, Err(scheme))) => {
                // Dovecot schemes nobody should still use (DES crypt, DIGEST-MD5, OTP, ...)
                // or a typo: this line cannot verify anything here, the rest of the file can.
                warnings.push(Problem {
                    line: n,
                    message: format!(
                        "user {name}: password scheme {scheme} is not supported; line skipped"
                    ),
                    hint: "set a new password with `mailgate passwd USER` (`mailgate passwd \
                           --scheme` lists the schemes read)"
                        .into(),
                });
                continue;
            }
            Err(r) => {
                problem(n, r);
                continue;
            }
        };
        let full = users.len() >= MAX_USERS;
        let slot = match users.entry(name) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if full => {
                let msg = format!("more than {MAX_USERS} users");
                problem(n, too(msg, "split the users across several gateways"));
                break;
            }
            Entry::Vacant(e) => e.insert(Vec::new()),
        };
        if slot.iter().any(|(_, f)| f.same_as(&form)) {
            continue;
        }
        if slot.len() >= MAX_FORMS_PER_USER {
            let msg = format!("user has more than {MAX_FORMS_PER_USER} stored forms");
            problem(n, too(msg, "keep one line per scheme"));
            continue;
        }
        slot.push((n, form));
    }
    for forms in users.values() {
        check_consistent(forms, &mut problem);
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(Error::Invalid {
            origin: origin.to_owned(),
            problems,
        });
    }
    let mut lines: Vec<(usize, &Form)> = users
        .values()
        .flat_map(|forms| forms.iter().map(|(n, f)| (*n, f)))
        .collect();
    lines.sort_by_key(|(n, _)| *n);
    let decoy = lines
        .into_iter()
        .map(|(_, f)| f)
        .find(|f| f.is_slow())
        .cloned();
    let users: HashMap<String, Vec<Form>> = users
        .into_iter()
        .map(|(name, forms)| (name, forms.into_iter().map(|(_, f)| f).collect()))
        .collect();
    let plain_users = users.values().flatten().any(|f| f.plain().is_some());
    Ok(UserStore {
        users: RwLock::new(Arc::new(users)),
        decoy: RwLock::new(decoy),
        salt_key: Secret::new(rand::random::<[u8; 32]>().to_vec()),
        plain_users: AtomicBool::new(plain_users),
        derivation: None,
        derive_failed: Mutex::new(HashSet::new()),
        deriving: Mutex::new(HashSet::new()),
        warnings: RwLock::new(warnings),
    })
}

fn too(message: String, hint: &str) -> Rejection {
    Rejection {
        message,
        hint: hint.to_owned(),
    }
}

/// Checks that every form of one user stores the same password, where that is cheap to tell:
/// two `{PLAIN}` passwords must agree, and `{CRAM-MD5}` / `{NTLM}` must match the `{PLAIN}`.
fn check_consistent(forms: &[(usize, Form)], problem: &mut impl FnMut(usize, Rejection)) {
    let Some((first, plain)) = forms.iter().find_map(|(n, f)| Some((*n, f.plain()?))) else {
        return;
    };
    for (n, form) in forms {
        let cheap = matches!(
            form,
            Form::Plain(_) | Form::CramMd5(_) | Form::Ntlm(_) | Form::Digest(_)
        );
        if *n != first && cheap && !form.verify_password(plain) {
            let scheme = form.scheme();
            problem(
                *n,
                Rejection {
                    message: format!(
                        "{{{scheme}}} does not match the {{PLAIN}} password on line {first}"
                    ),
                    hint:
                        "every line of a user must store the same password; remove the stale line \
                       or run `mailgate passwd`"
                            .to_owned(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
