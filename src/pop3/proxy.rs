//! `[pop3.proxy]` on the session driver: a user whose Maildir has not moved yet (no
//! `<maildir>/<user>` here) is served from the old server. The login, the allowlist entry,
//! the audit, the policy, the throttle and the one-session-per-mailbox lock stay the
//! gateway's; the transaction commands (STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, CAPA,
//! QUIT) are parsed here, rebuilt, and sent upstream, and the answers relayed byte for byte.
//! A client that leaves without QUIT ends the upstream session without QUIT too, so the old
//! server enters no UPDATE state and deletes nothing (RFC 1939 §6).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;

use super::conn::Held;
use crate::gateway::Gateway;
use crate::io::Line;
use crate::maildir::MailboxError;
use crate::pop3::command;
use crate::pop3::machine::Session;
use crate::pop3::reply::Reply;
use crate::session::{Conn, Flow, Io};
use crate::upstream::proxy::{Forward, MultiLine, Pop3Proxy};
use crate::upstream::{Connection, Outcome};

/// Whether `user` has a Maildir here.
pub(super) async fn local(shared: &Gateway, user: &str) -> bool {
    let path = shared.config.delivery.maildir.join(user);
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

/// Serves `user`'s mailbox from the old server until the session ends. An error (the
/// mailbox is in use here, or the old server cannot be logged in to) goes back to the POP3
/// core as the result of opening the maildrop.
pub(super) async fn serve<S>(
    proxy: &Pop3Proxy,
    io: &mut Io<S>,
    session: &Session,
    conn: &Conn,
    held: &mut Held,
    shared: &Arc<Gateway>,
    user: &str,
) -> Result<Flow, MailboxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let password = held.password.take();
    let lease = match shared.mailboxes.acquire(user).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return Err(MailboxError::InUse),
        Err(e) => return Err(MailboxError::Io(std::io::Error::other(e))),
    };
    let (up, outcome) = proxy.open(user, password.as_ref()).await;
    drop(password);
    let Some(mut up) = up else {
        let why = match outcome {
            Outcome::Refused(text) => format!("the old server refused the login: {text}"),
            Outcome::Temporary(why) => why,
            Outcome::LoggedIn => "no connection".into(),
        };
        tracing::warn!(%user, "cannot open the mailbox on the old server: {why}");
        return Err(MailboxError::Io(std::io::Error::other(why)));
    };
    held.lease = Some(lease);
    tracing::info!(%user, "logged in; mailbox served from the old server");
    super::conn::allowlist_login(shared, session, conn, user).await;
    Reply::maildrop_proxied().encode(&mut io.out);
    let flow = relay(&mut up, io, shared, proxy.timeout()).await;
    held.lease = None;
    Ok(flow)
}

/// What went wrong with the old server while relaying.
const UPSTREAM_LOST: &str = "the old server stopped answering";

async fn relay<S>(
    up: &mut Connection,
    io: &mut Io<S>,
    shared: &Gateway,
    wait: std::time::Duration,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let idle = shared.config.limits.pop3_idle_timeout;
    loop {
        if io.flush().await.is_err() {
            return Flow::Closed;
        }
        let line = match timeout(idle, io.reader.next_line(&mut io.stream)).await {
            Ok(Ok(Some(Line::Complete(range)))) => io.reader.slice(range).to_vec(),
            Ok(Ok(Some(Line::TooLong))) => {
                Reply::line_too_long().encode(&mut io.out);
                continue;
            }
            // Gone without QUIT: no QUIT upstream either, so nothing is deleted there.
            Ok(Ok(None)) | Ok(Err(_)) => return Flow::Closed,
            Err(_) => {
                Reply::autologout().encode(&mut io.out);
                let _ = io.flush().await;
                return Flow::Closed;
            }
        };
        let cmd = match command::parse(&line) {
            Ok(cmd) => cmd,
            Err(e) => {
                Reply::syntax(&e).encode(&mut io.out);
                continue;
            }
        };
        let (line, multiline, quit) = match crate::upstream::proxy::forward(&cmd) {
            Forward::Local => {
                Reply::already_authenticated().encode(&mut io.out);
                continue;
            }
            Forward::Quit => ("QUIT\r\n".to_owned(), false, true),
            Forward::Send { line, multiline } => (line, multiline, false),
        };
        let answered = timeout(wait, async {
            up.write(line.as_bytes()).await?;
            let first = up.read_line().await?;
            io.out.extend_from_slice(&first);
            io.out.extend_from_slice(b"\r\n");
            if multiline && first.starts_with(b"+OK") {
                let mut scan = MultiLine::default();
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    up.read_some(&mut buf).await?;
                    if let Some(end) = scan.feed(&buf) {
                        io.out.extend_from_slice(&buf[..end]);
                        break;
                    }
                    io.out.extend_from_slice(&buf);
                    if io.out.len() >= 64 * 1024 {
                        io.flush().await?;
                    }
                }
            }
            Ok::<_, crate::upstream::ConnError>(())
        })
        .await;
        match answered {
            Ok(Ok(())) if quit => {
                let _ = io.flush().await;
                return Flow::Closed;
            }
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("{UPSTREAM_LOST}: {e}");
                Reply::maildrop_unavailable().encode(&mut io.out);
                let _ = io.flush().await;
                return Flow::Closed;
            }
            Err(_) => {
                tracing::warn!("{UPSTREAM_LOST}: no answer within {wait:?}");
                Reply::maildrop_unavailable().encode(&mut io.out);
                let _ = io.flush().await;
                return Flow::Closed;
            }
        }
    }
}
