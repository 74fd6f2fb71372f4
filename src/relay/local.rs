//! Local delivery: the pending local recipients of a message go into their Maildirs, and the
//! `new/` folders' fsyncs are shared by every delivery written at the same moment, the way the
//! spool's group commit (`spool/group.rs`) shares one `fdatasync` among sessions.
//!
//! # When a message counts as delivered
//!
//! A recipient is delivered when its copy is durable in `new/`: the file written under
//! `tmp/` and fsynced, renamed into `new/`, and `new/` fsynced ([`maildir::Step`]). Only then
//! does the delivery report it, and only a message whose every recipient is settled has its
//! spool slot freed (`relay::settle`). So until the last step, the spool's durable copy
//! stands in for the Maildir's. A crash at each point:
//!
//! 1. while the file is written or before its fsync: a partial or unsynced file under `tmp/`,
//!    which no reader looks at; the spool still has the message and delivers it again after
//!    the restart.
//! 2. after the file's fsync, before the rename: a complete file under `tmp/`, not seen by
//!    readers; delivered again from the spool.
//! 3. after the rename, before `new/` is fsynced: the rename may or may not have reached the
//!    disk, so the message is in `new/` (complete: its content was durable before the rename)
//!    or still only in `tmp/`. The spool still has it and delivers it again: at worst the
//!    user gets it twice (at-least-once, as everywhere in the relay), never zero times, and
//!    never a partial file in `new/`.
//! 4. after `new/` is fsynced, before the spool slot is freed: delivered, and delivered again
//!    after the restart (twice, as in 3).
//!
//! `tests::a_crash_between_steps_loses_nothing` stops a delivery after each step and checks
//! that the message is then in the spool (read back from disk) or complete in `new/`.
//!
//! # Sharing the folder fsyncs
//!
//! Each delivery writes its copies on the blocking pool, as before, so the worker's
//! deliveries (up to [`super::CONCURRENCY`]) write and fsync their files at the same time,
//! and the block layer merges the disk flushes of fsyncs that are in flight together. The
//! last step is shared instead: deliveries that renamed into the same `new/` at the same
//! moment wait for one fsync of it ([`DirSync`]), which must have *started after* their
//! rename, exactly as if each had synced alone. A first version wrote every copy from one
//! writer thread in batches; it shared the folder fsyncs too, but its file fsyncs ran one
//! after the other, each with a flush of its own, and it cost more CPU per message than
//! the parallel writes it replaced (`docs/benchmarks.md`, step 12).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use super::Ctx;
use super::bounce::printable;
use crate::clock::unix_secs;
use crate::maildir::{self, Step};
use crate::spool::{Body, Envelope, Status};

/// Folders whose shared fsync state is kept; beyond it, states not in use are dropped.
const MAX_FOLDERS: usize = 1024;

/// What the worker's local deliveries share: one [`DirSync`] per `new/` folder.
#[derive(Debug, Default)]
pub(super) struct Batcher {
    folders: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
    /// Tests: stop every delivery after this step, as a crash would.
    crash_after: Option<Step>,
}

/// One recipient's copy of one message.
#[derive(Debug)]
struct Job {
    root: PathBuf,
    user: String,
    unique: String,
    host: String,
    /// The `Return-Path:` line.
    prefix: Arc<[u8]>,
    body: Body,
}

impl Batcher {
    /// A batcher whose deliveries stop after `step` (tests).
    #[cfg(test)]
    fn crashing_after(step: Step) -> Batcher {
        Batcher {
            crash_after: Some(step),
            ..Batcher::default()
        }
    }

    /// Every step of one copy; blocking.
    fn deliver(&self, job: &Job) -> io::Result<PathBuf> {
        let crash = self.crash_after;
        let mut after = |step: Step| match crash {
            Some(c) if step >= c => Err(io::Error::other(format!("crash after {step:?}"))),
            _ => Ok(()),
        };
        let path = place(job, &mut after)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.folder(dir).sync(dir)?;
        after(Step::DirSynced)?;
        Ok(path)
    }

    fn folder(&self, dir: &Path) -> Arc<DirSync> {
        // Plain data, consistent after every step.
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = folders.get(dir) {
            return f.clone();
        }
        if folders.len() >= MAX_FOLDERS {
            // Only states nobody waits on; one in use stays shared.
            folders.retain(|_, f| Arc::strong_count(f) > 1);
        }
        let f = Arc::new(DirSync::default());
        folders.insert(dir.to_path_buf(), f.clone());
        f
    }
}

/// Group commit for one folder's fsync (as the spool's `GroupSync`): a caller returns only
/// after an fsync that started after its call has completed, so its rename is covered.
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Fsyncs started and completed.
    started: u64,
    completed: u64,
    running: bool,
    /// The last fsync that failed.
    failed: Option<u64>,
}

impl DirSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        // Plain counters, consistent after every step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
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
            let result = std::fs::File::open(dir).and_then(|d| d.sync_all());
            st = self.lock();
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
            Some(g) if g >= target => Err(io::Error::other("a shared fsync of new/ failed")),
            _ => Ok(()),
        }
    }
}

/// Steps 1 to 3 of one job.
fn place(job: &Job, after: &mut dyn FnMut(Step) -> io::Result<()>) -> io::Result<PathBuf> {
    let total = job.prefix.len() as u64 + job.body.len();
    maildir::place(
        &job.root,
        &job.user,
        &job.unique,
        &job.host,
        total,
        |f| {
            // A failing read or write is transient, never a bad mailbox name (InvalidInput).
            write(job, total, f).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidInput => io::Error::other(e),
                _ => e,
            })
        },
        after,
    )
}

/// Writes the `Return-Path:` line and the body into the new file.
fn write(job: &Job, total: u64, f: &mut std::fs::File) -> io::Result<()> {
    {
        // Bodies up to the spool's in-memory limit come in one write with the prefix.
        if let Some(bytes) = job.body.in_memory() {
            let mut all = Vec::with_capacity(total as usize);
            all.extend_from_slice(&job.prefix);
            all.extend_from_slice(bytes);
            return f.write_all(&all);
        }
        f.write_all(&job.prefix)?;
        let size = job.body.len();
        let copied = io::copy(&mut job.body.reader(), f)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("message ended after {copied} of {size} octets"),
            ));
        }
        Ok(())
    }
}

/// Delivers pending local recipients into their Maildirs; errors are transient except an
/// unusable mailbox name.
pub(super) async fn deliver_local(
    ctx: &Ctx,
    env: &mut Envelope,
    body: &Body,
    now: SystemTime,
    last_error: &mut Option<(u16, String)>,
) {
    let targets: Vec<(usize, String)> = env
        .recipients
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match (&r.status, &r.local_user) {
            (Status::Pending, Some(user)) => Some((i, user.clone())),
            _ => None,
        })
        .collect();
    let unique = format!("{}.{}", unix_secs(now), env.id);
    // RFC 5321 §4.4: the delivering system records the reverse-path.
    let prefix: Arc<[u8]> = format!("Return-Path: <{}>\r\n", printable(&env.mail_from))
        .into_bytes()
        .into();
    let jobs: Vec<(usize, Job)> = targets
        .into_iter()
        .map(|(i, user)| {
            let job = Job {
                root: ctx.settings.maildir.clone(),
                user,
                unique: unique.clone(),
                host: ctx.settings.hostname.clone(),
                prefix: prefix.clone(),
                body: body.clone(),
            };
            (i, job)
        })
        .collect();
    let local = ctx.local.clone();
    let written = tokio::task::spawn_blocking(move || {
        jobs.iter()
            .map(|(i, job)| (*i, local.deliver(job)))
            .collect::<Vec<_>>()
    })
    .await;
    let results = match written {
        Ok(results) => results,
        Err(e) => {
            *last_error = Some((451, format!("local delivery task failed: {e}")));
            return;
        }
    };
    for (i, result) in results {
        let Some(r) = env.recipients.get_mut(i) else {
            continue;
        };
        match result {
            Ok(_) => {
                tracing::info!(id = env.id, rcpt = r.address, "relay: delivered locally");
                r.status = Status::Delivered;
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                tracing::warn!(id = env.id, rcpt = r.address, error = %e, "relay: bad mailbox");
                r.status = Status::Failed {
                    code: 550,
                    text: format!("5.1.1 mailbox: {e}"),
                };
            }
            Err(e) => {
                tracing::warn!(id = env.id, rcpt = r.address, error = %e, "relay: local deferred");
                *last_error = Some((451, format!("4.2.0 mailbox: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::clock::SystemClock;
    use crate::spool::{Recipient, Spool};

    const BODY: &[u8] = b"Subject: kept\r\n\r\nhello\r\n";
    const WANT: &[u8] = b"Return-Path: <alice@example.org>\r\nSubject: kept\r\n\r\nhello\r\n";

    fn ctx(root: &Path, spool: Arc<Spool>, local: Batcher) -> Ctx {
        let settings = super::super::Settings {
            hostname: "mx.example".into(),
            maildir: root.join("maildir"),
            dead_letter: root.join("dead"),
            upstream: None,
            audit: crate::audit::Auditor::disabled(),
        };
        Ctx {
            settings,
            upstream: super::super::Smarthost::None,
            spool,
            clock: Arc::new(SystemClock),
            shutdown: CancellationToken::new(),
            freeing: Default::default(),
            local: Arc::new(local),
        }
    }

    fn files(dir: &Path) -> Vec<Vec<u8>> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_crash_between_steps_loses_nothing() {
        let steps = [
            Some(Step::Written),
            Some(Step::Synced),
            Some(Step::Renamed),
            Some(Step::DirSynced),
            None,
        ];
        for crash in steps {
            let tmp = tempfile::tempdir().unwrap();
            let spool = Arc::new(Spool::open(&tmp.path().join("spool")).unwrap());
            let rcpt = Recipient::new("bob@example.test", Some("bob".into()));
            let env = Envelope::new("alice@example.org", vec![rcpt], 1_700_000_000, "peer", None);
            let id = spool.enqueue_bytes(env, BODY).unwrap();
            let local = match crash {
                Some(step) => Batcher::crashing_after(step),
                None => Batcher::default(),
            };
            let ctx = ctx(tmp.path(), spool, local);
            super::super::deliver(&ctx, &id).await;
            super::super::drain_removals(&ctx).await;
            drop(ctx);

            // What a restart finds.
            let spool = Spool::open(&tmp.path().join("spool")).unwrap();
            let queued = spool.contains(&id);
            let mailbox = tmp.path().join("maildir/bob");
            let new = files(&mailbox.join("new"));
            assert!(
                new.iter().all(|f| f == WANT),
                "{crash:?}: a partial file in new/"
            );
            assert!(queued || new.len() == 1, "{crash:?}: the message is lost");
            match crash {
                // Not delivered: the spool keeps it; nothing (or a complete file, whose rename
                // may not have been durable) in new/.
                Some(Step::Written | Step::Synced) => assert!(queued && new.is_empty()),
                Some(Step::Renamed | Step::DirSynced) => assert!(queued && new.len() == 1),
                None => assert!(!queued && new.len() == 1),
            }
        }
    }

    #[test]
    fn a_shared_folder_fsync_covers_every_caller() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (sync, dir) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || sync.sync(&dir))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let st = sync.lock();
        assert!(st.completed >= 1 && st.completed <= 16, "{st:?}");
        assert_eq!(st.started, st.completed);
        drop(st);
        // A failed fsync fails its callers; the next one syncs afresh.
        assert!(sync.sync(&dir.path().join("missing")).is_err());
        assert!(sync.sync(dir.path()).is_ok());
    }

    #[tokio::test]
    async fn one_batch_delivers_many_messages_to_one_mailbox() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&tmp.path().join("spool")).unwrap());
        let ctx = Arc::new(ctx(tmp.path(), spool.clone(), Batcher::default()));
        let mut ids = Vec::new();
        for _ in 0..40 {
            let rcpts = vec![
                Recipient::new("bob@example.test", Some("bob".into())),
                Recipient::new("carol@example.test", Some("carol".into())),
            ];
            let env = Envelope::new("alice@example.org", rcpts, 1_700_000_000, "peer", None);
            ids.push(spool.enqueue_bytes(env, BODY).unwrap());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let ctx = ctx.clone();
            tasks.spawn(async move { super::super::deliver(&ctx, &id).await });
        }
        while let Some(done) = tasks.join_next().await {
            assert!(done.unwrap().retry_at.is_none());
        }
        super::super::drain_removals(&ctx).await;
        assert!(spool.is_empty());
        for user in ["bob", "carol"] {
            let new = files(&tmp.path().join("maildir").join(user).join("new"));
            assert_eq!(new.len(), 40);
            assert!(new.iter().all(|f| f == WANT));
        }
    }

    #[tokio::test]
    async fn a_bad_mailbox_name_fails_only_its_recipient() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&tmp.path().join("spool")).unwrap());
        let ctx = ctx(tmp.path(), spool.clone(), Batcher::default());
        let rcpts = vec![
            Recipient::new("bob@example.test", Some("bob".into())),
            Recipient::new("x@example.test", Some("../x".into())),
        ];
        let mut env = Envelope::new("", rcpts, 1_700_000_000, "peer", None);
        let mut last = None;
        deliver_local(
            &ctx,
            &mut env,
            &Body::from_bytes(BODY),
            SystemTime::UNIX_EPOCH,
            &mut last,
        )
        .await;
        assert_eq!(env.recipients[0].status, Status::Delivered);
        assert!(matches!(
            env.recipients[1].status,
            Status::Failed { code: 550, .. }
        ));
        assert!(last.is_none());
    }
}
