//! The audit report: reads the audit log (the current file and its rotations, or any reader),
//! keeps the events that pass a [`Filter`], and aggregates them per [`GroupBy`] key into
//! [`Group`]s (counts, successes and failures, first and last seen, and capped lists of
//! mechanisms, classes, users, client addresses and client software), or per time bucket into a
//! [`timeline`]. It answers "which users and clients still use legacy authentication".
//!
//! This is a pure library shared by `mailgate audit` and the admin API: no clock reads (`now` is
//! an argument), no printing. Corrupt or truncated lines are skipped and counted, with the first
//! few positions kept for a warning. Reading streams large blocks split at line boundaries to
//! worker threads (see `scan.rs`); rendering lives in `render.rs`. The schema is in
//! `docs/audit.md`.

mod render;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::event::{Class, Kind};

pub use render::{Format, render};

/// Distinct values kept per list in a group; further distinct values are only counted.
pub const LIST_CAP: usize = 20;

/// Positions of skipped lines kept for the warning.
pub const SKIPPED_SHOWN: usize = 5;

/// Most buckets a [`timeline`] returns.
pub const MAX_BUCKETS: u64 = 10_000;

/// What went wrong reading the log or parsing a query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A log file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A filter, grouping or format parameter was not understood.
    #[error("{key} {value:?}: {why}")]
    Param {
        /// The parameter name, e.g. "since".
        key: String,
        /// The value given.
        value: String,
        /// What is expected instead.
        why: String,
    },
    /// A timeline would have more than [`MAX_BUCKETS`] buckets.
    #[error("{count} buckets is more than {MAX_BUCKETS}: use a larger bucket or a shorter period")]
    TooManyBuckets {
        /// The buckets the period needs.
        count: u64,
    },
}

fn param(key: &str, value: &str, why: impl Into<String>) -> Error {
    Error::Param {
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// One end of a time window: a duration before now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// That long before now ("7d", "12h", "30m").
    Ago(Duration),
    /// A date ("2026-11-01", midnight UTC) or an RFC 3339 time ("2026-11-01T08:00:00+01:00").
    At(SystemTime),
}

impl TimeSpec {
    /// The point in time this names, given `now`.
    pub fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            TimeSpec::Ago(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
            TimeSpec::At(t) => t,
        }
    }
}

impl FromStr for TimeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<TimeSpec, String> {
        let s = s.trim();
        let b = s.as_bytes();
        if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
            return parse_time(s)
                .map(TimeSpec::At)
                .ok_or_else(|| "expected a date (2026-11-01) or RFC 3339 time".to_string());
        }
        humantime::parse_duration(s)
            .map(TimeSpec::Ago)
            .map_err(|e| format!("{e}; write a duration (7d, 12h) or a date (2026-11-01)"))
    }
}

/// Parses "YYYY-MM-DD" (midnight UTC) or RFC 3339 with "Z" or a numeric offset.
fn parse_time(s: &str) -> Option<SystemTime> {
    if s.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{s}T00:00:00Z")).ok();
    }
    if s.ends_with(['Z', 'z']) {
        return humantime::parse_rfc3339_weak(&s[..s.len() - 1]).ok();
    }
    // "+HH:MM" or "-HH:MM" after the seconds.
    let split = s.len().checked_sub(6)?;
    let (base, offset) = (s.get(..split)?, s.get(split..)?);
    let ob = offset.as_bytes();
    if base.len() < 19 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
        return None;
    }
    let hours: u64 = offset.get(1..3)?.parse().ok()?;
    let minutes: u64 = offset.get(4..6)?.parse().ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = humantime::parse_rfc3339_weak(base).ok()?;
    // Local time minus a positive offset is UTC.
    if ob[0] == b'+' {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// Which events a report or timeline reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Keep events at or after this.
    pub since: Option<TimeSpec>,
    /// Keep events before this.
    pub until: Option<TimeSpec>,
    /// Keep events of these classes; `None` keeps every event, including those without one.
    pub classes: Option<Vec<Class>>,
    /// Keep events of these users (canonical or as given, ASCII case-insensitive); empty: all.
    pub users: Vec<String>,
    /// Keep events of these kinds; `None` keeps every kind.
    pub kinds: Option<Vec<Kind>>,
}

impl Default for Filter {
    /// Legacy authentication (below `modern`) in authentication events (`auth`, `relay`,
    /// `accept`), at any time.
    fn default() -> Filter {
        Filter {
            since: None,
            until: None,
            classes: Some(vec![Class::Insecure, Class::Weak, Class::Basic]),
            users: Vec::new(),
            kinds: Some(vec![Kind::Auth, Kind::Relay, Kind::Accept]),
        }
    }
}

/// The kinds by wire name.
const KINDS: [(&str, Kind); 7] = [
    ("auth", Kind::Auth),
    ("relay", Kind::Relay),
    ("accept", Kind::Accept),
    ("allowlist", Kind::Allowlist),
    ("lockout", Kind::Lockout),
    ("defer", Kind::Defer),
    ("bounce", Kind::Bounce),
];

impl Filter {
    /// The default filter changed by query parameters: `since`, `until` (a [`TimeSpec`]),
    /// `class` (names or "all"), `user`, `kind` (names or "all"). Values may be
    /// comma-separated lists and keys may repeat; a `class` or `kind` replaces the default set.
    /// Other keys (`group_by`, `format`, `bucket`, ...) are left to the caller.
    pub fn from_params<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<Filter, Error> {
        let mut f = Filter::default();
        let (mut classes, mut kinds): (Option<Vec<Class>>, Option<Vec<Kind>>) = (None, None);
        let (mut all_classes, mut all_kinds) = (false, false);
        for (key, value) in params {
            let (key, value) = (key.as_ref(), value.as_ref());
            let items = value.split(',').map(str::trim).filter(|s| !s.is_empty());
            match key {
                "since" | "until" => {
                    let t = value
                        .parse::<TimeSpec>()
                        .map_err(|why| param(key, value, why))?;
                    *if key == "since" {
                        &mut f.since
                    } else {
                        &mut f.until
                    } = Some(t);
                }
                "class" => {
                    for item in items {
                        if item.eq_ignore_ascii_case("all") {
                            all_classes = true;
                            continue;
                        }
                        let c = Class::parse(item).ok_or_else(|| {
                            param(key, item, "expected insecure, weak, basic, modern or all")
                        })?;
                        classes.get_or_insert_with(Vec::new).push(c);
                    }
                }
                "kind" => {
                    for item in items {
                        if item.eq_ignore_ascii_case("all") {
                            all_kinds = true;
                            continue;
                        }
                        let k = KINDS
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(item))
                            .ok_or_else(|| {
                                let names: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                                param(key, item, format!("expected {} or all", names.join(", ")))
                            })?;
                        kinds.get_or_insert_with(Vec::new).push(k.1);
                    }
                }
                "user" => f.users.extend(items.map(str::to_string)),
                _ => {}
            }
        }
        if all_classes {
            f.classes = None;
        } else if let Some(c) = classes {
            f.classes = Some(c);
        }
        if all_kinds {
            f.kinds = None;
        } else if let Some(k) = kinds {
            f.kinds = Some(k);
        }
        Ok(f)
    }
}

/// What events are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// The canonical user, else the name as given.
    #[default]
    User,
    /// The client address.
    Ip,
    /// The mechanism or method.
    Mechanism,
    /// The client software (`User-Agent`/`X-Mailer`).
    Client,
    /// The class.
    Class,
}

impl GroupBy {
    /// Every grouping.
    pub const ALL: [GroupBy; 5] = [
        GroupBy::User,
        GroupBy::Ip,
        GroupBy::Mechanism,
        GroupBy::Client,
        GroupBy::Class,
    ];

    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::User => "user",
            GroupBy::Ip => "ip",
            GroupBy::Mechanism => "mechanism",
            GroupBy::Client => "client",
            GroupBy::Class => "class",
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    fn from_str(s: &str) -> Result<GroupBy, Error> {
        GroupBy::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                param(
                    "group_by",
                    s,
                    "expected user, ip, mechanism, client or class",
                )
            })
    }
}

/// The key of events that lack the grouped field.
pub const UNKNOWN: &str = "unknown";

/// Up to [`LIST_CAP`] distinct values, smallest first, and how many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Values {
    /// The values kept, in byte order.
    pub values: Vec<String>,
    /// Distinct values beyond those.
    pub more: u64,
}

/// One group of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The grouped value (a user, address, mechanism, client software or class), or
    /// [`UNKNOWN`].
    pub key: String,
    /// Events in the group.
    pub events: u64,
    /// Events where the client got through (success, warned, would_deny).
    pub successes: u64,
    /// Events where it did not (failure, denied, brownout).
    pub failures: u64,
    /// The earliest event time (RFC 3339 UTC).
    pub first_seen: String,
    /// The latest event time (RFC 3339 UTC).
    pub last_seen: String,
    /// The classes seen, weakest first.
    pub classes: Vec<Class>,
    /// The mechanisms seen.
    pub mechanisms: Values,
    /// The users seen (canonical, else as given).
    pub users: Values,
    /// The client addresses seen.
    pub client_ips: Values,
    /// The client software seen.
    pub client_software: Values,
    /// The EHLO names or client hints seen.
    pub client_names: Values,
}

/// A line skipped as corrupt or truncated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineRef {
    /// The file (or the name given to [`report_from`]).
    pub file: PathBuf,
    /// The line number, from 1.
    pub line: u64,
}

/// The result of [`report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The groups, most recently seen first (ties by key).
    pub groups: Vec<Group>,
    /// Events that passed the filter.
    pub events: u64,
    /// Corrupt or truncated lines skipped.
    pub skipped: u64,
    /// The first [`SKIPPED_SHOWN`] skipped lines.
    pub skipped_at: Vec<LineRef>,
}

/// Groups the events of `files` (read in the order given; [`crate::audit::files`] lists the
/// current log and its rotations oldest first) that pass `filter`.
pub fn report(
    files: &[PathBuf],
    filter: &Filter,
    group_by: GroupBy,
    now: SystemTime,
) -> Result<Report, Error> {
    let window = scan::Window::new(filter, now);
    let scan = scan::files(files, &window, || Groups::new(group_by))?;
    Ok(scan
        .collected
        .finish(scan.events, scan.skipped, scan.skipped_at))
}

/// Like [`report`] over one reader (a file, a socket, a `BufRead`); `name` labels skipped lines.
pub fn report_from(
    reader: impl Read,
    name: &Path,
    filter: &Filter,
    group_by: GroupBy,
    now: SystemTime,
) -> Result<Report, Error> {
    let window = scan::Window::new(filter, now);
    let scan = scan::reader(reader, name, &window, || Groups::new(group_by))?;
    Ok(scan
        .collected
        .finish(scan.events, scan.skipped, scan.skipped_at))
}

/// Counts for one time bucket of a [`timeline`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The bucket start (RFC 3339 UTC); buckets are aligned to multiples of their length since
    /// the Unix epoch.
    pub start: String,
    /// Events in the bucket.
    pub events: u64,
    /// Events where the client got through.
    pub successes: u64,
    /// Events where it did not.
    pub failures: u64,
    /// Events per class name ("none" for events without a class).
    pub classes: BTreeMap<String, u64>,
    /// Events per mechanism ([`UNKNOWN`] without one); past the [`LIST_CAP`] most frequent,
    /// the rest are summed under "other".
    pub mechanisms: BTreeMap<String, u64>,
}

/// Counts per class and per mechanism in consecutive buckets of `bucket` (at least a second),
/// from `filter.since` (else the first event) to `filter.until` (else the last event), empty
/// buckets included, for a chart.
pub fn timeline(
    files: &[PathBuf],
    filter: &Filter,
    bucket: Duration,
    now: SystemTime,
) -> Result<Vec<Bucket>, Error> {
    let secs = bucket.as_secs();
    if secs == 0 {
        return Err(param(
            "bucket",
            &format!("{bucket:?}"),
            "at least one second",
        ));
    }
    let window = scan::Window::new(filter, now);
    let scan = scan::files(files, &window, || Timeline::new(secs))?;
    let t = scan.collected;
    let unix = |t: SystemTime| scan::unix_secs(t) / secs;
    let first = window
        .since_time
        .map(unix)
        .or(t.buckets.keys().next().copied());
    let last = match window.until_time {
        // Until is exclusive: a bound on a bucket edge does not open a new bucket.
        Some(u) => Some(scan::unix_secs(u).saturating_sub(1) / secs),
        None => t.buckets.keys().next_back().copied(),
    };
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    if last < first {
        return Ok(Vec::new());
    }
    let count = last - first + 1;
    if count > MAX_BUCKETS {
        return Err(Error::TooManyBuckets { count });
    }
    let mut buckets = t.buckets;
    Ok((first..=last)
        .map(|n| {
            let mut b = buckets.remove(&n).unwrap_or_default();
            let start = SystemTime::UNIX_EPOCH + Duration::from_secs(n * secs);
            b.start = humantime::format_rfc3339_seconds(start).to_string();
            b.mechanisms = cap_counts(std::mem::take(&mut b.mechanisms));
            b
        })
        .collect())
}

/// One event as the aggregators see it: borrowed from the line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    pub time: &'a str,
    pub allowed: bool,
    pub class: Option<Class>,
    pub user: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub mechanism: Option<&'a str>,
    pub software: Option<&'a str>,
    pub name: Option<&'a str>,
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
const TIME_LEN: usize = 24;

fn time_text(t: Option<[u8; TIME_LEN]>) -> String {
    t.map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default()
}

/// The running totals of one group.
#[derive(Debug, Default)]
struct Acc {
    events: u64,
    successes: u64,
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
        self.events += 1;
        self.successes += u64::from(e.allowed);
        if let Ok(t) = <[u8; TIME_LEN]>::try_from(e.time.as_bytes()) {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        if let Some(c) = e.class {
            self.classes |= 1 << c as u8;
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
        self.successes += o.successes;
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
            successes: self.successes,
            failures: self.events - self.successes,
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

/// The per-key aggregation behind [`report`].
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

    fn finish(self, events: u64, skipped: u64, skipped_at: Vec<LineRef>) -> Report {
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

/// The per-bucket aggregation behind [`timeline`].
#[derive(Debug)]
struct Timeline {
    secs: u64,
    buckets: BTreeMap<u64, Bucket>,
}

impl Timeline {
    fn new(secs: u64) -> Timeline {
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
fn cap_counts(map: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
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
        // The scanner hands over canonical times only.
        let Some(t) = scan::canonical_secs(e.time) else {
            return;
        };
        let b = self.buckets.entry(t / self.secs).or_default();
        b.events += 1;
        b.successes += u64::from(e.allowed);
        b.failures += u64::from(!e.allowed);
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
