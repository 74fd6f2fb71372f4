//! The users file store: [`UserStore`] loads, parses and reloads a Dovecot passwd-file, holds
//! each user's stored forms behind a lock (so a `derive_on_login` upgrade is seen at once), and
//! answers the [`Authenticator`] checks from them. Also the file's limits, its problems and
//! errors, its change stamp, and the fields `mailgate passwd` writes ([`stored_forms`]).

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

use super::scheme::{Form, HmacMd5State};
use super::{
    APOP_UNAVAILABLE, Authenticator, CRAM_UNAVAILABLE, DIGEST_MD5_UNAVAILABLE, NTLM_UNAVAILABLE,
    Rejection, SCRAM_SHA1_UNAVAILABLE, SCRAM_SHA256_UNAVAILABLE, ScramCredentials, ScramHash,
    Secret, Verdict, derive, digest_md5, file, mechanisms_served, scheme, scram, unavailable,
    unserved,
};

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
    /// An argument to [`set_user`](super::set_user) is unusable.
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

/// What [`UserStore::probe`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// The password matches this stored form (its scheme).
    Verified(&'static str),
    /// Forms that serve the mechanism are stored (their schemes), and none matches.
    Refused(Vec<&'static str>),
    /// No stored form serves the mechanism: why.
    Unserved(&'static str),
    /// The users file has no such user.
    NoUser,
}

/// The users of a passwd-file and their stored password forms.
pub struct UserStore {
    /// The users; replaced as a whole (copy on write) when `derive_on_login` adds forms, so
    /// readers only hold the lock to clone the `Arc`.
    users: RwLock<Arc<HashMap<String, Vec<Form>>>>,
    /// The first slow hash of the file: verified (and the result ignored) for unknown users,
    /// so that a miss costs what a hit costs. Replaced with the users on [`UserStore::reload`].
    pub(super) decoy: RwLock<Option<Form>>,
    /// Random for each load: keys the SCRAM salts made for `{PLAIN}` users and for the mock
    /// exchange of unknown users, so that neither can be told from outside.
    salt_key: Secret,
    /// Whether some user has a `{PLAIN}` form (SCRAM keys are then derived at login, and the
    /// mock exchange spends as much).
    plain_users: AtomicBool,
    /// Where and what `derive_on_login` writes, if enabled.
    pub(super) derivation: Option<derive::Derivation>,
    /// Where `[auth.upstream] capture` writes a user the old server vouched for, and the
    /// mechanisms whose forms it stores, if enabled.
    pub(super) capture: Option<(PathBuf, Vec<String>)>,
    /// The DIGEST-MD5 realm (`[auth] digest_md5_realm`) the `{DIGEST-MD5}` forms that
    /// `derive_on_login` and capture write are made for; none are written without it.
    pub(super) digest_realm: Option<String>,
    /// Users whose derivation failed in this run (e.g. a read-only folder): not tried again.
    pub(super) derive_failed: Mutex<HashSet<String>>,
    /// Users whose derivation is in progress (held only to enter and leave, never while
    /// deriving).
    pub(super) deriving: Mutex<HashSet<String>>,
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

    /// Sets the realm the `{DIGEST-MD5}` forms written by `derive_on_login` and capture are made
    /// for (`[auth] digest_md5_realm`).
    pub fn with_digest_realm(mut self, realm: &str) -> UserStore {
        self.digest_realm = Some(realm.to_owned());
        self
    }

    /// Enables `[auth.upstream] capture`: a user whose password the old server accepted is
    /// written to the users file at `path` with the forms `mechanisms` need (see
    /// [`Authenticator::capture`]).
    pub fn with_capture(mut self, path: &Path, mechanisms: &[String]) -> UserStore {
        self.capture = Some((path.to_owned(), mechanisms.to_vec()));
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

    /// For `mailgate auth test`: whether `password` is `user`'s for `mechanism` (a SASL name,
    /// or `APOP` / `USER`), checked against each stored form that serves the mechanism.
    /// Blocking (slow hashes).
    pub fn probe(&self, user: &str, mechanism: &str, password: &[u8]) -> Probe {
        let Some(forms) = self.forms(user) else {
            return Probe::NoUser;
        };
        let mechanism = mechanism.to_ascii_uppercase();
        let serving: Vec<&Form> = forms
            .iter()
            .filter(|f| mechanisms_served(f.scheme()).contains(&mechanism.as_str()))
            .collect();
        if serving.is_empty() {
            return Probe::Unserved(unavailable(&mechanism));
        }
        match serving.iter().find(|f| f.verify_password(password)) {
            Some(form) => Probe::Verified(form.scheme()),
            None => Probe::Refused(serving.iter().map(|f| f.scheme()).collect()),
        }
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
    pub(super) fn set_forms(&self, user: &str, forms: Vec<Form>) {
        let mut guard = self
            .users
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut map = HashMap::clone(&guard);
        map.insert(user.to_owned(), forms);
        *guard = Arc::new(map);
    }

    pub(super) fn forms(&self, user: &str) -> Option<Vec<Form>> {
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

    fn digest_md5_secret(&self, user: &str, realm: &str) -> Result<(String, Secret), Verdict> {
        let name = user.to_lowercase();
        let forms = self.forms(&name).ok_or(Verdict::BadCredentials)?;
        if let Some(password) = forms.iter().find_map(Form::plain) {
            let secret = digest_md5::secret(user, realm, password);
            return Ok((name, Secret::new(secret.to_vec())));
        }
        // Made for the name as stored and the configured realm: a client that spells the name
        // otherwise computes another secret, and fails as with a wrong password.
        match forms.iter().find_map(Form::digest_md5) {
            Some(secret) => Ok((name, secret.clone())),
            None => Err(Verdict::Unavailable(DIGEST_MD5_UNAVAILABLE)),
        }
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

    fn capture(&self, user: &str, password: &[u8]) {
        self.capture_login(user, password);
    }

    fn wants_capture(&self) -> bool {
        self.capture.is_some()
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
/// SCRAM-SHA-1(-PLUS), an `{NTLM}` hash for `NTLM` (if the password is UTF-8), and a
/// `{DIGEST-MD5}` secret for `DIGEST-MD5`, made for `user` (the name as the users file holds
/// it) in `digest_realm` (none without one).
///
/// # Panics
/// If the operating system's random source fails, or the password exceeds 4 GiB (Argon2's
/// limit): there is no sensible field to write then.
pub fn stored_forms(
    user: &str,
    password: &[u8],
    mechanisms: &[String],
    digest_realm: Option<&str>,
) -> Vec<String> {
    let hash = Argon2::default()
        .hash_password(password)
        .expect("Argon2 with default parameters fails only on RNG failure or a 4 GiB password");
    let mut forms = vec![format!("{{ARGON2ID}}{hash}")];
    forms.extend(
        derive::Wanted::for_mechanisms(mechanisms)
            .into_iter()
            .filter_map(|w| w.field(user, digest_realm, password)),
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
                // Dovecot schemes nobody should still use (DES crypt, PBKDF2, OTP, ...)
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
        capture: None,
        digest_realm: None,
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
