//! Delivery to another SMTP server: the pending remote recipients handed to the smarthost in
//! one session, and what a receiving server (the smarthost, or the old server for users not
//! moved yet) answered, recorded per recipient.

use super::{Ctx, Message, RemoteError, Reply, Smarthost, Status, relay};
use crate::spool::{Body, Envelope};

/// Hands the pending remote recipients to the smarthost in one session. `None` if shutdown
/// interrupted the session (nothing recorded).
pub(super) async fn deliver(
    ctx: &Ctx,
    env: &mut Envelope,
    body: &Body,
    last_error: &mut Option<(u16, String)>,
) -> Option<()> {
    let idx: Vec<usize> = env
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == Status::Pending && r.local_user.is_none())
        .map(|(i, _)| i)
        .collect();
    let (connector, tokens) = match &ctx.upstream {
        Smarthost::Ready { connector, tokens } => (connector, tokens.as_deref()),
        Smarthost::None => {
            for &i in &idx {
                let text = "5.3.0 no smarthost configured for remote delivery".to_string();
                env.recipients[i].status = Status::Failed { code: 554, text };
            }
            return Some(());
        }
        Smarthost::Broken(why) => {
            for &i in &idx {
                let error = (451, format!("4.3.0 smarthost unusable: {why}"));
                super::deferred(env, i, error, last_error);
            }
            return Some(());
        }
    };
    let addresses = addresses(env, &idx);
    let msg = Message {
        mail_from: &env.mail_from,
        recipients: &addresses,
        body,
        size: env.size,
    };
    let result = tokio::select! {
        () = ctx.shutdown.cancelled() => return None,
        r = relay(ctx, connector, tokens, &msg) => r,
    };
    record_outcome(env, &idx, result, last_error, "smarthost");
    Some(())
}

/// The addresses of the recipients at `idx`, for the session with the receiving server.
pub(super) fn addresses(env: &Envelope, idx: &[usize]) -> Vec<String> {
    idx.iter()
        .map(|&i| env.recipients[i].address.clone())
        .collect()
}

/// Records what the receiving server (`to`: the smarthost, or the old server) answered for the
/// recipients at `idx`: delivered, failed for a 5xx, retried for a 4xx (`last_error`).
pub(super) fn record_outcome(
    env: &mut Envelope,
    idx: &[usize],
    result: Result<Vec<Reply>, RemoteError>,
    last_error: &mut Option<(u16, String)>,
    to: &str,
) {
    match result {
        Ok(replies) => {
            for (&i, reply) in idx.iter().zip(replies) {
                let r = &mut env.recipients[i];
                if !reply.is_success() && !reply.is_permanent() {
                    tracing::info!(id = env.id, rcpt = r.address, to, %reply, "relay: rcpt deferred");
                    super::deferred(env, i, (reply.code, reply.detail()), last_error);
                    continue;
                }
                if reply.is_success() {
                    tracing::info!(id = env.id, rcpt = r.address, to, %reply, "relay: relayed");
                    r.status = Status::Delivered;
                } else {
                    tracing::info!(id = env.id, rcpt = r.address, to, %reply, "relay: rejected");
                    r.status = Status::Failed {
                        code: reply.code,
                        text: reply.detail(),
                    };
                }
            }
        }
        Err(e) if e.is_permanent() => {
            tracing::info!(id = env.id, to, error = %e, "relay: message rejected");
            let (code, text) = match e.reply() {
                Some(reply) => (reply.code, reply.detail()),
                None => (553, e.to_string()),
            };
            for &i in idx {
                env.recipients[i].status = Status::Failed {
                    code,
                    text: text.clone(),
                };
            }
        }
        Err(e) => {
            tracing::warn!(id = env.id, to, error = %e, "relay: deferred");
            let code = e.reply().map_or(451, |r| r.code);
            for &i in idx {
                super::deferred(env, i, (code, e.to_string()), last_error);
            }
        }
    }
}
