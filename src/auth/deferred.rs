//! `derive_on_login` without making the login wait: a decorator of the credential store that
//! hands the slow work of a derivation (hashing, waiting for the users-file lock, fsync) to a
//! thread of its own behind a bounded queue, and passes everything else through. The login
//! is answered at once and holds no slot of the session verifier meanwhile.

use std::sync::Arc;

use super::{Authenticator, ScramCredentials, ScramHash, Secret, Verdict};

/// The credential store as sessions see it: the store itself, with `derive_on_login` work
/// deferred to the derivation thread.
pub struct DeferredDerivation {
    inner: Arc<dyn Authenticator>,
    /// Hands `derive_on_login` work to its thread; `None` until a login first needs it.
    derivations: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Derivation>>>,
}

/// One job: the user and the password of a successful plaintext login, and whether it is a
/// capture (the old server accepted it) rather than a `derive_on_login`.
type Derivation = (String, zeroize::Zeroizing<Vec<u8>>, bool);

/// Derivation jobs waiting for the derivation thread; when full, a login's derivation is
/// skipped (it happens at a later login).
const DERIVATION_QUEUE: usize = 64;

impl DeferredDerivation {
    /// `inner`, with its derivations deferred.
    pub fn new(inner: Arc<dyn Authenticator>) -> DeferredDerivation {
        DeferredDerivation {
            inner,
            derivations: std::sync::OnceLock::new(),
        }
    }

    /// The queue of the derivation thread, started at first use. One thread suffices: the
    /// derivations of a users file run one at a time under its lock anyway, and a bounded
    /// queue keeps a burst of first logins from tying up threads that wait for that lock.
    fn derivations(&self) -> Option<&std::sync::mpsc::SyncSender<Derivation>> {
        self.derivations
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Derivation>(DERIVATION_QUEUE);
                let inner = self.inner.clone();
                let spawned = std::thread::Builder::new()
                    .name("derive-on-login".into())
                    .spawn(move || {
                        // Ends when the store (and the sender) is dropped.
                        while let Ok((user, password, capture)) = rx.recv() {
                            if capture {
                                inner.capture(&user, &password);
                            } else {
                                inner.plaintext_login(&user, &password);
                            }
                        }
                    });
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        tracing::warn!("derive_on_login: cannot start its thread: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }
}

impl Authenticator for DeferredDerivation {
    fn verify_password(&self, user: &str, password: &[u8]) -> Verdict {
        self.inner.verify_password(user, password)
    }

    fn verify_cram_md5(&self, user: &str, challenge: &[u8], digest: &[u8]) -> Verdict {
        self.inner.verify_cram_md5(user, challenge, digest)
    }

    fn verify_apop(&self, user: &str, timestamp: &[u8], digest: &[u8]) -> Verdict {
        self.inner.verify_apop(user, timestamp, digest)
    }

    fn lookup(&self, user: &str) -> Option<String> {
        self.inner.lookup(user)
    }

    fn ntlm_hash(&self, user: &str) -> Result<(String, Secret), Verdict> {
        self.inner.ntlm_hash(user)
    }

    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<(String, ScramCredentials), Verdict> {
        self.inner.scram_credentials(user, hash)
    }

    fn scram_decoy(&self, user: &str, hash: ScramHash) -> ScramCredentials {
        self.inner.scram_decoy(user, hash)
    }

    fn digest_md5_secret(&self, user: &str, realm: &str) -> Result<(String, Secret), Verdict> {
        self.inner.digest_md5_secret(user, realm)
    }

    fn plaintext_login(&self, user: &str, password: &[u8]) {
        if !self.inner.wants_derivation(user) {
            return;
        }
        let job = (
            user.to_owned(),
            zeroize::Zeroizing::new(password.to_vec()),
            false,
        );
        match self.derivations() {
            Some(queue) => {
                if queue.try_send(job).is_err() {
                    tracing::debug!(user, "derive_on_login: queue full, left for a later login");
                }
            }
            None => self.inner.plaintext_login(user, password),
        }
    }

    fn capture(&self, user: &str, password: &[u8]) {
        if !self.inner.wants_capture() {
            return;
        }
        let job = (
            user.to_owned(),
            zeroize::Zeroizing::new(password.to_vec()),
            true,
        );
        match self.derivations() {
            Some(queue) => {
                if queue.try_send(job).is_err() {
                    tracing::debug!(user, "capture: queue full, left for a later login");
                }
            }
            None => self.inner.capture(user, password),
        }
    }

    fn wants_capture(&self) -> bool {
        self.inner.wants_capture()
    }

    fn wants_derivation(&self, user: &str) -> bool {
        self.inner.wants_derivation(user)
    }

    fn password_check_is_slow(&self, user: &str) -> bool {
        self.inner.password_check_is_slow(user)
    }
}
