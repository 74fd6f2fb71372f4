//! Local delivery: the pending local recipients of a message go into their Maildirs. One
//! writer thread writes every copy, and a batch of copies shares two `syncfs` calls where each
//! copy used to pay a file fsync and a share of a folder fsync: the way the spool's group
//! commit (`spool/group.rs`) shares one `fdatasync` among sessions.
//!
//! # When a message counts as delivered
//!
//! A recipient is delivered when its copy is durable in `new/` ([`maildir::Step`]). A batch
//! goes through the steps together:
//!
//! 1. every copy is written under `tmp/` ([`maildir::Draft`]), not synced;
//! 2. one `syncfs(2)` per file system the copies are on makes their content durable;
//! 3. every copy is renamed into `new/`;
//! 4. a second `syncfs` makes the renames durable.
//!
//! Only then does the delivery report its copies, and only a message whose every recipient
//! is settled has its spool slot freed (`relay::settle`). So until the last step, the spool's
//! durable copy stands in for the Maildir's. A crash at each point:
//!
//! 1. while the files are written, before the first `syncfs`: partial or unsynced files under
//!    `tmp/`, which no reader looks at; the spool still has the messages and delivers them
//!    again after the restart.
//! 2. after it, before the renames: complete files under `tmp/`, not seen by readers;
//!    delivered again from the spool.
//! 3. after the renames, before the second `syncfs`: a rename may or may not have reached
//!    the disk, so a message is in `new/` (complete: its content was durable before the
//!    rename) or still only in `tmp/`. The spool still has it and delivers it again: at worst
//!    the user gets it twice (at-least-once, as everywhere in the relay), never zero times,
//!    and never a partial file in `new/`.
//! 4. after the second `syncfs`, before the spool slots are freed: delivered, and delivered
//!    again after the restart (twice, as in 3).
//!
//! `tests::a_crash_between_steps_loses_nothing` stops a delivery after each step and checks
//! that the message is then in the spool (read back from disk) or complete in `new/`.
//!
//! # Why one thread and `syncfs`
//!
//! Before, each delivery wrote and fsynced its own file on the blocking pool and shared only
//! the `new/` fsync; a file fsync writes that file's data, its inode and its folder block and
//! flushes the disk, and sixteen threads creating files in one folder spun on its lock. An
//! earlier try at one writer thread kept a fsync per file, which then ran one after another,
//! each with a disk flush of its own, and cost more than the parallel writes. `syncfs` writes
//! a batch's files, inodes and folder blocks together and flushes the disk once, whatever the
//! batch's size, and one thread creates the files without contention. `syncfs` also writes
//! whatever else is dirty on that file system: on a box whose Maildirs share a file system
//! with other busy writers, a batch waits for their data too (`docs/operations.md`).
//! `docs/benchmarks.md` (step 14) has the figures, counted both for mailgate alone and for the
//! whole machine, since part of the writing moves into the kernel's flusher threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::Ctx;
use super::bounce::printable;
use crate::clock::unix_secs;
use crate::maildir::{Draft, Published, Step};
use crate::spool::{Body, Envelope, Status};

/// Copies written and synced together at most; more wait for the next batch.
const MAX_BATCH: usize = 256;

/// One message's copies, each with its recipient's index, and where their results go.
type Results = Vec<(usize, io::Result<PathBuf>)>;

struct Request {
    jobs: Vec<(usize, Job)>,
    reply: oneshot::Sender<Results>,
}

/// The writer thread's queue, started at the first local delivery.
#[derive(Default)]
pub(super) struct Batcher {
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    /// Tests: stop every delivery after this step, as a crash would.
    crash_after: Option<Step>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("crash_after", &self.crash_after)
            .finish_non_exhaustive()
    }
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

    /// Writes one message's copies in the next batch and returns each copy's result.
    async fn deliver(&self, jobs: Vec<(usize, Job)>) -> io::Result<Results> {
        let (reply, answer) = oneshot::channel();
        self.send(Request { jobs, reply })?;
        answer
            .await
            .map_err(|_| io::Error::other("the Maildir writer stopped"))
    }

    fn send(&self, request: Request) -> io::Result<()> {
        // The sender only; consistent after every step.
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let request = match queue.as_ref() {
            Some(q) => match q.send(request) {
                Ok(()) => return Ok(()),
                // The writer is gone (it panicked): start another.
                Err(mpsc::SendError(request)) => request,
            },
            None => request,
        };
        let (tx, rx) = mpsc::channel();
        let crash = self.crash_after;
        std::thread::Builder::new()
            .name("maildir".into())
            .spawn(move || writer(rx, crash))?;
        tx.send(request)
            .map_err(|_| io::Error::other("the Maildir writer stopped"))?;
        *queue = Some(tx);
        Ok(())
    }
}

/// The writer thread: takes every request queued, up to [`MAX_BATCH`] copies, commits them
/// as one batch and answers each; ends when the [`Batcher`] is dropped.
fn writer(rx: mpsc::Receiver<Request>, crash: Option<Step>) {
    while let Ok(first) = rx.recv() {
        let mut copies = first.jobs.len();
        let mut batch = vec![first];
        while copies < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            copies += next.jobs.len();
            batch.push(next);
        }
        let jobs: Vec<&Job> = batch
            .iter()
            .flat_map(|r| r.jobs.iter().map(|(_, j)| j))
            .collect();
        let mut results = commit(&jobs, crash).into_iter();
        for request in batch {
            let answer = request
                .jobs
                .iter()
                .map(|(i, _)| {
                    (
                        *i,
                        results
                            .next()
                            .unwrap_or_else(|| Err(io::Error::other("no result"))),
                    )
                })
                .collect();
            // A delivery that gave up waiting finds its copy delivered at the next attempt.
            let _ = request.reply.send(answer);
        }
    }
}

/// Steps 1 to 4 for a batch of copies; one result per job, in order. Blocking.
fn commit(jobs: &[&Job], crash: Option<Step>) -> Vec<io::Result<PathBuf>> {
    let after = |step: Step| match crash {
        Some(c) if step >= c => Err(io::Error::other(format!("crash after {step:?}"))),
        _ => Ok(()),
    };
    // 1. Written under tmp/.
    let drafts: Vec<io::Result<Draft>> = jobs
        .iter()
        .map(|job| draft(job).and_then(|d| after(Step::Written).map(|()| d)))
        .collect();
    // 2. Their content durable.
    let synced = sync_file_systems(drafts.iter().flatten().map(Draft::file));
    let drafts = drafts.into_iter().map(|d| {
        let d = d?;
        match synced.check(d.file()).and_then(|()| after(Step::Synced)) {
            Ok(()) => Ok(d),
            Err(e) => {
                d.discard();
                Err(e)
            }
        }
    });
    // 3. Renamed into new/.
    let published: Vec<io::Result<Published>> = drafts
        .map(|d| d?.publish().and_then(|p| after(Step::Renamed).map(|()| p)))
        .collect();
    // 4. The renames durable.
    let synced = sync_file_systems(published.iter().flatten().map(|p| &p.file));
    published
        .into_iter()
        .map(|p| {
            let p = p?;
            synced.check(&p.file)?;
            after(Step::DirSynced)?;
            Ok(p.path)
        })
        .collect()
}

/// The outcome of one `syncfs` per file system, by device number.
struct Synced(HashMap<u64, Result<(), String>>);

impl Synced {
    /// Whether the file system `file` is on was synced.
    fn check(&self, file: &File) -> io::Result<()> {
        match self.0.get(&file.metadata()?.dev()) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(io::Error::other(format!("syncfs: {e}"))),
            None => Err(io::Error::other("syncfs: file system not synced")),
        }
    }
}

/// Calls `syncfs(2)` once for each file system among `files`.
fn sync_file_systems<'a>(files: impl Iterator<Item = &'a File>) -> Synced {
    let mut done = HashMap::new();
    for file in files {
        let Ok(meta) = file.metadata() else { continue };
        done.entry(meta.dev()).or_insert_with(|| {
            rustix::fs::syncfs(file).map_err(|e| io::Error::from(e).to_string())
        });
    }
    Synced(done)
}

/// Step 1 of one job.
fn draft(job: &Job) -> io::Result<Draft> {
    let total = job.prefix.len() as u64 + job.body.len();
    Draft::write(&job.root, &job.user, &job.unique, &job.host, total, |f| {
        // A failing read or write is transient, never a bad mailbox name (InvalidInput).
        write(job, total, f).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => io::Error::other(e),
            _ => e,
        })
    })
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
    let indices: Vec<usize> = targets.iter().map(|(i, _)| *i).collect();
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
    let results = match ctx.local.deliver(jobs).await {
        Ok(results) => results,
        Err(e) => {
            for &i in &indices {
                super::deferred(
                    env,
                    i,
                    (451, format!("4.3.0 local delivery: {e}")),
                    last_error,
                );
            }
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
                super::deferred(env, i, (451, format!("4.2.0 mailbox: {e}")), last_error);
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
            unmigrated: None,
            audit: crate::audit::Auditor::disabled(),
            metrics: crate::metrics::Metrics::new(),
        };
        Ctx {
            settings,
            upstream: super::super::Smarthost::None,
            unmigrated: None,
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
