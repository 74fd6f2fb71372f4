//! Growing delays for failed logins, per client address and per user name.
//!
//! Every failed authentication (SMTP AUTH, POP3 PASS/APOP/AUTH) is recorded against the client
//! address (IPv6 grouped by `ipv6_prefix`, as one host rotates addresses within its network)
//! and against the user name tried. After `free_failures` failures each key must wait
//! `base_delay` before its next credential check, doubling with each further failure up to
//! `max_delay`. A failure is remembered for `window` after the most recent one: a quiet
//! `window` forgives.
//!
//! The wait is a reservation, not a per-attempt sleep, so parallel connections cannot multiply
//! the rate:
//! - **By address** ([`Throttle::reserve_addr`]): before a credential is checked, the attempt
//!   takes the address's next free slot and sleeps until it; the slot after it lies one delay
//!   later. Parallel connections from one address queue behind each other, so one address gets
//!   one check per delay however many connections it opens.
//! - **By user** ([`Throttle::admit_user`]): when the credential store is asked about a user
//!   whose delay has not passed, the attempt is refused without checking the credential, and
//!   the refusal counts as a failure. Guesses spread over many addresses therefore get at most
//!   one check per delay against one user, and none while they keep arriving faster than the
//!   delay; other users log in as usual.
//!
//! With the defaults (3 free failures, 2 s base, 60 s cap) a guessing run gets three quick
//! guesses, then waits 2, 4, 8, 16 and 32 s (about eight guesses in its first minute), and
//! after that one guess a minute, for as long as it keeps going within `window`.
//!
//! The cost of the per-user limit: while a user's name is being guessed from elsewhere, that
//! user's own logins are refused too (as with an account lockout) until the guessing stops and
//! one delay (at most `max_delay`) has passed.
//!
//! Addresses in the trusted networks are never throttled by address (a webmail front end must
//! not slow down all its users), but failures from them still count against the user name.
//! Memory is bounded: each map keeps at most [`MAX_KEYS`] keys, dropping about 1% of the
//! least recently failed when full. No time is read here: every call takes `now`.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use ipnet::IpNet;

use crate::allowlist::network_key;
use crate::auth::{Authenticator, ScramCredentials, ScramHash, Secret, Verdict};
use crate::clock::Clock;
use crate::config;

/// Keys kept per map (addresses, user names) by [`Throttle::new`].
pub const MAX_KEYS: usize = 100_000;
/// User names are keyed by at most this many bytes (lower-cased).
pub const MAX_USER_KEY_LEN: usize = 256;

/// Failed-login throttle. Share it behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Throttle {
    by_addr: Counters<IpNet>,
    by_user: Counters<String>,
    free_failures: u32,
    base_delay: Duration,
    max_delay: Duration,
    window: Duration,
    ipv6_prefix: u8,
    /// Replaced when the trusted networks are reloaded (SIGHUP).
    exempt: std::sync::RwLock<Vec<IpNet>>,
}

impl Throttle {
    /// A throttle with the settings of `cfg`; `exempt` (the trusted networks) are never
    /// throttled by address.
    pub fn new(cfg: &config::Throttle, exempt: Vec<IpNet>) -> Self {
        Self::with_max_keys(cfg, exempt, MAX_KEYS)
    }

    /// Like [`Throttle::new`] with a different bound on keys per map (at least 1).
    pub fn with_max_keys(cfg: &config::Throttle, exempt: Vec<IpNet>, max_keys: usize) -> Self {
        Self {
            by_addr: Counters::new(max_keys),
            by_user: Counters::new(max_keys),
            free_failures: cfg.free_failures,
            base_delay: cfg.base_delay,
            max_delay: cfg.max_delay,
            window: cfg.window,
            ipv6_prefix: cfg.ipv6_prefix,
            exempt: std::sync::RwLock::new(exempt),
        }
    }

    /// Replaces the networks never throttled by address (a reload of `trusted_networks`).
    pub fn set_exempt(&self, exempt: Vec<IpNet>) {
        *self.exempt.write().unwrap_or_else(|p| p.into_inner()) = exempt;
    }

    /// The delay implied by the failures remembered for `ip` and for `user` at `now`, the
    /// larger of the two (for inspection and tests; the waits themselves come from
    /// [`Throttle::reserve_addr`] and [`Throttle::admit_user`], which also count queued slots).
    pub fn delay(&self, ip: IpAddr, user: Option<&str>, now: SystemTime) -> Duration {
        let by_addr = match self.addr_key(ip) {
            Some(k) => self.by_addr.failures(&k, now, self.window),
            None => 0,
        };
        let by_user = match user {
            Some(u) => self.by_user.failures(&user_key(u), now, self.window),
            None => 0,
        };
        self.delay_for(by_addr.max(by_user))
    }

    /// Records a failed login from `ip` (and for `user`, if one was named) at `now`.
    pub fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: SystemTime) {
        if let Some(k) = self.addr_key(ip) {
            self.by_addr.bump(k, now, self);
        }
        if let Some(u) = user {
            self.by_user.bump(user_key(u), now, self);
        }
    }

    /// Takes the next slot in which a credential from `ip` may be checked and returns how long
    /// to wait for it from `now` (zero while the address is within its free failures or is
    /// exempt). The slot after it lies one delay later, so concurrent attempts from one address
    /// queue instead of each waiting the same delay in parallel.
    pub fn reserve_addr(&self, ip: IpAddr, now: SystemTime) -> Duration {
        match self.addr_key(ip) {
            Some(k) => self.by_addr.reserve(&k, now, self, false),
            None => Duration::ZERO,
        }
    }

    /// Whether a credential for `user` may be checked at `now`: false while the user's delay
    /// after its last failure (or last admitted check) has not passed. An admitted check takes
    /// the slot, so concurrent guesses from many addresses get one check per delay.
    pub fn admit_user(&self, user: &str, now: SystemTime) -> bool {
        self.by_user
            .reserve(&user_key(user), now, self, true)
            .is_zero()
    }

    /// Records a successful login: forgets the failures of both `ip` and `user`.
    pub fn record_success(&self, ip: IpAddr, user: &str) {
        if let Some(k) = self.addr_key(ip) {
            self.by_addr.map.remove(&k);
        }
        self.by_user.map.remove(&user_key(user));
    }

    /// Forgets failures older than `window` at `now`; returns how many keys were dropped.
    pub fn purge(&self, now: SystemTime) -> usize {
        self.by_addr.purge(now, self.window) + self.by_user.purge(now, self.window)
    }

    /// Keys currently tracked (addresses plus user names).
    pub fn tracked(&self) -> usize {
        self.by_addr.map.len() + self.by_user.map.len()
    }

    /// The delay after `failures` remembered failures.
    fn delay_for(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = failures - self.free_failures;
        let grown = 2u32
            .checked_pow(doublings)
            .and_then(|f| self.base_delay.checked_mul(f))
            .unwrap_or(self.max_delay);
        grown.min(self.max_delay)
    }

    /// The address key, or `None` for exempt addresses.
    fn addr_key(&self, ip: IpAddr) -> Option<IpNet> {
        let exempt = self.exempt.read().unwrap_or_else(|p| p.into_inner());
        (!config::in_networks(&exempt, ip)).then(|| network_key(ip, self.ipv6_prefix))
    }
}

/// Why a login was refused without checking its credential (for the log and the audit).
pub const USER_THROTTLED: &str =
    "too many failed logins for this user recently; credential not checked";

/// The credential store as sessions see it: every check first asks the throttle whether the
/// user may be checked now ([`Throttle::admit_user`]); a refused check fails like a wrong
/// credential (the client learns nothing about the password) and the log says why. It also
/// hands `derive_on_login`'s slow work (hashing, waiting for the users-file lock, fsync) to a
/// thread of its own, so the login does not wait for it and holds no slot of the session
/// verifier meanwhile.
///
/// A decorator rather than a change to each mechanism: the user name is known only once a
/// mechanism has parsed the client's message, and every check the mechanisms ask for is
/// answered through this one trait (`session::Verifier`).
pub struct ThrottledUsers {
    inner: Arc<dyn Authenticator>,
    throttle: Arc<Throttle>,
    clock: Arc<dyn Clock>,
    /// Hands `derive_on_login` work to its thread; `None` until a login first needs it.
    derivations: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Derivation>>>,
}

/// One `derive_on_login` job: the user and the password of a successful plaintext login.
type Derivation = (String, zeroize::Zeroizing<Vec<u8>>);

/// Derivation jobs waiting for the derivation thread; when full, a login's derivation is
/// skipped (it happens at a later login).
const DERIVATION_QUEUE: usize = 64;

impl ThrottledUsers {
    /// `inner` guarded by `throttle`, with time from `clock`.
    pub fn new(
        inner: Arc<dyn Authenticator>,
        throttle: Arc<Throttle>,
        clock: Arc<dyn Clock>,
    ) -> ThrottledUsers {
        ThrottledUsers {
            inner,
            throttle,
            clock,
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
                        while let Ok((user, password)) = rx.recv() {
                            inner.plaintext_login(&user, &password);
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

    fn admit(&self, user: &str) -> bool {
        self.throttle.admit_user(user, self.clock.now())
    }
}

impl Authenticator for ThrottledUsers {
    fn verify_password(&self, user: &str, password: &[u8]) -> Verdict {
        if !self.admit(user) {
            return Verdict::Unavailable(USER_THROTTLED);
        }
        self.inner.verify_password(user, password)
    }

    fn verify_cram_md5(&self, user: &str, challenge: &[u8], digest: &[u8]) -> Verdict {
        if !self.admit(user) {
            return Verdict::Unavailable(USER_THROTTLED);
        }
        self.inner.verify_cram_md5(user, challenge, digest)
    }

    fn verify_apop(&self, user: &str, timestamp: &[u8], digest: &[u8]) -> Verdict {
        if !self.admit(user) {
            return Verdict::Unavailable(USER_THROTTLED);
        }
        self.inner.verify_apop(user, timestamp, digest)
    }

    fn lookup(&self, user: &str) -> Option<String> {
        self.inner.lookup(user)
    }

    fn ntlm_hash(&self, user: &str) -> Result<(String, Secret), Verdict> {
        if !self.admit(user) {
            return Err(Verdict::Unavailable(USER_THROTTLED));
        }
        self.inner.ntlm_hash(user)
    }

    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<(String, ScramCredentials), Verdict> {
        if !self.admit(user) {
            return Err(Verdict::Unavailable(USER_THROTTLED));
        }
        self.inner.scram_credentials(user, hash)
    }

    fn scram_decoy(&self, user: &str, hash: ScramHash) -> ScramCredentials {
        self.inner.scram_decoy(user, hash)
    }

    fn plaintext_login(&self, user: &str, password: &[u8]) {
        if !self.inner.wants_derivation(user) {
            return;
        }
        let job = (user.to_owned(), zeroize::Zeroizing::new(password.to_vec()));
        match self.derivations() {
            Some(queue) => {
                if queue.try_send(job).is_err() {
                    tracing::debug!(user, "derive_on_login: queue full, left for a later login");
                }
            }
            None => self.inner.plaintext_login(user, password),
        }
    }

    fn wants_derivation(&self, user: &str) -> bool {
        self.inner.wants_derivation(user)
    }

    fn password_check_is_slow(&self, user: &str) -> bool {
        self.inner.password_check_is_slow(user)
    }
}

/// The map key for a user name: lower-cased, so case variants share one counter, and bounded.
fn user_key(user: &str) -> String {
    let mut key = String::with_capacity(user.len().min(MAX_USER_KEY_LEN));
    for c in user.chars().flat_map(char::to_lowercase) {
        if key.len() + c.len_utf8() > MAX_USER_KEY_LEN {
            break;
        }
        key.push(c);
    }
    key
}

/// Failures remembered for one key.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: SystemTime,
    /// The earliest time of the next credential check (see [`Throttle::reserve_addr`]).
    next: SystemTime,
}

impl Record {
    fn live(&self, now: SystemTime, window: Duration) -> bool {
        self.last.checked_add(window).is_none_or(|end| end > now)
    }
}

/// A bounded failure counter map.
#[derive(Debug)]
struct Counters<K: Eq + Hash> {
    map: DashMap<K, Record>,
    max_keys: usize,
    evicting: AtomicBool,
}

impl<K: Eq + Hash + Clone> Counters<K> {
    fn new(max_keys: usize) -> Self {
        Self {
            map: DashMap::new(),
            max_keys: max_keys.max(1),
            evicting: AtomicBool::new(false),
        }
    }

    fn failures(&self, key: &K, now: SystemTime, window: Duration) -> u32 {
        self.map
            .get(key)
            .filter(|r| r.live(now, window))
            .map_or(0, |r| r.failures)
    }

    fn bump(&self, key: K, now: SystemTime, th: &Throttle) {
        let mut fresh = false;
        self.map
            .entry(key)
            .and_modify(|r| {
                if r.live(now, th.window) {
                    r.failures = r.failures.saturating_add(1);
                } else {
                    r.failures = 1;
                    r.next = now;
                }
                r.last = r.last.max(now);
                r.next = r.next.max(now + th.delay_for(r.failures));
            })
            .or_insert_with(|| {
                fresh = true;
                Record {
                    failures: 1,
                    last: now,
                    next: now + th.delay_for(1),
                }
            });
        if fresh {
            self.evict_if_full();
        }
    }

    /// Reserves the next check slot of `key` at `now` and returns the wait until it. With
    /// `refuse` a slot that is not free yet is not taken: the wait is returned and nothing
    /// changes (the caller refuses the attempt).
    fn reserve(&self, key: &K, now: SystemTime, th: &Throttle, refuse: bool) -> Duration {
        let Some(mut r) = self.map.get_mut(key) else {
            return Duration::ZERO;
        };
        if !r.live(now, th.window) || r.failures < th.free_failures {
            return Duration::ZERO;
        }
        let slot = r.next.max(now);
        let wait = slot.duration_since(now).unwrap_or_default();
        if refuse && !wait.is_zero() {
            return wait;
        }
        r.next = slot + th.delay_for(r.failures);
        wait
    }

    fn purge(&self, now: SystemTime, window: Duration) -> usize {
        let mut dropped = 0;
        self.map.retain(|_, r| {
            let live = r.live(now, window);
            dropped += usize::from(!live);
            live
        });
        dropped
    }

    /// Drops about 1% of the keys, those that failed least recently, once over the bound.
    fn evict_if_full(&self) {
        if self.map.len() <= self.max_keys || self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        let target = self.max_keys - (self.max_keys / 100).max(1).min(self.max_keys - 1);
        let mut oldest: Vec<(SystemTime, K)> =
            self.map.iter().map(|r| (r.last, r.key().clone())).collect();
        let excess = self.map.len().saturating_sub(target).min(oldest.len());
        if excess > 0 {
            oldest.select_nth_unstable_by_key(excess - 1, |(last, _)| *last);
            for (last, key) in &oldest[..excess] {
                // Skip keys that failed again since the scan.
                self.map.remove_if(key, |_, r| r.last == *last);
            }
        }
        self.evicting.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of `[auth.throttle]`, spelled out so a changed default shows here.
    fn cfg() -> config::Throttle {
        config::Throttle {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(900),
            ipv6_prefix: 48,
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn delay_grows_and_caps() {
        let th = Throttle::new(&cfg(), vec![]);
        // (failures so far, delay before the next attempt)
        let cases = [
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 2),
            (4, 4),
            (5, 8),
            (6, 16),
            (7, 32),
            (8, 60),
            (9, 60),
            (40, 60),
            (u32::MAX, 60),
        ];
        for (n, want) in cases {
            assert_eq!(secs(th.delay_for(n)), want, "after {n} failures");
        }
    }

    #[test]
    fn per_address_run_with_explicit_times() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..9 {
            let d = th.delay(a, None, t(now));
            delays.push(secs(d));
            now += secs(d) + 1;
            th.record_failure(a, None, t(now));
        }
        assert_eq!(delays, [0, 0, 0, 2, 4, 8, 16, 32, 60]);
        // Another address is unaffected.
        assert_eq!(th.delay(ip("192.0.2.2"), None, t(now)), Duration::ZERO);
        // Remembered until `window` after the last failure, then forgiven.
        assert_eq!(secs(th.delay(a, None, t(now + 899))), 60);
        assert_eq!(th.delay(a, None, t(now + 900)), Duration::ZERO);
        // A failure after the window starts counting from one again.
        th.record_failure(a, None, t(now + 1000));
        assert_eq!(th.delay(a, None, t(now + 1000)), Duration::ZERO);
    }

    #[test]
    fn per_user_spans_addresses_and_case() {
        let th = Throttle::new(&cfg(), vec![]);
        for (i, user) in ["alice", "Alice", "ALICE", "alice"].iter().enumerate() {
            th.record_failure(
                IpAddr::from([198, 51, 100, i as u8]),
                Some(user),
                t(i as u64),
            );
        }
        // A fresh address guessing alice waits; guessing bob it does not.
        let fresh = ip("203.0.113.9");
        assert_eq!(secs(th.delay(fresh, Some("alice"), t(10))), 4);
        assert_eq!(th.delay(fresh, Some("bob"), t(10)), Duration::ZERO);
        assert_eq!(th.delay(fresh, None, t(10)), Duration::ZERO);
    }

    #[test]
    fn larger_of_address_and_user() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        for (i, user) in ["u1", "u2", "u3", "u4", "u5"].iter().enumerate() {
            th.record_failure(a, Some(user), t(i as u64));
        }
        assert_eq!(secs(th.delay(a, Some("u1"), t(10))), 8);
        assert_eq!(secs(th.delay(ip("192.0.2.2"), Some("u1"), t(10))), 0);
    }

    #[test]
    fn concurrent_attempts_from_one_address_queue_for_slots() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(th.reserve_addr(a, t(i)), Duration::ZERO, "free attempt {i}");
            th.record_failure(a, None, t(i));
        }
        th.record_failure(a, None, t(3));
        // Four failures: 4 s until the next check. Five connections ask at once: each takes
        // the next slot, one delay after the one before, instead of all waiting 4 s.
        let waits: Vec<u64> = (0..5).map(|_| secs(th.reserve_addr(a, t(3)))).collect();
        assert_eq!(waits, [4, 8, 12, 16, 20]);
        // Another address is not queued behind them.
        assert_eq!(th.reserve_addr(ip("192.0.2.2"), t(3)), Duration::ZERO);
        // The queue now ends at 27 s; a failure at 8 s (delay 8 s) does not bring it forward.
        th.record_failure(a, None, t(8));
        assert_eq!(secs(th.reserve_addr(a, t(9))), 27 - 9);
    }

    #[test]
    fn a_sequential_run_waits_the_grown_delay_before_each_check() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        let mut now = 0;
        let mut waits = vec![];
        for _ in 0..9 {
            let w = secs(th.reserve_addr(a, t(now)));
            waits.push(w);
            now += w;
            th.record_failure(a, None, t(now));
        }
        assert_eq!(waits, [0, 0, 0, 2, 4, 8, 16, 32, 60]);
    }

    #[test]
    fn a_user_gets_one_check_per_delay_from_any_address() {
        let th = Throttle::new(&cfg(), vec![]);
        // Three free failures, from three addresses.
        for i in 0..3u8 {
            assert!(th.admit_user("alice", t(u64::from(i))));
            th.record_failure(
                IpAddr::from([198, 51, 100, i]),
                Some("alice"),
                t(u64::from(i)),
            );
        }
        // The third failure (at 2 s) set a 2 s delay: refused until 4 s, whatever the address.
        assert!(!th.admit_user("Alice", t(3)));
        // Refused attempts count: the refusal at 3 s is failure 4, so the next check is at 7 s.
        th.record_failure(ip("203.0.113.1"), Some("alice"), t(3));
        assert!(!th.admit_user("alice", t(6)));
        // At 7 s one check is admitted and takes the slot: a concurrent one is refused.
        assert!(th.admit_user("alice", t(7)));
        assert!(!th.admit_user("alice", t(7)));
        // Other users are not affected.
        assert!(th.admit_user("bob", t(7)));
        // A success forgets the user.
        th.record_success(ip("203.0.113.1"), "alice");
        assert!(th.admit_user("alice", t(7)));
    }

    #[test]
    fn throttled_users_refuse_without_checking() {
        use crate::auth::UserStore;
        use crate::clock::ManualClock;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "alice:{PLAIN}secret\n").unwrap();
        let store = Arc::new(UserStore::load(&path).unwrap());
        let throttle = Arc::new(Throttle::new(&cfg(), vec![]));
        let clock = Arc::new(ManualClock::new(t(0)));
        let users = ThrottledUsers::new(store, throttle.clone(), clock.clone());
        assert_eq!(
            users.verify_password("alice", b"secret"),
            Verdict::Ok("alice".into())
        );
        for i in 0..3 {
            throttle.record_failure(ip("198.51.100.1"), Some("alice"), t(i));
        }
        clock.advance(Duration::from_secs(3));
        // The right password is not even checked while the delay runs.
        assert_eq!(
            users.verify_password("alice", b"secret"),
            Verdict::Unavailable(USER_THROTTLED)
        );
        assert!(matches!(
            users.ntlm_hash("alice"),
            Err(Verdict::Unavailable(USER_THROTTLED))
        ));
        assert!(
            users.lookup("alice").is_some(),
            "recipient checks are not throttled"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            users.verify_password("alice", b"secret"),
            Verdict::Ok("alice".into())
        );
    }

    #[test]
    fn ipv6_grouped_by_prefix_and_v4_mapped_canonical() {
        let th = Throttle::new(&cfg(), vec![]);
        // (address of each failure)
        let failures = [
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
            "2001:db8:1:2:ffff::3",
            "2001:db8:1:2::4",
        ];
        for (i, f) in failures.iter().enumerate() {
            th.record_failure(ip(f), None, t(i as u64));
        }
        assert_eq!(secs(th.delay(ip("2001:db8:1:2::99"), None, t(5))), 4);
        assert_eq!(secs(th.delay(ip("2001:db8:2::1"), None, t(5))), 0);
        for i in 0..3 {
            th.record_failure(ip("::ffff:192.0.2.7"), None, t(i));
        }
        assert_eq!(secs(th.delay(ip("192.0.2.7"), None, t(5))), 2);
    }

    #[test]
    fn success_resets_both() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        for i in 0..5 {
            th.record_failure(a, Some("alice"), t(i));
        }
        assert_eq!(secs(th.delay(a, Some("alice"), t(5))), 8);
        th.record_success(a, "Alice");
        assert_eq!(th.delay(a, Some("alice"), t(6)), Duration::ZERO);
        assert_eq!(th.tracked(), 0);
    }

    #[test]
    fn trusted_networks_exempt_by_address_only() {
        let th = Throttle::new(&cfg(), vec!["10.0.0.0/8".parse().unwrap()]);
        let a = ip("10.1.2.3");
        for i in 0..6 {
            th.record_failure(a, Some("alice"), t(i));
            th.record_failure(ip("::ffff:10.1.2.3"), None, t(i));
        }
        assert_eq!(th.delay(a, None, t(10)), Duration::ZERO);
        assert_eq!(th.delay(a, Some("bob"), t(10)), Duration::ZERO);
        assert_eq!(secs(th.delay(a, Some("alice"), t(10))), 16);
        // A reload that drops the network: its failures from now on count by address.
        th.set_exempt(Vec::new());
        for i in 10..16 {
            th.record_failure(a, None, t(i));
        }
        assert!(th.delay(a, None, t(20)) > Duration::ZERO);
    }

    #[test]
    fn purge_forgets_old_failures() {
        let th = Throttle::new(&cfg(), vec![]);
        th.record_failure(ip("192.0.2.1"), Some("a"), t(0));
        th.record_failure(ip("192.0.2.2"), Some("b"), t(500));
        assert_eq!(th.purge(t(899)), 0);
        assert_eq!(th.purge(t(900)), 2);
        assert_eq!(th.tracked(), 2);
        assert_eq!(th.purge(t(1400)), 2);
        assert_eq!(th.tracked(), 0);
    }

    #[test]
    fn bounded_keys_evict_least_recent() {
        let th = Throttle::with_max_keys(&cfg(), vec![], 100);
        for i in 0..=100u64 {
            th.record_failure(IpAddr::from([10, 0, 0, i as u8]), None, t(i));
        }
        // 101 > 100: evict down to 99% of the bound, dropping the two oldest keys.
        assert_eq!(th.tracked(), 99);
        th.record_failure(ip("10.0.0.100"), None, t(200)); // known key: no growth
        assert_eq!(th.tracked(), 99);
        for i in [0, 1] {
            assert_eq!(
                th.by_addr.failures(
                    &network_key(IpAddr::from([10, 0, 0, i]), 64),
                    t(201),
                    cfg().window
                ),
                0
            );
        }
        assert_eq!(
            th.by_addr
                .failures(&network_key(ip("10.0.0.2"), 64), t(201), cfg().window),
            1
        );
        // Long user names are bounded.
        th.record_failure(ip("192.0.2.1"), Some(&"X".repeat(10_000)), t(300));
        assert!(
            th.by_user
                .map
                .iter()
                .all(|r| r.key().len() <= MAX_USER_KEY_LEN)
        );
    }
}
