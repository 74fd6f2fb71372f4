//! The durable spool: accepted messages live here until every recipient is delivered, failed
//! and bounced, or moved to the dead-letter folder.
//!
//! RFC 5321 §6.1 makes accepting a message a promise not to lose it, so the SMTP server may
//! answer 250 after DATA only once [`Incoming::commit`] has returned: the body was written to
//! `tmp/`, fsynced and renamed into `msg/`, the envelope written the same way into `env/`, and
//! both directories fsynced. A crash at any earlier point leaves at most a temp file or an
//! orphan body without envelope, both of which [`Spool::open`] removes (no 250 was sent for
//! them). Layout under the spool directory:
//!
//! - `tmp/`: bodies and envelopes being written; emptied at open.
//! - `msg/<id>`: message bodies, CRLF line endings, exactly as accepted.
//! - `env/<id>.json`: envelopes ([`entry`]).
//! - `corrupt/`: envelopes that could not be read, moved aside at start-up.
//!
//! Session-facing writes ([`Spool::receive`], [`Incoming`]) are async and run their disk I/O on
//! the blocking pool. The worker-facing calls are plain blocking functions; callers on the
//! runtime wrap them in `spawn_blocking`.

pub mod entry;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

pub use entry::{Envelope, FormatError, Recipient, Status};

use crate::clock::{Clock, SystemClock};

/// Bytes an [`Incoming`] buffers before handing a write to the blocking pool.
pub const WRITE_BUFFER: usize = 64 * 1024;

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

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    msg: PathBuf,
    env: PathBuf,
    msg_sync: std::sync::Arc<GroupSync>,
    env_sync: std::sync::Arc<GroupSync>,
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
    /// Opens (creating if missing) the spool at `dir`, removes leftover temp files and bodies
    /// that never got an envelope, and fsyncs the layout. Call it once per process, at
    /// start-up, before any message is received: the clean-up would discard messages that are
    /// being committed.
    pub fn open(dir: &Path) -> Result<Spool, Error> {
        let spool = Spool {
            root: dir.to_path_buf(),
            tmp: dir.join("tmp"),
            msg: dir.join("msg"),
            env: dir.join("env"),
            msg_sync: Default::default(),
            env_sync: Default::default(),
        };
        for d in [&spool.tmp, &spool.msg, &spool.env] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        for entry in read_dir(&spool.tmp)? {
            fs::remove_file(&entry).map_err(io_err("remove leftover", &entry))?;
        }
        for body in read_dir(&spool.msg)? {
            let Some(id) = body.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !spool.envelope_path(id).exists() {
                tracing::info!(id, "spool: removing body without envelope (never accepted)");
                fs::remove_file(&body).map_err(io_err("remove orphan", &body))?;
            }
        }
        for d in [&spool.root, &spool.tmp, &spool.msg, &spool.env] {
            sync_dir(d)?;
        }
        Ok(spool)
    }

    /// The spool directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts receiving a message: creates its temp file.
    pub async fn receive(&self) -> Result<Incoming, Error> {
        let id = new_id();
        let tmp = self.tmp.join(&id);
        let path = tmp.clone();
        let file = blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create", &path))
        })
        .await?;
        Ok(Incoming {
            spool: self.clone(),
            id,
            tmp,
            file: Some(file),
            buf: Vec::with_capacity(WRITE_BUFFER),
            size: 0,
            done: false,
        })
    }

    /// Stores a complete message (e.g. a bounce) durably in one call and returns its id. Like
    /// [`Incoming::commit`], sets the envelope's id and size.
    pub fn enqueue_bytes(&self, mut envelope: Envelope, bytes: &[u8]) -> Result<String, Error> {
        let id = new_id();
        let tmp = self.tmp.join(&id);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            file.write_all(bytes).map_err(io_err("write", &tmp))?;
            self.finish(&id, file, bytes.len() as u64, &mut envelope)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| id)
    }

    /// Reads every envelope, oldest id first. Envelopes that cannot be read, or whose body is
    /// missing, are moved to `corrupt/` with a log line and skipped.
    pub fn load_all(&self) -> Result<Vec<Envelope>, Error> {
        let mut out = Vec::new();
        for path in read_dir(&self.env)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|id| entry::is_valid_id(id))
            else {
                tracing::warn!(path = %path.display(), "spool: ignoring unexpected file");
                continue;
            };
            match self.load(id) {
                Ok(env) if self.body_path(id).exists() => out.push(env),
                Ok(_) => {
                    tracing::error!(id, "spool: envelope without message body, moving aside");
                    self.quarantine(id);
                }
                Err(err) => {
                    tracing::error!(id, error = %err, "spool: unreadable envelope, moving aside");
                    self.quarantine(id);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Reads one envelope.
    pub fn load(&self, id: &str) -> Result<Envelope, Error> {
        check_id(id)?;
        let path = self.envelope_path(id);
        let bytes = read_bounded(&path, entry::MAX_ENVELOPE_LEN)?;
        let env = Envelope::parse(&bytes).map_err(|source| Error::Envelope {
            path: path.clone(),
            source,
        })?;
        if env.id != id {
            let source = FormatError::BadId(env.id);
            return Err(Error::Envelope { path, source });
        }
        Ok(env)
    }

    /// Where the body of message `id` is stored.
    pub fn body_path(&self, id: &str) -> PathBuf {
        self.msg.join(id)
    }

    /// Atomically replaces the stored envelope of `env.id`.
    pub fn update(&self, env: &Envelope) -> Result<(), Error> {
        check_id(&env.id)?;
        self.write_envelope(env)
    }

    /// Removes message `id` (envelope first, so a crash leaves only an orphan body that the
    /// next open cleans up). The removal is not fsynced: should a crash undo it, the message is
    /// delivered again (at least once, never zero times), and every delivered message saves
    /// a directory fsync.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        check_id(id)?;
        let env = self.envelope_path(id);
        remove_if_exists(&env)?;
        remove_if_exists(&self.body_path(id))?;
        Ok(())
    }

    /// Moves message `id` out of the spool into `dest` as `<id>.eml` and `<id>.json`, fsyncing
    /// the copies before removing the originals. Returns the body's new path.
    pub fn move_out(&self, id: &str, dest: &Path) -> Result<PathBuf, Error> {
        check_id(id)?;
        fs::create_dir_all(dest).map_err(io_err("create", dest))?;
        let body = dest.join(format!("{id}.eml"));
        copy_durably(&self.body_path(id), &body)?;
        copy_durably(&self.envelope_path(id), &dest.join(format!("{id}.json")))?;
        sync_dir(dest)?;
        self.remove(id)?;
        Ok(body)
    }

    fn envelope_path(&self, id: &str) -> PathBuf {
        self.env.join(format!("{id}.json"))
    }

    /// Moves a bad envelope (and its body, if any) into `corrupt/` for an operator to inspect.
    /// A failure is logged, not returned: one bad file must not stop the rest of the spool.
    fn quarantine(&self, id: &str) {
        if let Err(err) = self.try_quarantine(id) {
            tracing::error!(id, error = %err, "spool: cannot move bad envelope aside");
        }
    }

    fn try_quarantine(&self, id: &str) -> Result<(), Error> {
        let dir = self.root.join("corrupt");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let env = self.envelope_path(id);
        let to = dir.join(format!("{id}.json"));
        fs::rename(&env, &to).map_err(io_err("move aside", &env))?;
        let body = self.body_path(id);
        if body.exists() {
            let to = dir.join(id);
            fs::rename(&body, &to).map_err(io_err("move aside", &body))?;
        }
        sync_dir(&dir)?;
        sync_dir(&self.env)
    }

    /// Makes a written body durable and writes its envelope: fsync, rename into `msg/`, write
    /// the envelope, fsync both directories.
    fn finish(&self, id: &str, file: File, size: u64, env: &mut Envelope) -> Result<(), Error> {
        let tmp = self.tmp.join(id);
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        let body = self.body_path(id);
        fs::rename(&tmp, &body).map_err(io_err("rename", &tmp))?;
        self.msg_sync.sync(&self.msg)?;
        env.id = id.to_string();
        env.size = size;
        if let Err(err) = self.write_envelope(env) {
            // Without an envelope the body would be an orphan; do not leave it behind.
            let _ = fs::remove_file(&body);
            return Err(err);
        }
        Ok(())
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

/// A message being received. Bytes are buffered up to [`WRITE_BUFFER`] and written on the
/// blocking pool. Dropping it without [`commit`](Incoming::commit) discards the message.
#[derive(Debug)]
pub struct Incoming {
    spool: Spool,
    id: String,
    tmp: PathBuf,
    /// `None` after a failed or interrupted write; the message can then only be aborted.
    file: Option<File>,
    buf: Vec<u8>,
    size: u64,
    done: bool,
}

impl Incoming {
    /// The id the message will have once committed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Octets written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends message bytes (CRLF line endings, already dot-unstuffed).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.size += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Makes the message durable and stores `envelope` (its id and size are set here). Returns
    /// the id; only now may the server answer 250.
    pub async fn commit(mut self, mut envelope: Envelope) -> Result<String, Error> {
        self.flush().await?;
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Broken(self.id.clone()))?;
        let spool = self.spool.clone();
        let id = self.id.clone();
        let size = self.size;
        blocking(move || spool.finish(&id, file, size, &mut envelope)).await?;
        // The temp file has been renamed (or `finish` cleaned up); nothing left to remove.
        self.done = true;
        Ok(self.id.clone())
    }

    /// Discards the message.
    pub fn abort(self) {
        drop(self);
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::Broken(self.id.clone()))?;
        let buf = std::mem::take(&mut self.buf);
        let path = self.tmp.clone();
        // If this future is dropped mid-write, `file` stays `None` and the message is broken.
        let (file, mut buf) = blocking(move || {
            file.write_all(&buf).map_err(io_err("write", &path))?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Unlinking is a single metadata operation; doing it inline keeps abort deterministic.
        self.file = None;
        if let Err(err) = remove_if_exists(&self.tmp) {
            tracing::warn!(error = %err, "spool: cannot remove aborted message");
        }
    }
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

fn copy_durably(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to).map_err(io_err("copy", from))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sync_covers_every_caller_and_shares_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let g = std::sync::Arc::new(GroupSync::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let g = g.clone();
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || g.sync(&path))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        {
            let st = g.state.lock().unwrap();
            assert!(st.completed >= 1 && st.completed <= 16, "{st:?}");
            assert_eq!(st.started, st.completed);
            assert!(!st.running);
        }
        // A missing folder fails its caller, and the next caller syncs afresh.
        assert!(g.sync(&dir.path().join("missing")).is_err());
        assert!(g.sync(dir.path()).is_ok());
    }

    fn envelope() -> Envelope {
        let rcpts = vec![Recipient::new("bob@example.org", Some("bob".into()))];
        Envelope::new(
            "alice@example.org",
            rcpts,
            1_700_000_000,
            "[192.0.2.1]:1025",
            None,
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = read_dir(dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn commit_makes_body_and_envelope_durable() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let mut msg = spool.receive().await.unwrap();
        // Several buffer-fulls, written in odd-sized pieces.
        let body: Vec<u8> = (0..3 * WRITE_BUFFER + 17)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        for chunk in body.chunks(1000 + 7) {
            msg.write(chunk).await.unwrap();
        }
        assert_eq!(msg.size(), body.len() as u64);
        let id = msg.commit(envelope()).await.unwrap();
        assert!(entry::is_valid_id(&id));
        assert_eq!(fs::read(spool.body_path(&id)).unwrap(), body);
        let loaded = spool.load(&id).unwrap();
        assert_eq!(
            (loaded.id.as_str(), loaded.size),
            (id.as_str(), body.len() as u64)
        );
        assert!(names(&spool.tmp).is_empty());
        assert_eq!(spool.load_all().unwrap(), vec![loaded]);
    }

    #[tokio::test]
    async fn abort_and_drop_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut a = spool.receive().await.unwrap();
        a.write(b"Subject: x\r\n\r\nhi\r\n").await.unwrap();
        let b = spool.receive().await.unwrap();
        assert_eq!(names(&spool.tmp).len(), 2);
        a.abort();
        drop(b);
        assert!(names(&spool.tmp).is_empty());
        assert!(spool.load_all().unwrap().is_empty());
    }

    #[test]
    fn open_cleans_leftovers_and_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let kept = spool.enqueue_bytes(envelope(), b"kept\r\n").unwrap();
        fs::write(spool.tmp.join("half-written"), b"x").unwrap();
        fs::write(spool.body_path("1.2.3.4"), b"orphan").unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(names(&spool.tmp).is_empty());
        assert_eq!(names(&spool.msg), vec![kept.clone()]);
        assert_eq!(spool.load_all().unwrap().len(), 1);
    }

    #[test]
    fn corrupt_envelopes_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let good = spool.enqueue_bytes(envelope(), b"good\r\n").unwrap();
        let bad = spool.enqueue_bytes(envelope(), b"bad\r\n").unwrap();
        let bodiless = spool.enqueue_bytes(envelope(), b"gone\r\n").unwrap();
        let future = spool.enqueue_bytes(envelope(), b"future\r\n").unwrap();
        let renamed = spool.enqueue_bytes(envelope(), b"renamed\r\n").unwrap();
        fs::write(spool.envelope_path(&bad), b"{\"version\": 1, \"id\": tru").unwrap();
        fs::remove_file(spool.body_path(&bodiless)).unwrap();
        let text = fs::read_to_string(spool.envelope_path(&future)).unwrap();
        fs::write(
            spool.envelope_path(&future),
            text.replace("\"version\": 1", "\"version\": 2"),
        )
        .unwrap();
        // An envelope whose id disagrees with its file name must not be trusted.
        fs::rename(
            spool.envelope_path(&renamed),
            spool.envelope_path("0.other"),
        )
        .unwrap();
        fs::write(spool.env.join("README"), b"not an envelope").unwrap();

        let loaded = spool.load_all().unwrap();
        assert_eq!(
            loaded.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            vec![good.as_str()]
        );
        let corrupt = names(&dir.path().join("corrupt"));
        for id in [&bad, &bodiless, &future] {
            assert!(
                corrupt.contains(&format!("{id}.json")),
                "{id} not quarantined"
            );
        }
        assert!(corrupt.contains(&bad) && corrupt.contains(&future));
        assert!(corrupt.contains(&"0.other.json".to_string()));
        // A second start-up sees the same good state and no errors.
        assert_eq!(spool.load_all().unwrap().len(), 1);
    }

    #[test]
    fn update_remove_and_move_out() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let id = spool.enqueue_bytes(envelope(), b"hello\r\n").unwrap();
        let mut env = spool.load(&id).unwrap();
        assert_eq!(env.size, 7);
        env.attempts = 3;
        env.recipients[0].status = Status::Failed {
            code: 550,
            text: "no".into(),
        };
        spool.update(&env).unwrap();
        assert_eq!(spool.load(&id).unwrap(), env);
        assert!(names(&spool.tmp).is_empty());

        let dead = dir.path().join("dead");
        let moved = spool.move_out(&id, &dead).unwrap();
        assert_eq!(fs::read(moved).unwrap(), b"hello\r\n");
        assert!(dead.join(format!("{id}.json")).exists());
        assert!(spool.load_all().unwrap().is_empty());
        assert!(!spool.body_path(&id).exists());

        let other = spool.enqueue_bytes(envelope(), b"x").unwrap();
        spool.remove(&other).unwrap();
        spool.remove(&other).unwrap();
        assert!(names(&spool.msg).is_empty() && names(&spool.env).is_empty());
    }

    #[test]
    fn ids_are_unique_sortable_and_checked() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.iter().all(|id| entry::is_valid_id(id)));
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        for bad in ["../x", "", "a/b"] {
            assert!(matches!(spool.load(bad), Err(Error::InvalidId(_))));
            assert!(matches!(spool.remove(bad), Err(Error::InvalidId(_))));
        }
    }
}
