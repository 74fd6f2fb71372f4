//! The audit log: every authentication decision and every relay authorized by address, as JSON
//! lines appended to `[audit] path`, rotated by size.
//!
//! Sessions hand events to an [`Auditor`], which never blocks them: events go through a bounded
//! channel to one writer task that owns the file. A full channel drops the event and counts it;
//! a failed write (full disk, permissions) loses the events of that write, which are counted;
//! the outage is logged once when it starts and once when it ends; neither takes
//! the gateway down or delays mail. Rotation renames `audit.log` to `audit.log.1`, shifting
//! older files up to `keep`, so readers find the current and rotated logs by name.

pub mod event;
pub mod report;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use event::{Class, Event, Kind, Outcome, classify, classify_session};

/// An audit fact decided by a protocol core (sans-IO); the connection loop adds the session
/// details (time, session id, peer, TLS, client name) and records it as an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub kind: Kind,
    /// The mechanism or method as recorded ("PLAIN", "NTLMv2", "USER", "pop-before-smtp").
    pub mechanism: String,
    /// The user name as the client gave it.
    pub user_given: Option<String>,
    /// The canonical user.
    pub user: Option<String>,
    /// The Kerberos principal that authenticated (GSSAPI).
    pub principal: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// The class.
    pub class: Class,
    /// The policy rule that decided.
    pub rule: Option<String>,
    /// Why (failure reason or policy message); never a secret.
    pub reason: Option<String>,
    /// A policy rule asks for a notice to the user.
    pub notify: bool,
    /// The refusal date to name in the notice.
    pub refuse_from: Option<String>,
    /// Whose mailbox gets the notice when the event has no user (a trusted-network relay:
    /// the local user its sender address names).
    pub notify_to: Option<String>,
}

impl Record {
    /// A record of `kind` with no policy involvement.
    pub fn new(kind: Kind, mechanism: &str, class: Class, outcome: Outcome) -> Record {
        Record {
            kind,
            mechanism: mechanism.to_string(),
            user_given: None,
            user: None,
            principal: None,
            outcome,
            class,
            rule: None,
            reason: None,
            notify: false,
            refuse_from: None,
            notify_to: None,
        }
    }
}

/// Events buffered between sessions and the writer before new ones are dropped.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;

/// How often queued events are written to the file.
const WRITE_EVERY: Duration = Duration::from_millis(200);

/// Events written at once without waiting for the next tick.
const WRITE_BATCH: usize = 256;

/// Where and how the audit log is written (`[audit]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The current log file; rotated files get `.1`, `.2`, ... appended.
    pub path: PathBuf,
    /// Rotate when the current file would exceed this many bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: usize,
}

/// Counters about the audit log itself, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events written.
    pub written: AtomicU64,
    /// Events dropped because the writer fell behind.
    pub dropped: AtomicU64,
    /// Failed writes or rotations.
    pub write_errors: AtomicU64,
    /// Events lost because the write carrying them failed.
    pub lost: AtomicU64,
}

/// Sees every event an [`Auditor`] records, before it is queued (e.g. to count it in metrics);
/// it must be quick and must not block.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// The handle sessions record events through. Cloning is cheap.
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<Event>>,
    stats: Arc<Stats>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("enabled", &self.tx.is_some())
            .field("stats", &self.stats)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl Auditor {
    /// An auditor that records nothing (audit disabled).
    pub fn disabled() -> Auditor {
        Auditor {
            tx: None,
            stats: Arc::new(Stats::default()),
            observer: None,
        }
    }

    /// This auditor, also showing every event to `observer` (even when the log is disabled).
    pub fn with_observer(mut self, observer: Observer) -> Auditor {
        self.observer = Some(observer);
        self
    }

    /// Starts the writer task; it runs until `shutdown` fires and the channel is drained.
    pub fn start(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> (Auditor, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(writer(settings, rx, stats.clone(), shutdown));
        (
            Auditor {
                tx: Some(tx),
                stats,
                observer: None,
            },
            task,
        )
    }

    /// Records `event` without waiting; drops it (and counts the drop) if the writer is behind.
    pub fn record(&self, event: Event) {
        if let Some(observe) = &self.observer {
            observe(&event);
        }
        let Some(tx) = &self.tx else { return };
        if tx.try_send(event).is_err() {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "audit writer is behind; events dropped");
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the audit log is on and its writer has stopped (events would only be dropped):
    /// `/healthz` then fails.
    pub fn writer_stopped(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.is_closed())
    }
}

/// The rotated file number `n` of `path` (`audit.log.1`, ...); 0 is the current file.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The current and rotated log files that exist, oldest first.
pub fn files(path: &Path, keep: usize) -> Vec<PathBuf> {
    (0..=keep.max(64))
        .rev()
        .map(|n| rotated(path, n))
        .filter(|p| p.is_file())
        .collect()
}

/// The writer task: owns the file, writes events in batches, rotates by size.
async fn writer(
    settings: Settings,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut out = Output::new(settings, stats);
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    break;
                }
                // Lines wait for the next tick unless a full batch is there: under load that
                // is one blocking-pool hop and one write per batch instead of per event.
                if batch.len() >= WRITE_BATCH {
                    // Disk work stays off the async workers.
                    out = run_blocking(out, std::mem::take(&mut batch)).await;
                }
            }
            _ = tick.tick() => {
                out = run_blocking(out, std::mem::take(&mut batch)).await;
            }
            _ = shutdown.cancelled() => {
                rx.close();
                while let Some(e) = rx.recv().await {
                    batch.push(e);
                }
                break;
            }
        }
    }
    // What is left at shutdown, or when every sender is gone, is written before the end.
    if !batch.is_empty() {
        run_blocking(out, batch).await;
    }
}

async fn run_blocking(mut out: Output, batch: Vec<Event>) -> Output {
    let (settings, stats) = (out.settings.clone(), out.stats.clone());
    let lost = batch.len() as u64;
    let job = tokio::task::spawn_blocking(move || {
        out.write_batch(&batch);
        out
    });
    match job.await {
        Ok(out) => out,
        // Writing counts its errors instead of panicking; should the task fail anyway, the
        // batch is lost (and counted) and the writer starts afresh.
        Err(e) => {
            tracing::error!("audit writer task failed: {e}");
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            stats.lost.fetch_add(lost, Ordering::Relaxed);
            Output::new(settings, stats)
        }
    }
}

/// The open file and its size.
///
/// A batch is serialized into one buffer and handed to the kernel in one write (between
/// rotations), so an event is counted as written only once the write that carries it has
/// succeeded, and the events of a failed write are counted as lost (no buffered writer hides an
/// error until a later flush).
struct Output {
    settings: Settings,
    stats: Arc<Stats>,
    file: Option<File>,
    /// The current file's size; `None` when unknown (at start, after a failed write), read
    /// from disk once then.
    size: Option<u64>,
    /// Writes are failing (one error line per outage, one recovery line after it).
    failing: bool,
    /// Events lost since the outage began, for the recovery line.
    lost_in_outage: u64,
    /// A failed write may have left a partial line that could not be cut off.
    torn: bool,
    buf: Vec<u8>,
}

impl Output {
    fn new(settings: Settings, stats: Arc<Stats>) -> Output {
        Output {
            settings,
            stats,
            file: None,
            size: None,
            failing: false,
            lost_in_outage: 0,
            torn: false,
            buf: Vec::new(),
        }
    }

    /// Appends `events`, rotating first whenever the next line would push the file past
    /// `max_size`.
    fn write_batch(&mut self, events: &[Event]) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut pending = 0u64;
        for event in events {
            let mark = buf.len();
            if serde_json::to_writer(&mut buf, event).is_err() {
                buf.truncate(mark);
                continue;
            }
            buf.push(b'\n');
            let before = self.current_size() + mark as u64;
            if before > 0 && before + (buf.len() - mark) as u64 > self.settings.max_size {
                // This line would push the file past max_size: write what precedes it to the
                // current file, then rotate.
                if mark > 0 {
                    let result = self.append(&buf[..mark]);
                    self.account(result, pending);
                    buf.drain(..mark);
                    pending = 0;
                }
                if let Err(e) = self.rotate() {
                    // Keep appending to the current file rather than lose events; the next
                    // line tries again.
                    self.account(Err(e), 0);
                }
            }
            pending += 1;
        }
        if pending > 0 {
            let result = self.append(&buf);
            self.account(result, pending);
        }
        buf.clear();
        self.buf = buf;
    }

    /// The current file's size (read from disk only when unknown).
    fn current_size(&mut self) -> u64 {
        let path = &self.settings.path;
        *self
            .size
            .get_or_insert_with(|| fs::metadata(path).map(|m| m.len()).unwrap_or(0))
    }

    /// Appends `bytes` (whole lines). A write that fails part-way is cut back off, so the
    /// next line does not continue a torn one; where that is impossible, the next write starts
    /// with a line break, so only the torn line is lost (the report skips it with a warning).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Cleared only once a write has succeeded: a failed reopen keeps it.
        let torn = self.torn;
        // Opening sets the size; the second call only borrows the open handle.
        self.open()?;
        let start = self.current_size();
        let f = self.open()?;
        let mut written = if torn { f.write_all(b"\n") } else { Ok(()) };
        if written.is_ok() {
            written = f.write_all(bytes);
        }
        match written {
            Ok(()) => {
                self.size = Some(start + u64::from(torn) + bytes.len() as u64);
                self.torn = false;
                Ok(())
            }
            Err(e) => {
                self.torn = f.set_len(start).is_err() || torn;
                Err(e)
            }
        }
    }

    /// Counts the outcome of writing `events` events (0 for a rotation).
    fn account(&mut self, result: io::Result<()>, events: u64) {
        match result {
            Ok(()) => {
                self.stats.written.fetch_add(events, Ordering::Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::warn!(
                        path = %self.settings.path.display(),
                        lost = self.lost_in_outage,
                        "audit log writable again"
                    );
                    self.lost_in_outage = 0;
                }
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.stats.lost.fetch_add(events, Ordering::Relaxed);
                self.lost_in_outage += events;
                // Drop the handle: the next write reopens (the disk may have recovered, or
                // the file been moved away) and reads the size again.
                self.file = None;
                self.size = None;
                if !self.failing {
                    tracing::error!(
                        path = %self.settings.path.display(),
                        "audit log write failed: {e}; events whose write fails are lost \
                         (mailgate_audit_events_lost_total)"
                    );
                    self.failing = true;
                }
            }
        }
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.settings.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.settings.path)?;
            self.size = Some(f.metadata()?.len());
            self.file = Some(f);
        }
        // Just set above when missing.
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("audit file not open"))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let path = &self.settings.path;
        if self.settings.keep == 0 {
            fs::remove_file(path)?;
        } else {
            let _ = fs::remove_file(rotated(path, self.settings.keep));
            for n in (1..self.settings.keep).rev() {
                let from = rotated(path, n);
                if from.exists() {
                    fs::rename(&from, rotated(path, n + 1))?;
                }
            }
            fs::rename(path, rotated(path, 1))?;
        }
        self.size = Some(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Event {
        let mut e = Event::new(
            Kind::Auth,
            "smtp",
            format!("2026-11-28T00:00:{:02}.000Z", n % 60),
            Outcome::Success,
        );
        e.recipients = Some(n);
        e
    }

    #[tokio::test]
    async fn writes_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let shutdown = CancellationToken::new();
        let settings = Settings {
            path: path.clone(),
            max_size: 400,
            keep: 2,
        };
        let (auditor, task) = Auditor::start(settings, shutdown.clone());
        for n in 0..40 {
            auditor.record(event(n));
        }
        assert!(!auditor.writer_stopped());
        shutdown.cancel();
        task.await.unwrap();
        assert!(auditor.writer_stopped(), "health sees a stopped writer");
        assert!(
            !Auditor::disabled().writer_stopped(),
            "a disabled log is no failure"
        );
        let kept = files(&path, 2);
        assert_eq!(kept.len(), 3, "current plus two rotated: {kept:?}");
        let mut seen = Vec::new();
        for f in &kept {
            let text = fs::read_to_string(f).unwrap();
            assert!(text.len() <= 400 + 200, "{f:?} too big");
            for line in text.lines() {
                let e: Event = serde_json::from_str(line).unwrap();
                seen.push(e.recipients.unwrap());
            }
        }
        // Oldest files first: the kept events are the newest, in order.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&39));
        assert_eq!(auditor.stats().written.load(Ordering::Relaxed), 40);
    }

    #[tokio::test]
    async fn a_failing_disk_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // The log path is a directory: every write fails.
        let path = dir.path().join("audit.log");
        fs::create_dir(&path).unwrap();
        let shutdown = CancellationToken::new();
        let settings = Settings {
            path,
            max_size: 1 << 20,
            keep: 1,
        };
        let (auditor, task) = Auditor::start(settings, shutdown.clone());
        for n in 0..5 {
            auditor.record(event(n));
        }
        shutdown.cancel();
        task.await.unwrap();
        assert!(auditor.stats().write_errors.load(Ordering::Relaxed) >= 1);
        assert_eq!(auditor.stats().written.load(Ordering::Relaxed), 0);
        assert_eq!(auditor.stats().lost.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_full_disk_counts_events_as_lost_not_written() {
        // /dev/full opens and accepts no byte (ENOSPC), as a full file system does.
        if !Path::new("/dev/full").exists() {
            eprintln!("skipped: no /dev/full");
            return;
        }
        let shutdown = CancellationToken::new();
        let settings = Settings {
            path: PathBuf::from("/dev/full"),
            max_size: 1 << 20,
            keep: 1,
        };
        let (auditor, task) = Auditor::start(settings, shutdown.clone());
        for n in 0..12 {
            auditor.record(event(n));
        }
        shutdown.cancel();
        task.await.unwrap();
        let stats = auditor.stats();
        assert_eq!(stats.written.load(Ordering::Relaxed), 0);
        assert_eq!(stats.lost.load(Ordering::Relaxed), 12);
        assert!(stats.write_errors.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn a_write_that_recovers_counts_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fs::create_dir(&path).unwrap();
        let stats = Arc::new(Stats::default());
        let mut out = Output::new(
            Settings {
                path: path.clone(),
                max_size: 1 << 20,
                keep: 1,
            },
            stats.clone(),
        );
        out.write_batch(&[event(1), event(2)]);
        assert!(out.failing);
        // The disk "recovers": the next batch is written and the outage ends.
        fs::remove_dir(&path).unwrap();
        out.write_batch(&[event(3)]);
        assert!(!out.failing);
        assert_eq!(stats.lost.load(Ordering::Relaxed), 2);
        assert_eq!(stats.written.load(Ordering::Relaxed), 1);
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn the_observer_sees_every_event_even_when_disabled() {
        let seen = Arc::new(AtomicU64::new(0));
        let count = seen.clone();
        let a = Auditor::disabled().with_observer(Arc::new(move |e: &Event| {
            count.fetch_add(u64::from(e.recipients.unwrap_or(0)), Ordering::Relaxed);
        }));
        a.clone().record(event(2));
        a.record(event(3));
        assert_eq!(seen.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn disabled_auditor_ignores_events() {
        let a = Auditor::disabled();
        a.record(event(1));
        assert_eq!(a.stats().dropped.load(Ordering::Relaxed), 0);
    }
}
