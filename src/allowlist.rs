//! The POP-before-SMTP allowlist: a time-limited, bounded map from client address to the user
//! who last logged in over POP3 from it.
//!
//! There is no RFC for POP-before-SMTP; this follows the behaviour of the old
//! pop-before-smtp and DRAC daemons: a successful POP3 login lets the client address relay
//! for `ttl` after the last such login. Addresses are canonicalized (IPv4-mapped IPv6 becomes
//! IPv4) and IPv6 clients are grouped by their `/ipv6_prefix` network, since one host often
//! rotates privacy addresses within its /64.
//!
//! The map is a sharded [`DashMap`]: lookups on the SMTP hot path take a shard read lock only,
//! so they never wait for one another. The map is bounded by `max_entries`; when it overflows,
//! a batch of about 1% of the entries that expire soonest is dropped, so inserts at capacity
//! cost amortized O(1). [`Allowlist::purge`] walks shard by shard, holding each lock only for
//! that shard's share of the entries.
//!
//! Snapshots ([`Allowlist::save`], [`Allowlist::load`]) are JSON, written atomically (temp
//! file, fsync, rename, directory fsync) so a restart keeps the relay open for recent users.

use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use compact_str::CompactString;

use crate::clock::unix_secs;

/// Longest TTL accepted by [`Allowlist::insert_with_ttl`]; longer values are clamped.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest user name stored; longer names are cut (at a character boundary).
pub const MAX_USER_LEN: usize = 256;
/// Shards of the map: more shards mean shorter lock holds during a purge.
const SHARDS: usize = 64;
/// Snapshot format version.
const SNAPSHOT_VERSION: u32 = 1;
/// Upper bound on recent users remembered per address for the shared-address warning.
const MAX_RECENT_USERS: usize = 32;

/// One allowlisted network and who opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user whose login last refreshed the entry. A name of up to 24 bytes is stored
    /// inline, so that [`Allowlist::lookup`] on a large list costs one cache miss (the
    /// entry), not two (the entry, then the name on the heap).
    pub user: CompactString,
    /// When the entry was created (kept across refreshes while it stays live).
    pub inserted_at: SystemTime,
    /// The first instant at which the entry no longer allows relaying.
    pub expires_at: SystemTime,
}

/// What [`Allowlist::insert`] did, for the caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// A live entry for the same key existed and was refreshed.
    pub refreshed: bool,
    /// Distinct users that allowlisted this key within one TTL, counting this one.
    pub distinct_users: usize,
    /// `distinct_users` reached the warning threshold and this insert added a new user to
    /// the key: the address is probably shared (NAT, proxy) and the caller should warn once.
    pub shared_warning: bool,
    /// Entries evicted to stay within `max_entries`.
    pub evicted: usize,
}

/// The stored value: the public entry plus the users recently seen on the key.
#[derive(Debug, Clone)]
struct Record {
    entry: Entry,
    /// `(user, last login)`, at most `recent_cap` long.
    recent: Vec<(String, SystemTime)>,
}

/// The POP-before-SMTP allowlist. Share it behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Allowlist {
    map: DashMap<IpNet, Record>,
    ttl: Duration,
    ipv6_prefix: u8,
    max_entries: usize,
    shared_warn_users: usize,
    /// Set while one thread evicts, so concurrent inserts at capacity don't all scan.
    evicting: AtomicBool,
}

impl Allowlist {
    /// An empty allowlist. `ipv6_prefix` above 128 is treated as 128; `max_entries` below 1 as
    /// 1; `shared_warn_users` of 0 disables the shared-address warning.
    pub fn new(
        ttl: Duration,
        ipv6_prefix: u8,
        max_entries: usize,
        shared_warn_users: usize,
    ) -> Self {
        Self {
            map: DashMap::with_shard_amount(SHARDS),
            ttl,
            ipv6_prefix: ipv6_prefix.min(128),
            max_entries: max_entries.max(1),
            shared_warn_users,
            evicting: AtomicBool::new(false),
        }
    }

    /// The key `ip` is stored under: canonical, and for IPv6 its `/ipv6_prefix` network.
    pub fn key(&self, ip: IpAddr) -> IpNet {
        network_key(ip, self.ipv6_prefix)
    }

    /// Records a successful POP3 login by `user` from `ip` at `now`: the network may relay
    /// until `now + ttl` (an existing later expiry is kept).
    pub fn insert(&self, ip: IpAddr, user: &str, now: SystemTime) -> InsertOutcome {
        self.upsert(ip, user, self.ttl, now, false)
    }

    /// Allowlists `ip` for exactly `ttl` from `now` (clamped to [`MAX_TTL`]), as the admin
    /// command does; replaces any existing expiry.
    pub fn insert_with_ttl(
        &self,
        ip: IpAddr,
        user: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> InsertOutcome {
        self.upsert(ip, user, ttl.min(MAX_TTL), now, true)
    }

    /// The live entry covering `ip`, or `None` if there is none or it has expired.
    pub fn lookup(&self, ip: IpAddr, now: SystemTime) -> Option<Entry> {
        let rec = self.map.get(&self.key(ip))?;
        (rec.entry.expires_at > now).then(|| rec.entry.clone())
    }

    /// Whether `ip` may relay at `now`. Allocation-free.
    pub fn is_allowed(&self, ip: IpAddr, now: SystemTime) -> bool {
        self.map
            .get(&self.key(ip))
            .is_some_and(|r| r.entry.expires_at > now)
    }

    /// Removes the entry covering `ip`; whether there was one (live or not).
    pub fn remove(&self, ip: IpAddr) -> bool {
        self.map.remove(&self.key(ip)).is_some()
    }

    /// Drops the entries expired at `now`; returns how many. Locks one shard at a time.
    pub fn purge(&self, now: SystemTime) -> usize {
        let mut dropped = 0;
        self.map.retain(|_, r| {
            let live = r.entry.expires_at > now;
            dropped += usize::from(!live);
            live
        });
        dropped
    }

    /// Entries stored, including expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The live entries at `now`, sorted by network, for listing.
    pub fn entries(&self, now: SystemTime) -> Vec<(IpNet, Entry)> {
        let mut out: Vec<(IpNet, Entry)> = self
            .map
            .iter()
            .filter(|r| r.entry.expires_at > now)
            .map(|r| (*r.key(), r.entry.clone()))
            .collect();
        out.sort_by_key(|(net, _)| *net);
        out
    }

    /// Writes a snapshot of the live entries to `path` atomically ([`crate::durable::replace`]).
    pub fn save(&self, path: &Path, now: SystemTime) -> io::Result<()> {
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            entries: self
                .entries(now)
                .into_iter()
                .map(|(net, e)| SnapshotEntry {
                    net: net.to_string(),
                    user: e.user.into(),
                    inserted_at: unix_secs(e.inserted_at),
                    expires_at: unix_secs(e.expires_at),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&snap).map_err(io::Error::other)?;
        crate::durable::replace(path, &bytes)
    }

    /// Merges the snapshot at `path` into the list, dropping entries expired at `now` and
    /// keeping the later expiry where a key is already present. Returns the entries taken.
    /// A missing file is not an error (returns 0); an unreadable or corrupt one is.
    pub fn load(&self, path: &Path, now: SystemTime) -> io::Result<usize> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        // Bound the read: a snapshot of max_entries entries is far below 1 KiB per entry.
        let cap = (self.max_entries as u64).saturating_mul(1024).max(1 << 20);
        let mut bytes = Vec::new();
        f.take(cap + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(invalid("snapshot larger than max_entries allows"));
        }
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(invalid(&format!(
                "unknown snapshot version {}",
                snap.version
            )));
        }
        let mut taken = 0;
        for s in snap.entries {
            let net: IpNet = s
                .net
                .parse()
                .map_err(|_| invalid("bad network in snapshot"))?;
            let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.expires_at);
            if expires_at <= now {
                continue;
            }
            // Re-key under the current prefix, in case the configuration changed.
            let key = self.key(net.addr());
            let user = clean_user(&s.user);
            let inserted_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.inserted_at);
            let rec = Record {
                entry: Entry {
                    user: CompactString::from(user.as_str()),
                    inserted_at,
                    expires_at,
                },
                recent: vec![(user, inserted_at)],
            };
            match self.map.entry(key) {
                MapEntry::Occupied(mut old) => {
                    if old.get().entry.expires_at < expires_at {
                        old.insert(rec);
                    }
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(rec);
                }
            }
            taken += 1;
        }
        self.evict_if_full(None);
        Ok(taken)
    }

    fn upsert(
        &self,
        ip: IpAddr,
        user: &str,
        ttl: Duration,
        now: SystemTime,
        exact: bool,
    ) -> InsertOutcome {
        let key = self.key(ip);
        let user = clean_user(user);
        // Falling back to `now` on overflow only makes the entry expire early: the safe side.
        let expires_at = now.checked_add(ttl).unwrap_or(now);
        // Users seen within one TTL (the configured one: it defines "recent") count.
        let recent_since = now.checked_sub(self.ttl).unwrap_or(SystemTime::UNIX_EPOCH);
        let recent_cap = self.shared_warn_users.clamp(1, MAX_RECENT_USERS);
        let mut refreshed = false;
        let mut added_user = true;
        let mut distinct_users = 1;
        self.map
            .entry(key)
            .and_modify(|rec| {
                let live = rec.entry.expires_at > now;
                refreshed = live;
                if !live {
                    rec.entry.inserted_at = now;
                }
                rec.entry.expires_at = if exact || !live {
                    expires_at
                } else {
                    rec.entry.expires_at.max(expires_at)
                };
                rec.entry.user = CompactString::from(user.as_str());
                rec.recent.retain(|(_, seen)| *seen > recent_since);
                match rec.recent.iter_mut().find(|(u, _)| *u == user) {
                    Some(slot) => {
                        slot.1 = now;
                        added_user = false;
                    }
                    None => {
                        if rec.recent.len() >= recent_cap {
                            // Forget the user seen longest ago.
                            if let Some(i) = (0..rec.recent.len()).min_by_key(|&i| rec.recent[i].1)
                            {
                                rec.recent.swap_remove(i);
                            }
                        }
                        rec.recent.push((user.clone(), now));
                    }
                }
                distinct_users = rec.recent.len();
            })
            .or_insert_with(|| Record {
                entry: Entry {
                    user: CompactString::from(user.as_str()),
                    inserted_at: now,
                    expires_at,
                },
                recent: vec![(user.clone(), now)],
            });
        let shared_warning =
            self.shared_warn_users > 0 && added_user && distinct_users >= self.shared_warn_users;
        let evicted = self.evict_if_full(Some(key));
        InsertOutcome {
            refreshed,
            distinct_users,
            shared_warning,
            evicted,
        }
    }

    /// When over `max_entries`, drops the soonest-expiring entries down to about 99% of the
    /// bound (never `keep`), so the O(n) scan runs once per ~1% of `max_entries` inserts.
    fn evict_if_full(&self, keep: Option<IpNet>) -> usize {
        if self.map.len() <= self.max_entries {
            return 0;
        }
        if self.evicting.swap(true, Ordering::Acquire) {
            return 0; // another thread is at it
        }
        let batch = (self.max_entries / 100).max(1);
        let target = self.max_entries.saturating_sub(batch).max(1);
        let mut candidates: Vec<(SystemTime, SystemTime, IpNet)> = self
            .map
            .iter()
            .filter(|r| Some(*r.key()) != keep)
            .map(|r| (r.entry.expires_at, r.entry.inserted_at, *r.key()))
            .collect();
        let excess = self.map.len().saturating_sub(target).min(candidates.len());
        let mut evicted = 0;
        if excess > 0 {
            candidates.select_nth_unstable(excess - 1);
            for (expires_at, _, key) in &candidates[..excess] {
                // Skip entries refreshed since the scan.
                if self
                    .map
                    .remove_if(key, |_, r| r.entry.expires_at == *expires_at)
                    .is_some()
                {
                    evicted += 1;
                }
            }
        }
        self.evicting.store(false, Ordering::Release);
        evicted
    }
}

/// The key for `ip`: canonical, with IPv6 truncated to its `/ipv6_prefix` network.
pub fn network_key(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match crate::canonical_ip(ip) {
        IpAddr::V4(v4) => IpNet::V4(ipnet::Ipv4Net::from(v4)),
        IpAddr::V6(v6) => {
            // The prefix is at most 128, so construction cannot fail; fall back to the host.
            let net = ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128))
                .unwrap_or_else(|_| ipnet::Ipv6Net::from(v6));
            IpNet::V6(net.trunc())
        }
    }
}

/// Bounds a user name and strips control characters so it is safe to list and log.
fn clean_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len().min(MAX_USER_LEN));
    for c in user.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_USER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// The on-disk snapshot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    version: u32,
    entries: Vec<SnapshotEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotEntry {
    net: String,
    user: String,
    inserted_at: u64,
    expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const TTL: Duration = Duration::from_secs(1800);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn list() -> Allowlist {
        Allowlist::new(TTL, 64, 1000, 3)
    }

    #[test]
    fn expiry_at_ttl_boundary() {
        let a = list();
        let out = a.insert(ip("192.0.2.7"), "alice", t(0));
        assert!(!out.refreshed);
        // (offset from login, allowed?)
        let cases = [
            (0, true),
            (1, true),
            (1799, true),
            (1800, false),
            (1801, false),
        ];
        for (at, want) in cases {
            assert_eq!(a.is_allowed(ip("192.0.2.7"), t(at)), want, "at +{at}s");
            assert_eq!(
                a.lookup(ip("192.0.2.7"), t(at)).is_some(),
                want,
                "lookup at +{at}s"
            );
        }
        let e = a.lookup(ip("192.0.2.7"), t(5)).unwrap();
        assert_eq!(
            e,
            Entry {
                user: "alice".into(),
                inserted_at: t(0),
                expires_at: t(1800)
            }
        );
        assert!(!a.is_allowed(ip("192.0.2.8"), t(0)));
    }

    #[test]
    fn refresh_extends_and_keeps_inserted_at() {
        let a = list();
        a.insert(ip("192.0.2.7"), "alice", t(0));
        let out = a.insert(ip("192.0.2.7"), "alice", t(1000));
        assert!(out.refreshed);
        let e = a.lookup(ip("192.0.2.7"), t(2500)).unwrap();
        assert_eq!((e.inserted_at, e.expires_at), (t(0), t(2800)));
        assert!(!a.is_allowed(ip("192.0.2.7"), t(2800)));
        // After expiry, a new login starts a new entry.
        let out = a.insert(ip("192.0.2.7"), "bob", t(5000));
        assert!(!out.refreshed);
        let e = a.lookup(ip("192.0.2.7"), t(5000)).unwrap();
        assert_eq!((e.user.as_str(), e.inserted_at), ("bob", t(5000)));
    }

    #[test]
    fn admin_ttl_is_exact_and_login_keeps_later_expiry() {
        let a = list();
        a.insert_with_ttl(ip("192.0.2.9"), "admin", Duration::from_secs(86400), t(0));
        // A login does not shorten the admin's day.
        a.insert(ip("192.0.2.9"), "alice", t(10));
        assert_eq!(
            a.lookup(ip("192.0.2.9"), t(10)).unwrap().expires_at,
            t(86400)
        );
        // The admin command sets the expiry exactly, shorter too.
        a.insert_with_ttl(ip("192.0.2.9"), "admin", Duration::from_secs(60), t(20));
        assert!(!a.is_allowed(ip("192.0.2.9"), t(80)));
        // Absurd TTLs are clamped.
        a.insert_with_ttl(ip("192.0.2.10"), "admin", Duration::MAX, t(0));
        assert_eq!(
            a.lookup(ip("192.0.2.10"), t(0)).unwrap().expires_at,
            t(0) + MAX_TTL
        );
    }

    #[test]
    fn ipv6_grouped_by_prefix() {
        let a = list();
        a.insert(ip("2001:db8:1:2::10"), "alice", t(0));
        // (address, allowed?)
        let cases = [
            ("2001:db8:1:2::10", true),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", true),
            ("2001:db8:1:3::10", false),
            ("2001:db8:1::10", false),
        ];
        for (addr, want) in cases {
            assert_eq!(a.is_allowed(ip(addr), t(1)), want, "{addr}");
        }
        assert_eq!(a.len(), 1);
        let listed = a.entries(t(1));
        assert_eq!(listed[0].0, "2001:db8:1:2::/64".parse::<IpNet>().unwrap());
        // A second address in the same /64 refreshes the same entry.
        assert!(a.insert(ip("2001:db8:1:2::99"), "alice", t(5)).refreshed);
        assert_eq!(a.len(), 1);
        assert!(a.remove(ip("2001:db8:1:2::abcd")));
        assert!(!a.remove(ip("2001:db8:1:2::abcd")));
    }

    #[test]
    fn v4_mapped_is_canonicalized() {
        let a = list();
        a.insert(ip("::ffff:192.0.2.1"), "alice", t(0));
        assert!(a.is_allowed(ip("192.0.2.1"), t(1)));
        a.insert(ip("198.51.100.4"), "bob", t(0));
        assert!(a.is_allowed(ip("::ffff:198.51.100.4"), t(1)));
        assert_eq!(
            a.key(ip("::ffff:192.0.2.1")),
            "192.0.2.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn eviction_at_capacity_keeps_latest() {
        let a = Allowlist::new(TTL, 64, 200, 0);
        for i in 0..200u64 {
            let addr = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            assert_eq!(a.insert(addr, "u", t(i)).evicted, 0);
        }
        assert_eq!(a.len(), 200);
        let out = a.insert(ip("192.0.2.200"), "new", t(500));
        // Batch is 1% of 200 = 2: from 201 down to 198.
        assert_eq!(out.evicted, 3);
        assert_eq!(a.len(), 198);
        assert!(a.is_allowed(ip("192.0.2.200"), t(500)));
        // The soonest-expiring (oldest) went; the rest stayed.
        for i in 0..3 {
            assert!(
                !a.is_allowed(IpAddr::from([10, 0, 0, i]), t(500)),
                "10.0.0.{i}"
            );
        }
        assert!(a.is_allowed(ip("10.0.0.3"), t(500)));
        assert!(a.is_allowed(ip("10.0.0.199"), t(500)));
        // Another insert fits without a scan.
        assert_eq!(a.insert(ip("192.0.2.201"), "new", t(501)).evicted, 0);
    }

    #[test]
    fn eviction_with_equal_expiry_never_drops_the_new_key() {
        let a = Allowlist::new(TTL, 64, 1, 0);
        a.insert(ip("192.0.2.1"), "a", t(0));
        a.insert(ip("192.0.2.2"), "b", t(0));
        assert_eq!(a.len(), 1);
        assert!(a.is_allowed(ip("192.0.2.2"), t(0)));
    }

    #[test]
    fn shared_address_warning() {
        let a = list(); // warn at 3 distinct users
        let addr = ip("203.0.113.5");
        // (user, at, distinct users, warning?)
        let steps = [
            ("alice", 0, 1, false),
            ("bob", 10, 2, false),
            ("alice", 20, 2, false),
            ("carol", 30, 3, true),
            ("carol", 40, 3, false),
            ("alice", 50, 3, false),
            ("dave", 60, 3, true), // bounded list: bob, seen longest ago, is forgotten
            // Beyond one TTL after everyone's last login, only the new user counts.
            ("erin", 60 + 1800, 1, false),
        ];
        for (user, at, n, warn) in steps {
            let out = a.insert(addr, user, t(at));
            assert_eq!(
                (out.distinct_users, out.shared_warning),
                (n, warn),
                "{user} at {at}"
            );
        }
        assert_eq!(a.lookup(addr, t(1900)).unwrap().user, "erin");
        // Zero disables the warning.
        let quiet = Allowlist::new(TTL, 64, 10, 0);
        for u in ["a", "b", "c", "d"] {
            assert!(!quiet.insert(addr, u, t(0)).shared_warning);
        }
    }

    #[test]
    fn purge_drops_expired_only() {
        let a = list();
        a.insert(ip("192.0.2.1"), "a", t(0));
        a.insert(ip("192.0.2.2"), "b", t(100));
        a.insert(ip("2001:db8::1"), "c", t(200));
        assert_eq!(a.purge(t(1800)), 1);
        assert_eq!(a.purge(t(1800)), 0);
        assert_eq!(a.len(), 2);
        assert_eq!(a.entries(t(1899)).len(), 2);
        assert_eq!(a.entries(t(1950)).len(), 1);
        assert_eq!(a.purge(t(10_000)), 2);
        assert!(a.is_empty());
    }

    #[test]
    fn user_names_are_bounded_and_cleaned() {
        let a = list();
        let long = "x".repeat(1000);
        a.insert(ip("192.0.2.1"), &long, t(0));
        a.insert(ip("192.0.2.2"), "ev\nil\u{7}", t(0));
        assert_eq!(
            a.lookup(ip("192.0.2.1"), t(0)).unwrap().user.len(),
            MAX_USER_LEN
        );
        assert_eq!(a.lookup(ip("192.0.2.2"), t(0)).unwrap().user, "evil");
    }

    #[test]
    fn snapshot_round_trip_drops_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowlist.json");
        let a = list();
        a.insert(ip("192.0.2.1"), "alice", t(0));
        a.insert(ip("2001:db8:5:6::7"), "bob", t(1000));
        a.insert_with_ttl(ip("198.51.100.1"), "admin", Duration::from_secs(10), t(0));
        a.save(&path, t(5)).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(names.len(), 1, "temporary file left behind");

        let b = list();
        // At t(1900) alice's entry has expired and the admin's too (live at save time only);
        // bob's is live.
        assert_eq!(b.load(&path, t(1900)).unwrap(), 1);
        assert_eq!(b.entries(t(1900)), a.entries(t(1900)));
        assert!(b.is_allowed(ip("2001:db8:5:6::1"), t(1900)));
        assert!(!b.is_allowed(ip("192.0.2.1"), t(1900)));
        // Loaded before alice's expiry, her entry comes back.
        assert_eq!(list().load(&path, t(1500)).unwrap(), 2);

        // Merge keeps the later expiry.
        let c = list();
        c.insert(ip("2001:db8:5:6::7"), "carol", t(2000));
        assert_eq!(c.load(&path, t(1900)).unwrap(), 1);
        assert_eq!(
            c.lookup(ip("2001:db8:5:6::7"), t(2000)).unwrap().user,
            "carol"
        );
    }

    #[test]
    fn snapshot_missing_is_empty_corrupt_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = list();
        assert_eq!(a.load(&dir.path().join("none.json"), t(0)).unwrap(), 0);
        // (file content, why it is rejected)
        let bad = [
            ("{not json", "syntax"),
            (r#"{"version":9,"entries":[]}"#, "version"),
            (
                r#"{"version":1,"entries":[
                    {"net":"x","user":"a","inserted_at":0,"expires_at":9999999999}]}"#,
                "net",
            ),
            (r#"{"version":1,"entries":[],"extra":1}"#, "unknown field"),
        ];
        for (text, why) in bad {
            let p = dir.path().join("bad.json");
            fs::write(&p, text).unwrap();
            let err = a.load(&p, t(0)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{why}");
        }
        assert!(a.is_empty());
    }

    #[test]
    #[ignore = "large: run with --ignored"]
    fn million_inserts_and_lookups() {
        let n = 1_000_000u32;
        let a = Allowlist::new(TTL, 64, n as usize, 3);
        for i in 0..n {
            a.insert(
                IpAddr::V4((0x0a00_0000 + i).into()),
                "u",
                t(u64::from(i % 60)),
            );
        }
        assert_eq!(a.len(), n as usize);
        for i in 0..n {
            assert!(a.is_allowed(IpAddr::V4((0x0a00_0000 + i).into()), t(100)));
        }
        // One more evicts a batch of the soonest-expiring.
        assert!(a.insert(ip("192.0.2.1"), "u", t(100)).evicted >= 10_000);
        let len = a.len();
        assert_eq!(a.purge(t(10_000)), len);
    }
}
