//! POP3 mailbox locks as Redis leases: `SET <prefix>lock:<user> <token> NX PX <lease>`,
//! renewed every third of the lease while the session lives and deleted, if still ours, when
//! it ends. A node that dies leaves its leases to lapse. The node's own locks are always
//! taken first, so one node never opens a mailbox twice, whatever Redis does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::{Cluster, millis};
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

/// Mailbox locks shared through Redis, over this node's own.
pub struct RedisLocks {
    cluster: Arc<Cluster>,
    local: MemoryMailboxLocks,
    renew: Arc<redis::Script>,
    release: Arc<redis::Script>,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocks")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    /// Locks in `cluster`, over this node's own.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        RedisLocks {
            cluster,
            local: MemoryMailboxLocks::new(),
            renew: Arc::new(redis::Script::new(RENEW)),
            release: Arc::new(redis::Script::new(RELEASE)),
        }
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

impl RedisLocks {
    /// The session's lease: renewed until dropped, then deleted (with the local lock).
    fn lease(&self, key: String, token: String, local: MailboxLease) -> MailboxLease {
        let stop = CancellationToken::new();
        let cluster = self.cluster.clone();
        let renew = self.renew.clone();
        let (k, t, s) = (key.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            let every = cluster.lease / 3;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = s.cancelled() => return,
                }
                let mut conn = cluster.conn();
                let mut call_inv = renew.prepare_invoke();
                call_inv.key(&k).arg(&t).arg(millis(cluster.lease));
                let call = call_inv.invoke_async::<u8>(&mut conn);
                match cluster.run("mailbox lease renewal", call).await {
                    Ok(1) => {}
                    Ok(_) => {
                        tracing::warn!(
                            lock = %k,
                            "cluster: a mailbox lease lapsed while its session lived (Redis \
                             was unreachable longer than [cluster] lease); another node may \
                             open the mailbox"
                        );
                        return;
                    }
                    Err(_) => {} // tried again next round; the lease may lapse
                }
            }
        });
        let cluster = self.cluster.clone();
        let release = self.release.clone();
        MailboxLease::new(move || {
            stop.cancel();
            drop(local);
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return; // no runtime (shutdown): the lease lapses on its own
            };
            handle.spawn(async move {
                let mut conn = cluster.conn();
                let mut call_inv = release.prepare_invoke();
                call_inv.key(&key).arg(&token);
                let call = call_inv.invoke_async::<u8>(&mut conn);
                let _ = cluster.run("mailbox lease release", call).await;
            });
        })
    }
}
