//! The delivery worker: takes messages from the spool and delivers them, to local Maildirs or
//! through the smarthost, retrying transient failures and bouncing permanent ones.
//!
//! One task owns the schedule (which message is due when); each delivery runs in its own task,
//! at most [`CONCURRENCY`] at once. A delivery updates the envelope after each step (local,
//! then remote), so a crash repeats at most the step in flight: delivery is at-least-once,
//! never zero. When every recipient is settled the message is removed; failed recipients are
//! reported in one delivery status notification (the per-recipient fields of RFC 3464 §2.3 in
//! a plain-text message) sent from the null reverse-path (RFC 5321 §4.5.5). Messages whose
//! failure cannot be reported (null sender, or the bounce cannot be queued) go to the
//! dead-letter folder. Retry timing comes from [`retry`] (RFC 5321 §4.5.4.1). Local
//! recipients are written into their Maildirs by `local.rs`, in batches made durable by one
//! `syncfs` for their content and one for their renames; a message leaves the spool only once
//! every copy is durable there. Remote recipients go to the smarthost in one session
//! (`remote.rs`); with `[delivery] route_unmigrated_to`, local recipients whose Maildir does
//! not exist yet go to the old server instead (`unmigrated.rs`).
//!
//! With XOAUTH2 or OAUTHBEARER upstream, the worker holds one [`oauth::TokenSource`] that its
//! deliveries share. A missing token is a transient failure like an unreachable smarthost: the
//! message stays in the spool and is retried on the schedule. When the smarthost answers 535 to
//! a token, the token is dropped, a new one fetched and AUTH tried once more in a new session.
//!
//! On shutdown the worker stops claiming work; a delivery in progress finishes its local step
//! and abandons its upstream session, leaving the message due for the next start.

mod admin;
mod bounce;
pub mod client;
mod local;
pub mod oauth;
mod remote;
pub mod retry;
mod tally;
mod unmigrated;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, unix_secs};
use crate::config::{DeliveryConfig, Upstream, UpstreamAuth};
use crate::metrics::Route;
use crate::spool::{Envelope, Recipient, Spool, Status};
use client::{Connector, Message, Reply};
use oauth::TokenSource;

pub use admin::Action;

/// Deliveries in progress at once (Postfix's default per-destination concurrency is 20 too):
/// enough that the smarthost's round trips do not let a queue build up behind a busy
/// listener, each one holding at most one smarthost session.
pub const CONCURRENCY: usize = 20;

/// Notifications buffered before the worker falls back to rescanning the spool.
const NOTIFY_QUEUE: usize = 1024;

/// The longest the worker sleeps without looking at the clock again (clocks can jump).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Delay before retrying a message whose delivery task failed unexpectedly.
const CRASH_RETRY: Duration = Duration::from_secs(60);

/// What the worker needs to know.
#[derive(Clone)]
pub struct Settings {
    /// Our host name: EHLO, Maildir file names, the bounce's From and Reporting-MTA.
    pub hostname: String,
    /// Maildir root.
    pub maildir: PathBuf,
    /// Where messages go whose failure cannot be reported.
    pub dead_letter: PathBuf,
    /// The smarthost; `None` makes remote recipients fail permanently.
    pub upstream: Option<Upstream>,
    /// The old server's SMTP, for local recipients without a Maildir here
    /// (`[delivery] route_unmigrated_to`).
    pub unmigrated: Option<Upstream>,
    /// Where defers, bounces and dead letters are recorded.
    pub audit: crate::audit::Auditor,
    /// Where deliveries, defers and bounces are counted.
    pub metrics: crate::metrics::Metrics,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Upstream` carries the smarthost password; show only where it points.
        f.debug_struct("Settings")
            .field("hostname", &self.hostname)
            .field("maildir", &self.maildir)
            .field("dead_letter", &self.dead_letter)
            .field("upstream", &self.upstream.as_ref().map(|u| u.address))
            .finish()
    }
}

impl Settings {
    /// Settings from the validated configuration.
    pub fn from_config(hostname: &str, delivery: &DeliveryConfig) -> Settings {
        Settings {
            hostname: hostname.to_string(),
            maildir: delivery.maildir.clone(),
            dead_letter: delivery.dead_letter.clone(),
            upstream: delivery.upstream.clone(),
            unmigrated: delivery.route_unmigrated_to.map(unmigrated::upstream),
            audit: crate::audit::Auditor::disabled(),
            metrics: crate::metrics::Metrics::new(),
        }
    }

    fn schedule(&self) -> &[Duration] {
        match &self.upstream {
            Some(up) => &up.retry,
            None => &retry::DEFAULT_SCHEDULE,
        }
    }
}

/// Wakes the worker for a newly committed message, and carries an admin's queue actions to
/// it. Cheap to clone; `notify` never blocks.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<String>,
    overflow: Arc<AtomicBool>,
    actions: mpsc::Sender<admin::Request>,
}

impl Notifier {
    /// Tells the worker that message `id` was committed to the spool.
    pub fn notify(&self, id: &str) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(id.to_string()) {
            // The worker is busy with a backlog; it rescans the spool once it catches up.
            self.overflow.store(true, Ordering::Release);
        }
    }

    /// A notifier with no worker behind it (its actions answer that the worker stopped).
    #[cfg(test)]
    pub(crate) fn unconnected() -> Notifier {
        let (tx, _) = mpsc::channel(1);
        let (actions, _) = mpsc::channel(1);
        Notifier {
            tx,
            overflow: Arc::new(AtomicBool::new(false)),
            actions,
        }
    }

    /// Has the worker carry out an admin's `action`; what was done, or why not.
    pub async fn queue(&self, action: Action) -> Result<String, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = tokio::time::timeout(admin::ANSWER_TIMEOUT, async {
            self.actions
                .send((action, tx))
                .await
                .map_err(|_| "the delivery worker has stopped".to_string())?;
            rx.await
                .map_err(|_| "the delivery worker has stopped".to_string())?
        });
        asked
            .await
            .unwrap_or_else(|_| Err("the delivery worker did not answer in time".into()))
    }
}

/// Starts the delivery worker. It first picks up everything already in the spool, then
/// delivers what [`Notifier::notify`] announces and what falls due, until `shutdown`.
pub fn spawn(
    settings: Settings,
    spool: Arc<Spool>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> (JoinHandle<()>, Notifier) {
    let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
    let (actions, action_rx) = mpsc::channel(8);
    let overflow = Arc::new(AtomicBool::new(false));
    let notifier = Notifier {
        tx,
        overflow: overflow.clone(),
        actions,
    };
    let worker = async move {
        let upstream = match settings.upstream.clone() {
            None => Smarthost::None,
            Some(up) => match tokio::task::spawn_blocking(move || smarthost(up)).await {
                Ok(s) => s,
                Err(e) => Smarthost::Broken(e.to_string()),
            },
        };
        if let Smarthost::Broken(why) = &upstream {
            tracing::error!(error = %why, "relay: smarthost unusable; remote mail will wait");
        }
        let reaper = match &upstream {
            Smarthost::Ready { connector, .. } => Some(tokio::spawn(close_idle(
                connector.as_ref().clone(),
                shutdown.clone(),
            ))),
            _ => None,
        };
        let unmigrated = match settings.unmigrated.clone() {
            Some(up) => match tokio::task::spawn_blocking(move || Connector::new(up)).await {
                Ok(Ok(c)) => Some(Box::new(c)),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "relay: route_unmigrated_to unusable");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "relay: route_unmigrated_to unusable");
                    None
                }
            },
            None => None,
        };
        let ctx = Arc::new(Ctx {
            settings,
            unmigrated,
            upstream,
            spool,
            clock,
            shutdown,
            freeing: Default::default(),
            local: Default::default(),
        });
        let mut worker = Worker {
            ctx,
            rx,
            actions: action_rx,
            overflow,
            due: BTreeSet::new(),
            scheduled: HashMap::new(),
            running: HashSet::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
        };
        worker.run().await;
        drain_removals(&worker.ctx).await;
        if let Some(reaper) = reaper {
            // It closes the idle sessions (QUIT) on its way out.
            let _ = reaper.await;
        }
    };
    (run_on_own_thread(worker), notifier)
}

/// Runs the worker on a thread of its own (a current-thread runtime), so that delivery keeps
/// its share of the CPU however many sessions the listeners serve: on the shared runtime a
/// burst of sessions could accept mail faster than the worker's tasks got scheduled, and the
/// spool would grow. The returned handle completes when the worker has stopped. Falls back
/// to the calling runtime if the thread cannot be started.
fn run_on_own_thread(worker: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = std::sync::Arc::new(std::sync::Mutex::new(Some(Box::pin(worker))));
    let for_thread = worker.clone();
    let started = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let Some(worker) = for_thread.lock().ok().and_then(|mut w| w.take()) else {
                return;
            };
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(worker),
                Err(e) => tracing::error!(error = %e, "relay: cannot start its runtime"),
            }
            let _ = done_tx.send(());
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "relay: no thread of its own; sharing the runtime");
        let worker = worker.lock().ok().and_then(|mut w| w.take());
        return tokio::spawn(async move {
            if let Some(worker) = worker {
                worker.await;
            }
        });
    }
    tokio::spawn(async move {
        let _ = done_rx.await;
    })
}

/// Closes idle smarthost sessions once they have waited `keep_idle`, and all of them at
/// shutdown.
async fn close_idle(connector: Connector, shutdown: CancellationToken) {
    let keep = connector.upstream().keep_idle;
    if keep.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(keep / 2) => connector.close_idle(false).await,
        }
    }
    connector.close_idle(true).await;
}

enum Smarthost {
    None,
    Ready {
        connector: Box<Connector>,
        /// For XOAUTH2 and OAUTHBEARER.
        tokens: Option<Arc<TokenSource>>,
    },
    Broken(String),
}

/// Prepares the smarthost connection (and token source); blocking, as both read trust roots.
fn smarthost(up: Upstream) -> Smarthost {
    let tokens = match (up.auth, &up.oauth) {
        (UpstreamAuth::Xoauth2 | UpstreamAuth::Oauthbearer, Some(cfg)) => {
            Some(Arc::new(TokenSource::new(cfg.clone())))
        }
        (UpstreamAuth::Xoauth2 | UpstreamAuth::Oauthbearer, None) => {
            return Smarthost::Broken("OAuth AUTH without [delivery.upstream.oauth]".into());
        }
        _ => None,
    };
    match Connector::new(up) {
        Ok(c) => Smarthost::Ready {
            connector: Box::new(c),
            tokens,
        },
        Err(e) => Smarthost::Broken(e.to_string()),
    }
}

/// Why a session with the smarthost failed.
#[derive(Debug, thiserror::Error)]
enum RemoteError {
    #[error(transparent)]
    Smtp(#[from] client::Error),
    #[error("no upstream access token: {0}")]
    Token(#[from] oauth::Error),
}

impl RemoteError {
    fn is_permanent(&self) -> bool {
        matches!(self, RemoteError::Smtp(e) if e.is_permanent())
    }

    fn reply(&self) -> Option<&Reply> {
        match self {
            RemoteError::Smtp(e) => e.reply(),
            RemoteError::Token(_) => None,
        }
    }
}

/// One delivery to the smarthost. With a token source: fetch (or reuse) the token; if the
/// smarthost refuses it, drop it, fetch a new one and try once more in a new session.
async fn relay(
    ctx: &Ctx,
    connector: &Connector,
    tokens: Option<&TokenSource>,
    msg: &Message<'_>,
) -> Result<Vec<Reply>, RemoteError> {
    let helo = &ctx.settings.hostname;
    let Some(tokens) = tokens else {
        return Ok(connector.send(helo, msg).await?);
    };
    let token = tokens.token(ctx.clock.now()).await?;
    match connector.send_as(helo, msg, Some(&token)).await {
        Err(e) if e.is_auth_rejected() => {
            tracing::info!(error = %e, "relay: smarthost refused the access token; refreshing");
            tokens.invalidate(&token).await;
            let fresh = tokens.token(ctx.clock.now()).await?;
            Ok(connector.send_as(helo, msg, Some(&fresh)).await?)
        }
        other => Ok(other?),
    }
}

/// What every delivery task shares.
struct Ctx {
    settings: Settings,
    upstream: Smarthost,
    /// The old server's SMTP for users not moved yet.
    unmigrated: Option<Box<Connector>>,
    spool: Arc<Spool>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    freeing: Arc<std::sync::Mutex<Freeing>>,
    /// Local deliveries, written in batches that share their folders' fsyncs.
    local: Arc<local::Batcher>,
}

/// Whether every recipient is delivered (nothing failed, nothing pending).
fn done_cleanly(env: &Envelope) -> bool {
    env.recipients.iter().all(|r| r.status == Status::Delivered)
}

/// Records a delivery fact (defer, bounce) in the audit log.
fn audit_delivery(ctx: &Ctx, env: &Envelope, kind: crate::audit::Kind, reason: Option<String>) {
    let now = ctx.clock.now();
    let outcome = crate::audit::Outcome::Failure;
    let mut e = crate::audit::Event::new(kind, "relay", crate::audit::event::rfc3339(now), outcome);
    e.queue_id = Some(env.id.clone());
    e.user = env.authorized_as.clone();
    e.reason = reason;
    e.recipients = Some(
        env.recipients
            .iter()
            .filter(|r| !matches!(r.status, Status::Delivered))
            .count()
            .try_into()
            .unwrap_or(u32::MAX),
    );
    ctx.settings.audit.record(e);
}

/// What a delivery task reports back to the scheduler.
#[derive(Debug, Default)]
struct Outcome {
    /// Try this message again then.
    retry_at: Option<SystemTime>,
    /// New messages it queued (bounces), due at once.
    queued: Vec<String>,
}

/// The scheduler: which message is due when, and which are being delivered.
struct Worker {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<String>,
    actions: mpsc::Receiver<admin::Request>,
    overflow: Arc<AtomicBool>,
    due: BTreeSet<(SystemTime, String)>,
    scheduled: HashMap<String, SystemTime>,
    running: HashSet<String>,
    tasks: JoinSet<Outcome>,
    task_ids: HashMap<tokio::task::Id, String>,
}

impl Worker {
    async fn run(&mut self) {
        self.rescan().await;
        let shutdown = self.ctx.shutdown.clone();
        loop {
            if self.overflow.swap(false, Ordering::AcqRel) {
                self.rescan().await;
            }
            let now = self.ctx.clock.now();
            self.claim_due(now);
            let wait = match self.due.first() {
                Some((at, _)) => at.duration_since(now).unwrap_or_default().min(MAX_IDLE),
                None => MAX_IDLE,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(joined);
                }
                Some(id) = self.rx.recv() => {
                    let now = self.ctx.clock.now();
                    self.schedule(id, now);
                }
                Some((action, answer)) = self.actions.recv() => {
                    let _ = answer.send(self.act(action).await);
                }
                () = tokio::time::sleep(wait), if self.tasks.len() < CONCURRENCY => {}
            }
        }
        tracing::info!(in_progress = self.tasks.len(), "relay: stopping");
        while let Some(joined) = self.tasks.join_next_with_id().await {
            self.finished(joined);
        }
    }

    /// Schedules everything in the spool (start-up, or after missed notifications).
    async fn rescan(&mut self) {
        let spool = self.ctx.spool.clone();
        match tokio::task::spawn_blocking(move || spool.load_all()).await {
            Ok(Ok(envelopes)) => {
                tracing::info!(messages = envelopes.len(), "relay: spool loaded");
                // A held message waits for `mailgate queue release`.
                for env in envelopes.into_iter().filter(|e| !e.held) {
                    let at = UNIX_EPOCH + Duration::from_secs(env.next_attempt);
                    self.schedule(env.id, at);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "relay: cannot read the spool"),
            Err(e) => tracing::error!(error = %e, "relay: spool scan failed"),
        }
    }

    fn schedule(&mut self, id: String, at: SystemTime) {
        if self.running.contains(&id) {
            return;
        }
        if let Some(&old) = self.scheduled.get(&id) {
            if old <= at {
                return;
            }
            self.due.remove(&(old, id.clone()));
        }
        self.scheduled.insert(id.clone(), at);
        self.due.insert((at, id));
    }

    fn claim_due(&mut self, now: SystemTime) {
        while self.tasks.len() < CONCURRENCY && !self.ctx.shutdown.is_cancelled() {
            let Some((at, _)) = self.due.first() else {
                break;
            };
            if *at > now {
                break;
            }
            let Some((_, id)) = self.due.pop_first() else {
                break;
            };
            self.scheduled.remove(&id);
            self.running.insert(id.clone());
            let ctx = self.ctx.clone();
            let task_id = id.clone();
            let handle = self
                .tasks
                .spawn(async move { deliver(&ctx, &task_id).await });
            self.task_ids.insert(handle.id(), id);
        }
    }

    fn finished(&mut self, joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>) {
        let task = match &joined {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let Some(id) = self.task_ids.remove(&task) else {
            return;
        };
        self.running.remove(&id);
        let now = self.ctx.clock.now();
        match joined {
            Ok((_, outcome)) => {
                if let Some(at) = outcome.retry_at {
                    self.schedule(id, at);
                }
                for new in outcome.queued {
                    self.schedule(new, now);
                }
            }
            Err(e) => {
                tracing::error!(id, error = %e, "relay: delivery task failed; will retry");
                self.schedule(id, now + CRASH_RETRY);
            }
        }
    }
}

/// Runs one delivery attempt for message `id`.
async fn deliver(ctx: &Ctx, id: &str) -> Outcome {
    let recent = ctx.spool.take_recent(id);
    let loaded = match recent {
        Some(loaded) => Ok(loaded),
        None => {
            let id = id.to_string();
            blocking(ctx, move |spool| {
                spool.open_message(&id, crate::spool::PRELOAD_LIMIT)
            })
            .await
        }
    };
    let (mut env, body) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            // Gone already (delivered before a rescan), or unreadable: nothing to retry.
            tracing::debug!(id, error = %e, "relay: message not loadable");
            return Outcome::default();
        }
    };
    if env.held {
        return Outcome::default();
    }
    let now = ctx.clock.now();
    let mut last_error: Option<(u16, String)> = None;
    let mut tally = tally::Tally::new(&env);

    if ctx.unmigrated.is_some() && pending(&env, true).next().is_some() {
        if ctx.shutdown.is_cancelled() {
            return Outcome::default();
        }
        let done = unmigrated::deliver(ctx, &mut env, &body, &mut last_error).await;
        tally.count(ctx, &env, Route::Relay);
        if done.is_none() {
            return Outcome::default();
        }
    }
    if pending(&env, true).next().is_some() {
        local::deliver_local(ctx, &mut env, &body, now, &mut last_error).await;
        tally.count(ctx, &env, Route::Local);
        if !done_cleanly(&env) {
            save(ctx, &env).await;
        }
    }
    if pending(&env, false).next().is_some() {
        if ctx.shutdown.is_cancelled() {
            return Outcome::default();
        }
        let done = remote::deliver(ctx, &mut env, &body, &mut last_error).await;
        tally.count(ctx, &env, Route::Relay);
        match done {
            // Fully delivered: it is removed next, so rewriting its envelope first would only
            // cost an fsync (a crash in between delivers again: at least once).
            Some(()) if done_cleanly(&env) => {}
            Some(()) => save(ctx, &env).await,
            // Shut down mid-session: the message stays due for the next start.
            None => return Outcome::default(),
        }
    }

    if !env.is_settled() {
        env.attempts += 1;
        if let Some(delay) = retry::next_attempt(ctx.settings.schedule(), env.attempts) {
            let at = now + delay;
            env.next_attempt = unix_secs(at);
            tracing::info!(id, attempts = env.attempts, retry_in = ?delay, "relay: deferred");
            let reason = last_error.as_ref().map(|(c, t)| format!("{c} {t}"));
            audit_delivery(ctx, &env, crate::audit::Kind::Defer, reason);
            tally.deferred(ctx, &env);
            save(ctx, &env).await;
            return Outcome {
                retry_at: Some(at),
                queued: vec![],
            };
        }
        let (code, why) = last_error.unwrap_or((451, "temporary failure".into()));
        let text = format!("gave up after {} attempts; last error: {why}", env.attempts);
        for r in env
            .recipients
            .iter_mut()
            .filter(|r| r.status == Status::Pending)
        {
            r.status = Status::Failed {
                code,
                text: text.clone(),
            };
        }
        tally.count(ctx, &env, Route::Relay);
        save(ctx, &env).await;
    }
    bounce::settle(ctx, env, &body).await
}

/// Records a temporary failure of recipient `i`: on the recipient, for `mailgate queue`, and
/// as the message's last error, for the log, the audit and the bounce if it comes to that.
fn deferred(env: &mut Envelope, i: usize, error: (u16, String), last: &mut Option<(u16, String)>) {
    if let Some(r) = env.recipients.get_mut(i) {
        r.last_error = Some(format!("{} {}", error.0, error.1));
    }
    *last = Some(error);
}

fn pending(env: &Envelope, local: bool) -> impl Iterator<Item = &Recipient> {
    env.recipients
        .iter()
        .filter(move |r| r.status == Status::Pending && r.local_user.is_some() == local)
}

async fn save(ctx: &Ctx, env: &Envelope) {
    let copy = env.clone();
    if let Err(e) = blocking(ctx, move |spool| spool.update(&copy)).await {
        // The next attempt repeats the step (at-least-once), so this is not fatal.
        tracing::error!(id = env.id, error = %e, "relay: cannot update envelope");
    }
}

/// Removes a finished message: out of the spool's index at once, its slot freed by a
/// background batch (one blocking-pool task drains whatever has accumulated).
fn remove(ctx: &Ctx, id: &str) {
    let Some(detached) = ctx.spool.detach(id) else {
        return;
    };
    let mut freeing = lock(&ctx.freeing);
    freeing.batch.push(detached);
    if freeing.busy {
        return;
    }
    freeing.busy = true;
    drop(freeing);
    let (spool, freeing) = (ctx.spool.clone(), ctx.freeing.clone());
    tokio::task::spawn_blocking(move || {
        loop {
            let batch = {
                let mut f = lock(&freeing);
                if f.batch.is_empty() {
                    f.busy = false;
                    return;
                }
                std::mem::take(&mut f.batch)
            };
            for d in batch {
                if let Err(e) = spool.free(d) {
                    tracing::error!(error = %e, "relay: cannot free the slot of a delivered message");
                }
            }
        }
    });
}

/// Waits until every removal has reached the spool files (at shutdown, so that a clean stop
/// never delivers a message twice after the restart).
async fn drain_removals(ctx: &Ctx) {
    for _ in 0..1000 {
        if !lock(&ctx.freeing).busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!("relay: removals still pending at shutdown");
}

fn lock(f: &std::sync::Mutex<Freeing>) -> std::sync::MutexGuard<'_, Freeing> {
    f.lock().unwrap_or_else(|e| e.into_inner())
}

/// Finished messages whose slots are being freed.
#[derive(Default)]
struct Freeing {
    batch: Vec<crate::spool::Detached>,
    busy: bool,
}

async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Spool) -> Result<T, crate::spool::Error> + Send + 'static,
) -> Result<T, crate::spool::Error> {
    let spool = ctx.spool.clone();
    tokio::task::spawn_blocking(move || f(&spool))
        .await
        .map_err(|e| crate::spool::Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_without_smarthost() {
        let s = Settings {
            hostname: "h".into(),
            maildir: "/m".into(),
            dead_letter: "/d".into(),
            upstream: None,
            unmigrated: None,
            audit: crate::audit::Auditor::disabled(),
            metrics: crate::metrics::Metrics::new(),
        };
        assert_eq!(s.schedule(), &retry::DEFAULT_SCHEDULE);
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let up = Upstream {
            address: "127.0.0.1:25".parse().unwrap(),
            server_name: "mx".into(),
            tls: crate::config::UpstreamTls::None,
            danger_accept_invalid_certs: false,
            username: Some("gw".into()),
            password: Some("hunter2-secret".into()),
            retry: vec![],
            command_timeout: Duration::from_secs(1),
            keep_idle: Duration::ZERO,
            auth: crate::config::UpstreamAuth::Auto,
            oauth: None,
        };
        let s = Settings {
            hostname: "h".into(),
            maildir: "/m".into(),
            dead_letter: "/d".into(),
            upstream: Some(up.clone()),
            unmigrated: None,
            audit: crate::audit::Auditor::disabled(),
            metrics: crate::metrics::Metrics::new(),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = Connector::new(up).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
