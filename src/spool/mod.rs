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

pub mod entry;
mod group;
mod incoming;
pub mod slot;

pub use group::DEFAULT_COMMIT_WINDOW;
pub use incoming::{Body, BodyReader, Incoming};
use incoming::{Source, Taken};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

pub use entry::{Envelope, FormatError, Recipient, Status};

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

    /// Messages in the spool.
    pub fn len(&self) -> usize {
        self.lock().queued.len()
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

    /// Start-up: indexes every slot file.
    fn scan_slots(&self) -> Result<(), Error> {
        let mut index = Index::default();
        for path in read_dir(&self.slots)? {
            let Some(n) = path
                .file_name()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                tracing::warn!(path = %path.display(), "spool: ignoring unexpected file");
                continue;
            };
            index.next = index.next.max(n.saturating_add(1));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            let found =
                slot::records(&file, entry::MAX_ENVELOPE_LEN).map_err(io_err("read", &path))?;
            let mut live = 0;
            for (base, header, env) in found {
                let usable = check_id(&header.id)
                    .and_then(|()| parse(&path, &env))
                    .and_then(|e| match e.id == header.id {
                        true => Ok(()),
                        false => Err(Error::Envelope {
                            path: path.clone(),
                            source: FormatError::BadId(e.id),
                        }),
                    });
                if let Err(e) = usable {
                    tracing::error!(slot = n, error = %e, "spool: unreadable message, moving aside");
                    self.quarantine_record(&file, base, &header, &env)?;
                    continue;
                }
                if index.queued.contains_key(&header.id) {
                    tracing::warn!(
                        id = header.id,
                        slot = n,
                        "spool: duplicate record, freeing it"
                    );
                    slot::mark_free(&file, base).map_err(io_err("free", &path))?;
                    continue;
                }
                let id = header.id.clone();
                let queued = Queued {
                    slot: n,
                    base,
                    header,
                    overridden: false,
                };
                index.queued.insert(id, queued);
                live += 1;
            }
            if live == 0 {
                index.free.push(n);
            } else {
                index.live.insert(n, live);
            }
        }
        // Keep the lowest numbers in use; surplus free slots are deleted.
        index.free.sort_unstable_by(|a, b| b.cmp(a));
        while index.free.len() > MAX_FREE_SLOTS {
            if let Some(n) = index.free.first().copied() {
                index.free.remove(0);
                self.delete_slot(n)?;
            }
        }
        *self.lock() = index;
        Ok(())
    }

    /// Start-up: ties each `env/<id>.json` to its message; envelopes of messages that are
    /// gone (removed before a crash) are deleted.
    fn attach_overrides(&self) -> Result<(), Error> {
        for path in read_dir(&self.env)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(id) = name.strip_suffix(".json") else {
                tracing::warn!(path = %path.display(), "spool: ignoring unexpected file");
                continue;
            };
            let mut index = self.lock();
            match index.queued.get_mut(id) {
                Some(q) => q.overridden = true,
                None => {
                    drop(index);
                    tracing::debug!(id, "spool: removing envelope of a finished message");
                    remove_if_exists(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Start-up: moves messages of the older layout (`msg/<id>` with `env/<id>.json`) into
    /// slots, then removes the old files. Bodies without an envelope were never accepted.
    fn convert_old_layout(&self) -> Result<(), Error> {
        let msg = self.root.join("msg");
        if !msg.is_dir() {
            return Ok(());
        }
        for body in read_dir(&msg)? {
            let id = body.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let env_path = self.envelope_path(id);
            if check_id(id).is_err() || !env_path.exists() {
                tracing::info!(id, "spool: removing body without envelope (never accepted)");
                remove_if_exists(&body)?;
                continue;
            }
            let env = match read_bounded(&env_path, entry::MAX_ENVELOPE_LEN)
                .and_then(|b| parse(&env_path, &b))
            {
                Ok(env) if env.id == id => env,
                Ok(_) | Err(_) => {
                    tracing::error!(id, "spool: unreadable envelope, moving aside");
                    self.quarantine_files(id, &body, &env_path)?;
                    continue;
                }
            };
            let bytes = fs::read(&body).map_err(io_err("read", &body))?;
            let mut env = env;
            self.write_new(id, &bytes, &mut env)?;
            remove_if_exists(&env_path)?;
            remove_if_exists(&body)?;
        }
        sync_dir(&self.env)?;
        fs::remove_dir(&msg).map_err(io_err("remove", &msg))?;
        tracing::info!("spool: converted to the slot layout");
        Ok(())
    }

    /// Stores a whole message as `id` in a free slot, durably.
    fn write_new(&self, id: &str, bytes: &[u8], env: &mut Envelope) -> Result<(), Error> {
        let taken = self.take_slot()?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(bytes);
        let path = self.slot_path(taken.n);
        taken
            .file
            .write_all_at(bytes, slot::HEADER_LEN)
            .map_err(io_err("write", &path))?;
        self.seal(id, taken, bytes.len() as u64, hasher, env)
    }

    /// Copies a record's message into `corrupt/` (`<id>` and `<id>.json`) and frees it.
    fn quarantine_record(
        &self,
        file: &File,
        base: u64,
        header: &slot::Header,
        env: &[u8],
    ) -> Result<(), Error> {
        let dir = self.corrupt_dir()?;
        let name = if check_id(&header.id).is_ok() {
            header.id.clone()
        } else {
            new_id()
        };
        let body = Body {
            source: Source::File(Arc::new(file.try_clone().map_err(io_err("open", &dir))?)),
            path: dir.clone(),
            offset: base + slot::HEADER_LEN,
            len: header.body_len,
        };
        write_durably(&dir.join(&name), |f| {
            io::copy(&mut body.reader(), f).map(|_| ())
        })?;
        write_durably(&dir.join(format!("{name}.json")), |f| f.write_all(env))?;
        sync_dir(&dir)?;
        slot::mark_free(file, base).map_err(io_err("free", &dir))
    }

    /// Moves an old-layout message into `corrupt/`.
    fn quarantine_files(&self, id: &str, body: &Path, env: &Path) -> Result<(), Error> {
        let dir = self.corrupt_dir()?;
        fs::rename(env, dir.join(format!("{id}.json"))).map_err(io_err("move aside", env))?;
        fs::rename(body, dir.join(id)).map_err(io_err("move aside", body))?;
        sync_dir(&dir)
    }

    /// An unreadable `env/<id>.json`: moved aside, and the envelope in the slot is used
    /// instead (recipients already done may get the message again: at least once).
    fn distrust_override(&self, id: &str, err: &Error) {
        tracing::error!(id, error = %err, "spool: unreadable envelope, using the one accepted");
        let path = self.envelope_path(id);
        let moved = self.corrupt_dir().and_then(|dir| {
            fs::rename(&path, dir.join(format!("{id}.json"))).map_err(io_err("move aside", &path))
        });
        if let Err(e) = moved {
            tracing::error!(id, error = %e, "spool: cannot move bad envelope aside");
        }
        if let Some(q) = self.lock().queued.get_mut(id) {
            q.overridden = false;
        }
    }

    fn corrupt_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.root.join("corrupt");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    fn write_envelope(&self, env: &Envelope) -> Result<(), Error> {
        let path = self.envelope_path(&env.id);
        let bytes = env.to_bytes().map_err(|source| Error::Envelope {
            path: path.clone(),
            source,
        })?;
        let tmp = self.tmp.join(format!("{}.json", env.id));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let written = file.write_all(&bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Io {
                op: "write",
                path: tmp,
                source,
            });
        }
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        self.env_sync.sync(&self.env)
    }
}

/// Lists the messages queued in the spool at `dir` without opening it for writing: for
/// operators and tests looking at a spool that a running gateway owns. Each slot is read and
/// checked like at start-up, and the newer envelope in `env/` is preferred; a slot being
/// written at that moment may be missed. Oldest id first.
pub fn inspect(dir: &Path) -> Result<Vec<Envelope>, Error> {
    let slots = dir.join("slots");
    let mut out = Vec::new();
    let paths = match read_dir(&slots) {
        Ok(paths) => paths,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e),
    };
    for path in paths {
        let file = match File::open(&path) {
            Ok(f) => f,
            // Deleted as surplus since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let found = slot::records(&file, entry::MAX_ENVELOPE_LEN).map_err(io_err("read", &path))?;
        for (_, header, bytes) in found {
            let Ok(accepted) = parse(&path, &bytes) else {
                continue;
            };
            let newer = dir.join("env").join(format!("{}.json", header.id));
            let env = read_bounded(&newer, entry::MAX_ENVELOPE_LEN)
                .and_then(|b| parse(&newer, &b))
                .ok()
                .filter(|e| e.id == header.id)
                .unwrap_or(accepted);
            out.push(env);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A fresh id: `<unix secs>.<micros>.<counter>.<pid>`, sortable by time within a second's
/// digits, unique per process by the counter and across processes by the pid.
fn new_id() -> String {
    let now = SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:010}.{:06}.{n:06}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

fn check_id(id: &str) -> Result<(), Error> {
    if entry::is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        out.push(entry.map_err(io_err("read", dir))?.path());
    }
    Ok(out)
}

fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() > limit {
        let source = FormatError::TooLarge {
            size: bytes.len() as u64,
            limit,
        };
        return Err(Error::Envelope {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Slot files grow in whole steps of this many bytes.
const SLOT_STEP: u64 = 4096;

/// Rounds a slot file that now ends at `end` up to the next [`SLOT_STEP`]. Messages of about
/// the same size then reuse the slot without changing its length, and `fdatasync` has only
/// data to write: a length that grew by a few bytes (a longer `Received:` line) would make
/// it write the inode too, every other message.
fn grow_in_steps(file: &File, end: u64) -> io::Result<()> {
    let step_end = end.div_ceil(SLOT_STEP) * SLOT_STEP;
    if file.metadata()?.len() < step_end {
        file.set_len(step_end)?;
    }
    Ok(())
}

/// Creates `path` (replacing it), fills it with `write` and fsyncs it.
fn write_durably(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    let mut file = File::create(path).map_err(io_err("create", path))?;
    write(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", path))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Envelope, Error> {
    Envelope::parse(bytes).map_err(|source| Error::Envelope {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
