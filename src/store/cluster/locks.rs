//! POP3 mailbox locks as Redis leases: `SET <prefix>lock:<user> <token> NX PX <lease>`, renewed
//! every third of the lease while the session lives and deleted, if still ours, when it ends.
//! A node that dies leaves its leases to lapse. The node's own locks are always taken first,
//! so one node never opens a mailbox twice, whatever Redis does.
//!
//! One task per node renews every held lease and deletes the released ones, each round as one
//! pipeline: a POP3 session costs one round trip of its own (the `SET`), however many
//! sessions run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::Cluster;
use crate::clock::millis;
use crate::store::memory::MemoryMailboxLocks;
use crate::store::{MailboxLease, MailboxLocks, Pending};

/// Extends the lease if it is still ours. KEYS: lock. ARGV: token, lease ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lease if it is still ours. KEYS: lock. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Releases sent in one pipeline at most.
const BATCH: usize = 256;

/// Mailbox locks shared through Redis, over this node's own.
pub struct RedisLocks {
    cluster: Arc<Cluster>,
    local: MemoryMailboxLocks,
    /// The leases this node holds: key, token.
    held: Arc<DashMap<String, String>>,
    releases: mpsc::UnboundedSender<(String, String)>,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocks")
            .field("cluster", &self.cluster)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    /// Locks in `cluster`, over this node's own; starts the task that renews and releases
    /// (it ends with the locks).
    pub fn new(cluster: Arc<Cluster>) -> Self {
        let held = Arc::new(DashMap::new());
        let (releases, rx) = mpsc::unbounded_channel();
        tokio::spawn(keeper(cluster.clone(), held.clone(), rx));
        RedisLocks {
            cluster,
            local: MemoryMailboxLocks::new(),
            held,
            releases,
        }
    }

    /// The session's lease: renewed by the keeper until dropped, then deleted (with the
    /// local lock).
    fn lease(&self, key: String, token: String, local: MailboxLease) -> MailboxLease {
        self.held.insert(key.clone(), token.clone());
        let (held, releases) = (self.held.clone(), self.releases.clone());
        MailboxLease::new(move || {
            held.remove(&key);
            drop(local);
            // The keeper gone (shutdown): the lease lapses on its own.
            let _ = releases.send((key, token));
        })
    }
}

impl MailboxLocks for RedisLocks {
    fn acquire<'a>(&'a self, user: &'a str) -> Pending<'a, Option<MailboxLease>> {
        Pending::boxed(async move {
            let Some(local) = self.local.acquire(user).await? else {
                return Ok(None);
            };
            if !self.cluster.is_up() {
                tracing::debug!(user, "cluster down: mailbox locked on this node only");
                return Ok(Some(local));
            }
            let cluster = &self.cluster;
            let key = cluster.key(&format!("lock:{user}"));
            let token = format!(
                "{}/{}",
                cluster.token,
                cluster.leases.fetch_add(1, Ordering::Relaxed)
            );
            let mut conn = cluster.conn();
            let mut set_cmd = redis::cmd("SET");
            set_cmd
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(millis(cluster.lease));
            let set = set_cmd.query_async::<Option<String>>(&mut conn);
            match cluster.run("mailbox lease", set).await {
                Ok(None) => Ok(None), // held on another node; `local` is dropped here
                Ok(Some(_)) => Ok(Some(self.lease(key, token, local))),
                Err(_) => Ok(Some(local)),
            }
        })
    }
}

/// Renews the held leases every third of the lease and deletes released ones as they come,
/// each round in one pipeline; ends when the locks are dropped.
async fn keeper(
    cluster: Arc<Cluster>,
    held: Arc<DashMap<String, String>>,
    mut rx: mpsc::UnboundedReceiver<(String, String)>,
) {
    let mut renew = tokio::time::interval(cluster.lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            got = rx.recv_many(&mut batch, BATCH) => {
                if got == 0 {
                    return;
                }
                let mut pipe = redis::pipe();
                for (key, token) in batch.drain(..) {
                    pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(key).arg(token).ignore();
                }
                let mut conn = cluster.conn();
                let sent = pipe.query_async::<()>(&mut conn);
                // Not released: the lease lapses after `[cluster] lease`.
                let _ = cluster.run("mailbox lease release", sent).await;
            }
            _ = renew.tick() => {
                let leases: Vec<(String, String)> =
                    held.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
                if leases.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for (key, token) in &leases {
                    pipe.cmd("EVAL")
                        .arg(RENEW)
                        .arg(1)
                        .arg(key)
                        .arg(token)
                        .arg(millis(cluster.lease));
                }
                let mut conn = cluster.conn();
                let renewed = pipe.query_async::<Vec<i64>>(&mut conn);
                // Redis unreachable: tried again next round; the lease may lapse meanwhile.
                if let Ok(answers) = cluster.run("mailbox lease renewal", renewed).await {
                    for ((key, token), ok) in leases.iter().zip(answers) {
                        if ok == 0 && held.remove_if(key, |_, t| t == token).is_some() {
                            tracing::warn!(
                                lock = %key,
                                "cluster: a mailbox lease lapsed while its session lived \
                                 (Redis was unreachable longer than [cluster] lease); \
                                 another node may open the mailbox"
                            );
                        }
                    }
                }
            }
        }
    }
}
