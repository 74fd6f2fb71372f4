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

use tokio::sync::oneshot;

use super::{Envelope, Error, Spool};

/// Messages per batch at most.
pub const MAX_BATCH: usize = 64;

/// Bytes of message per batch at most.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A message waiting for the next group commit.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: String,
    pub(super) body: Vec<u8>,
    pub(super) env: Envelope,
    done: oneshot::Sender<Result<(), Error>>,
}

impl Spool {
    /// Commits a message held entirely in memory as `id`, sharing the fsync with whatever
    /// else is being committed; returns once it is durable.
    pub(super) async fn commit_small(
        &self,
        id: String,
        body: Vec<u8>,
        env: Envelope,
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
