//! The aggregations the scanner feeds: per-key [`Group`]s for [`report`](super::report) and
//! per-bucket counts for [`timeline`](super::timeline). Merging is independent of order, so
//! worker threads that each read part of the log give the same result as one reader. Lists are
//! capped ([`LIST_CAP`]) with an exact count of the rest, and the hot path avoids allocation and
//! pointer chasing: a value seen before costs one hash probe.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::{Bucket, Group, GroupBy, LIST_CAP, LineRef, Report, UNKNOWN, Values, scan};
use crate::audit::event::{Class, Outcome};

/// One event as the aggregators see it: borrowed from the line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    /// Canonical (see `scan::canonical`).
    pub time: &'a str,
    /// An authentication or relay decision (counted); `false` for an accepted message.
    pub decision: bool,
    pub result: Option<Outcome>,
    pub rule: Option<&'a str>,
    pub class: Option<Class>,
    pub user: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub mechanism: Option<&'a str>,
    pub software: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Seen<'_> {
    /// Whether the client got through (an unknown result counts as not).
    pub fn allowed(&self) -> bool {
        self.result.is_some_and(Outcome::allowed)
    }
}

/// An aggregation the scanner feeds; merging must not depend on order, so that worker threads
/// give the same result as one.
pub(crate) trait Collect: Send {
    /// Counts one event that passed the filter.
    fn add(&mut self, e: &Seen<'_>);
    /// Adds another worker's counts.
    fn merge(&mut self, other: Self);
}

/// A capped set: the [`LIST_CAP`] smallest distinct values, and the hashes of every distinct
/// value (so that "+N more" is exact, and a value seen before costs one hash probe and no
/// string comparison).
#[derive(Debug, Default)]
pub(crate) struct Capped {
    values: Vec<String>,
    seen: HashSet<u64, BuildHasherDefault<Prehashed>>,
    /// [`prefix`] of the largest kept value, so most new values are turned away without
    /// reading it.
    max_prefix: u128,
}

/// The first 16 bytes of `v`, zero-padded, as a big-endian number: where two prefixes differ,
/// they order as the strings do.
fn prefix(v: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = v.len().min(16);
    b[..n].copy_from_slice(&v.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a with a final mix (MurmurHash3's fmix64, since FNV's low bits are weak and hash
/// tables index by them). Fast on short keys and well spread; not meant to resist chosen keys,
/// which only slow a report down.
#[derive(Debug)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(FNV_OFFSET)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
    }
}

fn hash(s: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(s.as_bytes());
    h.finish()
}

/// A hasher for keys that are already hashes.
#[derive(Debug, Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in rather than panic.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Capped {
    pub(crate) fn insert(&mut self, v: &str) {
        if !self.seen.insert(hash(v)) {
            return;
        }
        self.keep(v);
    }

    /// Keeps a new value if it is among the smallest.
    fn keep(&mut self, v: &str) {
        if self.values.len() == LIST_CAP {
            let p = prefix(v);
            if p > self.max_prefix
                || (p == self.max_prefix && self.values.last().is_some_and(|m| v > m.as_str()))
            {
                return;
            }
        }
        if let Err(at) = self.values.binary_search_by(|x| x.as_str().cmp(v)) {
            self.values.insert(at, v.to_string());
            self.values.truncate(LIST_CAP);
            self.max_prefix = self.values.last().map_or(0, |m| prefix(m));
        }
    }

    fn merge(&mut self, other: Capped) {
        // The smallest of the union are among the smallest of each side.
        for v in &other.values {
            self.keep(v);
        }
        self.seen.extend(other.seen);
    }

    fn finish(self) -> Values {
        Values {
            more: (self.seen.len() - self.values.len()) as u64,
            values: self.values,
        }
    }
}

/// The length of a canonical time, `2026-11-28T21:05:05.123Z`.
pub(crate) const TIME_LEN: usize = 24;

fn time_text(t: Option<[u8; TIME_LEN]>) -> String {
    t.map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default()
}

/// The running totals of one group.
#[derive(Debug, Default)]
struct Acc {
    events: u64,
    messages: u64,
    successes: u64,
    denied: u64,
    warned: u64,
    brownout: u64,
    would_deny: u64,
    rules: Capped,
    /// Canonical times (the scanner normalizes them), inline: no pointer to chase per event.
    first: Option<[u8; TIME_LEN]>,
    last: Option<[u8; TIME_LEN]>,
    classes: u8,
    mechanisms: Capped,
    users: Capped,
    ips: Capped,
    software: Capped,
    names: Capped,
}

impl Acc {
    fn add(&mut self, e: &Seen<'_>) {
        if !e.decision {
            self.messages += 1;
        }
        self.add_lists(e);
        if !e.decision {
            return;
        }
        self.events += 1;
        self.successes += u64::from(e.allowed());
        match e.result {
            Some(Outcome::Denied) => self.denied += 1,
            Some(Outcome::Warned) => self.warned += 1,
            Some(Outcome::Brownout) => self.brownout += 1,
            Some(Outcome::WouldDeny) => self.would_deny += 1,
            _ => {}
        }
        if let Some(r) = e.rule {
            self.rules.insert(r);
        }
    }

    /// What every event adds, decision or message: times seen and the lists.
    fn add_lists(&mut self, e: &Seen<'_>) {
        if let Some(c) = e.class {
            self.classes |= 1 << c as u8;
        }
        if let Ok(t) = <[u8; TIME_LEN]>::try_from(e.time.as_bytes()) {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        let lists = [
            (&mut self.mechanisms, e.mechanism),
            (&mut self.users, e.user),
            (&mut self.ips, e.ip),
            (&mut self.software, e.software),
            (&mut self.names, e.name),
        ];
        for (list, v) in lists {
            if let Some(v) = v {
                list.insert(v);
            }
        }
    }

    fn merge(&mut self, o: Acc) {
        self.events += o.events;
        self.messages += o.messages;
        self.successes += o.successes;
        self.denied += o.denied;
        self.warned += o.warned;
        self.brownout += o.brownout;
        self.would_deny += o.would_deny;
        self.rules.merge(o.rules);
        self.first = match (self.first, o.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(o.last);
        self.classes |= o.classes;
        self.mechanisms.merge(o.mechanisms);
        self.users.merge(o.users);
        self.ips.merge(o.ips);
        self.software.merge(o.software);
        self.names.merge(o.names);
    }

    fn finish(self, key: String) -> Group {
        Group {
            key,
            events: self.events,
            messages: self.messages,
            successes: self.successes,
            failures: self.events - self.successes,
            denied: self.denied,
            warned: self.warned,
            brownout: self.brownout,
            would_deny: self.would_deny,
            rules: self.rules.finish(),
            first_seen: time_text(self.first),
            last_seen: time_text(self.last),
            classes: Class::ALL
                .into_iter()
                .filter(|c| self.classes & (1 << *c as u8) != 0)
                .collect(),
            mechanisms: self.mechanisms.finish(),
            users: self.users.finish(),
            client_ips: self.ips.finish(),
            client_software: self.software.finish(),
            client_names: self.names.finish(),
        }
    }
}

/// The per-key aggregation behind [`report`](super::report).
#[derive(Debug)]
pub(crate) struct Groups {
    by: GroupBy,
    map: HashMap<String, Acc, BuildHasherDefault<Fnv>>,
}

impl Groups {
    pub(crate) fn new(by: GroupBy) -> Groups {
        Groups {
            by,
            map: HashMap::default(),
        }
    }

    pub(crate) fn finish(self, events: u64, skipped: u64, skipped_at: Vec<LineRef>) -> Report {
        let mut groups: Vec<Group> = self.map.into_iter().map(|(k, a)| a.finish(k)).collect();
        groups.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.key.cmp(&b.key)));
        Report {
            groups,
            events,
            skipped,
            skipped_at,
        }
    }
}

impl Collect for Groups {
    fn add(&mut self, e: &Seen<'_>) {
        let key = match self.by {
            GroupBy::User => e.user,
            GroupBy::Ip => e.ip,
            GroupBy::Mechanism => e.mechanism,
            GroupBy::Client => e.software,
            GroupBy::Class => Some(e.class.map_or("none", Class::as_str)),
        }
        .unwrap_or(UNKNOWN);
        match self.map.get_mut(key) {
            Some(acc) => acc.add(e),
            None => {
                let mut acc = Acc::default();
                acc.add(e);
                self.map.insert(key.to_string(), acc);
            }
        }
    }

    fn merge(&mut self, other: Groups) {
        for (k, acc) in other.map {
            match self.map.get_mut(&k) {
                Some(mine) => mine.merge(acc),
                None => {
                    self.map.insert(k, acc);
                }
            }
        }
    }
}

/// The per-bucket aggregation behind [`timeline`](super::timeline).
#[derive(Debug)]
pub(crate) struct Timeline {
    secs: u64,
    /// By bucket number (seconds since the epoch divided by the bucket length).
    pub(crate) buckets: BTreeMap<u64, Bucket>,
}

impl Timeline {
    pub(crate) fn new(secs: u64) -> Timeline {
        Timeline {
            secs,
            buckets: BTreeMap::new(),
        }
    }
}

/// Adds `n` under `key`.
fn count(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(c) => *c += n,
        None => {
            map.insert(key.to_string(), n);
        }
    }
}

/// Keeps the [`LIST_CAP`] most frequent names (ties by name) and sums the rest as "other".
/// Done once at the end, so the result does not depend on how workers split the log.
pub(crate) fn cap_counts(map: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    if map.len() <= LIST_CAP {
        return map;
    }
    let mut all: Vec<(String, u64)> = map.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rest: u64 = all[LIST_CAP..].iter().map(|(_, n)| n).sum();
    all.truncate(LIST_CAP);
    let mut map: BTreeMap<String, u64> = all.into_iter().collect();
    *map.entry("other".to_string()).or_default() += rest;
    map
}

impl Collect for Timeline {
    fn add(&mut self, e: &Seen<'_>) {
        // The chart shows authentication and relay decisions, not messages.
        if !e.decision {
            return;
        }
        // The scanner hands over canonical times only.
        let Some(t) = scan::canonical_secs(e.time) else {
            return;
        };
        let b = self.buckets.entry(t / self.secs).or_default();
        b.events += 1;
        b.successes += u64::from(e.allowed());
        b.failures += u64::from(!e.allowed());
        let class = e.class.map_or("none", Class::as_str);
        count(&mut b.classes, class, 1);
        count(&mut b.mechanisms, e.mechanism.unwrap_or(UNKNOWN), 1);
    }

    fn merge(&mut self, other: Timeline) {
        for (n, o) in other.buckets {
            let b = self.buckets.entry(n).or_default();
            b.events += o.events;
            b.successes += o.successes;
            b.failures += o.failures;
            for (k, v) in o.classes {
                count(&mut b.classes, &k, v);
            }
            for (k, v) in o.mechanisms {
                count(&mut b.mechanisms, &k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_merge_matches_one_pass() {
        let values: Vec<String> = (0..60).map(|i| format!("v{:02}", (i * 37) % 45)).collect();
        let mut one = Capped::default();
        values.iter().for_each(|v| one.insert(v));
        let want = one.finish();
        assert_eq!((want.values.len(), want.more), (LIST_CAP, 25));
        for split in [0, 1, 10, 30, 59, 60] {
            let (mut a, mut b) = (Capped::default(), Capped::default());
            values[..split].iter().for_each(|v| a.insert(v));
            values[split..].iter().for_each(|v| b.insert(v));
            let (mut ab, mut ba) = (a, b);
            let (mut a2, mut b2) = (Capped::default(), Capped::default());
            values[..split].iter().for_each(|v| a2.insert(v));
            values[split..].iter().for_each(|v| b2.insert(v));
            ab.merge(b2);
            ba.merge(a2);
            assert_eq!(ab.finish(), want, "split {split}");
            assert_eq!(ba.finish(), want, "split {split} reversed");
        }
    }
}
