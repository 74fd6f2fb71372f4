//! How full one service's connection cap is (port 25, submission or POP3), for the stress
//! rule that Postfix's stress mode also applies: while a service holds [`STRESS_AT`] of its
//! `max_connections` or more, its sessions that have not authenticated get at most
//! [`STRESS_IDLE`] to send their next command, so that idle connections from a flood make
//! room for real clients within seconds instead of minutes. Authenticated sessions keep their
//! timeouts. Stress ends below [`CALM_AT`] (a gap, so that it does not flap at the edge).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

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
    began: Notify,
}

impl Load {
    /// A service called `name` (for the log) with a cap of `max` connections.
    pub fn new(name: &'static str, max: usize) -> Load {
        Load {
            name,
            max: max.max(1),
            in_use: AtomicUsize::new(0),
            stressed: AtomicBool::new(false),
            began: Notify::new(),
        }
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
            // Sessions already waiting shorten their wait now.
            self.began.notify_waiters();
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

    /// Completes when stress begins (for a session already waiting).
    pub async fn stress_began(&self) {
        self.began.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stress_begins_at_80_percent_and_ends_below_60() {
        let load = std::sync::Arc::new(Load::new("smtp", 10));
        let waiter = {
            let load = load.clone();
            tokio::spawn(async move { load.stress_began().await })
        };
        tokio::task::yield_now().await;
        for _ in 0..7 {
            load.enter();
        }
        assert!(!load.stressed());
        load.enter();
        assert!(load.stressed());
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("a waiting session is told")
            .unwrap();
        load.leave();
        load.leave();
        assert!(load.stressed(), "6 of 10 is not calm yet");
        load.leave();
        assert!(!load.stressed());
    }
}
