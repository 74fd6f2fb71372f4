//! The memory allowlist's journal: opening and replaying it at start, and the record each put
//! or removal writes (`MemoryAllowlist::open_journal`; the journal itself is
//! `store/journal.rs`).

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{MemoryAllowlist, Record, SnapshotEntry};
use crate::clock::unix_secs;
use crate::store::Error;
use crate::store::journal::Journal;

/// A journal longer than this is not read at start (it is compacted at 8 MiB).
const MAX_JOURNAL: u64 = 256 << 20;

impl MemoryAllowlist {
    /// Opens the journal at `path` and replays it over the entries loaded so far (the
    /// snapshot), dropping what expired by `now`; from then on every put and removal is
    /// journaled before it is answered. Returns the records replayed. A record that does not
    /// parse (an edited file) is skipped with a warning.
    pub fn open_journal(&mut self, path: &Path, now: SystemTime) -> io::Result<usize> {
        let (journal, lines) = Journal::open(path, MAX_JOURNAL)?;
        let mut replayed = 0;
        for line in &lines {
            match serde_json::from_slice::<Change>(line) {
                Ok(change) => {
                    self.replay(change, now);
                    replayed += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "allowlist journal: record skipped: {e}")
                }
            }
        }
        self.expire_now(now);
        self.evict_if_full(None);
        self.journal = Some(journal);
        Ok(replayed)
    }

    fn replay(&self, change: Change, now: SystemTime) {
        let key = |net: &str| net.parse::<IpNet>().ok().map(|n| n.trunc());
        match change {
            Change::Put(s) => {
                let Some(key) = key(&s.net) else { return };
                let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(s.expires_at);
                if expires_at <= now {
                    self.map.remove(&key);
                    return;
                }
                self.prefixes.add(key);
                self.map.insert(key, Record::saved(&s));
            }
            Change::Remove { net } => {
                if let Some(key) = key(&net) {
                    self.map.remove(&key);
                }
            }
        }
    }

    /// The journal line for the state of `key` now: its entry, or its removal.
    pub(super) fn change_line(&self, key: IpNet) -> Vec<u8> {
        let change = match self.map.get(&key) {
            Some(rec) => Change::Put(SnapshotEntry {
                net: key.to_string(),
                user: rec.entry.user.to_string(),
                inserted_at: unix_secs(rec.entry.inserted_at),
                expires_at: unix_secs(rec.entry.expires_at),
            }),
            None => Change::Remove {
                net: key.to_string(),
            },
        };
        // A struct of strings and integers always serializes.
        serde_json::to_vec(&change).unwrap_or_default()
    }

    pub(super) fn journal_error(&self, source: io::Error) -> Error {
        Error::Unavailable(format!("allowlist journal: {source}"))
    }
}

/// One journal record: an entry as it stands after a change, or its removal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Change {
    Put(SnapshotEntry),
    Remove { net: String },
}
