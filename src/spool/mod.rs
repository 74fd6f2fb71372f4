//! The durable spool: accepted messages live here until every recipient is delivered, failed
//! and bounced, or moved to the dead-letter folder.
//!
//! RFC 5321 §6.1 makes accepting a message a promise not to lose it, so the SMTP server may
//! answer 250 after DATA only once [`Incoming::commit`] has returned: body and envelope were
//! written into a slot file and `fdatasync`ed, together with whatever else was committed at
//! that moment (see [`slot`] for the format and why slots are reused rather than created per
//! message, and `group.rs` for the group commit). Layout under the spool directory:
//!
//! - `slots/<n>`: slot files, each free or holding the records of one batch of messages with
//!   the envelopes they were accepted with. A slot is reused once all its records are freed;
//!   at most [`MAX_FREE_SLOTS`] free slots are kept.
//! - `env/<id>.json`: the current envelope ([`entry`]) of a message whose delivery state has
//!   changed since it was accepted (some recipients done, a retry scheduled); it overrides the
//!   envelope in the slot.
//! - `tmp/`: envelopes being written; emptied at open.
//! - `corrupt/`: messages and envelopes that could not be read, moved aside at start-up.
//!
//! The spool keeps an index of its slots in memory, so it belongs to one process: the gateway
//! opens it once at start-up. [`Spool::open`] rebuilds the index by checking every slot's
//! checksum; a spool in the older one-file-per-message layout (`msg/`) is converted on open.
//!
//! Session-facing writes ([`Spool::receive`], [`Incoming`]) are async and run their disk I/O on
//! the blocking pool: a message of up to [`WRITE_BUFFER`] bytes joins a group commit, a larger
//! one is streamed into a slot of its own. The worker-facing
//! calls are plain blocking functions; callers on the runtime wrap them in `spawn_blocking`.
//! `recover.rs` holds the start-up scan, `files.rs` the file helpers and [`inspect`].

pub mod entry;
mod files;
mod group;
mod incoming;
mod recover;
pub mod slot;

use files::*;
pub use files::{arrival, inspect};
pub use group::DEFAULT_COMMIT_WINDOW;
pub use incoming::{Body, BodyReader, Incoming};
use incoming::{Source, Taken};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use entry::{Envelope, FormatError, Recipient, Status, is_valid_id};

use crate::clock::{Clock, SystemClock};

/// Bytes an [`Incoming`] buffers before handing a write to the blocking pool.
pub const WRITE_BUFFER: usize = 64 * 1024;

/// Free slots kept for reuse; a slot freed beyond this is deleted.
pub const MAX_FREE_SLOTS: usize = 1024;

/// Slot files kept open (see [`Spool::slot_file`]): enough for the slots in use on a busy
/// gateway, few enough that a large backlog does not eat the file-descriptor limit.
const OPEN_SLOTS: usize = 128;

/// A freed slot longer than this is truncated, so one large message does not keep its disk
/// space for as long as the slot lives.
const TRUNCATE_ABOVE: u64 = 1024 * 1024;

/// Bodies up to this size are read into memory in one go by [`Spool::open_message`].
pub const PRELOAD_LIMIT: u64 = 256 * 1024;

/// Ids handed out by this process; shared by every spool so two handles never collide.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Errors of the spool layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("spool: cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An envelope file could not be read or written.
    #[error("spool: envelope {path}: {source}")]
    Envelope {
        /// The envelope file.
        path: PathBuf,
        /// What is wrong with it.
        source: FormatError,
    },
    /// The id is not a valid spool id (see [`entry::is_valid_id`]).
    #[error("spool: invalid message id {0:?}")]
    InvalidId(String),
    /// No message with this id is in the spool.
    #[error("spool: no message {0}")]
    NotFound(String),
    /// An earlier write of this message failed or was interrupted; it cannot be committed.
    #[error("spool: message {0} was left incomplete by an earlier failed write")]
    Broken(String),
    /// A blocking-pool task did not complete (runtime shutting down or a panic).
    #[error("spool: background write task failed: {0}")]
    Task(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// A spool directory and the in-memory index of its slots.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    slots: PathBuf,
    env: PathBuf,
    index: Arc<Mutex<Index>>,
    slots_sync: Arc<GroupSync>,
    env_sync: Arc<GroupSync>,
    window: Arc<group::Window>,
    gauge: Arc<QueueGauge>,
}

/// The spool's depth against `[limits] max_queue`, read by sessions without the index lock.
#[derive(Debug)]
pub struct QueueGauge {
    max: AtomicUsize,
    full: AtomicBool,
}

impl Default for QueueGauge {
    fn default() -> Self {
        QueueGauge {
            max: AtomicUsize::new(usize::MAX),
            full: AtomicBool::new(false),
        }
    }
}

impl QueueGauge {
    /// A gauge for a queue of at most `max` messages, empty.
    pub fn new(max: usize) -> QueueGauge {
        let gauge = QueueGauge::default();
        gauge.max.store(max.max(1), Ordering::Relaxed);
        gauge
    }

    /// Whether the spool holds `max_queue` messages or more: new mail waits (452 4.3.1).
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Records the depth `len`; logs when the queue fills or has room again.
    pub(crate) fn update(&self, len: usize) {
        let max = self.max.load(Ordering::Relaxed);
        let full = len >= max;
        if self.full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(
                    queued = len,
                    max_queue = max,
                    "spool full: new mail is answered 452 4.3.1 until deliveries make room"
                );
            } else {
                tracing::info!(queued = len, max_queue = max, "spool has room again");
            }
        }
    }
}

/// Messages detached from the index, waiting for [`Spool::free`].
#[derive(Debug)]
pub struct Detached {
    id: String,
    slot: u32,
    base: u64,
    overridden: bool,
}

/// Messages held in memory after their commit, for [`Spool::take_recent`] (at most
/// [`RECENT_BODY`] each: 16 MiB in all at worst).
pub const RECENT_MESSAGES: usize = 1024;

/// Largest body held in memory after its commit.
pub const RECENT_BODY: usize = 16 * 1024;

/// Which slot holds which message, and which slots are free.
#[derive(Debug, Default)]
struct Index {
    queued: HashMap<String, Queued>,
    /// Just committed, not yet picked up by the relay worker: see [`Spool::take_recent`].
    recent: HashMap<String, (Envelope, Body)>,
    free: Vec<u32>,
    /// Queued records per slot in use; a slot whose count drops to 0 is free again.
    live: HashMap<u32, u32>,
    /// The number the next new slot file gets.
    next: u32,
    /// Small messages waiting for the next group commit, and whether a batch is being
    /// written (see [`Spool::commit_small`]).
    pending: Vec<group::Pending>,
    committing: bool,
    /// Open slot files, so that writing, reading and freeing records costs no `open`.
    files: HashMap<u32, Arc<File>>,
    /// Messages being received in memory that will likely join a group commit, and whether
    /// the writer waits for them (see [`DEFAULT_COMMIT_WINDOW`]).
    receiving: usize,
    writer_waiting: bool,
}

/// Where a queued message lives.
#[derive(Debug, Clone)]
struct Queued {
    slot: u32,
    /// Offset of its record in the slot file.
    base: u64,
    header: slot::Header,
    /// `env/<id>.json` holds a newer envelope than the slot.
    overridden: bool,
}

/// Group commit for a directory's fsync: sessions committing at the same time share one
/// fsync of the folder instead of queueing one each. A caller returns only after an fsync
/// that *started after* its call has completed, so its rename is covered, exactly as if it
/// had synced alone.
#[derive(Debug, Default)]
struct GroupSync {
    state: std::sync::Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Generations started and completed; a generation is one fsync.
    started: u64,
    completed: u64,
    running: bool,
    /// The last generation whose fsync failed.
    failed: Option<u64>,
}

impl GroupSync {
    fn sync(&self, dir: &Path) -> Result<(), Error> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The first fsync that starts from now on covers this caller's rename.
        let target = st.started + 1;
        while st.completed < target {
            if st.running {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.running = true;
            st.started += 1;
            let generation = st.started;
            drop(st);
            let result = sync_dir(dir);
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = false;
            st.completed = generation;
            if result.is_err() {
                st.failed = Some(generation);
            }
            self.done.notify_all();
            if generation >= target {
                return result;
            }
        }
        match st.failed {
            Some(g) if g >= target => Err(Error::Io {
                op: "fsync",
                path: dir.to_path_buf(),
                source: io::Error::other("a shared directory fsync failed"),
            }),
            _ => Ok(()),
        }
    }
}

impl Spool {
    /// Opens (creating if missing) the spool at `dir` and rebuilds the index: every slot whose
    /// checksum holds is a queued message, every other slot is free; leftover temp files and
    /// envelopes of messages that are gone are removed, and a spool in the older layout is
    /// converted. Call it once per process, at start-up, before any message is received.
    pub fn open(dir: &Path) -> Result<Spool, Error> {
        let spool = Spool {
            root: dir.to_path_buf(),
            tmp: dir.join("tmp"),
            slots: dir.join("slots"),
            env: dir.join("env"),
            index: Default::default(),
            slots_sync: Default::default(),
            env_sync: Default::default(),
            window: Default::default(),
            gauge: Default::default(),
        };
        for d in [&spool.tmp, &spool.slots, &spool.env] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        for entry in read_dir(&spool.tmp)? {
            fs::remove_file(&entry).map_err(io_err("remove leftover", &entry))?;
        }
        spool.scan_slots()?;
        spool.convert_old_layout()?;
        spool.attach_overrides()?;
        for d in [&spool.root, &spool.tmp, &spool.slots, &spool.env] {
            sync_dir(d)?;
        }
        Ok(spool)
    }

    /// The spool directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The queue-depth gauge sessions consult ([`QueueGauge::is_full`]).
    pub fn gauge(&self) -> Arc<QueueGauge> {
        self.gauge.clone()
    }

    /// Sets `[limits] max_queue`.
    pub fn set_max_queue(&self, max: usize) {
        self.gauge.max.store(max.max(1), Ordering::Relaxed);
        self.gauge.update(self.len());
    }

    /// Messages in the spool.
    pub fn len(&self) -> usize {
        self.lock().queued.len()
    }

    /// When the oldest message in the spool arrived (by its id, see [`arrival`]); `None` when
    /// the spool is empty. Reads every id: for a scrape, not for a hot path.
    pub fn oldest_arrival(&self) -> Option<SystemTime> {
        self.lock().queued.keys().filter_map(|id| arrival(id)).min()
    }

    /// Whether the spool holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether message `id` is in the spool.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().queued.contains_key(id)
    }

    /// Starts receiving a message. Nothing touches the disk until the first
    /// [`WRITE_BUFFER`] bytes or the commit.
    pub async fn receive(&self) -> Result<Incoming, Error> {
        Ok(Incoming::new(self.clone(), new_id()))
    }

    /// Stores a complete message (e.g. a bounce) durably in one call and returns its id. Like
    /// [`Incoming::commit`], sets the envelope's id and size.
    pub fn enqueue_bytes(&self, mut envelope: Envelope, bytes: &[u8]) -> Result<String, Error> {
        let id = new_id();
        self.write_new(&id, bytes, &mut envelope)?;
        Ok(id)
    }

    /// Reads every envelope, oldest id first.
    pub fn load_all(&self) -> Result<Vec<Envelope>, Error> {
        let mut ids: Vec<String> = self.lock().queued.keys().cloned().collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load(&id) {
                Ok(env) => out.push(env),
                // Delivered and removed since the ids were listed.
                Err(Error::NotFound(_)) => {}
                Err(e) => tracing::error!(id, error = %e, "spool: cannot read envelope"),
            }
        }
        Ok(out)
    }

    /// Reads the current envelope of message `id`.
    pub fn load(&self, id: &str) -> Result<Envelope, Error> {
        check_id(id)?;
        let q = self.queued(id)?;
        if q.overridden {
            let path = self.envelope_path(id);
            match read_bounded(&path, entry::MAX_ENVELOPE_LEN).and_then(|b| parse(&path, &b)) {
                Ok(env) if env.id == id => return Ok(env),
                Ok(env) => {
                    let bad = FormatError::BadId(env.id);
                    self.distrust_override(id, &Error::Envelope { path, source: bad });
                }
                Err(e) => self.distrust_override(id, &e),
            }
        }
        let path = self.slot_path(q.slot);
        let file = self.slot_file(q.slot).map_err(io_err("open", &path))?;
        let bytes = slot::read_envelope(&file, q.base, &q.header).map_err(io_err("read", &path))?;
        parse(&path, &bytes)
    }

    /// Reads the current envelope of message `id` and opens its body; a body of up to
    /// `preload` bytes is read into memory right away.
    pub fn open_message(&self, id: &str, preload: u64) -> Result<(Envelope, Body), Error> {
        let env = self.load(id)?;
        let body = self.body(id)?;
        if body.len <= preload {
            let mut bytes = vec![0u8; body.len as usize];
            body.read_at(&mut bytes, 0)
                .map_err(io_err("read", &body.path))?;
            return Ok((env, Body::from_bytes(bytes)));
        }
        Ok((env, body))
    }

    /// Opens the body of message `id`.
    pub fn body(&self, id: &str) -> Result<Body, Error> {
        check_id(id)?;
        let q = self.queued(id)?;
        let path = self.slot_path(q.slot);
        let file = self.slot_file(q.slot).map_err(io_err("open", &path))?;
        Ok(Body {
            source: Source::File(file),
            path,
            offset: q.base + slot::HEADER_LEN,
            len: q.header.body_len,
        })
    }

    /// Atomically replaces the stored envelope of `env.id` (in `env/`, fsynced).
    pub fn update(&self, env: &Envelope) -> Result<(), Error> {
        check_id(&env.id)?;
        self.queued(&env.id)?;
        self.write_envelope(env)?;
        let mut index = self.lock();
        index.recent.remove(&env.id);
        if let Some(q) = index.queued.get_mut(&env.id) {
            q.overridden = true;
        }
        Ok(())
    }

    /// Removes message `id`: its envelope override, then its slot, which is marked free. The
    /// removal is not fsynced: should a crash undo it, the message is delivered again (at
    /// least once, never zero times). Removing a message that is not there is not an error.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        check_id(id)?;
        match self.detach(id) {
            Some(d) => self.free(d),
            None => Ok(()),
        }
    }

    /// The first half of [`Spool::remove`], without I/O: the message leaves the index at once
    /// (no load, rescan or count sees it any more); [`Spool::free`] then releases its slot, for
    /// example in a batch on the blocking pool. A restart before `free` finds the message
    /// again (delivered at least once).
    pub fn detach(&self, id: &str) -> Option<Detached> {
        let mut index = self.lock();
        index.recent.remove(id);
        let q = index.queued.remove(id)?;
        // A drained backlog gives its memory back (the table, not just its entries).
        let (len, cap) = (index.queued.len(), index.queued.capacity());
        if cap > 4096 && len * 4 < cap {
            index.queued.shrink_to(len * 2);
            let live = index.live.len();
            index.live.shrink_to(live * 2);
        }
        self.gauge.update(len);
        Some(Detached {
            id: id.to_string(),
            slot: q.slot,
            base: q.base,
            overridden: q.overridden,
        })
    }

    /// The second half of [`Spool::remove`]: deletes the envelope override and marks the
    /// record free (unsynced); once no record in its slot is queued, the slot is reused.
    pub fn free(&self, d: Detached) -> Result<(), Error> {
        if d.overridden {
            remove_if_exists(&self.envelope_path(&d.id))?;
        }
        let path = self.slot_path(d.slot);
        let last = {
            let mut index = self.lock();
            let left = index.live.get_mut(&d.slot).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left == Some(0) {
                index.live.remove(&d.slot);
            }
            left.unwrap_or(0) == 0
        };
        let freed = self
            .slot_file(d.slot)
            .and_then(|f| {
                slot::mark_free(&f, d.base)?;
                if last && f.metadata()?.len() > TRUNCATE_ABOVE {
                    f.set_len(0)?;
                }
                Ok(())
            })
            .map_err(io_err("free", &path));
        // A record that could not be marked free is still overwritten when its slot is
        // reused. Until then a restart would deliver the old message again, hence the error.
        if last {
            self.release(d.slot);
        }
        freed
    }

    /// The envelope and body of message `id` if it was committed moments ago and is still
    /// held in memory, for its first delivery attempt without a disk read; taken out of the
    /// cache (later attempts read the spool).
    pub fn take_recent(&self, id: &str) -> Option<(Envelope, Body)> {
        let mut index = self.lock();
        if !index.queued.contains_key(id) {
            return None;
        }
        index.recent.remove(id)
    }

    /// Moves message `id` out of the spool into `dest` as `<id>.eml` and `<id>.json`, fsyncing
    /// the copies before removing the message. Returns the body's new path.
    pub fn move_out(&self, id: &str, dest: &Path) -> Result<PathBuf, Error> {
        check_id(id)?;
        let env = self.load(id)?;
        let body = self.body(id)?;
        fs::create_dir_all(dest).map_err(io_err("create", dest))?;
        let eml = dest.join(format!("{id}.eml"));
        write_durably(&eml, |f| io::copy(&mut body.reader(), f).map(|_| ()))?;
        let json = env.to_bytes().map_err(|source| Error::Envelope {
            path: dest.join(format!("{id}.json")),
            source,
        })?;
        write_durably(&dest.join(format!("{id}.json")), |f| f.write_all(&json))?;
        sync_dir(dest)?;
        self.remove(id)?;
        Ok(eml)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self, id: &str) -> Result<Queued, Error> {
        self.lock()
            .queued
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn slot_path(&self, n: u32) -> PathBuf {
        self.slots.join(n.to_string())
    }

    /// Slot file `n`, open for reading and writing: from the cache of open slots, or opened
    /// and cached (the cache holds at most [`OPEN_SLOTS`]; beyond that some other entry is
    /// closed, once its last user is done with it).
    fn slot_file(&self, n: u32) -> io::Result<Arc<File>> {
        if let Some(file) = self.lock().files.get(&n) {
            return Ok(file.clone());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.slot_path(n))?;
        Ok(self.cache_slot_file(n, file))
    }

    fn cache_slot_file(&self, n: u32, file: File) -> Arc<File> {
        let file = Arc::new(file);
        let mut index = self.lock();
        if index.files.len() >= OPEN_SLOTS && !index.files.contains_key(&n) {
            let other = index.files.keys().next().copied();
            if let Some(other) = other {
                index.files.remove(&other);
            }
        }
        index.files.insert(n, file.clone());
        file
    }

    /// Deletes slot file `n` (no longer in use) and closes it.
    fn delete_slot(&self, n: u32) -> Result<(), Error> {
        self.lock().files.remove(&n);
        remove_if_exists(&self.slot_path(n))
    }

    fn envelope_path(&self, id: &str) -> PathBuf {
        self.env.join(format!("{id}.json"))
    }

    /// A free slot, opened for writing; a new slot file (made durable in its folder) when
    /// none is free.
    fn take_slot(&self) -> Result<Taken, Error> {
        let reuse = self.lock().free.pop();
        if let Some(n) = reuse {
            match self.slot_file(n) {
                Ok(file) => return Ok(Taken::new(self, n, file)),
                // Deleted behind our back: forget it and make a new one.
                Err(e) => tracing::warn!(slot = n, error = %e, "spool: free slot unusable"),
            }
        }
        let n = {
            let mut index = self.lock();
            index.next += 1;
            index.next - 1
        };
        let path = self.slot_path(n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let taken = Taken::new(self, n, self.cache_slot_file(n, file));
        self.slots_sync.sync(&self.slots)?;
        Ok(taken)
    }

    /// Returns slot `n` to the free list, or deletes it when enough are free.
    fn release(&self, n: u32) {
        let mut index = self.lock();
        if index.free.len() < MAX_FREE_SLOTS {
            index.free.push(n);
            return;
        }
        drop(index);
        if let Err(e) = self.delete_slot(n) {
            tracing::warn!(error = %e, "spool: cannot delete surplus slot");
        }
    }

    /// Completes a slot whose body is written: envelope, header, `fdatasync`, index entry.
    /// On failure the slot goes back to the free list.
    fn seal(
        &self,
        id: &str,
        mut taken: Taken,
        size: u64,
        mut hasher: crc32fast::Hasher,
        env: &mut Envelope,
    ) -> Result<(), Error> {
        let (n, file) = (taken.n, &taken.file);
        let path = self.slot_path(n);
        env.id = id.to_string();
        env.size = size;
        let json = env.to_bytes().map_err(|source| Error::Envelope {
            path: path.clone(),
            source,
        })?;
        hasher.update(&json);
        let mut header = slot::Header {
            id: id.to_string(),
            body_len: size,
            env_len: json.len() as u32,
            crc: 0,
        };
        header.crc = header.checksum(hasher);
        let end = header.record_len();
        let written = file
            .write_all_at(&json, header.env_offset())
            .and_then(|()| file.write_all_at(&header.encode(), 0))
            .and_then(|()| file.write_all_at(&slot::END, end))
            .and_then(|()| grow_in_steps(file, end + slot::END.len() as u64))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The header may be in the page cache already; a later write-back must not turn
            // a message that got no 250 into one that a restart delivers.
            let _ = slot::mark_free(file, 0);
            return Err(io_err("write", &path)(e));
        }
        let queued = Queued {
            slot: n,
            base: 0,
            header,
            overridden: false,
        };
        let mut index = self.lock();
        index.queued.insert(id.to_string(), queued);
        index.live.insert(n, 1);
        self.gauge.update(index.queued.len());
        taken.sealed = true;
        Ok(())
    }

    /// Writes a batch of small messages into one free slot with one `fdatasync` (the group
    /// commit behind [`Spool::commit_small`]) and indexes them. On failure none is indexed.
    fn seal_batch(&self, batch: &mut [group::Pending]) -> Result<(), Error> {
        let taken = self.take_slot()?;
        let path = self.slot_path(taken.n);
        let mut bytes = Vec::with_capacity(batch.iter().map(|p| p.body.len() + 1024).sum());
        let mut records = Vec::with_capacity(batch.len());
        for p in batch.iter_mut() {
            p.env.id = p.id.clone();
            p.env.size = p.body.len() as u64;
            let json = p.env.to_bytes().map_err(|source| Error::Envelope {
                path: path.clone(),
                source,
            })?;
            let base = bytes.len() as u64;
            records.push((base, slot::encode_record(&mut bytes, &p.id, &p.body, &json)));
        }
        bytes.extend_from_slice(&slot::END);
        let file = &taken.file;
        let written = file
            .write_all_at(&bytes, 0)
            .and_then(|()| grow_in_steps(file, bytes.len() as u64))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            for (base, _) in &records {
                let _ = slot::mark_free(file, *base);
            }
            return Err(io_err("write", &path)(e));
        }
        let n = taken.n;
        let mut taken = taken;
        taken.sealed = true;
        let mut index = self.lock();
        index.live.insert(n, records.len() as u32);
        for (p, (base, header)) in batch.iter().zip(records) {
            let queued = Queued {
                slot: n,
                base,
                header,
                overridden: false,
            };
            index.queued.insert(p.id.clone(), queued);
        }
        self.gauge.update(index.queued.len());
        Ok(())
    }

    /// Keeps a just-committed small message in memory for [`Spool::take_recent`], unless
    /// the cache is full (the relay worker is behind and will read the spool).
    fn remember(&self, env: Envelope, body: Vec<u8>) {
        if body.len() > RECENT_BODY {
            return;
        }
        let mut index = self.lock();
        if index.recent.len() < RECENT_MESSAGES && index.queued.contains_key(&env.id) {
            index
                .recent
                .insert(env.id.clone(), (env, Body::from_bytes(body)));
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
