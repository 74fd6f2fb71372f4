//! The shared backends of the [`crate::store`] traits, kept in Redis for several gateway nodes
//! behind one load balancer (`[cluster]`, `docs/scaling.md`).
//!
//! # What is shared, and how
//!
//! - **The allowlist** ([`RedisAllowlist`]): one key per network, `<prefix>allow:<net>`, whose
//!   value is `"<inserted ms> <expires ms> <user>"` and whose Redis expiry is the entry's own,
//!   so Redis drops it on time. Every change is published on `<prefix>changes`. Each node
//!   keeps a full copy of the list in memory (the [`MemoryAllowlist`] a single node uses),
//!   fed by those messages and re-read with `SCAN` every `resync`; the relay check reads only
//!   that copy, so a RCPT never waits on Redis. An entry added on one node is on every other
//!   as soon as its message arrives (milliseconds on a LAN).
//! - **Failed-login counters** ([`RedisCounters`]): one hash per key, `<prefix>fail:<key>`,
//!   with the count, the last failure and the next check slot, expiring `window` after the
//!   last failure. Each change is one Lua script, so nodes never interleave inside one.
//! - **Mailbox locks** ([`RedisLocks`]): a lease, `SET <prefix>lock:<user> <token> NX PX`,
//!   renewed every third of its life while the session lives and deleted (only if still ours)
//!   when it ends; a lease whose node died lapses on its own.
//! - **The notices' rate limit** ([`Cluster::claim`]): `SET NX PX interval` per user and
//!   mechanism, so one node sends the notice.
//!
//! # When Redis is down
//!
//! Every command has `[cluster] timeout`. The first failure marks the cluster down: one log
//! line, `mailgate_cluster_up 0`, and from then on no session waits on Redis. Each node runs
//! on its own view: its copy of the allowlist (changes it makes are remembered for later),
//! in-memory counters and locks. A watcher pings Redis every second; when it answers, the
//! node subscribes again, writes back the allowlist changes it made meanwhile, re-reads the
//! list and marks the cluster up.
//!
//! Times are the nodes' clocks (in milliseconds since 1970), so the nodes' clocks must agree
//! (NTP); Redis's own expiries are set relative (`PX`), so its clock does not matter.

mod allowlist;
mod counters;
mod locks;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{IntoConnectionInfo, RedisError};
use tokio_util::sync::CancellationToken;

pub use allowlist::{ChangeMessage, RedisAllowlist, parse_change_message};
pub use counters::RedisCounters;
pub use locks::RedisLocks;

use crate::clock::Clock;
use crate::store::Error;

/// How often a down cluster is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often a live cluster is pinged between change messages.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The connection to Redis and whether it is usable, shared by the backends.
pub struct Cluster {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    lease: Duration,
    resync: Duration,
    up: AtomicBool,
    /// Wakes the watcher when a command found Redis gone.
    lost: tokio::sync::Notify,
    /// This process's name in lease values: host name, process id and a random tag.
    token: String,
    leases: AtomicU64,
    display: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.display)
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster of `cfg`, not connected yet (the watcher started by [`Cluster::watch`]
    /// connects). Fails only on a bad URL or an unreadable password file.
    pub fn new(
        cfg: &crate::config::Cluster,
        hostname: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Cluster, String> {
        let mut info = cfg
            .redis
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("[cluster] redis: {e}"))?;
        // No `CLIENT SETINFO` at connect: one command fewer for an ACL to allow.
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        info = info.set_redis_settings(settings);
        if let Some(path) = &cfg.password_file {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("[cluster] password_file {}: {e}", path.display()))?,
            );
            let password = text.lines().next().unwrap_or("").trim_end();
            if password.is_empty() {
                return Err(format!("[cluster] password_file {}: empty", path.display()));
            }
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match &cfg.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("[cluster] ca_file {}: {e}", path.display()))?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certs)
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| format!("[cluster] redis: {e}"))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(RETRY_EVERY);
        let conn = client
            .get_connection_manager_lazy(manager)
            .map_err(|e| format!("[cluster] redis: {e}"))?;
        let tag: u64 = rand::random();
        Ok(Cluster {
            client,
            conn,
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            lease: cfg.lease,
            resync: cfg.resync,
            up: AtomicBool::new(false),
            lost: tokio::sync::Notify::new(),
            token: format!("{hostname}/{}/{tag:016x}", std::process::id()),
            leases: AtomicU64::new(0),
            display: cfg.redis_display(),
            clock,
        })
    }

    /// Connects once and asks Redis for its version (`check-config`): the version, or why
    /// it cannot be used.
    pub async fn probe(&self) -> Result<String, String> {
        let mut conn = self.conn();
        let info_cmd = redis::cmd("INFO").arg("server").clone();
        let info = info_cmd.query_async::<String>(&mut conn);
        let text = tokio::time::timeout(self.timeout.max(Duration::from_secs(2)), info)
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| e.to_string())?;
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        // `SET ... PX` with `NX` and Lua scripts: Redis 2.6.12 and later have both; the
        // write-back's `SET` after `GET` in a script needs nothing newer.
        Ok(version)
    }

    /// Whether Redis answered lately: sessions use it only then.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis URL without its password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// `<prefix><rest>`.
    fn key(&self, rest: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + rest.len());
        k.push_str(&self.prefix);
        k.push_str(rest);
        k
    }

    /// The channel every allowlist change is published on.
    fn channel(&self) -> String {
        self.key("changes")
    }

    /// A new connection handle (a cheap clone sharing the one multiplexed connection).
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs one Redis exchange while the cluster is up, within the timeout. A failure that
    /// says Redis is gone (or slow) marks the cluster down.
    async fn run<T>(
        &self,
        what: &str,
        exchange: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, Error> {
        if !self.is_up() {
            return Err(Error::Unavailable("Redis is down".into()));
        }
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if gone(&e) {
                    self.mark_down(&format!("{what}: {e}"));
                } else {
                    tracing::warn!(redis = %self.display, "cluster: {what}: {e}");
                }
                Err(Error::Unavailable(format!("{what}: {e}")))
            }
            Err(_) => {
                let why = format!("{what}: no answer within {:?}", self.timeout);
                self.mark_down(&why);
                Err(Error::Unavailable(why))
            }
        }
    }

    /// Marks the cluster down (once: one log line per outage) and wakes the watcher.
    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(
                redis = %self.display,
                "cluster: Redis lost ({why}); this node serves from its own view (its copy of \
                 the allowlist, its own failure counters and mailbox locks) until Redis answers"
            );
        }
        self.lost.notify_one();
    }

    /// Claims `what` for `ttl` across the cluster: true if this node is the first within the
    /// `ttl` (or Redis is down: each node then decides alone).
    pub async fn claim(&self, what: &str, ttl: Duration) -> bool {
        let key = self.key(&format!("claim:{what}"));
        let mut conn = self.conn();
        let mut set_cmd = redis::cmd("SET");
        set_cmd
            .arg(&key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(crate::clock::millis(ttl).max(1));
        let set = set_cmd.query_async::<Option<String>>(&mut conn);
        self.run("claim", set).await.map_or(true, |r| r.is_some())
    }

    /// Keeps the cluster's state current until `shutdown`: connects (and reconnects after an
    /// outage), writes back `allowlist`'s changes made while down, applies change messages and
    /// re-reads the whole list every `resync`.
    pub async fn watch(
        self: Arc<Self>,
        allowlist: Arc<RedisAllowlist>,
        shutdown: CancellationToken,
    ) {
        let mut first = true;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.connect(&allowlist).await {
                Ok(pubsub) => {
                    first = false;
                    self.follow(pubsub, &allowlist, &shutdown).await;
                }
                Err(e) => {
                    if first {
                        tracing::error!(
                            redis = %self.display,
                            "cluster: Redis unreachable at start ({e}); this node serves from \
                             its own view until it answers"
                        );
                        first = false;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_EVERY) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Subscribes to the change channel, writes back what changed meanwhile, reads the whole
    /// list and marks the cluster up.
    async fn connect(&self, allowlist: &RedisAllowlist) -> Result<redis::aio::PubSub, String> {
        let limit = |what: &'static str| move |_| format!("{what}: no answer");
        let mut conn = self.conn();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut conn);
        tokio::time::timeout(self.timeout, ping)
            .await
            .map_err(limit("PING"))?
            .map_err(|e| e.to_string())?;
        let mut pubsub = tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .map_err(limit("SUBSCRIBE"))?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(self.timeout, pubsub.subscribe(self.channel()))
            .await
            .map_err(limit("SUBSCRIBE"))?
            .map_err(|e| e.to_string())?;
        // Up for the write-back's own commands; sessions may use Redis from here on too.
        self.up.store(true, Ordering::Release);
        // A Redis without the prefix's marker key is new or lost its data (a restart without
        // persistence): every node then writes back its whole copy, not only what it changed
        // while Redis was away, so that no client loses its relay.
        let mut conn = self.conn();
        let mut mark_cmd = redis::cmd("SET");
        mark_cmd.arg(self.key("epoch")).arg(&self.token).arg("NX");
        let mark = mark_cmd.query_async::<Option<String>>(&mut conn);
        match self.run("marker", mark).await {
            Ok(Some(_)) => {
                let n = allowlist.share_all();
                if n > 0 {
                    tracing::warn!(
                        redis = %self.display,
                        entries = n,
                        "cluster: Redis holds no state of this site (new, or restarted without \
                         its data); writing back this node's copy of the allowlist"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let written = allowlist.write_back().await;
        let read = allowlist.resync().await;
        match (written, read) {
            (Ok(w), Ok(n)) => {
                tracing::info!(
                    redis = %self.display,
                    written_back = w,
                    entries = n,
                    "cluster: Redis reachable; allowlist shared"
                );
                Ok(pubsub)
            }
            (Err(e), _) | (_, Err(e)) => {
                self.mark_down(&e.to_string());
                Err(e.to_string())
            }
        }
    }

    /// Applies change messages until the subscription ends, Redis is lost or `shutdown`;
    /// pings and re-reads on the way.
    async fn follow(
        &self,
        pubsub: redis::aio::PubSub,
        allowlist: &RedisAllowlist,
        shutdown: &CancellationToken,
    ) {
        use futures_util::StreamExt;
        let mut messages = pubsub.into_on_message();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Both fire at once; the list was just read.
        ping.tick().await;
        resync.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(m) => allowlist.apply(m.get_payload_bytes()),
                    None => {
                        self.mark_down("the change subscription closed");
                        return;
                    }
                },
                _ = ping.tick() => {
                    let mut conn = self.conn();
                    let _ = self
                        .run("PING", redis::cmd("PING").query_async::<String>(&mut conn))
                        .await;
                }
                _ = resync.tick() => {
                    if let Err(e) = allowlist.resync().await {
                        tracing::warn!("cluster: allowlist re-read: {e}");
                    }
                }
                () = self.lost.notified() => {}
                () = shutdown.cancelled() => return,
            }
            if !self.is_up() {
                return;
            }
            // Changes recorded while a command failed without the cluster going down.
            if allowlist.has_pending()
                && let Err(e) = allowlist.write_back().await
            {
                tracing::warn!("cluster: allowlist write-back: {e}");
            }
        }
    }
}

/// Whether `e` means Redis cannot be used now (rather than one command being wrong).
fn gone(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}
