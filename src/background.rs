//! The gateway's background tasks: allowlist and throttle housekeeping (expiry, the periodic
//! snapshot), the users-file watcher, and the legacy-authentication digest. Each runs until the
//! shutdown token fires; [`spawn`] starts them all on the server's task tracker.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Gateway;

/// Starts every background task on `tracker`.
pub fn spawn(
    tracker: &TaskTracker,
    gateway: &Arc<Gateway>,
    users_stamp: Option<crate::auth::UsersStamp>,
    shutdown: &CancellationToken,
) {
    tracker.spawn(housekeeping(gateway.clone(), shutdown.clone()));
    tracker.spawn(clean_maildirs(gateway.clone(), shutdown.clone()));
    tracker.spawn(watch_users(gateway.clone(), users_stamp, shutdown.clone()));
    // Running even without a recipient: a reload may set one.
    if gateway.config.audit.is_some() {
        tracker.spawn(digests(gateway.clone(), shutdown.clone()));
    }
}

/// Purges expired allowlist and throttle entries and snapshots the allowlist periodically.
async fn housekeeping(shared: Arc<Gateway>, shutdown: CancellationToken) {
    let mut tick = ticker(tokio::time::Instant::now(), Duration::from_secs(30));
    let mut rounds = 0u32;
    while next_tick(&mut tick, &shutdown).await {
        let now = shared.clock.now();
        let allowlist = shared.allowlist.clone();
        // A sweep walks every entry (and audits each expired one); keep it off the runtime's
        // worker threads.
        let runtime = tokio::runtime::Handle::current();
        let swept = tokio::task::spawn_blocking(move || runtime.block_on(allowlist.expire(now)));
        if let Ok(Err(e)) = swept.await {
            tracing::warn!("allowlist expiry failed: {e}");
        }
        shared.throttle.purge(now).await;
        rounds += 1;
        if rounds.is_multiple_of(10) || shared.allowlist.wants_persist() {
            let shared = shared.clone();
            let runtime = tokio::runtime::Handle::current();
            let _ = tokio::task::spawn_blocking(move || {
                runtime.block_on(save_allowlist(&shared));
                runtime.block_on(save_known_networks(&shared));
                save_notices(&shared);
            })
            .await;
        }
    }
}

/// A timer for a periodic background job: first at `start`, then every `period`; a tick
/// missed while the job ran is not made up for.
fn ticker(start: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick; `false` once `shutdown` fires.
async fn next_tick(tick: &mut tokio::time::Interval, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = shutdown.cancelled() => false,
    }
}

/// How often the Maildirs' `tmp/` folders are swept (and once at start).
const TMP_SWEEP: Duration = Duration::from_secs(24 * 3600);

/// Removes stale files from every mailbox's `tmp/` ([`crate::maildir::clean_tmp`]) at start
/// and daily: a delivery cut short by a crash leaves its file there, and nothing else would
/// ever remove it.
async fn clean_maildirs(shared: Arc<Gateway>, shutdown: CancellationToken) {
    let mut tick = ticker(tokio::time::Instant::now(), TMP_SWEEP);
    while next_tick(&mut tick, &shutdown).await {
        let root = shared.config.delivery.maildir.clone();
        let now = shared.clock.now();
        let before = now
            .checked_sub(crate::maildir::STALE_TMP)
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        let swept =
            tokio::task::spawn_blocking(move || crate::maildir::clean_tmp(&root, before)).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(files = n, "removed stale files from Maildir tmp/ folders"),
            Ok(Err(e)) => tracing::warn!("cannot sweep the Maildir tmp/ folders: {e}"),
            Err(e) => tracing::warn!("Maildir tmp/ sweep failed: {e}"),
        }
    }
}

/// How often the users file is checked for a change.
const USERS_CHECK: Duration = Duration::from_secs(2);

/// Reloads the users file when it changes, as Dovecot re-reads a passwd-file: a user added
/// with `mailgate passwd` or by an edit can log in within [`USERS_CHECK`], without a restart
/// or SIGHUP. A file that does not parse (say, saved half-way) keeps the users loaded before;
/// the next change is tried again.
async fn watch_users(
    shared: Arc<Gateway>,
    mut seen: Option<crate::auth::UsersStamp>,
    shutdown: CancellationToken,
) {
    let path = shared.config.auth.users_file.clone();
    let mut tick = ticker(tokio::time::Instant::now(), USERS_CHECK);
    while next_tick(&mut tick, &shutdown).await {
        let shared = shared.clone();
        let path = path.clone();
        let last = seen;
        seen = tokio::task::spawn_blocking(move || {
            let stamp = crate::auth::users_file_stamp(&path);
            if stamp.is_some() && stamp != last {
                let _ = shared.reload_users();
            }
            stamp.or(last)
        })
        .await
        .unwrap_or(last);
    }
}

/// Sends the legacy-authentication digest to `[notices] digest_to` every `digest_interval`,
/// as in force now: a reload that changes either restarts the period.
async fn digests(shared: Arc<Gateway>, shutdown: CancellationToken) {
    loop {
        let settings = shared.notices_config();
        let due = async {
            match settings.digest_to {
                Some(_) => tokio::time::sleep(settings.digest_interval).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.notices_changed.notified() => continue,
            _ = due => {}
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || send_digest(&shared, &settings)).await;
    }
}

fn send_digest(shared: &Gateway, settings: &crate::config::Notices) {
    let (Some(to), Some(audit)) = (&settings.digest_to, &shared.config.audit) else {
        return;
    };
    let period = settings.digest_interval;
    let now = shared.clock.now();
    let files = crate::audit::files(&audit.path, audit.keep);
    let host = &shared.config.hostname;
    match crate::notices::digest(&files, period, to, host, now) {
        Ok(Some(text)) => {
            let unique = format!("{}.digest", crate::clock::unix_secs(now));
            match crate::maildir::deliver(
                &shared.config.delivery.maildir,
                to,
                &unique,
                host,
                text.as_bytes(),
            ) {
                Ok(_) => tracing::info!(to = %to, "legacy-auth digest delivered"),
                Err(e) => tracing::warn!(to = %to, "cannot deliver the digest: {e}"),
            }
        }
        Ok(None) => tracing::debug!("no legacy authentication in the digest period"),
        Err(e) => tracing::warn!("cannot build the digest: {e}"),
    }
}

pub(crate) fn save_notices(shared: &Gateway) {
    let path = crate::gateway::notices_file(&shared.config);
    if let Err(e) = shared.notices.save(&path, shared.clock.now()) {
        tracing::warn!(file = %path.display(), "cannot save the notices sent: {e}");
    }
}

/// Saves the throttle's known client networks (dropping stale ones first).
pub(crate) async fn save_known_networks(shared: &Gateway) {
    let known = shared.throttle.known();
    let now = shared.clock.now();
    if let Err(e) = known.purge(now).await {
        tracing::warn!("cannot purge the known client networks: {e}");
    }
    if let Err(e) = known.persist(now).await {
        tracing::warn!("cannot save the known client networks: {e}");
    }
}

/// Saves the allowlist where its store needs it (the memory store's snapshot file). The file
/// is written inside the call: run it off the async workers, or at shutdown.
pub(crate) async fn save_allowlist(shared: &Gateway) {
    let pbs = &shared.config.pop_before_smtp;
    if !pbs.enabled {
        return;
    }
    match shared.allowlist.persist(shared.clock.now()).await {
        Ok(n) => tracing::debug!(entries = n, file = %pbs.snapshot.display(), "allowlist saved"),
        Err(e) => tracing::warn!("cannot save allowlist: {e}"),
    }
}
