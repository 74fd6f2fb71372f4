//! Growing delays for failed logins, per client address and per user name.
//!
//! Every failed authentication (SMTP AUTH, POP3 PASS/APOP/AUTH) is recorded against the client
//! address (IPv6 grouped by `ipv6_prefix`, as one host rotates addresses within its network)
//! and against the user name tried. Before answering the next attempt the caller sleeps for
//! [`Throttle::delay`]: nothing for the first `free_failures` failures, then `base_delay`,
//! doubling with each further failure up to `max_delay`; the larger of the address and user
//! delays wins, so spreading guesses over many addresses does not help against one user. A
//! failure is remembered for `window` after the most recent one: a quiet `window` forgives.
//!
//! With the defaults (3 free failures, 2 s base, 60 s cap) a guessing run gets three quick
//! guesses, then waits 2, 4, 8, 16 and 32 s (about eight guesses in its first minute), and
//! after that one guess a minute per connection for as long as it keeps going within `window`.
//! The delay is per attempt: parallel connections from one address each wait, so the
//! effective rate is bounded by that times `limits.max_connections_per_ip`.
//!
//! Addresses in the trusted networks are never throttled by address (a webmail front end must
//! not slow down all its users), but failures from them still count against the user name.
//! Memory is bounded: each map keeps at most [`MAX_KEYS`] keys, dropping about 1% of the
//! least recently failed when full. No time is read here: every call takes `now`.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use ipnet::IpNet;

use crate::allowlist::network_key;
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

    /// The delay to impose before answering the next attempt from `ip` for `user` at `now`:
    /// the larger of the per-address and per-user delays.
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
            self.by_addr.bump(k, now, self.window);
        }
        if let Some(u) = user {
            self.by_user.bump(user_key(u), now, self.window);
        }
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

    fn bump(&self, key: K, now: SystemTime, window: Duration) {
        let mut fresh = false;
        self.map
            .entry(key)
            .and_modify(|r| {
                r.failures = if r.live(now, window) {
                    r.failures.saturating_add(1)
                } else {
                    1
                };
                r.last = r.last.max(now);
            })
            .or_insert_with(|| {
                fresh = true;
                Record {
                    failures: 1,
                    last: now,
                }
            });
        if fresh {
            self.evict_if_full();
        }
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

    fn cfg() -> config::Throttle {
        config::Throttle {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(900),
            ipv6_prefix: 64,
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
        assert_eq!(secs(th.delay(ip("2001:db8:1:3::1"), None, t(5))), 0);
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
