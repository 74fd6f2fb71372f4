//! What the checker remembers of the old server's answers, so that a client polling every
//! minute does not cost a login upstream each time and a wrong password retried in a loop
//! does not either.
//!
//! - A success is kept as a salted Argon2id hash of the password (lighter parameters than the
//!   users file's, since it lives only in memory and only for `cache_ttl`): never the
//!   password itself. Checking it is slow by design, so it runs on the blocking pool.
//! - A refusal is kept as an HMAC-SHA-256 of user and password under a key drawn at start and
//!   never stored: it can only answer "this exact pair was refused lately".
//!
//! Both are bounded ([`MAX_ENTRIES`] each); beyond it expired entries go first, then all.

use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// Entries kept in each cache.
pub const MAX_ENTRIES: usize = 100_000;

/// Argon2id for the success cache: 4 MiB, one pass (a few milliseconds).
fn hasher() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(4096, 1, 1, None).expect("valid Argon2 parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The salted hash of `password` to remember a success by (blocking: call it off the async
/// workers).
pub fn remember(password: &[u8]) -> String {
    use argon2::PasswordHasher as _;
    hasher()
        .hash_password(password)
        .expect("Argon2 fails only on RNG failure or a 4 GiB password")
        .to_string()
}

/// Whether `password` is the one `hash` remembers (blocking).
pub fn matches(hash: &str, password: &[u8]) -> bool {
    use argon2::PasswordVerifier as _;
    hasher().verify_password(password, hash).is_ok()
}

/// The two caches.
pub struct Cache {
    ttl: Duration,
    negative_ttl: Duration,
    good: DashMap<String, (String, SystemTime)>,
    bad: DashMap<[u8; 32], SystemTime>,
    key: [u8; 32],
}

impl Cache {
    /// Caches keeping successes for `ttl` and refusals for `negative_ttl` (zero: none).
    pub fn new(ttl: Duration, negative_ttl: Duration) -> Cache {
        Cache {
            ttl,
            negative_ttl,
            good: DashMap::new(),
            bad: DashMap::new(),
            key: rand::random(),
        }
    }

    /// The remembered hash of `user`'s last successful password, if still fresh.
    pub fn success(&self, user: &str, now: SystemTime) -> Option<String> {
        let entry = self.good.get(user)?;
        let (hash, until) = entry.value();
        (now < *until).then(|| hash.clone())
    }

    /// Remembers a success for `user` by `hash` (from [`remember`]).
    pub fn add_success(&self, user: &str, hash: String, now: SystemTime) {
        if self.ttl.is_zero() {
            return;
        }
        if self.good.len() >= MAX_ENTRIES {
            self.good.retain(|_, (_, until)| *until > now);
            if self.good.len() >= MAX_ENTRIES {
                self.good.clear();
            }
        }
        self.good.insert(user.to_owned(), (hash, now + self.ttl));
    }

    /// Forgets `user`'s remembered success (the old server refused a password for them: the
    /// password may have changed there).
    pub fn forget_success(&self, user: &str) {
        self.good.remove(user);
    }

    fn tag(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Whether this user and password were refused within `negative_cache_ttl`.
    pub fn refused(&self, user: &str, password: &[u8], now: SystemTime) -> bool {
        if self.negative_ttl.is_zero() {
            return false;
        }
        let tag = self.tag(user, password);
        self.bad.get(&tag).is_some_and(|until| now < *until)
    }

    /// Remembers that the old server refused this user and password.
    pub fn add_refused(&self, user: &str, password: &[u8], now: SystemTime) {
        if self.negative_ttl.is_zero() {
            return;
        }
        if self.bad.len() >= MAX_ENTRIES {
            self.bad.retain(|_, until| *until > now);
            if self.bad.len() >= MAX_ENTRIES {
                self.bad.clear();
            }
        }
        let tag = self.tag(user, password);
        self.bad.insert(tag, now + self.negative_ttl);
    }
}
