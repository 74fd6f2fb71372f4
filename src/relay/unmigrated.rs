//! `[delivery] route_unmigrated_to`: mail for a local user whose mailbox has not moved yet (no
//! `<maildir>/<user>` here) goes to the old server's SMTP instead of a new, empty Maildir,
//! which would otherwise hide the user's old mail by switching them to local service. The
//! moment the Maildir exists (`mailgate import`), their mail is delivered here.
//!
//! One session per message carries all such recipients; replies are recorded per recipient as
//! for the smarthost (delivered, failed for a 5xx, retried for a 4xx).

use std::time::Duration;

use super::{Ctx, Message, Status};
use crate::config::{Upstream, UpstreamAuth, UpstreamTls};
use crate::spool::{Body, Envelope};

/// The connection settings for the old server's SMTP at `address`: plain SMTP (a private
/// link between the gateway and the box it replaces), no AUTH, a session per message.
pub(super) fn upstream(address: std::net::SocketAddr) -> Upstream {
    Upstream {
        address,
        server_name: address.ip().to_string(),
        tls: UpstreamTls::None,
        danger_accept_invalid_certs: false,
        username: None,
        password: None,
        retry: super::retry::DEFAULT_SCHEDULE.to_vec(),
        command_timeout: Duration::from_secs(60),
        keep_idle: Duration::ZERO,
        auth: UpstreamAuth::Auto,
        oauth: None,
    }
}

/// Sends the pending local recipients without a Maildir here to the old server. `None` if
/// shutdown interrupted the session (nothing recorded).
pub(super) async fn deliver(
    ctx: &Ctx,
    env: &mut Envelope,
    body: &Body,
    last_error: &mut Option<(u16, String)>,
) -> Option<()> {
    let connector = ctx.unmigrated.as_ref()?;
    let mut idx = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        let Some(user) = r.local_user.as_deref() else {
            continue;
        };
        if r.status != Status::Pending {
            continue;
        }
        let here = tokio::fs::metadata(ctx.settings.maildir.join(user))
            .await
            .is_ok_and(|m| m.is_dir());
        if !here {
            idx.push(i);
        }
    }
    if idx.is_empty() {
        return Some(());
    }
    let addresses = super::remote::addresses(env, &idx);
    let msg = Message {
        mail_from: &env.mail_from,
        recipients: &addresses,
        body,
        size: env.size,
    };
    let result = tokio::select! {
        () = ctx.shutdown.cancelled() => return None,
        r = connector.send(&ctx.settings.hostname, &msg) => r.map_err(Into::into),
    };
    super::remote::record_outcome(env, &idx, result, last_error, "old-server");
    Some(())
}
