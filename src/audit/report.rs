//! The audit report: reads the audit log (the current file and its rotations, or any reader),
//! keeps the events that pass a [`Filter`], and aggregates them per [`GroupBy`] key into
//! [`Group`]s (counts, successes and failures, first and last seen, and capped lists of
//! mechanisms, classes, users, client addresses and client software), or per time bucket into a
//! [`timeline`]. It answers "which users and clients still use legacy authentication".
//!
//! This is a pure library shared by `mailgate audit` and the admin API: no clock reads (`now` is
//! an argument), no printing. Corrupt or truncated lines are skipped and counted, with the first
//! few positions kept for a warning. Reading streams large blocks split at line boundaries to
//! worker threads (see `scan.rs`); aggregation lives in `collect.rs`, rendering in
//! `render.rs`. The schema is in `docs/audit.md`.

mod collect;
mod render;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::event::{Class, Kind, Outcome};

pub(crate) use collect::{Collect, Seen};
use collect::{Groups, TIME_LEN, Timeline, cap_counts};
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
        // The configuration's duration syntax: one grammar for the config, the CLI and the API.
        crate::config::parse_duration(s)
            .map(TimeSpec::Ago)
            .ok_or_else(|| format!("{s:?}: write a duration (7d, 12h) or a date (2026-11-01)"))
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
    /// Keep events with these results; `None` keeps every result.
    pub results: Option<Vec<Outcome>>,
    /// Keep events decided by these policy rules (exact names); empty: all, with or without a
    /// rule.
    pub rules: Vec<String>,
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
            results: None,
            rules: Vec::new(),
        }
    }
}

/// The results by wire name, in the order of the per-result counts.
pub(crate) const RESULTS: [Outcome; 6] = Outcome::ALL;

/// The kinds by wire name.
const KINDS: [(&str, Kind); 8] = [
    ("auth", Kind::Auth),
    ("relay", Kind::Relay),
    ("accept", Kind::Accept),
    ("allowlist", Kind::Allowlist),
    ("lockout", Kind::Lockout),
    ("defer", Kind::Defer),
    ("bounce", Kind::Bounce),
    ("queue", Kind::Queue),
];

impl Filter {
    /// The default filter changed by query parameters: `since`, `until` (a [`TimeSpec`]),
    /// `class` (names or "all"), `user`, `kind` (names or "all"), `result` (success, failure,
    /// denied, warned, brownout, would_deny, or all), `rule` (policy rule names). Values may be
    /// comma-separated lists and keys may repeat; a `class` or `kind` replaces the default set.
    /// Other keys (`group_by`, `format`, `bucket`, ...) are left to the caller.
    pub fn from_params<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Result<Filter, Error> {
        let mut f = Filter::default();
        let (mut classes, mut kinds): (Option<Vec<Class>>, Option<Vec<Kind>>) = (None, None);
        let (mut all_classes, mut all_kinds) = (false, false);
        let (mut results, mut all_results): (Option<Vec<Outcome>>, bool) = (None, false);
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
                "rule" => f.rules.extend(items.map(str::to_string)),
                "result" => {
                    for item in items {
                        if item.eq_ignore_ascii_case("all") {
                            all_results = true;
                            continue;
                        }
                        let r = RESULTS
                            .iter()
                            .find(|r| r.as_str().eq_ignore_ascii_case(item))
                            .ok_or_else(|| {
                                let names: Vec<&str> = RESULTS.iter().map(|r| r.as_str()).collect();
                                param(key, item, format!("expected {} or all", names.join(", ")))
                            })?;
                        results.get_or_insert_with(Vec::new).push(*r);
                    }
                }
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
        if !all_results {
            f.results = results;
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
    /// Authentication and relay decisions in the group (`auth` and `relay` events, and the
    /// other kinds when asked for); accepted messages are counted in `messages` instead.
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
    /// Events refused by a policy rule (`deny`, `transition`).
    pub denied: u64,
    /// Events let through under a `warn` rule.
    pub warned: u64,
    /// Events refused by a `brownout` rule.
    pub brownout: u64,
    /// Events a dry-run rule would have refused.
    pub would_deny: u64,
    /// The policy rules that decided events in the group.
    pub rules: Values,
    /// Messages accepted (`accept` events): they add their client software and names to the
    /// group but are not authentications of their own.
    pub messages: u64,
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
    /// Decisions (events other than `accept`) that passed the filter.
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

/// The users with a successful login in the log's events since `since` (a `since` filter
/// value: "7d", a date, ...) whom `users` does not hold: during a migration, users whose
/// passwords only the old server (`[auth.upstream]`, `[auth.ldap]`) has checked so far, with
/// no stored forms here. Sorted.
pub fn checked_elsewhere_only(
    files: &[PathBuf],
    since: Option<&str>,
    now: SystemTime,
    users: &dyn crate::auth::Authenticator,
) -> Result<Vec<String>, Error> {
    let mut params = vec![("kind", "auth"), ("result", "success"), ("class", "all")];
    params.extend(since.map(|s| ("since", s)));
    let filter = Filter::from_params(&params)?;
    let logged_in = report(files, &filter, GroupBy::User, now)?;
    let mut out: Vec<String> = logged_in
        .groups
        .into_iter()
        .map(|g| g.key)
        .filter(|u| u != UNKNOWN && users.lookup(u).is_none())
        .collect();
    out.sort();
    Ok(out)
}
