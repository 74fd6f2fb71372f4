//! Group commit for small messages: sessions that commit at the same time share one slot
//! file and one `fdatasync`, the way a database shares one log flush among transactions.
//!
//! A committing session queues its message and waits; if no batch is being written, it
//! starts a writer on the blocking pool, which takes everything queued (up to
//! [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`]), writes it into one free slot
//! ([`Spool::seal_batch`]), fsyncs once, answers each waiting session, and goes on while
//! more are queued. Each session still answers 250 only after the fsync that covers its own
//! message. Under load the batches grow by themselves: while one fsync runs, the next
//! batch gathers.
//!
//! The commit window makes them grow further. An fsync costs the same CPU whether it
//! covers one message or sixty, and on a busy gateway (the benchmark in
//! `docs/benchmarks.md`) fsync was a sixth of all the CPU spent per message, at about two
//! messages per batch. So before it writes, the writer waits, at most the window, for the
//! messages that other sessions are still receiving (the spool counts them: every
//! [`Incoming`](super::Incoming) held in memory from [`Spool::receive`] until it commits,
//! spills to a slot of its own or is dropped). It waits only while such messages exist: a
//! lone sender commits at once, and the window bounds what a slow sender can cost others.
//! PostgreSQL's `commit_delay` is the same idea.

use std::sync::Condvar;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Envelope, Error, Index, Spool};

/// Messages per batch at most.
pub const MAX_BATCH: usize = 64;

/// Bytes of message per batch at most.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How long a batch waits at most for messages still being received: see the module
/// documentation. `[delivery] commit_window` sets it.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::from_micros(500);

/// The writer's side of the commit window: the condition it waits on and the window.
#[derive(Debug)]
pub(super) struct Window {
    arrived: Condvar,
    micros: AtomicU64,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            arrived: Condvar::new(),
            micros: AtomicU64::new(DEFAULT_COMMIT_WINDOW.as_micros() as u64),
        }
    }
}

/// A message waiting for the next group commit.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: String,
    pub(super) body: Vec<u8>,
    pub(super) env: Envelope,
    done: oneshot::Sender<Result<(), Error>>,
}

impl Spool {
    /// Sets the commit window (zero: never wait). See the module documentation.
    pub fn set_commit_window(&self, window: Duration) {
        let micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.window.micros.store(micros, Ordering::Relaxed);
    }

    /// The commit window now in force.
    pub fn commit_window(&self) -> Duration {
        Duration::from_micros(self.window.micros.load(Ordering::Relaxed))
    }

    /// One more message is being received in memory and will likely join a group commit.
    pub(super) fn receiving_started(&self) {
        self.lock().receiving += 1;
    }

    /// A message counted by [`Spool::receiving_started`] will not join a group commit after
    /// all (it spilled to a slot of its own, or was dropped).
    pub(super) fn receiving_ended(&self) {
        let mut index = self.lock();
        index.receiving = index.receiving.saturating_sub(1);
        self.wake_writer(&index);
    }

    fn wake_writer(&self, index: &Index) {
        if index.writer_waiting && (index.receiving == 0 || index.pending.len() >= MAX_BATCH) {
            self.window.arrived.notify_one();
        }
    }

    /// Commits a message held entirely in memory as `id`, sharing the fsync with whatever
    /// else is being committed; returns once it is durable. `counted`: the message was
    /// counted by [`Spool::receiving_started`].
    pub(super) async fn commit_small(
        &self,
        id: String,
        body: Vec<u8>,
        env: Envelope,
        counted: bool,
    ) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        let lead = {
            let mut index = self.lock();
            index.pending.push(Pending {
                id,
                body,
                env,
                done,
            });
            if counted {
                index.receiving = index.receiving.saturating_sub(1);
            }
            self.wake_writer(&index);
            !std::mem::replace(&mut index.committing, true)
        };
        if lead {
            let spool = self.clone();
            tokio::task::spawn_blocking(move || spool.write_batches());
        }
        rx.await
            .map_err(|_| Error::Task("the group commit stopped".into()))?
    }

    /// The writer: batch after batch until nothing is queued.
    fn write_batches(&self) {
        loop {
            let mut batch = {
                let mut index = self.lock();
                if index.pending.is_empty() {
                    index.committing = false;
                    return;
                }
                let window = self.commit_window();
                if !window.is_zero() && index.receiving > 0 && index.pending.len() < MAX_BATCH {
                    index.writer_waiting = true;
                    index = match self.window.arrived.wait_timeout_while(index, window, |i| {
                        i.receiving > 0 && i.pending.len() < MAX_BATCH
                    }) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                    index.writer_waiting = false;
                }
                let (mut count, mut bytes) = (0, 0);
                for p in &index.pending {
                    if count == MAX_BATCH || (count > 0 && bytes + p.body.len() > MAX_BATCH_BYTES) {
                        break;
                    }
                    count += 1;
                    bytes += p.body.len();
                }
                index.pending.drain(..count).collect::<Vec<_>>()
            };
            let result = self.seal_batch(&mut batch);
            for p in batch {
                let answer = match &result {
                    Ok(()) => {
                        self.remember(p.env, p.body);
                        Ok(())
                    }
                    Err(e) => Err(Error::Io {
                        op: "commit",
                        path: self.slots.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }),
                };
                let _ = p.done.send(answer);
            }
        }
    }
}
