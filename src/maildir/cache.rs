//! The listing cache: what a POP3 session needs from a maildrop (names, sizes, unique-ids,
//! in delivery order), kept between sessions and brought up to date from the directory's
//! changes, so that opening a large maildrop no longer reads and `stat`s every file.
//!
//! # What is kept, and when it is trusted
//!
//! For each mailbox the cache holds the listing of `cur/` (the [`Mailbox`] sessions get, shared
//! behind an `Arc`) and the *stamp* of `cur/` it was read under: the directory's device, inode,
//! modification and change times. Every change to a directory's entries (a delivery moved in
//! from `new/`, a deletion by a session or an admin's `rm`, a flag change, which renames the
//! file, a `mv` in or out) updates both times, so an unchanged stamp means unchanged entries.
//! The change time cannot be set from user space, so `touch -d` on the directory does not fool
//! the check either.
//!
//! One case needs care, as with git's "racily clean" index entries: a file system stamps a
//! change with a clock that ticks coarsely (a jiffy, or a whole second on some file systems),
//! so a change made in the same tick as the reading could leave the stamp as it was. A listing
//! is therefore trusted only if `cur/` was last changed at least [`RACY_MARGIN`] before it was
//! read; any later change then gets a different stamp. A listing read sooner after a change is
//! kept, but the next open reads the directory again. The comparison is with the real clock,
//! not the gateway's injected [`Clock`](crate::clock::Clock): file systems stamp with the
//! real one.
//!
//! # Bringing a listing up to date
//!
//! A changed stamp costs one read of the directory (`getdents`, no `stat`): a name already
//! known with the same inode number keeps its entry; only new names are `stat`ed. Maildir
//! files are never rewritten in place (a change of content is a new file), which is what makes
//! a known name with a known inode a known size. Deletions drop out; the order of the kept
//! entries does not change, and the new ones are merged in. A mailbox whose `cur/` was never
//! read costs what [`super::list`] costs, and gives the same answer: both use [`scan`].
//!
//! `new/` is read on every open, as before (it is normally small), and what is there is moved
//! into `cur/` first; that changes the stamp of `cur/`, so the new mail is found by the read
//! described above.
//!
//! # Bounds
//!
//! At most [`MAX_MAILBOXES`] mailboxes and [`MAX_MESSAGES`] messages (about 250 bytes each)
//! are kept; the least recently opened mailbox goes first. A mailbox larger than the whole
//! budget is not kept at all. All of it runs in the caller's thread: call it from the blocking
//! pool, as `pop3/conn.rs` does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Mailbox, MessageInfo};
use crate::clock::Clock;

/// Most mailboxes kept.
pub const MAX_MAILBOXES: usize = 256;

/// Most messages kept over all mailboxes (about 64 MB at 250 bytes each).
pub const MAX_MESSAGES: usize = 262_144;

/// A listing is trusted only if the directory had not changed for this long when it was read:
/// twice the coarsest timestamp granularity of the file systems a Maildir lives on (ext4,
/// XFS and btrfs stamp to the nanosecond from a clock that ticks every few milliseconds; some
/// network and older file systems to the second). See the module documentation.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

/// The per-mailbox listing cache. Cheap to clone (one shared cache).
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<Mutex<Lru>>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::with_limits(MAX_MAILBOXES, MAX_MESSAGES)
    }
}

/// What the cache did so far; for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Opens answered from a trusted listing without reading `cur/`.
    pub hits: u64,
    /// Opens that read `cur/` (a first read, or a changed or untrusted stamp).
    pub reads: u64,
    /// Files `stat`ed by those reads.
    pub stats: u64,
}

impl Cache {
    /// An empty cache with the default bounds ([`MAX_MAILBOXES`], [`MAX_MESSAGES`]).
    pub fn new() -> Cache {
        Cache::default()
    }

    /// An empty cache keeping at most `mailboxes` mailboxes and `messages` messages.
    pub fn with_limits(mailboxes: usize, messages: usize) -> Cache {
        Cache {
            inner: Arc::new(Mutex::new(Lru {
                map: HashMap::new(),
                tick: 0,
                messages: 0,
                max_mailboxes: mailboxes,
                max_messages: messages,
                counters: Counters::default(),
            })),
        }
    }

    /// Opens `user`'s maildrop as [`super::list`] does (creates it if missing, moves `new/`
    /// into `cur/`, lists `cur/` oldest first, with the same sizes and unique-ids), reading
    /// only what changed since the mailbox was last opened. Blocking.
    pub fn open(&self, root: &Path, user: &str) -> io::Result<Mailbox> {
        // File systems stamp with the real clock; see the module documentation.
        self.open_at(root, user, crate::clock::SystemClock.now())
    }

    /// [`Cache::open`] with the current time given (tests).
    pub fn open_at(&self, root: &Path, user: &str, now: SystemTime) -> io::Result<Mailbox> {
        let dir = super::ensure_mailbox(root, user)?;
        super::move_new(&dir)?;
        let cur = dir.join("cur");
        // The stamp is read before the directory, so a change after it shows as a new stamp.
        let stamp = Stamp::of(&fs::metadata(&cur)?);
        let trusted = stamp.settled_before(now);
        let old = self.take(&dir);
        let listing = match old {
            Some(old) if old.trusted && old.stamp == stamp => {
                self.count(|c| c.hits += 1);
                old
            }
            old => {
                let (listing, stats) = scan(&cur, old.as_ref())?;
                self.count(|c| {
                    c.reads += 1;
                    c.stats += stats;
                });
                Listing {
                    stamp,
                    trusted,
                    ..listing
                }
            }
        };
        let mailbox = Mailbox {
            messages: listing.messages.clone(),
        };
        self.put(dir, listing);
        Ok(mailbox)
    }

    /// Forgets every listing.
    pub fn clear(&self) {
        let mut lru = self.lock();
        lru.map.clear();
        lru.messages = 0;
    }

    /// Mailboxes kept now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no mailbox is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the cache did so far.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.lock().counters);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The lock guards plain data that every step leaves consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a mailbox's listing out while it is checked and refreshed, so the lock is never
    /// held over file system work. (Two opens of one mailbox at once, which the POP3 maildrop
    /// lock prevents anyway, would each read the directory and both be right.)
    fn take(&self, dir: &Path) -> Option<Listing> {
        let mut lru = self.lock();
        let cached = lru.map.remove(dir)?;
        lru.messages -= cached.listing.messages.len();
        Some(cached.listing)
    }

    fn put(&self, dir: PathBuf, listing: Listing) {
        let mut lru = self.lock();
        let len = listing.messages.len();
        if len > lru.max_messages || lru.max_mailboxes == 0 {
            return;
        }
        while lru.map.len() >= lru.max_mailboxes || lru.messages + len > lru.max_messages {
            let Some(oldest) = lru
                .map
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = lru.map.remove(&oldest) {
                lru.messages -= gone.listing.messages.len();
            }
        }
        lru.tick += 1;
        let used = lru.tick;
        lru.messages += len;
        if let Some(replaced) = lru.map.insert(dir, Cached { used, listing }) {
            // Not reached (the listing was taken out), but keep the count right regardless.
            lru.messages -= replaced.listing.messages.len();
        }
    }
}

/// The cached mailboxes, with a use counter for least-recently-used eviction (a linear scan
/// over at most [`MAX_MAILBOXES`] entries, on insertion only).
#[derive(Debug)]
struct Lru {
    map: HashMap<PathBuf, Cached>,
    tick: u64,
    /// Messages over all listings in `map`.
    messages: usize,
    max_mailboxes: usize,
    max_messages: usize,
    counters: Counters,
}

#[derive(Debug)]
struct Cached {
    used: u64,
    listing: Listing,
}

/// The listing of one `cur/` and what it was read under.
#[derive(Debug)]
pub(super) struct Listing {
    stamp: Stamp,
    /// Whether `stamp` was old enough to vouch for the listing (see [`RACY_MARGIN`]).
    trusted: bool,
    /// Sorted as POP3 numbers them.
    pub(super) messages: Arc<[MessageInfo]>,
    /// Beside `messages`, index for index: what is needed to keep or re-sort an entry.
    meta: Vec<Meta>,
}

/// Per message: the inode it had, and its sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Meta {
    secs: u64,
    mtime: Option<SystemTime>,
    ino: u64,
}

/// What identifies a directory's state of entries: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether both times lie at least [`RACY_MARGIN`] before `now`. A time after `now` (a
    /// clock set back) or before the epoch is never settled.
    fn settled_before(&self, now: SystemTime) -> bool {
        let at = |(secs, nanos): (i64, i64)| -> Option<SystemTime> {
            let secs = u64::try_from(secs).ok()?;
            let nanos = u32::try_from(nanos).ok()?;
            UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        };
        [self.mtime, self.ctime].into_iter().all(|t| {
            at(t)
                .and_then(|t| t.checked_add(RACY_MARGIN))
                .is_some_and(|t| t <= now)
        })
    }
}

/// Lists `cur` (the folder itself, not the mailbox), reusing the entries of `old` for names
/// whose inode is unchanged and `stat`ing the rest. Returns the listing (its stamp still to
/// be set by the caller) and how many files were `stat`ed.
///
/// The derivation is the one [`super::list`] documents: order by the Unix time that starts
/// the name, then modification time, then name; size from `,W=<n>` else the file size; the
/// unique-id is the base name, or its SHA-256 when that does not fit RFC 1939.
pub(super) fn scan(cur: &Path, old: Option<&Listing>) -> io::Result<(Listing, u64)> {
    let known: HashMap<&OsStr, usize> = old
        .map(|o| {
            o.messages
                .iter()
                .enumerate()
                .filter_map(|(i, m)| Some((m.path.file_name()?, i)))
                .collect()
        })
        .unwrap_or_default();
    let mut kept = vec![false; old.map_or(0, |o| o.messages.len())];
    // Unique-ids kept from the old server (`mailgate import`); read only when files changed.
    let imported = match cur.parent() {
        Some(dir) => super::uidlist::read(dir)?,
        None => HashMap::new(),
    };
    let mut added: Vec<(Meta, String, MessageInfo)> = Vec::new();
    let mut stats = 0;
    for entry in fs::read_dir(cur)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if let (Some(&i), Some(old)) = (known.get(file_name.as_os_str()), old)
            && old.meta[i].ino == entry.ino()
        {
            kept[i] = true;
            continue;
        }
        stats += 1;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Removed between the directory read and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            continue;
        }
        let base = name.split(':').next().unwrap_or(name);
        let info = MessageInfo {
            uid: imported
                .get(base)
                .cloned()
                .unwrap_or_else(|| super::unique_id(base)),
            size: super::wire_size(base).unwrap_or(meta.len()),
            path: entry.path(),
        };
        let key = Meta {
            secs: super::leading_number(base),
            mtime: meta.modified().ok(),
            ino: meta.ino(),
        };
        added.push((key, name.to_owned(), info));
    }
    added.sort_by(|a, b| (a.0.secs, a.0.mtime, &a.1).cmp(&(b.0.secs, b.0.mtime, &b.1)));

    // Merge the kept entries (already in order) with the added ones.
    let mut messages = Vec::with_capacity(kept.iter().filter(|k| **k).count() + added.len());
    let mut meta = Vec::with_capacity(messages.capacity());
    let mut kept_iter = old
        .into_iter()
        .flat_map(|o| o.messages.iter().zip(&o.meta))
        .zip(&kept)
        .filter(|(_, k)| **k)
        .map(|(m, _)| m)
        .peekable();
    let mut added_iter = added.into_iter().peekable();
    loop {
        let take_kept = match (kept_iter.peek(), added_iter.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((km, kmeta)), Some((ameta, aname, _))) => {
                let kname = km.path.file_name().and_then(OsStr::to_str).unwrap_or("");
                (kmeta.secs, kmeta.mtime, kname) <= (ameta.secs, ameta.mtime, aname.as_str())
            }
        };
        if take_kept {
            if let Some((m, k)) = kept_iter.next() {
                messages.push(m.clone());
                meta.push(*k);
            }
        } else if let Some((k, _, m)) = added_iter.next() {
            messages.push(m);
            meta.push(k);
        }
    }
    let listing = Listing {
        stamp: Stamp {
            dev: 0,
            ino: 0,
            mtime: (0, 0),
            ctime: (0, 0),
        },
        trusted: false,
        messages: messages.into(),
        meta,
    };
    Ok((listing, stats))
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
