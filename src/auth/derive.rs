//! `derive_on_login`: after a successful cleartext login (PLAIN, LOGIN, POP3 USER/PASS) the
//! stored forms the enabled mechanisms need and the user lacks — SCRAM keys above all, also
//! `{CRAM-MD5}` and `{NTLM}` — are derived from the password and added to the users file, so a
//! user stored only as `{ARGON2ID}` can use SCRAM-SHA-256 from the next login on.
//!
//! The fast path (nothing missing) touches no file. Otherwise, under the users-file lock that
//! `mailgate passwd` takes too, the file is read again; the new lines are added only if the
//! user's lines *in that file* still accept the password (so a password changed meanwhile is
//! never overwritten by keys of the old one); the file is replaced atomically (temporary file,
//! fsync, rename, folder fsync) only if it did not change while the lines were made; and then
//! the in-memory store takes the user's forms from the file. Failures are logged (never with
//! the password) and that user is not tried again in this run. In the gateway the slow part
//! (hashing, the file lock, fsync) runs on a thread of its own, which the login does not wait
//! for (`auth::DeferredDerivation` queues it there when [`UserStore::derivation_pending`]
//! says there is work); called directly it blocks its caller, so call it off the async
//! workers. Either way it holds no mutex the other sessions need.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::scheme::Form;
use super::{Error, MAX_FILE_BYTES, ScramHash, UserStore, file, scheme, scram};

/// Where and what `derive_on_login` writes.
pub(crate) struct Derivation {
    path: PathBuf,
    wanted: Vec<Wanted>,
}

impl Derivation {
    pub(crate) fn new(path: &Path, mechanisms: &[String]) -> Derivation {
        Derivation {
            path: path.to_owned(),
            wanted: Wanted::for_mechanisms(mechanisms),
        }
    }
}

/// A stored form an enabled mechanism needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// `{SCRAM-SHA-1}` or `{SCRAM-SHA-256}`.
    Scram(ScramHash),
    /// `{CRAM-MD5}`.
    CramMd5,
    /// `{NTLM}`.
    Ntlm,
    /// `{DIGEST-MD5}`.
    DigestMd5,
}

impl Wanted {
    /// The forms `mechanisms` need (besides a cleartext-checkable one), each once, in order.
    pub(crate) fn for_mechanisms(mechanisms: &[String]) -> Vec<Wanted> {
        let mut out = Vec::new();
        for m in mechanisms {
            let wanted = match m.to_ascii_uppercase().as_str() {
                "SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS" => Wanted::Scram(ScramHash::Sha256),
                "SCRAM-SHA-1" | "SCRAM-SHA-1-PLUS" => Wanted::Scram(ScramHash::Sha1),
                "CRAM-MD5" => Wanted::CramMd5,
                "NTLM" => Wanted::Ntlm,
                "DIGEST-MD5" => Wanted::DigestMd5,
                _ => continue,
            };
            if !out.contains(&wanted) {
                out.push(wanted);
            }
        }
        out
    }

    /// Whether one of `forms` already serves the mechanism (a `{PLAIN}` serves them all).
    fn served_by(self, forms: &[Form]) -> bool {
        forms.iter().any(|f| {
            f.plain().is_some()
                || match self {
                    Wanted::Scram(hash) => f.scram(hash).is_some(),
                    Wanted::CramMd5 => matches!(f, Form::CramMd5(_)),
                    Wanted::Ntlm => matches!(f, Form::Ntlm(_)),
                    Wanted::DigestMd5 => matches!(f, Form::DigestMd5(_)),
                }
        })
    }

    /// The password field for `password`; `None` for `{NTLM}` of a non-UTF-8 password, and
    /// for `{DIGEST-MD5}` without a realm (it is made for `user`, as the users file holds the
    /// name, in `digest_realm`).
    pub(crate) fn field(
        self,
        user: &str,
        digest_realm: Option<&str>,
        password: &[u8],
    ) -> Option<String> {
        match self {
            Wanted::Scram(hash) => Some(scram::new_field(hash, password)),
            Wanted::CramMd5 => Some(scheme::cram_md5_field(password)),
            Wanted::Ntlm => {
                scheme::nt_hash(password).map(|nt| format!("{{NTLM}}{}", hex::encode_upper(nt)))
            }
            Wanted::DigestMd5 => {
                digest_realm.map(|realm| super::digest_md5::field(user, realm, password))
            }
        }
    }
}

/// Why a derivation did not happen; logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error(transparent)]
    File(#[from] Error),
    #[error("the user is no longer in the users file")]
    Gone,
    #[error("the password in the users file changed since the login")]
    PasswordChanged,
    #[error("the users file kept changing while the new lines were written")]
    Busy,
}

impl UserStore {
    /// `[auth.upstream] capture`: stores `user` with the forms the enabled mechanisms need,
    /// made from the `password` the old server accepted, unless a stored form already takes
    /// that password. The user's lines are replaced (a password changed on the old server
    /// replaces the one captured before), under the users-file lock; the in-memory store
    /// follows. Blocking; failures are logged, never with the password.
    pub(super) fn capture_login(&self, user: &str, password: &[u8]) {
        let Some((path, mechanisms)) = &self.capture else {
            return;
        };
        let name = user.to_lowercase();
        if self
            .forms(&name)
            .is_some_and(|forms| forms.iter().any(|f| f.verify_password(password)))
        {
            return;
        }
        let Some(_busy) = Busy::claim(&self.deriving, &name) else {
            return;
        };
        let realm = self.digest_realm.as_deref();
        let fields = super::stored_forms(&name, password, mechanisms, realm);
        let forms: Vec<Form> = fields.iter().filter_map(|f| Form::parse(f).ok()).collect();
        match file::set_user(path, &name, &fields) {
            Ok(()) => {
                tracing::info!(user = %name, forms = fields.len(), "captured the password the old server accepted");
                self.set_forms(&name, forms);
            }
            Err(e) => tracing::warn!(user = %name, "capture: {e}"),
        }
    }

    /// Whether a derivation for `user` would run now: enabled, the user exists and lacks a
    /// wanted form, and no derivation for them failed before or is in progress.
    pub(super) fn derivation_pending(&self, user: &str) -> bool {
        let Some(derivation) = &self.derivation else {
            return false;
        };
        let name = user.to_lowercase();
        let Some(forms) = self.forms(&name) else {
            return false;
        };
        let failed = |set: &Mutex<HashSet<String>>| {
            set.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(&name)
        };
        // Without a realm no `{DIGEST-MD5}` can be made: not a reason to try.
        let makeable = |w: &&Wanted| **w != Wanted::DigestMd5 || self.digest_realm.is_some();
        !derivation
            .wanted
            .iter()
            .filter(makeable)
            .all(|w| w.served_by(&forms))
            && !failed(&self.derive_failed)
            && !failed(&self.deriving)
    }

    /// The `derive_on_login` hook; see the module docs.
    pub(super) fn derive_on_login(&self, user: &str, password: &[u8]) {
        let Some(derivation) = &self.derivation else {
            return;
        };
        if !self.derivation_pending(user) {
            return;
        }
        let name = user.to_lowercase();
        // One derivation per user at a time in this process; another login of the same user
        // meanwhile skips it (the forms land with the first, or at a later login).
        let Some(_busy) = Busy::claim(&self.deriving, &name) else {
            return;
        };
        // Argon2 / PBKDF2, the file lock (which may wait for `mailgate passwd`) and the fsyncs:
        // blocking work, which callers run off the async workers (the derivation thread of
        // `auth::DeferredDerivation`); no mutex that other sessions take is held meanwhile.
        let realm = self.digest_realm.as_deref();
        let result = derive(&derivation.path, &derivation.wanted, realm, &name, password);
        match result {
            Ok((forms, added)) => {
                if added > 0 {
                    tracing::info!(user = %name, added, "derived stored forms after login");
                }
                self.set_forms(&name, forms);
            }
            Err(e) => {
                tracing::warn!(user = %name, "derive_on_login: {e}");
                self.derive_failed
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(name);
            }
        }
    }
}

/// A user's place in the set of derivations in progress; left when dropped (also on panic).
struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    user: String,
}

impl<'a> Busy<'a> {
    /// Enters `user` into `set`; `None` if a derivation for the user is already in progress.
    fn claim(set: &'a Mutex<HashSet<String>>, user: &str) -> Option<Busy<'a>> {
        let mut users = set.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        users.insert(user.to_owned()).then(|| Busy {
            set,
            user: user.to_owned(),
        })
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.user);
    }
}

/// Adds the forms of `wanted` that `user` lacks to the file; returns the user's forms as the
/// file now holds them and how many were added.
fn derive(
    path: &Path,
    wanted: &[Wanted],
    digest_realm: Option<&str>,
    user: &str,
    password: &[u8],
) -> Result<(Vec<Form>, usize), Skip> {
    let _lock = file::lock(path)?;
    // An editor that does not take the lock may still write meanwhile: try a few times.
    for _ in 0..3 {
        let old = read(path)?;
        let text = String::from_utf8_lossy(&old);
        let store = UserStore::parse(&text, &path.display().to_string())?;
        let forms = store.forms(user).ok_or(Skip::Gone)?;
        if !forms.iter().any(|f| f.verify_password(password)) {
            return Err(Skip::PasswordChanged);
        }
        let (fields, added): (Vec<String>, Vec<Form>) = wanted
            .iter()
            .filter(|w| !w.served_by(&forms))
            .filter_map(|w| w.field(user, digest_realm, password))
            .filter_map(|field| Form::parse(&field).ok().map(|form| (field, form)))
            .unzip();
        if fields.is_empty() {
            return Ok((forms, 0));
        }
        let mut all = forms;
        all.extend(added);
        let new = file::append_forms(&old, user, &fields);
        if read(path)? != old {
            continue;
        }
        crate::durable::replace(path, &new).map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })?;
        return Ok((all, fields.len()));
    }
    Err(Skip::Busy)
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Authenticator, Verdict};

    const ARGON: &str = "{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                         nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";

    fn mechs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn setup(text: &str, names: &[&str]) -> (tempfile::TempDir, PathBuf, UserStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        fs::write(&path, text).expect("write");
        let store = UserStore::load(&path)
            .expect("load")
            .with_derivation(&path, &mechs(names));
        (dir, path, store)
    }

    #[test]
    fn wanted_forms_follow_the_mechanisms() {
        let got = Wanted::for_mechanisms(&mechs(&[
            "PLAIN",
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-256",
            "scram-sha-1",
            "NTLM",
            "CRAM-MD5",
        ]));
        assert_eq!(
            got,
            [
                Wanted::Scram(ScramHash::Sha256),
                Wanted::Scram(ScramHash::Sha1),
                Wanted::Ntlm,
                Wanted::CramMd5
            ]
        );
    }

    #[test]
    fn login_adds_missing_forms_to_file_and_memory() {
        let text = format!("# users\nalice:{ARGON}:1000:1000::/home/alice::\nbob:{{PLAIN}}b\n");
        let names = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1", "NTLM"];
        let (_dir, path, store) = setup(&text, &names);
        assert!(matches!(
            store.scram_credentials("alice", ScramHash::Sha256),
            Err(Verdict::Unavailable(_))
        ));
        assert_eq!(
            store.verify_password("alice", b"password"),
            Verdict::Ok("alice".into())
        );
        store.plaintext_login("Alice", b"password");
        assert_eq!(
            store.schemes("alice"),
            ["ARGON2ID", "SCRAM-SHA-256", "SCRAM-SHA-1", "NTLM"]
        );
        let (_, keys) = store
            .scram_credentials("alice", ScramHash::Sha256)
            .expect("derived keys");
        assert!(ScramHash::Sha256.verify(&keys, b"password"));
        let after = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = after.lines().collect();
        assert_eq!(lines.len(), 6, "{after}");
        assert_eq!(lines[0], "# users");
        assert!(
            lines[2].starts_with("alice:{SCRAM-SHA-256}4096,"),
            "{after}"
        );
        assert!(lines[2].ends_with(":1000:1000::/home/alice::"), "{after}");
        assert!(lines[4].starts_with("alice:{NTLM}8846F7EAEE8FB117AD06BDD830B7586C:1000"));
        assert_eq!(lines[5], "bob:{PLAIN}b");
        // The file reloads with the same forms; a second login changes nothing.
        let reloaded = UserStore::load(&path).expect("reload");
        assert_eq!(reloaded.schemes("alice"), store.schemes("alice"));
        store.plaintext_login("alice", b"password");
        assert_eq!(fs::read_to_string(&path).expect("read"), after);
        // {PLAIN} already serves everything: nothing is written for bob.
        store.plaintext_login("bob", b"b");
        assert_eq!(fs::read_to_string(&path).expect("read"), after);
    }

    #[test]
    fn digest_md5_is_derived_for_the_realm_only_with_one() {
        let text = format!("Alice:{ARGON}\n");
        let (_dir, path, store) = setup(&text, &["DIGEST-MD5"]);
        // No realm set: nothing can be made, and nothing is pending.
        assert!(!store.derivation_pending("alice"));
        let store = store.with_digest_realm("example.org");
        assert!(store.derivation_pending("alice"));
        store.plaintext_login("ALICE", b"password");
        let want = crate::auth::digest_md5::field("alice", "example.org", b"password");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("Alice:{ARGON}\nalice:{want}\n")
        );
        let (name, secret) = store
            .digest_md5_secret("alice", "example.org")
            .expect("served");
        assert_eq!(name, "alice");
        let want = crate::auth::digest_md5::secret("alice", "example.org", b"password");
        assert_eq!(secret.expose(), want);
        assert!(!store.derivation_pending("alice"));
        // The stored form checks no cleartext password; the Argon2 one still does.
        assert_eq!(
            store.verify_password("alice", b"password"),
            Verdict::Ok("alice".into())
        );
        assert_eq!(
            store
                .digest_md5_secret("nobody", "example.org")
                .map(|(n, _)| n),
            Err(Verdict::BadCredentials)
        );
    }

    #[test]
    fn nothing_happens_without_derivation_or_with_a_wrong_password() {
        let text = format!("alice:{ARGON}\n");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        fs::write(&path, &text).expect("write");
        UserStore::load(&path)
            .expect("load")
            .plaintext_login("alice", b"password");
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
        let (_dir, path, store) = setup(&text, &["SCRAM-SHA-256"]);
        store.plaintext_login("alice", b"not the password");
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
        assert_eq!(store.schemes("alice"), ["ARGON2ID"]);
    }

    #[test]
    fn a_concurrent_edit_is_kept_and_a_changed_password_is_not_overwritten() {
        let text = format!("alice:{ARGON}\ncarol:{ARGON}\n");
        let (_dir, path, store) = setup(&text, &["SCRAM-SHA-256"]);
        // Another writer adds a user and changes carol's password after the store loaded.
        let edited = format!("alice:{ARGON}\ncarol:{{PLAIN}}new\ndave:{{PLAIN}}d\n");
        fs::write(&path, &edited).expect("edit");
        store.plaintext_login("alice", b"password");
        let after = fs::read_to_string(&path).expect("read");
        assert!(after.starts_with(&format!("alice:{ARGON}\nalice:{{SCRAM-SHA-256}}")));
        assert!(
            after.ends_with("carol:{PLAIN}new\ndave:{PLAIN}d\n"),
            "{after}"
        );
        store.plaintext_login("carol", b"password");
        assert_eq!(fs::read_to_string(&path).expect("read"), after);
        assert_eq!(store.schemes("carol"), ["ARGON2ID"]);
    }

    #[test]
    fn concurrent_derivations_from_two_stores_both_land() {
        let text = format!("alice:{ARGON}\nbob:{ARGON}\n");
        let (_dir, path, first) = setup(&text, &["SCRAM-SHA-256"]);
        let second = UserStore::load(&path)
            .expect("load")
            .with_derivation(&path, &mechs(&["SCRAM-SHA-256"]));
        std::thread::scope(|s| {
            s.spawn(|| first.plaintext_login("alice", b"password"));
            s.spawn(|| second.plaintext_login("bob", b"password"));
        });
        let store = UserStore::load(&path).expect("reload");
        for user in ["alice", "bob"] {
            assert_eq!(store.schemes(user), ["ARGON2ID", "SCRAM-SHA-256"], "{user}");
        }
    }

    /// A derivation waiting for the users-file lock (held here, as `mailgate passwd` would)
    /// holds no mutex that other logins or a reload need, and a second login of the same user
    /// meanwhile returns at once instead of deriving twice.
    #[test]
    fn a_waiting_derivation_blocks_no_other_login_or_reload() {
        let text = format!("alice:{ARGON}\nbob:{ARGON}\n");
        let (_dir, path, store) = setup(&text, &["SCRAM-SHA-256"]);
        let held = file::lock(&path).expect("hold the users-file lock");
        std::thread::scope(|s| {
            let first = s.spawn(|| store.plaintext_login("alice", b"password"));
            // Wait (bounded) until the first login is inside its derivation.
            for _ in 0..1_000_000 {
                if store.deriving.lock().expect("lock").contains("alice") {
                    break;
                }
                std::thread::yield_now();
            }
            assert!(store.deriving.lock().expect("lock").contains("alice"));
            // These would have waited for the first derivation (up to the 5 s lock timeout)
            // while it held `derive_failed`.
            store.plaintext_login("alice", b"password");
            store.reload(&path).expect("reload");
            assert!(
                !first.is_finished(),
                "the first derivation still waits for the lock"
            );
            drop(held);
            first.join().expect("first login");
        });
        assert_eq!(store.schemes("alice"), ["ARGON2ID", "SCRAM-SHA-256"]);
        assert!(store.deriving.lock().expect("lock").is_empty());
    }

    #[test]
    fn an_unwritable_file_is_not_retried() {
        let text = format!("alice:{ARGON}\n");
        let (dir, _path, store) = setup(&text, &["SCRAM-SHA-256"]);
        drop(dir);
        store.plaintext_login("alice", b"password");
        assert!(store.derive_failed.lock().expect("lock").contains("alice"));
        assert_eq!(store.schemes("alice"), ["ARGON2ID"]);
    }
}
