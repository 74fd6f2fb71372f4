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
//! - **By user** ([`Throttle::admit_user`]): when the session verifier is asked to check a
//!   credential of a user whose delay has not passed, the attempt is refused without checking
//!   the credential, and the refusal counts as a failure. Guesses spread over many addresses
//!   therefore get at most one check per delay against one user, and none while they keep
//!   arriving faster than the delay; other users log in as usual.
//!
//! With the defaults (3 free failures, 2 s base, 60 s cap) a guessing run gets three quick
//! guesses, then waits 2, 4, 8, 16 and 32 s (about eight guesses in its first minute), and
//! after that one guess a minute, for as long as it keeps going within `window`.
//!
//! **Known networks are spared the per-user limit.** A network a user logged in from within
//! `known_address_window` (30 days by default; [`KnownAddresses`]) is checked for that user
//! without asking the per-user schedule, so guessing a user's password from elsewhere does not
//! lock the user out of their own desk, phone or printer; only the address's own delay applies
//! there. From a network the user has not used lately, the per-user limit applies as above
//! (as with an account lockout) until the guessing stops and one delay (at most `max_delay`)
//! has passed.
//!
//! A login refused by the per-user limit was never checked, so it is not counted against the
//! user (see [`refused_unchecked`]): a client that keeps retrying while the limit runs does not
//! push its end further out. It still counts against its address, which keeps a guesser's
//! own queue growing.
//!
//! Addresses in the trusted networks are never throttled by address (a webmail front end must
//! not slow down all its users), but failures from them still count against the user name.
//!
//! The counters live behind [`FailureCounters`] (`store/`): in this process today
//! ([`MemoryCounters`], bounded to [`MAX_KEYS`] keys of each kind, dropping about 1% of the
//! least recently failed when full), shared between nodes by another backend later. A store
//! that cannot answer fails open with a warning: the throttle slows guessing down, and an
//! outage of its store must not lock every user out. No time is read here: every call takes
//! `now`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::config;
use crate::store::known::MemoryKnownAddresses;
use crate::store::memory::MemoryCounters;
use crate::store::{Backoff, CounterKey, FailureCounters, KnownAddresses, Reserve, network_key};

pub use crate::store::MAX_USER_KEY_LEN;

/// Keys kept per kind (addresses, user names) by [`Throttle::new`].
pub const MAX_KEYS: usize = 100_000;

/// Why a login was refused without checking its credential (for the log and the audit).
pub const USER_THROTTLED: &str =
    "too many failed logins for this user recently; credential not checked";

/// Whether a failure note says the credential was never checked ([`USER_THROTTLED`]): such a
/// refusal is not counted as a failure.
pub fn refused_unchecked(note: &str) -> bool {
    note.contains(USER_THROTTLED)
}

/// Logs a user under attack (logins refused by the per-user limit) once a minute at most per
/// user, so that an admin sees whose name is being guessed without one line per guess.
#[derive(Debug, Default)]
pub struct AttackLog {
    last: std::sync::Mutex<std::collections::HashMap<String, SystemTime>>,
}

/// Users whose last line is remembered; beyond it the memory starts afresh.
const ATTACK_LOG_USERS: usize = 1024;

impl AttackLog {
    /// Notes a login as `user` from `ip` refused without a check at `now`.
    pub fn note(&self, user: &str, ip: IpAddr, now: SystemTime) {
        let key = match CounterKey::user(user) {
            CounterKey::User(k) => k.to_string(),
            CounterKey::Addr(_) => return,
        };
        // A map of times only: consistent after every step.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last
            .get(&key)
            .is_none_or(|t| now.duration_since(*t).unwrap_or_default() >= Duration::from_secs(60));
        if !due {
            return;
        }
        if last.len() >= ATTACK_LOG_USERS {
            last.clear();
        }
        last.insert(key, now);
        tracing::warn!(
            user = %user,
            last_address = %ip,
            "user under attack: logins refused without a credential check (per-user throttle); \
             networks the user logged in from lately are not affected"
        );
    }
}

/// Failed-login throttle. Share it behind an `Arc`; all methods take `&self`.
pub struct Throttle {
    counters: Arc<dyn FailureCounters>,
    known: Arc<dyn KnownAddresses>,
    /// Known networks are remembered (a non-zero window).
    spares_known: bool,
    backoff: Backoff,
    ipv6_prefix: u8,
    /// Replaced when the trusted networks are reloaded (SIGHUP).
    exempt: std::sync::RwLock<Vec<IpNet>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("backoff", &self.backoff)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle with the settings of `cfg` over in-process counters; `exempt` (the trusted
    /// networks) are never throttled by address.
    pub fn new(cfg: &config::Throttle, exempt: Vec<IpNet>) -> Self {
        Self::with_max_keys(cfg, exempt, MAX_KEYS)
    }

    /// Like [`Throttle::new`] with a different bound on keys per kind (at least 1).
    pub fn with_max_keys(cfg: &config::Throttle, exempt: Vec<IpNet>, max_keys: usize) -> Self {
        Self::with_counters(cfg, exempt, Arc::new(MemoryCounters::new(max_keys)))
    }

    /// A throttle over `counters` (a shared backend).
    pub fn with_counters(
        cfg: &config::Throttle,
        exempt: Vec<IpNet>,
        counters: Arc<dyn FailureCounters>,
    ) -> Self {
        Self {
            counters,
            known: Arc::new(MemoryKnownAddresses::new(
                cfg.known_address_window,
                MAX_KEYS,
            )),
            spares_known: !cfg.known_address_window.is_zero(),
            backoff: Backoff {
                free_failures: cfg.free_failures,
                base_delay: cfg.base_delay,
                max_delay: cfg.max_delay,
                window: cfg.window,
            },
            ipv6_prefix: cfg.ipv6_prefix,
            exempt: std::sync::RwLock::new(exempt),
        }
    }

    /// This throttle with `known` as its store of known networks (one that persists, or a
    /// shared backend).
    pub fn with_known(mut self, known: Arc<dyn KnownAddresses>) -> Self {
        self.known = known;
        self
    }

    /// The store of known networks (for the housekeeping's purge and snapshot).
    pub fn known(&self) -> &Arc<dyn KnownAddresses> {
        &self.known
    }

    /// Whether a credential for `user` from `ip` may be checked at `now`: always from a
    /// network `user` logged in from lately, else as [`Throttle::admit_user`] says.
    pub async fn admit(&self, user: &str, ip: IpAddr, now: SystemTime) -> bool {
        let net = network_key(ip, self.ipv6_prefix);
        match self.known.is_known(user, net, now).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::warn!("known-networks store: {e}"),
        }
        self.admit_user(user, now).await
    }

    /// Replaces the networks never throttled by address (a reload of `trusted_networks`).
    pub fn set_exempt(&self, exempt: Vec<IpNet>) {
        *self.exempt.write().unwrap_or_else(|p| p.into_inner()) = exempt;
    }

    /// The delay implied by the failures remembered for `ip` and for `user` at `now`, the
    /// larger of the two (for inspection and tests; the waits themselves come from
    /// [`Throttle::reserve_addr`] and [`Throttle::admit_user`], which also count queued slots).
    pub async fn delay(&self, ip: IpAddr, user: Option<&str>, now: SystemTime) -> Duration {
        let window = self.backoff.window;
        let by_addr = match self.addr_key(ip) {
            Some(k) => self.counted(self.counters.get(&k, now, window).await),
            None => 0,
        };
        let by_user = match user {
            Some(u) => {
                let k = CounterKey::user(u);
                self.counted(self.counters.get(&k, now, window).await)
            }
            None => 0,
        };
        self.backoff.delay_for(by_addr.max(by_user))
    }

    /// Records a failed login from `ip` (and for `user`, if one was named) at `now`.
    pub async fn record_failure(&self, ip: IpAddr, user: Option<&str>, now: SystemTime) {
        if let Some(k) = self.addr_key(ip) {
            self.counted(self.counters.bump(&k, now, self.backoff).await);
        }
        if let Some(u) = user {
            let k = CounterKey::user(u);
            self.counted(self.counters.bump(&k, now, self.backoff).await);
        }
    }

    /// Takes the next slot in which a credential from `ip` may be checked and returns how long
    /// to wait for it from `now` (zero while the address is within its free failures or is
    /// exempt). The slot after it lies one delay later, so concurrent attempts from one address
    /// queue instead of each waiting the same delay in parallel.
    pub async fn reserve_addr(&self, ip: IpAddr, now: SystemTime) -> Duration {
        let Some(k) = self.addr_key(ip) else {
            return Duration::ZERO;
        };
        let reserved = self
            .counters
            .reserve(&k, now, self.backoff, Reserve::Queue)
            .await;
        self.counted(reserved)
    }

    /// Gives back the slot [`Throttle::reserve_addr`] took for `ip` when its client left before
    /// the slot came: an abandoned exchange neither lengthens the address's queue nor gets
    /// checked later.
    pub async fn release_addr(&self, ip: IpAddr, now: SystemTime) {
        if let Some(k) = self.addr_key(ip)
            && let Err(e) = self.counters.release(&k, now, self.backoff).await
        {
            tracing::warn!("throttle store: {e}");
        }
    }

    /// Whether a credential for `user` may be checked at `now`: false while the user's delay
    /// after its last failure (or last admitted check) has not passed. An admitted check takes
    /// the slot, so concurrent guesses from many addresses get one check per delay.
    pub async fn admit_user(&self, user: &str, now: SystemTime) -> bool {
        let k = CounterKey::user(user);
        let reserved = self
            .counters
            .reserve(&k, now, self.backoff, Reserve::IfFree)
            .await;
        self.counted(reserved).is_zero()
    }

    /// Records a successful login at `now`: forgets the failures of `ip` and remembers its
    /// network as known for `user`; forgets `user`'s failures only where known networks are
    /// turned off (`known_address_window = "0s"`).
    pub async fn record_success(&self, ip: IpAddr, user: &str, now: SystemTime) {
        let net = network_key(ip, self.ipv6_prefix);
        if let Err(e) = self.known.remember(user, net, now).await {
            tracing::warn!("known-networks store: {e}");
        }
        if let Some(k) = self.addr_key(ip)
            && let Err(e) = self.counters.reset(&k).await
        {
            tracing::warn!("throttle store: {e}");
        }
        // With known networks the user's count stays: the owner's login from their network
        // says nothing about the guessers elsewhere, who would otherwise get fresh free
        // guesses each time the owner's mail client logs in. Without them, the old rule: a
        // success forgets the user, or the owner would wait on the next login too.
        if !self.spares_known
            && let Err(e) = self.counters.reset(&CounterKey::user(user)).await
        {
            tracing::warn!("throttle store: {e}");
        }
    }

    /// Forgets failures older than `window` at `now`; returns how many keys were dropped.
    pub async fn purge(&self, now: SystemTime) -> usize {
        self.counted(self.counters.purge(now, self.backoff.window).await)
    }

    /// Keys currently tracked (addresses plus user names).
    pub async fn tracked(&self) -> usize {
        self.counted(self.counters.len().await)
    }

    /// The address key, or `None` for exempt addresses.
    fn addr_key(&self, ip: IpAddr) -> Option<CounterKey> {
        let exempt = self.exempt.read().unwrap_or_else(|p| p.into_inner());
        (!config::in_networks(&exempt, ip))
            .then(|| CounterKey::Addr(network_key(ip, self.ipv6_prefix)))
    }

    /// A count or wait from the store; a store that cannot answer counts nothing and imposes
    /// no wait (fails open).
    fn counted<T: Default>(&self, answer: Result<T, crate::store::Error>) -> T {
        answer.unwrap_or_else(|e| {
            tracing::warn!("throttle store: {e}");
            T::default()
        })
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
            known_address_window: Duration::from_secs(30 * 86_400),
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

    #[tokio::test]
    async fn delay_grows_and_caps() {
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
            assert_eq!(secs(th.backoff.delay_for(n)), want, "after {n} failures");
        }
    }

    #[tokio::test]
    async fn per_address_run_with_explicit_times() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..9 {
            let d = th.delay(a, None, t(now)).await;
            delays.push(secs(d));
            now += secs(d) + 1;
            th.record_failure(a, None, t(now)).await;
        }
        assert_eq!(delays, [0, 0, 0, 2, 4, 8, 16, 32, 60]);
        // Another address is unaffected.
        assert_eq!(
            th.delay(ip("192.0.2.2"), None, t(now)).await,
            Duration::ZERO
        );
        // Remembered until `window` after the last failure, then forgiven.
        assert_eq!(secs(th.delay(a, None, t(now + 899)).await), 60);
        assert_eq!(th.delay(a, None, t(now + 900)).await, Duration::ZERO);
        // A failure after the window starts counting from one again.
        th.record_failure(a, None, t(now + 1000)).await;
        assert_eq!(th.delay(a, None, t(now + 1000)).await, Duration::ZERO);
    }

    #[tokio::test]
    async fn per_user_spans_addresses_and_case() {
        let th = Throttle::new(&cfg(), vec![]);
        for (i, user) in ["alice", "Alice", "ALICE", "alice"].iter().enumerate() {
            th.record_failure(
                IpAddr::from([198, 51, 100, i as u8]),
                Some(user),
                t(i as u64),
            )
            .await;
        }
        // A fresh address guessing alice waits; guessing bob it does not.
        let fresh = ip("203.0.113.9");
        assert_eq!(secs(th.delay(fresh, Some("alice"), t(10)).await), 4);
        assert_eq!(th.delay(fresh, Some("bob"), t(10)).await, Duration::ZERO);
        assert_eq!(th.delay(fresh, None, t(10)).await, Duration::ZERO);
    }

    #[tokio::test]
    async fn larger_of_address_and_user() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        for (i, user) in ["u1", "u2", "u3", "u4", "u5"].iter().enumerate() {
            th.record_failure(a, Some(user), t(i as u64)).await;
        }
        assert_eq!(secs(th.delay(a, Some("u1"), t(10)).await), 8);
        assert_eq!(secs(th.delay(ip("192.0.2.2"), Some("u1"), t(10)).await), 0);
    }

    #[tokio::test]
    async fn concurrent_attempts_from_one_address_queue_for_slots() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(
                th.reserve_addr(a, t(i)).await,
                Duration::ZERO,
                "free attempt {i}"
            );
            th.record_failure(a, None, t(i)).await;
        }
        th.record_failure(a, None, t(3)).await;
        // Four failures: 4 s until the next check. Five connections ask at once: each takes
        // the next slot, one delay after the one before, instead of all waiting 4 s.
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.push(secs(th.reserve_addr(a, t(3)).await));
        }
        assert_eq!(waits, [4, 8, 12, 16, 20]);
        // Another address is not queued behind them.
        assert_eq!(th.reserve_addr(ip("192.0.2.2"), t(3)).await, Duration::ZERO);
        // The queue now ends at 27 s; a failure at 8 s (delay 8 s) does not bring it forward.
        th.record_failure(a, None, t(8)).await;
        assert_eq!(secs(th.reserve_addr(a, t(9)).await), 27 - 9);
    }

    #[tokio::test]
    async fn a_sequential_run_waits_the_grown_delay_before_each_check() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        let mut now = 0;
        let mut waits = vec![];
        for _ in 0..9 {
            let w = secs(th.reserve_addr(a, t(now)).await);
            waits.push(w);
            now += w;
            th.record_failure(a, None, t(now)).await;
        }
        assert_eq!(waits, [0, 0, 0, 2, 4, 8, 16, 32, 60]);
    }

    #[tokio::test]
    async fn a_user_gets_one_check_per_delay_from_any_address() {
        let th = Throttle::new(&cfg(), vec![]);
        // Three free failures, from three addresses.
        for i in 0..3u8 {
            assert!(th.admit_user("alice", t(u64::from(i))).await);
            th.record_failure(
                IpAddr::from([198, 51, 100, i]),
                Some("alice"),
                t(u64::from(i)),
            )
            .await;
        }
        // The third failure (at 2 s) set a 2 s delay: refused until 4 s, whatever the address.
        assert!(!th.admit_user("Alice", t(3)).await);
        // Refused attempts count: the refusal at 3 s is failure 4, so the next check is at 7 s.
        th.record_failure(ip("203.0.113.1"), Some("alice"), t(3))
            .await;
        assert!(!th.admit_user("alice", t(6)).await);
        // At 7 s one check is admitted and takes the slot: a concurrent one is refused.
        assert!(th.admit_user("alice", t(7)).await);
        assert!(!th.admit_user("alice", t(7)).await);
        // Other users are not affected.
        assert!(th.admit_user("bob", t(7)).await);
        // A success makes its network known: checked there at once, not elsewhere.
        th.record_success(ip("203.0.113.1"), "alice", t(7)).await;
        assert!(th.admit("alice", ip("203.0.113.1"), t(7)).await);
        assert!(!th.admit("alice", ip("192.0.2.99"), t(7)).await);
    }

    #[tokio::test]
    async fn ipv6_grouped_by_prefix_and_v4_mapped_canonical() {
        let th = Throttle::new(&cfg(), vec![]);
        // (address of each failure)
        let failures = [
            "2001:db8:1:2::1",
            "2001:db8:1:2::2",
            "2001:db8:1:2:ffff::3",
            "2001:db8:1:2::4",
        ];
        for (i, f) in failures.iter().enumerate() {
            th.record_failure(ip(f), None, t(i as u64)).await;
        }
        assert_eq!(secs(th.delay(ip("2001:db8:1:2::99"), None, t(5)).await), 4);
        assert_eq!(secs(th.delay(ip("2001:db8:2::1"), None, t(5)).await), 0);
        for i in 0..3 {
            th.record_failure(ip("::ffff:192.0.2.7"), None, t(i)).await;
        }
        assert_eq!(secs(th.delay(ip("192.0.2.7"), None, t(5)).await), 2);
    }

    /// Issue: 200 guesses for bob from 50 addresses kept the real bob out. His own network is
    /// spared the per-user limit, a network he has not used is not, and the refusals the
    /// limit makes are not failures that push its end out.
    #[tokio::test]
    async fn guessing_does_not_lock_the_user_out_of_a_known_network() {
        let th = Throttle::new(&cfg(), vec![]);
        let home = ip("192.0.2.10");
        th.record_success(home, "bob", t(0)).await;
        for i in 0..200u64 {
            let guesser = ip(&format!("198.51.100.{}", i % 50));
            th.record_failure(guesser, Some("bob"), t(10 + i / 10))
                .await;
        }
        let now = t(40);
        assert!(th.admit("bob", home, now).await);
        assert!(!th.admit("bob", ip("203.0.113.5"), now).await);
        // Known per network: the /48 of an IPv6 address, as elsewhere.
        th.record_success(ip("2001:db8:1:2::5"), "bob", now).await;
        assert!(th.admit("bob", ip("2001:db8:1:ffff::9"), now).await);
        // Forgotten after the window.
        let later = t(30 * 86_400 + 1);
        let net = network_key(home, 48);
        assert!(th.known().is_known("bob", net, t(86_400)).await.unwrap());
        assert!(!th.known().is_known("bob", net, later).await.unwrap());
        assert!(refused_unchecked(&format!("PLAIN: {USER_THROTTLED}")));
        assert!(!refused_unchecked("PLAIN: invalid credentials"));
    }

    #[tokio::test]
    async fn success_resets_both() {
        let th = Throttle::new(&cfg(), vec![]);
        let a = ip("192.0.2.1");
        for i in 0..5 {
            th.record_failure(a, Some("alice"), t(i)).await;
        }
        assert_eq!(secs(th.delay(a, Some("alice"), t(5)).await), 8);
        th.record_success(a, "Alice", t(5)).await;
        // The address is forgiven; the user's count stays for networks alice has not used.
        assert_eq!(th.delay(a, None, t(6)).await, Duration::ZERO);
        assert_eq!(secs(th.delay(a, Some("alice"), t(6)).await), 8);
        assert!(th.admit("alice", a, t(6)).await);
        // With known networks turned off, a success forgets the user too.
        let off = Throttle::new(
            &config::Throttle {
                known_address_window: Duration::ZERO,
                ..cfg()
            },
            vec![],
        );
        for i in 0..5 {
            off.record_failure(a, Some("alice"), t(i)).await;
        }
        off.record_success(a, "Alice", t(5)).await;
        assert_eq!(off.delay(a, Some("alice"), t(6)).await, Duration::ZERO);
        assert_eq!(off.tracked().await, 0);
    }

    #[tokio::test]
    async fn trusted_networks_exempt_by_address_only() {
        let th = Throttle::new(&cfg(), vec!["10.0.0.0/8".parse().unwrap()]);
        let a = ip("10.1.2.3");
        for i in 0..6 {
            th.record_failure(a, Some("alice"), t(i)).await;
            th.record_failure(ip("::ffff:10.1.2.3"), None, t(i)).await;
        }
        assert_eq!(th.delay(a, None, t(10)).await, Duration::ZERO);
        assert_eq!(th.delay(a, Some("bob"), t(10)).await, Duration::ZERO);
        assert_eq!(secs(th.delay(a, Some("alice"), t(10)).await), 16);
        // A reload that drops the network: its failures from now on count by address.
        th.set_exempt(Vec::new());
        for i in 10..16 {
            th.record_failure(a, None, t(i)).await;
        }
        assert!(th.delay(a, None, t(20)).await > Duration::ZERO);
    }

    #[tokio::test]
    async fn purge_forgets_old_failures() {
        let th = Throttle::new(&cfg(), vec![]);
        th.record_failure(ip("192.0.2.1"), Some("a"), t(0)).await;
        th.record_failure(ip("192.0.2.2"), Some("b"), t(500)).await;
        assert_eq!(th.purge(t(899)).await, 0);
        assert_eq!(th.purge(t(900)).await, 2);
        assert_eq!(th.tracked().await, 2);
        assert_eq!(th.purge(t(1400)).await, 2);
        assert_eq!(th.tracked().await, 0);
    }

    #[tokio::test]
    async fn bounded_keys_evict_least_recent() {
        let th = Throttle::with_max_keys(&cfg(), vec![], 100);
        for i in 0..=100u64 {
            th.record_failure(IpAddr::from([10, 0, 0, i as u8]), None, t(i))
                .await;
        }
        // 101 > 100: evict down to 99% of the bound, dropping the two oldest keys.
        assert_eq!(th.tracked().await, 99);
        th.record_failure(ip("10.0.0.100"), None, t(200)).await; // known key: no growth
        assert_eq!(th.tracked().await, 99);
        let window = cfg().window;
        for i in [0, 1] {
            let key = CounterKey::Addr(network_key(IpAddr::from([10, 0, 0, i]), 64));
            assert_eq!(th.counters.get(&key, t(201), window).await.unwrap(), 0);
        }
        let key = CounterKey::Addr(network_key(ip("10.0.0.2"), 64));
        assert_eq!(th.counters.get(&key, t(201), window).await.unwrap(), 1);
        // Long user names are bounded.
        let long = "X".repeat(10_000);
        th.record_failure(ip("192.0.2.1"), Some(&long), t(300))
            .await;
        let bounded = CounterKey::user(&long);
        let CounterKey::User(name) = &bounded else {
            panic!("a user key");
        };
        assert!(name.len() <= MAX_USER_KEY_LEN);
        assert_eq!(th.counters.get(&bounded, t(301), window).await.unwrap(), 1);
    }
}
