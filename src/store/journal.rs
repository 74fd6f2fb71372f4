//! An append-only journal of lines with group commit: a change is acknowledged only once its
//! line is on disk, and the changes made while one `fdatasync` runs share the next one (as the
//! spool's group commit does for messages). The memory allowlist journals every put and
//! removal here, so that an acknowledged change survives SIGKILL; its periodic snapshot
//! compacts the journal ([`Journal::compact`]).
//!
//! # Format and recovery
//!
//! One record per line, `\n`-terminated; the journal does not look inside a line (its owner
//! writes JSON). At open, every complete line is returned for replay; a last line without its
//! `\n` (a write torn by a crash, never acknowledged) is cut off. A failed write is cut off
//! too (the file is truncated back to its last good length), so a later record never lands
//! behind half of an earlier one.
//!
//! # Threads
//!
//! [`Journal::record`] only appends to a buffer under a mutex and returns a [`Durable`]
//! future. One thread (`journal`) writes the buffer and `fdatasync`s it, then answers every
//! record of that batch; it ends when the [`Journal`] is dropped. Nothing here blocks an async
//! worker for longer than that mutex is held.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// What a record's writer is told: written and synced, or why not.
type Verdict = Result<(), Arc<str>>;

/// A journal file and its writer thread.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    /// Records not yet handed to the writer thread.
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The file; held by the writer thread while it writes and syncs, and by a compaction.
    file: Mutex<Disk>,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    waiters: Vec<oneshot::Sender<Verdict>>,
    /// Bytes in the file plus bytes queued.
    len: u64,
    closing: bool,
}

struct Disk {
    file: File,
    /// The length of the file up to its last good record.
    good: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// Waits until a record is durable; resolves to the write's error otherwise.
#[must_use = "a record is not durable until its Durable is awaited"]
pub struct Durable(oneshot::Receiver<Verdict>);

impl Future for Durable {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll(cx).map(|answer| match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(io::Error::other(why.to_string())),
            Err(_) => Err(io::Error::other("the journal writer stopped")),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value is consistent between statements: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens (or creates, mode 0600) the journal at `path` and returns it with the complete
    /// lines already in it, oldest first. A journal over `max_bytes` is refused (it is
    /// compacted long before that size in normal operation).
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        let mut bytes = Vec::new();
        (&mut file).take(max_bytes + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: journal over {max_bytes} bytes", path.display()),
            ));
        }
        // A torn last line was never acknowledged: cut it off.
        let good = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if good < bytes.len() {
            file.set_len(good as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(good as u64))?;
        let lines = bytes[..good]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            queue: Mutex::new(Queue {
                len: good as u64,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            file: Mutex::new(Disk {
                file,
                good: good as u64,
            }),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || shared.write_loop())?
        };
        Ok((
            Journal {
                shared,
                writer: Some(writer),
            },
            lines,
        ))
    }

    /// Runs `change` and queues the line it returns, in one step: records are in the journal
    /// in the order their changes were made, and a [`Journal::compact`] sees each change
    /// either in its snapshot or after it in the journal. `change` must be quick (a map
    /// update) and its line must hold no `\n`. Await the [`Durable`] before acknowledging.
    pub fn record<T>(&self, change: impl FnOnce() -> (T, Vec<u8>)) -> (T, Durable) {
        let (tx, rx) = oneshot::channel();
        let mut q = lock(&self.shared.queue);
        let (value, mut line) = change();
        line.retain(|&b| b != b'\n');
        line.push(b'\n');
        q.len += line.len() as u64;
        q.bytes.extend_from_slice(&line);
        q.waiters.push(tx);
        drop(q);
        self.shared.wake.notify_one();
        (value, Durable(rx))
    }

    /// Bytes in the journal, queued ones included.
    pub fn len(&self) -> u64 {
        lock(&self.shared.queue).len
    }

    /// Whether the journal holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the journal by a snapshot: with every new record held back, runs `snapshot`
    /// (which must write the current state durably), then empties the journal; the records
    /// still queued are answered as durable, since the snapshot holds their changes. If
    /// `snapshot` fails, the journal is left as it was.
    pub fn compact<T>(&self, snapshot: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let mut q = lock(&self.shared.queue);
        let mut disk = lock(&self.shared.file);
        let kept = snapshot()?;
        disk.file.set_len(0)?;
        disk.file.seek(SeekFrom::Start(0))?;
        disk.file.sync_data()?;
        disk.good = 0;
        q.bytes.clear();
        q.len = 0;
        for w in q.waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        Ok(kept)
    }
}

impl Shared {
    /// The writer thread: takes everything queued, writes and syncs it, answers its records.
    fn write_loop(&self) {
        loop {
            let (bytes, waiters) = {
                let mut q = lock(&self.queue);
                while q.bytes.is_empty() && !q.closing {
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                if q.bytes.is_empty() {
                    return;
                }
                (std::mem::take(&mut q.bytes), std::mem::take(&mut q.waiters))
            };
            let written = {
                let mut disk = lock(&self.file);
                let written = disk
                    .file
                    .write_all(&bytes)
                    .and_then(|()| disk.file.sync_data());
                if written.is_ok() {
                    disk.good += bytes.len() as u64;
                } else {
                    // Cut off whatever part of the batch got written.
                    let good = disk.good;
                    let _ = disk.file.set_len(good);
                    let _ = disk.file.seek(SeekFrom::Start(good));
                }
                written
            };
            // The queue's lock only after the file's is released (a compaction takes them
            // the other way round).
            let verdict: Verdict = written.map_err(|e| {
                let mut q = lock(&self.queue);
                q.len = q.len.saturating_sub(bytes.len() as u64);
                drop(q);
                tracing::error!(file = %self.path.display(), "journal write failed: {e}");
                Arc::from(format!("{}: {e}", self.path.display()))
            });
            for w in waiters {
                let _ = w.send(verdict.clone());
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            // It writes what is queued, then ends.
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> impl FnOnce() -> ((), Vec<u8>) + '_ {
        move || ((), s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn records_are_durable_in_order_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (journal, old) = Journal::open(&path, 1 << 20).unwrap();
        assert!(old.is_empty() && journal.is_empty());
        let mut pending = Vec::new();
        for i in 0..50 {
            pending.push(journal.record(line(&format!("r{i}"))).1);
        }
        for p in pending {
            p.await.unwrap();
        }
        assert_eq!(
            journal.len(),
            (0..50).map(|i| format!("r{i}\n").len() as u64).sum::<u64>()
        );
        // Read by a second open, as after a crash (the first is still open: nothing is
        // flushed at drop that was not durable already).
        let (_again, lines) = Journal::open(&path, 1 << 20).unwrap();
        let want: Vec<Vec<u8>> = (0..50).map(|i| format!("r{i}").into_bytes()).collect();
        assert_eq!(lines, want);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_and_appends_follow_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, b"one\ntwo\nthr").unwrap();
        let (journal, lines) = Journal::open(&path, 1 << 20).unwrap();
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec()]);
        journal
            .record(line("four\nwith a newline"))
            .1
            .await
            .unwrap();
        drop(journal);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"one\ntwo\nfourwith a newline\n"
        );
    }

    #[tokio::test]
    async fn compaction_empties_the_journal_after_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (journal, _) = Journal::open(&path, 1 << 20).unwrap();
        journal.record(line("a")).1.await.unwrap();
        let queued = journal.record(line("b")).1;
        // A failing snapshot leaves the journal alone.
        assert!(
            journal
                .compact(|| Err::<(), _>(io::Error::other("disk full")))
                .is_err()
        );
        assert!(!journal.is_empty());
        assert_eq!(journal.compact(|| Ok(7)).unwrap(), 7);
        queued.await.unwrap();
        assert!(journal.is_empty());
        journal.record(line("c")).1.await.unwrap();
        drop(journal);
        assert_eq!(std::fs::read(&path).unwrap(), b"c\n");
    }

    #[test]
    fn an_oversized_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert!(Journal::open(&path, 99).is_err());
        assert!(Journal::open(&path, 100).is_ok());
    }
}
