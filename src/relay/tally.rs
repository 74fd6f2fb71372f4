//! Counting one delivery attempt's results into the mail-flow metrics: each recipient is
//! counted once, when it leaves the pending state (delivered locally, relayed, or failed for
//! good), and the delivered ones also by how long after the message's arrival.

use super::{Ctx, Status};
use crate::metrics::{Route, Stage};
use crate::spool::Envelope;

/// Which recipients were still pending, so each is counted once per attempt.
pub(super) struct Tally {
    pending: Vec<bool>,
}

impl Tally {
    /// The recipients pending at the start of an attempt.
    pub(super) fn new(env: &Envelope) -> Tally {
        Tally {
            pending: env
                .recipients
                .iter()
                .map(|r| r.status == Status::Pending)
                .collect(),
        }
    }

    /// Counts the recipients settled since the last call, delivered ones by `route`.
    pub(super) fn count(&mut self, ctx: &Ctx, env: &Envelope, route: Route) {
        let flow = &ctx.settings.metrics.flow;
        let waited = crate::spool::arrival(&env.id)
            .and_then(|at| ctx.clock.now().duration_since(at).ok())
            .unwrap_or_default()
            .as_secs_f64();
        for (was, r) in self.pending.iter_mut().zip(&env.recipients) {
            if !*was || r.status == Status::Pending {
                continue;
            }
            *was = false;
            match (&r.status, route) {
                (Status::Delivered, Route::Local) => {
                    flow.messages(Stage::Delivered, 1);
                    flow.delivered_after(route, waited);
                }
                (Status::Delivered, Route::Relay) => {
                    flow.messages(Stage::Relayed, 1);
                    flow.delivered_after(route, waited);
                }
                _ => flow.messages(Stage::Bounced, 1),
            }
        }
    }

    /// Counts the recipients left pending by an attempt that will be retried.
    pub(super) fn deferred(&self, ctx: &Ctx, env: &Envelope) {
        let n = env
            .recipients
            .iter()
            .filter(|r| r.status == Status::Pending)
            .count();
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        ctx.settings.metrics.flow.messages(Stage::Deferred, n);
    }
}
