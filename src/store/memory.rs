//! The in-process backends of the [`crate::store`] traits: the allowlist map with its
//! snapshot file, the throttle's failure counters and the maildrop locks, each a sharded
//! [`DashMap`] (or set) owned by this process.
//!
//! Every method does its work in the call and answers with [`Pending::ready`], so a lookup
//! allocates nothing. Lookups take one shard's read lock only, so they never wait for one
//! another; the sweeps ([`MemoryAllowlist::expire`], [`MemoryCounters::purge`]) walk shard by
//! shard, holding each lock only for that shard's share of the entries.
//!
//! The allowlist is bounded by `max_entries`; when it overflows, a batch of about 1% of the
//! entries that expire soonest is dropped, so puts at capacity cost amortized O(1) (rustls's
//! `LimitedCache` bounds its cache the same way, one entry at a time). Snapshots
//! ([`MemoryAllowlist::save`], [`MemoryAllowlist::load`]) are JSON, written atomically (temp
//! file, fsync, rename, directory fsync) so a restart keeps the relay open for recent users.
//!
//! Between snapshots, every put and removal goes into a [`Journal`]
//! ([`MemoryAllowlist::open_journal`]) and is answered only once its record is on disk, so an
//! acknowledged change survives SIGKILL: an added entry is there after the restart, a removed
//! one stays removed. A snapshot empties the journal; at start the snapshot is loaded and the
//! journal replayed over it.

use std::fs::File;
use std::hash::Hash;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::{DashMap, DashSet};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::clock::unix_secs;
use crate::store::journal::Journal;
use crate::store::prefixes::PrefixSet;
use crate::store::{
    AllowlistStore, Backoff, CounterKey, Entry, Error, Expiry, FailureCounters, InsertOutcome,
    MailboxLease, MailboxLocks, Pending, Put, Reserve, clean_user,
};

/// Shards of the allowlist map: more shards mean shorter lock holds during a sweep.
const SHARDS: usize = 64;
/// Snapshot format version.
const SNAPSHOT_VERSION: u32 = 1;
/// Upper bound on recent users remembered per address for the shared-address warning.
const MAX_RECENT_USERS: usize = 32;
/// A journal this long asks for a snapshot before the regular one (about 70,000 changes).
const COMPACT_AT: u64 = 8 << 20;

/// The stored value: the public entry plus the users recently seen on the key.
#[derive(Debug, Clone)]
struct Record {
    entry: Entry,
    /// `(user, last login)`, at most `recent_cap` long.
    recent: Vec<(CompactString, SystemTime)>,
    /// The expiry a crash would leave the entry with: the latest one on disk (journal or
    /// snapshot). `UNIX_EPOCH` for none.
    durable_until: SystemTime,
}

impl Record {
    /// An entry as read back from disk (snapshot or journal): durable as it stands. The file
    /// may have been edited, so the name is kept as safe as a login's.
    fn saved(s: &SnapshotEntry) -> Record {
        let user = CompactString::from(clean_user(&s.user));
        let inserted_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.inserted_at);
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.expires_at);
        Record {
            entry: Entry {
                user: user.clone(),
                inserted_at,
                expires_at,
            },
            recent: vec![(user, inserted_at)],
            durable_until: expires_at,
        }
    }
}

/// The allowlist in this process's memory. All methods take `&self`.
#[derive(Debug)]
pub struct MemoryAllowlist {
    map: DashMap<IpNet, Record>,
    /// The configured login TTL: users seen within it count as "recent".
    ttl: Duration,
    max_entries: usize,
    shared_warn_users: usize,
    /// Set while one thread evicts, so concurrent puts at capacity don't all scan.
    evicting: AtomicBool,
    /// Where [`AllowlistStore::persist`] writes.
    snapshot: Option<PathBuf>,
    /// Every change since the snapshot, when opened.
    journal: Option<Journal>,
    /// The prefix lengths of the keys ever stored, for [`AllowlistStore::find`].
    prefixes: PrefixSet,
}

impl MemoryAllowlist {
    /// An empty allowlist. `ttl` is the configured login TTL (it defines "recent" for the
    /// shared-address count); `max_entries` below 1 is treated as 1; `shared_warn_users` of 0
    /// disables the shared-address warning.
    pub fn new(ttl: Duration, max_entries: usize, shared_warn_users: usize) -> Self {
        Self {
            map: DashMap::with_shard_amount(SHARDS),
            ttl,
            max_entries: max_entries.max(1),
            shared_warn_users,
            evicting: AtomicBool::new(false),
            snapshot: None,
            journal: None,
            prefixes: PrefixSet::default(),
        }
    }

    /// This allowlist, persisted to `path` by [`AllowlistStore::persist`].
    pub fn with_snapshot(mut self, path: PathBuf) -> Self {
        self.snapshot = Some(path);
        self
    }

    /// Records a login by `user` on `key` at `now` with the configured TTL (an existing later
    /// expiry is kept).
    pub fn insert(&self, key: IpNet, user: &str, now: SystemTime) -> InsertOutcome {
        self.put_now(Put {
            key,
            user,
            now,
            ttl: self.ttl,
            expiry: Expiry::Extend,
        })
    }

    /// Creates or refreshes an entry ([`AllowlistStore::put`], answered at once).
    pub fn put_now(&self, put: Put<'_>) -> InsertOutcome {
        let Put {
            key,
            user,
            now,
            ttl,
            expiry,
        } = put;
        // Falling back to `now` on overflow only makes the entry expire early: the safe side.
        let expires_at = now.checked_add(ttl).unwrap_or(now);
        // Users seen within one TTL (the configured one: it defines "recent") count.
        let recent_since = now.checked_sub(self.ttl).unwrap_or(SystemTime::UNIX_EPOCH);
        let recent_cap = self.shared_warn_users.clamp(1, MAX_RECENT_USERS);
        self.prefixes.add(key);
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
                rec.entry.expires_at = if expiry == Expiry::Exact || !live {
                    expires_at
                } else {
                    rec.entry.expires_at.max(expires_at)
                };
                rec.entry.user = CompactString::from(user);
                rec.recent.retain(|(_, seen)| *seen > recent_since);
                match rec.recent.iter_mut().find(|(u, _)| u == user) {
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
                        rec.recent.push((CompactString::from(user), now));
                    }
                }
                distinct_users = rec.recent.len();
            })
            .or_insert_with(|| Record {
                entry: Entry {
                    user: CompactString::from(user),
                    inserted_at: now,
                    expires_at,
                },
                recent: vec![(CompactString::from(user), now)],
                durable_until: SystemTime::UNIX_EPOCH,
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

    /// The entry for `key` if live at `now` (clones it; a short name is inline, so no
    /// allocation).
    pub fn lookup(&self, key: IpNet, now: SystemTime) -> Option<Entry> {
        let rec = self.map.get(&key)?;
        (rec.entry.expires_at > now).then(|| rec.entry.clone())
    }

    /// Whether `key` has a live entry at `now`. Allocation-free.
    pub fn is_allowed(&self, key: IpNet, now: SystemTime) -> bool {
        self.map.get(&key).is_some_and(|r| r.entry.expires_at > now)
    }

    /// Removes the entry for `key`, live or not; the entry removed.
    pub fn take(&self, key: IpNet) -> Option<Entry> {
        self.map.remove(&key).map(|(_, r)| r.entry)
    }

    /// The live entries at `now`, sorted by network.
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

    /// Removes the entries expired at `now` and returns them, sorted by network. Locks one
    /// shard at a time.
    pub fn expire_now(&self, now: SystemTime) -> Vec<(IpNet, Entry)> {
        let mut gone = Vec::new();
        self.map.retain(|key, r| {
            let live = r.entry.expires_at > now;
            if !live {
                gone.push((*key, r.entry.clone()));
            }
            live
        });
        gone.sort_by_key(|(net, _)| *net);
        gone
    }

    /// Entries stored, including expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes a snapshot of the entries live at `now` to `path` atomically
    /// ([`crate::durable::replace`]); returns how many it holds.
    pub fn save(&self, path: &Path, now: SystemTime) -> io::Result<usize> {
        let live = self.entries(now);
        let kept = self.write_snapshot(path, &live)?;
        // What a crash would now leave of each saved entry.
        for (net, e) in &live {
            if let Some(mut rec) = self.map.get_mut(net) {
                rec.durable_until = rec.durable_until.max(e.expires_at);
            }
        }
        Ok(kept)
    }

    fn write_snapshot(&self, path: &Path, live: &[(IpNet, Entry)]) -> io::Result<usize> {
        let entries: Vec<SnapshotEntry> = live
            .iter()
            .cloned()
            .map(|(net, e)| SnapshotEntry {
                net: net.to_string(),
                user: e.user.into(),
                inserted_at: unix_secs(e.inserted_at),
                expires_at: unix_secs(e.expires_at),
            })
            .collect();
        let kept = entries.len();
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            entries,
        };
        let bytes = serde_json::to_vec(&snap).map_err(io::Error::other)?;
        crate::durable::replace(path, &bytes)?;
        Ok(kept)
    }

    /// Merges the snapshot at `path` into the list, dropping entries expired at `now` and
    /// keeping the later expiry where a key is already present. Each network keeps the key
    /// it was stored under (an entry made when `ipv6_prefix` was another length still covers
    /// the addresses it was made for, until it expires). Returns the entries taken. A missing
    /// file is not an error (returns 0); an unreadable or corrupt one is.
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
            let key = net.trunc();
            self.prefixes.add(key);
            let rec = Record::saved(&s);
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

    /// When over `max_entries`, drops the soonest-expiring entries down to about 99% of the
    /// bound (never `keep`), so the O(n) scan runs once per ~1% of `max_entries` puts.
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

impl MemoryAllowlist {
    /// Whether a login's refresh may skip the journal: the entry is live and what a crash would
    /// leave of it still has at least half a TTL to run. A device that logs in every few
    /// minutes then costs one journal write per half TTL, not one per login; an acknowledged
    /// login survives a crash with at least half its TTL left (under the name of whoever last
    /// had it journaled: the audit log has every login). New entries, admin changes and
    /// removals are always journaled.
    fn durable_enough(&self, put: &Put<'_>) -> bool {
        if put.expiry != Expiry::Extend {
            return false;
        }
        let Some(half) = put.now.checked_add(put.ttl / 2) else {
            return false;
        };
        self.map
            .get(&put.key)
            .is_some_and(|rec| rec.entry.expires_at > put.now && rec.durable_until >= half)
    }
}

impl AllowlistStore for MemoryAllowlist {
    fn put<'a>(&'a self, put: Put<'a>) -> Pending<'a, InsertOutcome> {
        let Some(journal) = &self.journal else {
            return Pending::ready(Ok(self.put_now(put)));
        };
        if self.durable_enough(&put) {
            return Pending::ready(Ok(self.put_now(put)));
        }
        let ((outcome, expires), durable) = journal.record(|| {
            let outcome = self.put_now(put);
            let expires = self.map.get(&put.key).map(|r| r.entry.expires_at);
            ((outcome, expires), self.change_line(put.key))
        });
        Pending::boxed(async move {
            durable.await.map_err(|e| self.journal_error(e))?;
            if let (Some(expires), Some(mut rec)) = (expires, self.map.get_mut(&put.key)) {
                rec.durable_until = rec.durable_until.max(expires);
            }
            Ok(outcome)
        })
    }

    fn get(&self, key: IpNet, now: SystemTime) -> Pending<'_, Option<Entry>> {
        Pending::ready(Ok(self.lookup(key, now)))
    }

    fn find(
        &self,
        ip: IpAddr,
        first: IpNet,
        now: SystemTime,
    ) -> Pending<'_, Option<(IpNet, Entry)>> {
        if let Some(entry) = self.lookup(first, now) {
            return Pending::ready(Ok(Some((first, entry))));
        }
        let found = self
            .prefixes
            .covering(ip, first)
            .find_map(|net| self.lookup(net, now).map(|e| (net, e)));
        Pending::ready(Ok(found))
    }

    fn remove(&self, key: IpNet) -> Pending<'_, Option<Entry>> {
        let Some(journal) = &self.journal else {
            return Pending::ready(Ok(self.take(key)));
        };
        let (removed, durable) = journal.record(|| (self.take(key), self.change_line(key)));
        Pending::boxed(async move {
            durable.await.map_err(|e| self.journal_error(e))?;
            Ok(removed)
        })
    }

    fn list(&self, now: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>> {
        Pending::ready(Ok(self.entries(now)))
    }

    fn expire(&self, now: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>> {
        Pending::ready(Ok(self.expire_now(now)))
    }

    fn len(&self) -> Pending<'_, usize> {
        Pending::ready(Ok(self.map.len()))
    }

    fn is_empty(&self) -> Pending<'_, bool> {
        Pending::ready(Ok(self.map.is_empty()))
    }

    fn persist(&self, now: SystemTime) -> Pending<'_, usize> {
        let Some(path) = &self.snapshot else {
            return Pending::ready(Ok(0));
        };
        let saved = match &self.journal {
            Some(journal) => journal.compact(|| self.save(path, now)),
            None => self.save(path, now),
        };
        Pending::ready(saved.map_err(|source| Error::Io {
            path: path.clone(),
            source,
        }))
    }

    fn wants_persist(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.len() > COMPACT_AT)
    }
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

/// The throttle's failure counters in this process's memory: one bounded map per kind of
/// key (addresses, user names), so a flood of one kind cannot push out the other.
#[derive(Debug)]
pub struct MemoryCounters {
    by_addr: Counters<IpNet>,
    by_user: Counters<CompactString>,
}

impl MemoryCounters {
    /// Counters keeping at most `max_keys` keys of each kind (at least 1).
    pub fn new(max_keys: usize) -> Self {
        MemoryCounters {
            by_addr: Counters::new(max_keys),
            by_user: Counters::new(max_keys),
        }
    }

    /// Keys tracked (addresses plus user names).
    pub fn len(&self) -> usize {
        self.by_addr.map.len() + self.by_user.map.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FailureCounters for MemoryCounters {
    fn bump<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
    ) -> Pending<'a, u32> {
        Pending::ready(Ok(match key {
            CounterKey::Addr(net) => self.by_addr.bump(net, now, &backoff),
            CounterKey::User(name) => self.by_user.bump(name, now, &backoff),
        }))
    }

    fn get<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        window: Duration,
    ) -> Pending<'a, u32> {
        Pending::ready(Ok(match key {
            CounterKey::Addr(net) => self.by_addr.failures(net, now, window),
            CounterKey::User(name) => self.by_user.failures(name, now, window),
        }))
    }

    fn reserve<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
        how: Reserve,
    ) -> Pending<'a, Duration> {
        Pending::ready(Ok(match key {
            CounterKey::Addr(net) => self.by_addr.reserve(net, now, &backoff, how),
            CounterKey::User(name) => self.by_user.reserve(name, now, &backoff, how),
        }))
    }

    fn release<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
    ) -> Pending<'a, ()> {
        match key {
            CounterKey::Addr(net) => self.by_addr.release(net, now, &backoff),
            CounterKey::User(name) => self.by_user.release(name, now, &backoff),
        }
        Pending::ready(Ok(()))
    }

    fn reset<'a>(&'a self, key: &'a CounterKey) -> Pending<'a, ()> {
        match key {
            CounterKey::Addr(net) => drop(self.by_addr.map.remove(net)),
            CounterKey::User(name) => drop(self.by_user.map.remove(name)),
        }
        Pending::ready(Ok(()))
    }

    fn purge(&self, now: SystemTime, window: Duration) -> Pending<'_, usize> {
        Pending::ready(Ok(
            self.by_addr.purge(now, window) + self.by_user.purge(now, window)
        ))
    }

    fn len(&self) -> Pending<'_, usize> {
        Pending::ready(Ok(MemoryCounters::len(self)))
    }

    fn is_empty(&self) -> Pending<'_, bool> {
        Pending::ready(Ok(MemoryCounters::is_empty(self)))
    }
}

/// Failures remembered for one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: SystemTime,
    /// The earliest time of the next credential check.
    next: SystemTime,
}

impl Failures {
    fn live(&self, now: SystemTime, window: Duration) -> bool {
        self.last.checked_add(window).is_none_or(|end| end > now)
    }

    /// Counts one more failure at `now` (the first after a quiet window starts afresh) and
    /// moves the next check to at least one delay after it; returns the count.
    fn fail(&mut self, now: SystemTime, b: &Backoff) -> u32 {
        if self.live(now, b.window) {
            self.count = self.count.saturating_add(1);
        } else {
            self.count = 1;
            self.next = now;
        }
        self.last = self.last.max(now);
        self.next = self.next.max(now + b.delay_for(self.count));
        self.count
    }
}

/// A bounded failure counter map.
#[derive(Debug)]
struct Counters<K: Eq + Hash> {
    map: DashMap<K, Failures>,
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
            .map_or(0, |r| r.count)
    }

    fn bump(&self, key: &K, now: SystemTime, b: &Backoff) -> u32 {
        // A known key is updated in place, without cloning the key.
        if let Some(mut r) = self.map.get_mut(key) {
            return r.fail(now, b);
        }
        let mut count = 1;
        let mut fresh = false;
        self.map
            .entry(key.clone())
            // Another failure of the key got in between the two lookups.
            .and_modify(|r| count = r.fail(now, b))
            .or_insert_with(|| {
                fresh = true;
                Failures {
                    count: 1,
                    last: now,
                    next: now + b.delay_for(1),
                }
            });
        if fresh {
            self.evict_if_full();
        }
        count
    }

    fn reserve(&self, key: &K, now: SystemTime, b: &Backoff, how: Reserve) -> Duration {
        let Some(mut r) = self.map.get_mut(key) else {
            return Duration::ZERO;
        };
        if !r.live(now, b.window) || r.count < b.free_failures {
            return Duration::ZERO;
        }
        let slot = r.next.max(now);
        let wait = slot.duration_since(now).unwrap_or_default();
        if how == Reserve::IfFree && !wait.is_zero() {
            return wait;
        }
        r.next = slot + b.delay_for(r.count);
        wait
    }

    fn release(&self, key: &K, now: SystemTime, b: &Backoff) {
        if let Some(mut r) = self.map.get_mut(key) {
            let back = r.next.checked_sub(b.delay_for(r.count)).unwrap_or(now);
            r.next = back.max(now);
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

/// The maildrop locks of this process's POP3 sessions.
#[derive(Debug, Default)]
pub struct MemoryMailboxLocks {
    held: Arc<DashSet<String>>,
}

impl MemoryMailboxLocks {
    /// No maildrop locked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `user`'s maildrop is locked now.
    pub fn is_held(&self, user: &str) -> bool {
        self.held.contains(user)
    }
}

impl MailboxLocks for MemoryMailboxLocks {
    fn acquire<'a>(&'a self, user: &'a str) -> Pending<'a, Option<MailboxLease>> {
        if !self.held.insert(user.to_owned()) {
            return Pending::ready(Ok(None));
        }
        let (held, user) = (self.held.clone(), user.to_owned());
        Pending::ready(Ok(Some(MailboxLease::new(move || {
            held.remove(&user);
        }))))
    }
}

#[path = "memory_journal.rs"]
mod journaled;

#[path = "memory_copy.rs"]
mod copy;

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
