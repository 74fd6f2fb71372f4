//! The POP3 connection loop: reads command lines with the pre- and post-authentication idle
//! timeouts, feeds the sans-IO machine, and carries out its actions: STLS (RFC 2595 §4),
//! opening and locking the maildrop (RFC 1939 §8), streaming RETR/TOP from Maildir, committing
//! deletions in the UPDATE state, and entering the POP-before-SMTP allowlist on a login.
//!
//! As in smtp/conn.rs, an idle connection holds little: the TLS handshake and the session
//! after it, credential checks, the delay after a failed login, opening the maildrop, message
//! transfers and the commit run as boxed futures, and the read and reply buffers are given back
//! while the session waits for the client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::{Event, Kind, Record};
use crate::io::{Line, LineReader, flush};
use crate::maildir::{self, MailboxError};
use crate::pop3::machine::{Action, Output, Session, Settings};
use crate::pop3::reply::{MessageEncoder, Reply};
use crate::server::Shared;

/// Room reserved for the replies to one command (or one pipelined batch); the buffer is
/// released while the session waits for the client.
const REPLY_CAPACITY: usize = 512;

enum End<S> {
    Closed,
    StartTls(S, Box<Session>),
}

/// Releases the maildrop lock when the session ends, however it ends.
struct MailboxLock {
    user: String,
    shared: Arc<Shared>,
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        self.shared.mailboxes_in_use.remove(&self.user);
    }
}

/// Serves one POP3 connection from accept to close.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let id = shared.next_session_id();
    let span = tracing::info_span!("pop3", session = %id, peer = %peer);
    // Instrument rather than enter: see smtp/conn.rs.
    serve_in_span(tcp, peer, implicit_tls, shared, shutdown, id)
        .instrument(span)
        .await;
}

async fn serve_in_span(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    id: String,
) {
    if implicit_tls {
        // Boxed: the handshake and the TLS stream are large, and this task only waits on them.
        Box::pin(serve_tls(tcp, None, peer, &shared, &shutdown, &id)).await;
        return;
    }
    let session = Box::new(Session::new(settings(&shared, peer, None, &id, "pop3")));
    let (tcp, session) = match phase(tcp, session, peer, &shared, &shutdown, true).await {
        End::Closed => return,
        End::StartTls(tcp, session) => (tcp, session),
    };
    Box::pin(serve_tls(tcp, Some(session), peer, &shared, &shutdown, &id)).await;
}

/// The TLS part of a connection: the handshake, then the session over TLS. `before` is the
/// session that accepted STLS (`None` for implicit TLS, which greets after the handshake).
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    before: Option<Box<Session>>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    id: &str,
) {
    let (what, listener) = if before.is_some() {
        ("STLS", "pop3")
    } else {
        ("TLS", "pop3s")
    };
    let Some((tls, server_tls)) = shared.accept_tls(tcp, what).await else {
        return;
    };
    let settings = settings(
        shared,
        peer,
        Some((tls.get_ref().1, &server_tls.end_point)),
        id,
        listener,
    );
    let (session, greet) = match before {
        Some(session) => (Box::new(session.after_tls(settings)), false),
        None => (Box::new(Session::new(settings)), true),
    };
    let _ = phase(tls, session, peer, shared, shutdown, greet).await;
}

fn settings(
    shared: &Shared,
    peer: SocketAddr,
    tls: Option<crate::server::TlsPhase<'_>>,
    id: &str,
    listener: &'static str,
) -> Settings {
    let tls_active = tls.is_some();
    let cfg = &shared.config;
    let ip = crate::canonical_ip(peer.ip());
    let apop_timestamp = cfg.auth.apop.then(|| {
        format!(
            "<{}.{}@{}>",
            id,
            crate::clock::unix_secs(shared.clock.now()),
            cfg.hostname
        )
    });
    Settings {
        hostname: cfg.hostname.clone(),
        sasl: shared.sasl_environment(id, tls),
        mechanisms: shared.mechanisms.clone(),
        plaintext_allowed: tls_active || shared.networks().plaintext_allowed(ip),
        stls_available: !tls_active,
        tls_active,
        apop_timestamp,
        policy: shared.policy(),
        listener,
        peer: peer.ip(),
        tls_info: tls.map(|(c, _)| crate::tls::describe(c)),
        max_failures: cfg.auth.max_failures,
        max_errors: cfg.limits.max_errors,
    }
}

async fn phase<S>(
    mut stream: S,
    // Boxed: an async fn keeps its arguments apart from its locals, so a large one would be
    // stored twice in every connection's task.
    mut session: Box<Session>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    greet: bool,
) -> End<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &shared.config.limits;
    let mut reader = LineReader::new(session.line_limit());
    // Replies are encoded here and written in one go; allocated when there is one to send.
    let mut out = Vec::new();
    let mut lock: Option<MailboxLock> = None;
    if greet {
        session.greeting().encode(&mut out);
        if flush(&mut stream, &mut out).await.is_err() {
            return End::Closed;
        }
    }
    loop {
        if !reader.has_line() {
            if flush(&mut stream, &mut out).await.is_err() {
                return End::Closed;
            }
            // Waiting for the client: hold no buffers meanwhile.
            reader.shrink();
            out = Vec::new();
        }
        reader.set_max_line(session.line_limit());
        let idle = if lock.is_some() {
            limits.pop3_idle_timeout
        } else {
            limits.preauth_idle_timeout
        };
        let line = tokio::select! {
            r = timeout(idle, reader.next_line(&mut stream)) => r,
            _ = shutdown.cancelled() => {
                Reply::shutting_down().encode(&mut out);
                let _ = flush(&mut stream, &mut out).await;
                return End::Closed;
            }
        };
        // A command arrived (or the wait ended): room for its replies in one allocation.
        out.reserve(REPLY_CAPACITY);
        let output = match line {
            Err(_) => {
                // RFC 1939 §3: an autologout timer ends the session without entering UPDATE.
                Reply::autologout().encode(&mut out);
                let _ = flush(&mut stream, &mut out).await;
                tracing::info!("idle timeout");
                return End::Closed;
            }
            Ok(Err(_)) | Ok(Ok(None)) => return End::Closed,
            Ok(Ok(Some(Line::TooLong))) => session.handle_overlong(),
            Ok(Ok(Some(Line::Complete(range)))) => {
                let line = reader.slice(range.clone());
                let step = crate::io::credential_step(
                    session.in_sasl(),
                    session.sasl_next_verifies(),
                    line,
                );
                if let Some(reserve) = step {
                    // Boxed: the throttle wait is rarely live.
                    Box::pin(shared.credential_slot(peer.ip(), reserve)).await;
                    let line = reader.slice(range.clone());
                    let out = session.handle_line(line);
                    reader.wipe(range);
                    out
                } else {
                    session.handle_line(line)
                }
            }
        };
        // Most commands only answer; the rest (login outcomes, RETR/TOP, QUIT, STLS) run
        // boxed, so their state is no part of every waiting connection.
        // (A match by value: borrowing `output` to test it would keep its storage in the
        // connection's future across the await below.)
        let flow = match output {
            Output {
                reply,
                action: Action::Continue,
                audit: None,
                ..
            } => {
                reply.encode(&mut out);
                Flow::Next
            }
            output => {
                let act = act(
                    output,
                    &mut stream,
                    &mut out,
                    &mut lock,
                    &mut session,
                    peer,
                    shared,
                );
                Box::pin(act).await
            }
        };
        match flow {
            Flow::Next => {}
            Flow::Closed => return End::Closed,
            Flow::StartTls => {
                // RFC 2595 §4 / RFC 3207 §4.2: never execute plaintext sent before TLS.
                reader.clear();
                return End::StartTls(stream, session);
            }
        }
    }
}

/// What the command loop does after [`act`].
enum Flow {
    /// Read the next command.
    Next,
    /// The session is over.
    Closed,
    /// STLS was accepted and its reply sent: drop buffered input, hand over the stream.
    StartTls,
}

/// Records the audit fact of `output`, encodes its reply and carries out its action, following
/// up with the machine's answer where the action produced one (the maildrop opened, the
/// deletions committed).
async fn act<S>(
    mut output: Output,
    stream: &mut S,
    out: &mut Vec<u8>,
    lock: &mut Option<MailboxLock>,
    session: &mut Session,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Flow
where
    S: AsyncWrite + Unpin,
{
    loop {
        if let Some(record) = output.audit.take() {
            audit(shared, session, peer, record);
        }
        match output.action {
            Action::Continue => output.reply.encode(out),
            Action::Close => {
                // The UPDATE state is done (deletions committed): release the maildrop before
                // the final reply rather than just after it (RFC 1939 §6 names no order that a
                // client could see), so a client that logs in again right after its +OK to
                // QUIT is not told -ERR [IN-USE] by its own ending session. Seen under load in
                // the audit tests.
                *lock = None;
                output.reply.encode(out);
                let _ = flush(stream, out).await;
                return Flow::Closed;
            }
            Action::StartTls => {
                output.reply.encode(out);
                if flush(stream, out).await.is_err() {
                    return Flow::Closed;
                }
                return Flow::StartTls;
            }
            Action::AuthFailed => {
                let note = output.note.unwrap_or("invalid credentials");
                tracing::info!(
                    user = output.user.as_deref().unwrap_or("-"),
                    "login failed: {note}"
                );
                let delay = shared.auth_failure_delay(peer.ip(), output.user.as_deref());
                tokio::time::sleep(delay).await;
                output.reply.encode(out);
                if output.close {
                    let mut lockout = Record::new(
                        Kind::Lockout,
                        "-",
                        crate::audit::Class::Insecure,
                        crate::audit::Outcome::Failure,
                    );
                    lockout.user_given = output.user.take();
                    lockout.reason = Some("too many failed logins".into());
                    audit(shared, session, peer, lockout);
                    let _ = flush(stream, out).await;
                    return Flow::Closed;
                }
            }
            Action::Verify(check) => {
                output = session.handle_verified(shared.verifier.verify(check).await);
                continue;
            }
            Action::OpenMailbox { user, method } => {
                shared.auth_succeeded(peer.ip(), &user);
                let (result, new_lock) = open_mailbox(shared, &user).await;
                match &result {
                    Ok(mb) => {
                        tracing::info!(%user, %method, messages = mb.messages.len(), "logged in");
                        allowlist_login(shared, session, peer, &user);
                    }
                    Err(MailboxError::InUse) => {
                        tracing::info!(%user, %method, "login refused: mailbox in use");
                    }
                    Err(MailboxError::Io(e)) => {
                        tracing::error!(%user, "cannot open mailbox: {e}");
                    }
                }
                *lock = new_lock;
                output = session.handle_mailbox(result);
                continue;
            }
            Action::SendMessage { path, top } => {
                if let Err(e) = send_message(stream, out, output.reply, &path, top).await {
                    tracing::warn!(path = %path.display(), "cannot send message: {e}");
                    return Flow::Closed;
                }
            }
            Action::Commit { delete } => {
                let n = delete.len();
                let ok = match tokio::task::spawn_blocking(move || maildir::remove(&delete)).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::error!("deleting messages failed: {e}");
                        false
                    }
                    Err(_) => false,
                };
                if ok && n > 0 {
                    tracing::info!(deleted = n, "messages deleted");
                }
                output = session.handle_commit(ok);
                continue;
            }
        }
        return Flow::Next;
    }
}

/// Locks and lists the maildrop.
async fn open_mailbox(
    shared: &Arc<Shared>,
    user: &str,
) -> (Result<maildir::Mailbox, MailboxError>, Option<MailboxLock>) {
    if !shared.mailboxes_in_use.insert(user.to_string()) {
        return (Err(MailboxError::InUse), None);
    }
    let lock = MailboxLock {
        user: user.to_string(),
        shared: shared.clone(),
    };
    let root = shared.config.delivery.maildir.clone();
    let (owned, cache) = (user.to_string(), shared.mailbox_cache.clone());
    match tokio::task::spawn_blocking(move || cache.open(&root, &owned)).await {
        Ok(Ok(mb)) => (Ok(mb), Some(lock)),
        Ok(Err(e)) => (Err(MailboxError::Io(e)), None),
        Err(e) => (
            Err(MailboxError::Io(std::io::Error::other(e.to_string()))),
            None,
        ),
    }
}

/// Enters the client address into the POP-before-SMTP allowlist after a login.
fn allowlist_login(shared: &Shared, session: &Session, peer: SocketAddr, user: &str) {
    if !shared.config.pop_before_smtp.enabled {
        return;
    }
    let outcome = shared.allowlist.insert(peer.ip(), user, shared.clock.now());
    let mut record = Record::new(
        Kind::Allowlist,
        "pop-before-smtp",
        crate::audit::Class::Insecure,
        crate::audit::Outcome::Success,
    );
    record.user = Some(user.to_string());
    record.reason = Some(
        if outcome.refreshed {
            "refreshed"
        } else {
            "added"
        }
        .to_string(),
    );
    audit(shared, session, peer, record);
    if outcome.shared_warning {
        tracing::warn!(
            address = %crate::canonical_ip(peer.ip()),
            users = outcome.distinct_users,
            "address allowlisted by many different users within one TTL (NAT or shared host?)"
        );
    }
}

/// Records an audit event for `record`, adding the session's details.
fn audit(shared: &Shared, session: &Session, peer: SocketAddr, record: Record) {
    let s = session.settings();
    let now = shared.clock.now();
    let mut e = Event::new(
        record.kind,
        "pop3",
        crate::audit::event::rfc3339(now),
        record.outcome,
    );
    e.listener = Some(s.listener.to_string());
    e.session = Some(s.sasl.session.clone());
    e.client_ip = Some(crate::canonical_ip(peer.ip()));
    e.client_port = Some(peer.port());
    e.tls = s.tls_info.clone();
    e.client_name = session.client_hint();
    e.user_given = record.user_given.clone();
    e.user = record.user.clone();
    e.mechanism = Some(record.mechanism.clone());
    e.class = Some(record.class);
    e.rule = record.rule.clone();
    e.reason = record.reason.clone();
    if record.notify
        && let Some(user) = record.user.as_ref().or(record.notify_to.as_ref())
    {
        shared.notify_user(user, &record, &e);
    }
    shared.audit.record(e);
}

/// Streams a message (RETR) or its top (TOP) after the `+OK` line.
async fn send_message<S>(
    stream: &mut S,
    out: &mut Vec<u8>,
    ok: Reply,
    path: &PathBuf,
    top: Option<u64>,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            Reply::message_unavailable().encode(out);
            tracing::warn!(path = %path.display(), "message vanished: {e}");
            return Ok(());
        }
    };
    ok.encode(out);
    let mut encoder = MessageEncoder::new(top);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        encoder.feed(&chunk[..n], out);
        if encoder.is_done() {
            break;
        }
        if out.len() >= 16 * 1024 {
            flush(stream, out).await?;
        }
    }
    encoder.finish(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::future_size;

    /// As in smtp/conn.rs: the future every connection's task holds stays small, its large
    /// states boxed.
    #[test]
    fn connection_future_stays_small() {
        let size = future_size(&serve);
        assert!(size <= 1536, "pop3::conn::serve future is {size} bytes");
    }
}
