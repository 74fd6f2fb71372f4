//! The in-process backend of [`KnownAddresses`]: per user, the client networks that logged in
//! successfully within a window, so that the throttle's per-user limit spares them while
//! someone else guesses that user's password (`throttle.rs`).
//!
//! Bounded: at most [`PER_USER`] networks per user (the one seen longest ago goes first) and
//! `max_users` users (when full, a batch of about 1% of the users seen longest ago is
//! dropped). Kept across restarts in a JSON snapshot written atomically
//! ([`crate::durable::replace`]) by [`KnownAddresses::persist`]; a network learned after the
//! last snapshot and lost in a crash only means its next login waits like anyone's.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use dashmap::DashMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::clock::unix_secs;
use crate::store::{CounterKey, KnownAddresses, Pending};

/// Networks remembered per user.
pub const PER_USER: usize = 16;
/// Snapshot format version.
const VERSION: u32 = 1;

/// Known networks per user, in this process's memory.
#[derive(Debug)]
pub struct MemoryKnownAddresses {
    /// User key ([`CounterKey::user`]) to `(network, last login)`.
    map: DashMap<CompactString, Vec<(IpNet, SystemTime)>>,
    window: Duration,
    max_users: usize,
    snapshot: Option<PathBuf>,
}

impl MemoryKnownAddresses {
    /// An empty store remembering a network for `window` after its last login, for at most
    /// `max_users` users (at least 1).
    pub fn new(window: Duration, max_users: usize) -> MemoryKnownAddresses {
        MemoryKnownAddresses {
            map: DashMap::new(),
            window,
            max_users: max_users.max(1),
            snapshot: None,
        }
    }

    /// This store, saved to `path` by [`KnownAddresses::persist`].
    pub fn with_snapshot(mut self, path: PathBuf) -> Self {
        self.snapshot = Some(path);
        self
    }

    fn key(user: &str) -> CompactString {
        match CounterKey::user(user) {
            CounterKey::User(k) => k,
            CounterKey::Addr(_) => CompactString::default(),
        }
    }

    fn fresh(&self, seen: SystemTime, now: SystemTime) -> bool {
        seen.checked_add(self.window).is_none_or(|end| end > now)
    }

    /// Records a login by `user` from `net` at `now`.
    pub fn remember_now(&self, user: &str, net: IpNet, now: SystemTime) {
        {
            let mut nets = self.map.entry(Self::key(user)).or_default();
            nets.retain(|(_, seen)| self.fresh(*seen, now));
            match nets.iter_mut().find(|(n, _)| *n == net) {
                Some(slot) => slot.1 = now,
                None => {
                    if nets.len() >= PER_USER
                        && let Some(i) = (0..nets.len()).min_by_key(|&i| nets[i].1)
                    {
                        nets.swap_remove(i);
                    }
                    nets.push((net, now));
                }
            }
        }
        if self.map.len() > self.max_users {
            self.evict();
        }
    }

    /// Whether `user` logged in from `net` within the window before `now`.
    pub fn contains(&self, user: &str, net: IpNet, now: SystemTime) -> bool {
        self.map.get(&Self::key(user)).is_some_and(|nets| {
            nets.iter()
                .any(|(n, seen)| *n == net && self.fresh(*seen, now))
        })
    }

    /// Drops about 1% of the users, those whose latest login is oldest.
    fn evict(&self) {
        let mut latest: Vec<(SystemTime, CompactString)> = self
            .map
            .iter()
            .map(|r| {
                let last = r.value().iter().map(|(_, s)| *s).max();
                (last.unwrap_or(SystemTime::UNIX_EPOCH), r.key().clone())
            })
            .collect();
        let excess = self.map.len().saturating_sub(self.max_users) + self.max_users / 100;
        let excess = excess.clamp(1, latest.len());
        latest.select_nth_unstable(excess - 1);
        for (_, user) in &latest[..excess] {
            self.map.remove(user);
        }
    }

    /// Drops what is older than the window; returns the users left.
    pub fn purge_now(&self, now: SystemTime) -> usize {
        self.map.retain(|_, nets| {
            nets.retain(|(_, seen)| self.fresh(*seen, now));
            !nets.is_empty()
        });
        self.map.len()
    }

    /// Writes the networks still fresh at `now` to `path` atomically; returns the users kept.
    pub fn save(&self, path: &Path, now: SystemTime) -> io::Result<usize> {
        let mut users: Vec<SavedUser> = self
            .map
            .iter()
            .map(|r| SavedUser {
                user: r.key().to_string(),
                networks: r
                    .value()
                    .iter()
                    .filter(|(_, seen)| self.fresh(*seen, now))
                    .map(|(net, seen)| (net.to_string(), unix_secs(*seen)))
                    .collect(),
            })
            .filter(|u| !u.networks.is_empty())
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        let kept = users.len();
        let bytes = serde_json::to_vec(&Saved {
            version: VERSION,
            users,
        })
        .map_err(io::Error::other)?;
        crate::durable::replace(path, &bytes)?;
        Ok(kept)
    }

    /// Loads the snapshot at `path` (a missing file is empty), dropping what is older than the
    /// window at `now`; returns the users taken. Bounded by `max_users`.
    pub fn load(&self, path: &Path, now: SystemTime) -> io::Result<usize> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let cap = (self.max_users as u64).saturating_mul(4096).max(1 << 20);
        let mut bytes = Vec::new();
        f.take(cap + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "known-addresses file larger than its bound",
            ));
        }
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if saved.version != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown version {}", saved.version),
            ));
        }
        let mut taken = 0;
        for u in saved.users.into_iter().take(self.max_users) {
            for (net, seen) in u.networks.iter().take(PER_USER) {
                let Ok(net) = net.parse::<IpNet>() else {
                    continue;
                };
                let seen = SystemTime::UNIX_EPOCH + Duration::from_secs(*seen);
                if self.fresh(seen, now) {
                    self.remember_now(&u.user, net, seen);
                }
            }
            taken += 1;
        }
        Ok(taken)
    }
}

impl KnownAddresses for MemoryKnownAddresses {
    fn remember<'a>(&'a self, user: &'a str, net: IpNet, now: SystemTime) -> Pending<'a, ()> {
        self.remember_now(user, net, now);
        Pending::ready(Ok(()))
    }

    fn is_known<'a>(&'a self, user: &'a str, net: IpNet, now: SystemTime) -> Pending<'a, bool> {
        Pending::ready(Ok(self.contains(user, net, now)))
    }

    fn purge(&self, now: SystemTime) -> Pending<'_, usize> {
        Pending::ready(Ok(self.purge_now(now)))
    }

    fn persist(&self, now: SystemTime) -> Pending<'_, usize> {
        let Some(path) = &self.snapshot else {
            return Pending::ready(Ok(0));
        };
        Pending::ready(
            self.save(path, now)
                .map_err(|source| crate::store::Error::Io {
                    path: path.clone(),
                    source,
                }),
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    version: u32,
    users: Vec<SavedUser>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedUser {
    user: String,
    /// `(network, last login in Unix seconds)`.
    networks: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + DAY * days as u32
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_is_known_for_the_window_after_its_last_login() {
        let k = MemoryKnownAddresses::new(30 * DAY, 10);
        k.remember_now("Alice", net("192.0.2.1/32"), t(0));
        assert!(k.contains("alice", net("192.0.2.1/32"), t(29)));
        assert!(!k.contains("alice", net("192.0.2.2/32"), t(1)));
        assert!(!k.contains("bob", net("192.0.2.1/32"), t(1)));
        assert!(!k.contains("alice", net("192.0.2.1/32"), t(30)));
        k.remember_now("alice", net("192.0.2.1/32"), t(20));
        assert!(k.contains("alice", net("192.0.2.1/32"), t(40)));
        assert_eq!(k.purge_now(t(51)), 0);
    }

    #[test]
    fn bounded_per_user_and_in_users() {
        let k = MemoryKnownAddresses::new(30 * DAY, 200);
        for i in 0..(PER_USER as u8 + 4) {
            k.remember_now("alice", net(&format!("192.0.2.{i}/32")), t(i.into()));
        }
        assert!(
            !k.contains("alice", net("192.0.2.0/32"), t(21)),
            "oldest kept"
        );
        assert!(k.contains("alice", net("192.0.2.19/32"), t(21)));
        for i in 0..300 {
            k.remember_now(&format!("user{i}"), net("192.0.2.1/32"), t(1));
        }
        assert!(k.map.len() <= 200);
    }

    #[test]
    fn the_snapshot_round_trips_and_drops_stale_networks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known.json");
        let k = MemoryKnownAddresses::new(30 * DAY, 10);
        k.remember_now("alice", net("192.0.2.1/32"), t(0));
        k.remember_now("alice", net("2001:db8::/64"), t(10));
        k.remember_now("bob", net("198.51.100.7/32"), t(10));
        assert_eq!(k.save(&path, t(11)).unwrap(), 2);
        let back = MemoryKnownAddresses::new(30 * DAY, 10);
        assert_eq!(back.load(&path, t(35)).unwrap(), 2);
        assert!(!back.contains("alice", net("192.0.2.1/32"), t(35)));
        assert!(back.contains("alice", net("2001:db8::/64"), t(35)));
        assert!(back.contains("bob", net("198.51.100.7/32"), t(35)));
        assert_eq!(
            MemoryKnownAddresses::new(DAY, 10)
                .load(&dir.path().join("missing"), t(0))
                .unwrap(),
            0
        );
        std::fs::write(&path, b"{").unwrap();
        assert!(back.load(&path, t(0)).is_err());
    }
}
