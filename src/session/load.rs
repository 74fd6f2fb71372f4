//! How full one service's connection cap is (port 25, submission or POP3), for the stress
//! rule that Postfix's stress mode also applies: while a service holds [`STRESS_AT`] of its
//! `max_connections` or more, its sessions that have not authenticated get at most
//! [`STRESS_IDLE`] to send their next command (a session already waiting when the stress
//! begins notices it within another [`STRESS_IDLE`]: sessions look at the flag every
//! [`STRESS_IDLE`] rather than join a shared waiter list on every wait), so that idle
//! connections from a flood make room for real clients within seconds instead of minutes. Authenticated sessions keep their
//! timeouts. Stress ends below [`CALM_AT`] (a gap, so that it does not flap at the edge).
//!
//! Under stress the sessions that wait without having authenticated are also registered
//! ([`Load::idle_since`]), so that a new client arriving at a full service can take the place
//! of the one that has been idle longest ([`Load::evict_oldest`]) rather than be refused.
//! Nothing is registered while the service is calm.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// The idle timeout of a session that has not authenticated, while its service is under
/// stress.
pub const STRESS_IDLE: Duration = Duration::from_secs(10);
/// Stress begins at this share of `max_connections` (in percent).
pub const STRESS_AT: usize = 80;
/// And ends below this share.
pub const CALM_AT: usize = 60;

/// The open connections of one service against its cap.
#[derive(Debug)]
pub struct Load {
    name: &'static str,
    max: usize,
    in_use: AtomicUsize,
    stressed: AtomicBool,
    /// Sessions waiting unauthenticated under stress, oldest first.
    idle: Mutex<BTreeMap<(Instant, u64), oneshot::Sender<()>>>,
    next: AtomicU64,
}

/// A session's place among the idle unauthenticated ones; removed on drop.
#[derive(Debug)]
pub struct IdleTicket<'a> {
    load: &'a Load,
    key: (Instant, u64),
    evicted: oneshot::Receiver<()>,
}

impl IdleTicket<'_> {
    /// Completes when the session is chosen to make room for a new client.
    pub async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for IdleTicket<'_> {
    fn drop(&mut self) {
        self.load.idle_map().remove(&self.key);
    }
}

impl Load {
    /// A service called `name` (for the log) with a cap of `max` connections.
    pub fn new(name: &'static str, max: usize) -> Load {
        Load {
            name,
            max: max.max(1),
            in_use: AtomicUsize::new(0),
            stressed: AtomicBool::new(false),
            idle: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    fn idle_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Instant, u64), oneshot::Sender<()>>> {
        // Plain map operations: consistent after every step.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session that has waited, not authenticated, since `since`.
    pub fn idle_since(&self, since: Instant) -> IdleTicket<'_> {
        let key = (since, self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, evicted) = oneshot::channel();
        self.idle_map().insert(key, tx);
        IdleTicket {
            load: self,
            key,
            evicted,
        }
    }

    /// Tells the session idle longest (not authenticated) to close; false if there is none.
    pub fn evict_oldest(&self) -> bool {
        let mut idle = self.idle_map();
        while let Some((_, tx)) = idle.pop_first() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }

    /// A connection is admitted.
    pub fn enter(&self) {
        let n = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        if n * 100 >= self.max * STRESS_AT && !self.stressed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = self.name,
                connections = n,
                max = self.max,
                "connections near the cap: sessions not authenticated get {}s of idle time",
                STRESS_IDLE.as_secs()
            );
        }
    }

    /// A connection ended.
    pub fn leave(&self) {
        let n = self
            .in_use
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        if n * 100 < self.max * CALM_AT && self.stressed.swap(false, Ordering::Relaxed) {
            tracing::info!(
                service = self.name,
                connections = n,
                "connections back to normal"
            );
        }
    }

    /// Whether the service is under stress.
    pub fn stressed(&self) -> bool {
        self.stressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_begins_at_80_percent_and_ends_below_60() {
        let load = Load::new("smtp", 10);
        for _ in 0..7 {
            load.enter();
        }
        assert!(!load.stressed());
        load.enter();
        assert!(load.stressed());
        load.leave();
        load.leave();
        assert!(load.stressed(), "6 of 10 is not calm yet");
        load.leave();
        assert!(!load.stressed());
    }

    #[tokio::test]
    async fn the_session_idle_longest_is_evicted_first() {
        let load = Load::new("pop3", 10);
        assert!(!load.evict_oldest());
        let t0 = Instant::now();
        let mut newer = load.idle_since(t0 + Duration::from_secs(5));
        let mut older = load.idle_since(t0);
        let gone = load.idle_since(t0 + Duration::from_secs(1));
        drop(gone);
        assert!(load.evict_oldest());
        tokio::time::timeout(Duration::from_secs(1), older.evicted())
            .await
            .expect("the oldest is told");
        assert!(load.evict_oldest());
        tokio::time::timeout(Duration::from_secs(1), newer.evicted())
            .await
            .expect("then the next");
        assert!(!load.evict_oldest());
    }
}
