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
//! # Batching
//!
//! Deliveries queue their jobs (one per recipient); if no writer is running, the first starts
//! one on the blocking pool. The writer takes everything queued, runs the first three steps
//! for each job, then fsyncs each `new/` folder once for all the jobs that renamed into it,
//! and answers them; meanwhile the next batch gathers. The relay worker runs up to
//! [`super::CONCURRENCY`] deliveries at once, so a busy worker writes batches of that size and
//! a lone message is written at once. What a batch saves is a `new/` fsync per message into a
//! mailbox that already has one in the batch, and a blocking-pool round trip per message; the
//! file's own fsync stays, since a rename must never publish content that is not yet durable.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::Ctx;
use super::bounce::printable;
use crate::clock::unix_secs;
use crate::maildir::{self, Step};
use crate::spool::{Body, Envelope, Status};

/// Jobs written per batch at most (a batch answers no job before all of its fsyncs).
pub const MAX_BATCH: usize = 128;

/// The local delivery queue shared by the worker's deliveries.
#[derive(Debug, Default)]
pub(super) struct Batcher {
    queue: Mutex<Queue>,
    /// Tests: stop every delivery after this step, as a crash would.
    crash_after: Option<Step>,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: Vec<Job>,
    writing: bool,
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
    done: oneshot::Sender<io::Result<PathBuf>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Plain data, consistent after every step.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `jobs` and starts a writer if none runs.
    fn submit(self: &Arc<Self>, jobs: Vec<Job>) {
        let start = {
            let mut q = self.lock();
            q.jobs.extend(jobs);
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.write_batches());
        }
    }

    /// The writer: batch after batch until nothing is queued.
    fn write_batches(&self) {
        loop {
            let batch: Vec<Job> = {
                let mut q = self.lock();
                if q.jobs.is_empty() {
                    q.writing = false;
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                q.jobs.drain(..n).collect()
            };
            self.write_batch(batch);
        }
    }

    /// Steps 1 to 3 for every job, then one fsync per `new/` folder, then the answers.
    fn write_batch(&self, batch: Vec<Job>) {
        let crash = self.crash_after;
        let mut after = |step: Step| match crash {
            Some(c) if step >= c => Err(io::Error::other(format!("crash after {step:?}"))),
            _ => Ok(()),
        };
        let mut placed: Vec<(Job, io::Result<PathBuf>)> = Vec::with_capacity(batch.len());
        for job in batch {
            let result = place(&job, &mut after);
            placed.push((job, result));
        }
        // One fsync per folder, for every rename into it.
        let mut synced: HashMap<PathBuf, Result<(), String>> = HashMap::new();
        for (_, result) in &placed {
            let Ok(path) = result else { continue };
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            if synced.contains_key(&dir) {
                continue;
            }
            let outcome = maildir::sync_parent(path)
                .and_then(|()| after(Step::DirSynced))
                .map_err(|e| e.to_string());
            synced.insert(dir, outcome);
        }
        for (job, result) in placed {
            let result = result.and_then(|path| {
                let dir = path.parent().map(PathBuf::from).unwrap_or_default();
                match synced.get(&dir) {
                    Some(Ok(())) => Ok(path),
                    Some(Err(e)) => Err(io::Error::other(format!("fsync of new/: {e}"))),
                    None => Err(io::Error::other("new/ not fsynced")),
                }
            });
            // A crash answers nobody: the delivery never learns the outcome.
            if crash.is_some() {
                continue;
            }
            let _ = job.done.send(result);
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
    let mut jobs = Vec::with_capacity(targets.len());
    let mut waiting = Vec::with_capacity(targets.len());
    for (i, user) in targets {
        let (done, rx) = oneshot::channel();
        jobs.push(Job {
            root: ctx.settings.maildir.clone(),
            user,
            unique: unique.clone(),
            host: ctx.settings.hostname.clone(),
            prefix: prefix.clone(),
            body: body.clone(),
            done,
        });
        waiting.push((i, rx));
    }
    ctx.local.submit(jobs);
    for (i, rx) in waiting {
        let result = match rx.await {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("local delivery stopped")),
        };
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
