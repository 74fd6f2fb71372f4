//! An admin's actions on queued messages (`mailgate queue flush|delete|hold|release`), carried
//! out by the delivery worker itself: it alone knows which message is being delivered right
//! now, so an action never races a delivery (a message in delivery is refused with a reason,
//! and the admin tries again a moment later). Each action is audited (`kind` `queue`).

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::{Ctx, Worker, blocking};
use crate::spool::{Envelope, Status};

/// What an admin asks of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Try now: one message, or every message not held.
    Flush(Option<String>),
    /// Remove the message from the spool: it is neither delivered nor bounced.
    Delete(String),
    /// Keep the message, but do not try it until released.
    Hold(String),
    /// Release a held message and try it now.
    Release(String),
}

impl Action {
    /// The past participle recorded in the audit event.
    fn done(&self) -> &'static str {
        match self {
            Action::Flush(_) => "flushed",
            Action::Delete(_) => "deleted",
            Action::Hold(_) => "held",
            Action::Release(_) => "released",
        }
    }
}

/// A request to the worker and where its answer goes: what was done, or why not.
pub(super) type Request = (Action, oneshot::Sender<Result<String, String>>);

/// How long a caller waits for the worker's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl Worker {
    /// Carries out `action`; the answer says what happened, in one line.
    pub(super) async fn act(&mut self, action: Action) -> Result<String, String> {
        let now = self.ctx.clock.now();
        match &action {
            Action::Flush(None) => {
                let ids: Vec<String> = self.scheduled.keys().cloned().collect();
                for id in &ids {
                    self.reschedule(id, now);
                }
                audit(&self.ctx, &action, "*", None);
                Ok(format!("{} message(s) due now", ids.len()))
            }
            Action::Flush(Some(id)) => {
                self.refuse_running(id)?;
                let env = load(&self.ctx, id).await?;
                if env.held {
                    return Err(format!("{id} is held; release it to try it now"));
                }
                self.reschedule(id, now);
                audit(&self.ctx, &action, id, Some(&env));
                Ok(format!("{id} due now"))
            }
            Action::Delete(id) => {
                self.refuse_running(id)?;
                let env = load(&self.ctx, id).await?;
                self.unschedule(id);
                let gone = id.clone();
                blocking(&self.ctx, move |spool| spool.remove(&gone))
                    .await
                    .map_err(|e| format!("{id}: {e}"))?;
                tracing::info!(id, "queue: deleted by an admin");
                audit(&self.ctx, &action, id, Some(&env));
                Ok(format!("{id} deleted"))
            }
            Action::Hold(id) | Action::Release(id) => {
                self.refuse_running(id)?;
                let mut env = load(&self.ctx, id).await?;
                let hold = matches!(action, Action::Hold(_));
                if env.held == hold {
                    return Err(format!(
                        "{id} is {} held",
                        if hold { "already" } else { "not" }
                    ));
                }
                env.held = hold;
                let copy = env.clone();
                blocking(&self.ctx, move |spool| spool.update(&copy))
                    .await
                    .map_err(|e| format!("{id}: {e}"))?;
                if hold {
                    self.unschedule(id);
                } else {
                    self.reschedule(id, now);
                }
                tracing::info!(id, action = action.done(), "queue: changed by an admin");
                audit(&self.ctx, &action, id, Some(&env));
                Ok(format!("{id} {}", action.done()))
            }
        }
    }

    fn refuse_running(&self, id: &str) -> Result<(), String> {
        if self.running.contains(id) {
            return Err(format!(
                "{id} is being delivered right now; try again in a moment"
            ));
        }
        Ok(())
    }

    fn unschedule(&mut self, id: &str) {
        if let Some(at) = self.scheduled.remove(id) {
            self.due.remove(&(at, id.to_string()));
        }
    }

    fn reschedule(&mut self, id: &str, at: SystemTime) {
        self.unschedule(id);
        self.schedule(id.to_string(), at);
    }
}

/// The envelope of queued message `id`, or why there is none.
async fn load(ctx: &Ctx, id: &str) -> Result<Envelope, String> {
    if !crate::spool::is_valid_id(id) || !ctx.spool.contains(id) {
        return Err(format!("no message {id} in the queue"));
    }
    let wanted = id.to_string();
    blocking(ctx, move |spool| spool.load(&wanted))
        .await
        .map_err(|e| format!("{id}: {e}"))
}

fn audit(ctx: &Ctx, action: &Action, id: &str, env: Option<&Envelope>) {
    let now = crate::audit::event::rfc3339(ctx.clock.now());
    let mut e = crate::audit::Event::new(
        crate::audit::Kind::Queue,
        "control",
        now,
        crate::audit::Outcome::Success,
    );
    e.queue_id = Some(id.to_string());
    e.mechanism = Some(crate::allowlist::ADMIN_MECHANISM.to_string());
    e.reason = Some(action.done().to_string());
    if let Some(env) = env {
        e.user = env.authorized_as.clone();
        let pending = env
            .recipients
            .iter()
            .filter(|r| r.status == Status::Pending)
            .count();
        e.recipients = Some(u32::try_from(pending).unwrap_or(u32::MAX));
    }
    ctx.settings.audit.record(e);
}
