//! The allowlist as a node's copy of a shared list (`[cluster]`, [`crate::store::cluster`]):
//! entries set exactly as the cluster decided them, and a full re-read. Neither is journaled:
//! the shared list is the record, and the copy's regular snapshot keeps it across restarts.

use std::collections::HashSet;
use std::time::SystemTime;

use ipnet::IpNet;

use super::{MAX_RECENT_USERS, MemoryAllowlist, Record};
use crate::store::Entry;

impl MemoryAllowlist {
    /// Sets the entry for `key` to exactly `entry` (a copy of a shared list: the cluster
    /// decided it), and notes its user as seen on the key at `seen` (for the shared-address
    /// count). Not journaled.
    pub fn set_entry(&self, key: IpNet, entry: Entry, seen: SystemTime) {
        self.prefixes.add(key);
        let user = entry.user.clone();
        self.map
            .entry(key)
            .and_modify(|rec| {
                match rec.recent.iter_mut().find(|(u, _)| *u == user) {
                    Some(slot) => slot.1 = slot.1.max(seen),
                    None => {
                        if rec.recent.len() >= MAX_RECENT_USERS
                            && let Some(i) = (0..rec.recent.len()).min_by_key(|&i| rec.recent[i].1)
                        {
                            rec.recent.swap_remove(i);
                        }
                        rec.recent.push((user.clone(), seen));
                    }
                }
                rec.entry = entry.clone();
            })
            .or_insert_with(|| Record {
                entry,
                recent: vec![(user, seen)],
                durable_until: SystemTime::UNIX_EPOCH,
            });
        self.evict_if_full(Some(key));
    }

    /// Makes the list hold exactly `entries` (a full read of a shared list), except the keys
    /// in `keep` (changes not yet shared); returns how many entries were dropped. Not
    /// journaled.
    pub fn replace_all(
        &self,
        entries: Vec<(IpNet, Entry)>,
        keep: impl Fn(&IpNet) -> bool,
    ) -> usize {
        let wanted: HashSet<IpNet> = entries.iter().map(|(k, _)| *k).collect();
        let mut dropped = 0;
        self.map.retain(|k, _| {
            let stay = wanted.contains(k) || keep(k);
            dropped += usize::from(!stay);
            stay
        });
        for (key, entry) in entries {
            if !keep(&key) {
                let seen = entry.inserted_at;
                self.set_entry(key, entry, seen);
            }
        }
        dropped
    }
}
