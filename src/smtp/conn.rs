//! The SMTP connection loop: reads lines with a timeout, feeds them to the state machine,
//! writes replies (batched while the client pipelines, RFC 2920 §3.2), and carries out the
//! machine's actions: the STARTTLS handshake, streaming DATA into the spool, and the delay
//! after a failed AUTH.
//!
//! The loop is generic over the stream, so plaintext, TLS and in-memory streams share it.
//!
//! Memory per idle connection is kept small: the connection's task holds only what waiting for
//! the next command needs. The rarely live, large states (the TLS handshake and the session
//! after it, the DATA receive and commit, a credential check, the delay after a failed AUTH)
//! are boxed futures allocated when they start and freed when they end; the read buffer and
//! the reply buffer are given back whenever the session waits for the client.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::{Event, Kind, Outcome, Record, classify};
use crate::config::SmtpRole;
use crate::io::{Line, LineReader, flush};
use crate::server::Shared;
use crate::smtp::data::{DataReceiver, Feed};
use crate::smtp::headers::HeaderPeek;
use crate::smtp::machine::{
    Action, Authorization, DataOutcome, Output, Session, Settings, Transaction,
};
use crate::smtp::reply;
use crate::spool::entry::{Envelope, Recipient};

/// Room reserved for the replies to one command (or one pipelined batch); the buffer is
/// released while the session waits for the client.
const REPLY_CAPACITY: usize = 512;

/// Largest base64 line during an AUTH exchange (a full SASL token, base64-encoded).
const MAX_SASL_LINE: usize = crate::sasl::MAX_TOKEN_LEN / 3 * 4 + 8;

/// How a phase of the session ended.
enum End<S> {
    /// The session is over.
    Closed,
    /// STARTTLS was accepted: run the handshake on the stream, then continue.
    StartTls(S, Box<Session>),
}

/// Serves one SMTP connection from accept to close.
pub async fn serve(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    role: SmtpRole,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let id = shared.next_session_id();
    let span = tracing::info_span!("smtp", session = %id, peer = %peer, role = role.name());
    // Instrument rather than enter: an entered span would leak onto other tasks polled on this
    // worker across awaits and mislabel their log lines.
    serve_in_span(tcp, peer, role, shared, shutdown, id)
        .instrument(span)
        .await;
}

async fn serve_in_span(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    role: SmtpRole,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    id: String,
) {
    if role == SmtpRole::Submissions {
        // Boxed: the handshake and the TLS stream are large, and this task only waits on them.
        Box::pin(serve_tls(tcp, None, peer, role, &shared, &shutdown, &id)).await;
        return;
    }
    let session = Box::new(Session::new(settings(&shared, role, peer, None, &id)));
    let (tcp, session) = match phase(tcp, session, &shared, &shutdown, true).await {
        End::Closed => return,
        End::StartTls(tcp, session) => (tcp, session),
    };
    Box::pin(serve_tls(
        tcp,
        Some(session),
        peer,
        role,
        &shared,
        &shutdown,
        &id,
    ))
    .await;
}

/// The TLS part of a connection: the handshake, then the session over TLS. `before` is the
/// session that accepted STARTTLS (`None` for implicit TLS, which greets after the handshake).
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    before: Option<Box<Session>>,
    peer: SocketAddr,
    role: SmtpRole,
    shared: &Shared,
    shutdown: &CancellationToken,
    id: &str,
) {
    let what = if before.is_some() { "STARTTLS" } else { "TLS" };
    let Some((tls, server_tls)) = shared.accept_tls(tcp, what).await else {
        return;
    };
    let settings = settings(
        shared,
        role,
        peer,
        Some((tls.get_ref().1, &server_tls.end_point)),
        id,
    );
    let (session, greet) = match before {
        Some(session) => {
            tracing::debug!(tls = %crate::tls::describe(tls.get_ref().1), "STARTTLS complete");
            (Box::new(session.after_tls(settings)), false)
        }
        None => (Box::new(Session::new(settings)), true),
    };
    let _ = phase(tls, session, shared, shutdown, greet).await;
}

/// Builds the machine settings for one phase (plaintext, or after TLS).
fn settings(
    shared: &Shared,
    role: SmtpRole,
    peer: SocketAddr,
    tls: Option<crate::server::TlsPhase<'_>>,
    id: &str,
) -> Settings {
    let tls_info = tls.map(|(c, _)| crate::tls::describe(c));
    let cfg = &shared.config;
    let nets = shared.networks();
    let ip = crate::canonical_ip(peer.ip());
    let tls_active = tls_info.is_some();
    let pbs = &cfg.pop_before_smtp;
    Settings {
        role,
        hostname: cfg.hostname.clone(),
        peer,
        tls_active,
        tls_info,
        starttls_available: role != SmtpRole::Submissions,
        plaintext_allowed: tls_active || nets.plaintext_allowed(ip),
        trusted: nets.trusted(ip),
        pop_before_smtp: pbs.enabled && pbs.listeners.contains(&role),
        restrict_sender: pbs.restrict_sender,
        sasl: shared.sasl_environment(id, tls),
        policy: shared.policy(),
        mechanisms: shared.mechanisms.clone(),
        local_domains: nets.local_domains.clone(),
        max_message_size: cfg.limits.max_message_size,
        max_recipients: cfg.limits.max_recipients,
        max_auth_failures: cfg.auth.max_failures,
        max_errors: cfg.limits.max_errors,
    }
}

/// Runs the command loop on one stream until the session ends or switches to TLS.
async fn phase<S>(
    mut stream: S,
    // Boxed: an async fn keeps its arguments apart from its locals, so a large one would be
    // stored twice in every connection's task.
    mut session: Box<Session>,
    shared: &Shared,
    shutdown: &CancellationToken,
    greet: bool,
) -> End<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &shared.config.limits;
    let mut reader = LineReader::new(limits.max_line_length);
    // Replies are encoded here and written in one go; allocated when there is one to send.
    let mut out = Vec::new();
    if greet {
        session.greeting().encode(&mut out);
        if flush(&mut stream, &mut out).await.is_err() {
            return End::Closed;
        }
    }
    loop {
        // Flush replies only when no further pipelined command is already buffered.
        if !reader.has_line() {
            if flush(&mut stream, &mut out).await.is_err() {
                return End::Closed;
            }
            // Waiting for the client: hold no buffers meanwhile.
            reader.shrink();
            out = Vec::new();
        }
        reader.set_max_line(if session.in_sasl() {
            MAX_SASL_LINE
        } else {
            limits.max_line_length
        });
        let line = tokio::select! {
            r = timeout(limits.smtp_idle_timeout, reader.next_line(&mut stream)) => r,
            _ = shutdown.cancelled() => {
                reply::shutting_down(&shared.config.hostname).encode(&mut out);
                let _ = flush(&mut stream, &mut out).await;
                return End::Closed;
            }
        };
        // A command arrived (or the wait ended): room for its replies in one allocation.
        out.reserve(REPLY_CAPACITY);
        let output = match line {
            Err(_) => {
                reply::timeout(&shared.config.hostname).encode(&mut out);
                let _ = flush(&mut stream, &mut out).await;
                tracing::info!("idle timeout");
                return End::Closed;
            }
            Ok(Err(_)) | Ok(Ok(None)) => return End::Closed,
            Ok(Ok(Some(Line::TooLong))) => session.handle_overlong(),
            Ok(Ok(Some(Line::Complete(range)))) => {
                let now = shared.clock.now();
                let line = reader.slice(range.clone());
                let step = crate::io::credential_step(
                    session.in_sasl(),
                    session.sasl_next_verifies(),
                    line,
                );
                if let Some(checks) = step {
                    let ip = session.settings().peer.ip();
                    // Boxed: the throttle wait and the verification slot are rarely live.
                    let out = Box::pin(
                        shared.check_credentials(ip, checks, || session.handle_line(now, line)),
                    )
                    .await;
                    reader.wipe(range);
                    out
                } else {
                    session.handle_line(now, line)
                }
            }
        };
        // Most commands only answer; the rest (DATA, QUIT, STARTTLS, AUTH outcomes, audited
        // refusals) run boxed, so their state is no part of every waiting connection. (A match
        // by value: borrowing `output` to test it would keep its storage in the connection's
        // future across the await below.)
        let flow = match output {
            Output {
                reply,
                action: Action::Continue,
                audit: None,
            } => {
                reply.encode(&mut out);
                Flow::Next
            }
            output => {
                let act = act(
                    output,
                    &mut stream,
                    &mut reader,
                    &mut session,
                    &mut out,
                    shared,
                );
                Box::pin(act).await
            }
        };
        match flow {
            Flow::Next => {}
            Flow::Closed => return End::Closed,
            Flow::StartTls => return End::StartTls(stream, session),
        }
    }
}

/// What the command loop does after [`act`].
enum Flow {
    /// Read the next command.
    Next,
    /// The session is over.
    Closed,
    /// STARTTLS was accepted and its reply sent: hand the stream to the handshake.
    StartTls,
}

/// Records the audit fact of `next`, encodes its reply and carries out its action, following
/// up with the machine's answer where the action produced one (the end of DATA).
async fn act<S>(
    mut next: Output,
    stream: &mut S,
    reader: &mut LineReader,
    session: &mut Session,
    out: &mut Vec<u8>,
    shared: &Shared,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if let Some(record) = next.audit.take() {
            audit(shared, session, record, None);
        }
        match next.action {
            Action::Continue => next.reply.encode(out),
            Action::Close => {
                next.reply.encode(out);
                let _ = flush(stream, out).await;
                return Flow::Closed;
            }
            Action::StartTls => {
                next.reply.encode(out);
                if flush(stream, out).await.is_err() {
                    return Flow::Closed;
                }
                // RFC 3207 §4.2 / CVE-2011-0411: anything pipelined behind STARTTLS was
                // sent in plaintext and must not be executed after the handshake.
                if !reader.buffered().is_empty() {
                    tracing::warn!(
                        bytes = reader.buffered().len(),
                        "discarded plaintext pipelined after STARTTLS"
                    );
                }
                reader.clear();
                return Flow::StartTls;
            }
            Action::AuthFailed { user, note, close } => {
                tracing::info!(
                    user = user.as_deref().unwrap_or("-"),
                    "authentication failed: {note}"
                );
                let ip = session.settings().peer.ip();
                let delay = shared.auth_failure_delay(ip, user.as_deref());
                tokio::time::sleep(delay).await;
                next.reply.encode(out);
                if close {
                    let mut lockout = Record::new(
                        Kind::Lockout,
                        "-",
                        crate::audit::Class::Insecure,
                        crate::audit::Outcome::Failure,
                    );
                    lockout.user_given = user;
                    lockout.reason = Some("too many failed authentications".into());
                    audit(shared, session, lockout, None);
                    reply::too_many_auth_failures(&shared.config.hostname).encode(out);
                    let _ = flush(stream, out).await;
                    return Flow::Closed;
                }
            }
            Action::Authenticated { user, mechanism } => {
                tracing::info!(user = %user, mechanism, tls = session.settings().tls_active, "authenticated");
                shared.auth_succeeded(session.settings().peer.ip(), &user);
                next.reply.encode(out);
            }
            Action::CheckAllowlist { ip } => {
                // Nothing is sent yet: the machine answers the command with the allowlist's
                // answer (once per mail transaction).
                let now = shared.clock.now();
                let entry = shared.allowlist.relay_lookup(ip, now).await;
                next = session.handle_allowlist(now, entry);
                continue;
            }
            Action::ReceiveData => {
                next.reply.encode(out);
                if flush(stream, out).await.is_err() {
                    return Flow::Closed;
                }
                let Some(outcome) = receive_data(stream, reader, session, shared).await else {
                    return Flow::Closed;
                };
                next = session.handle_data_end(outcome);
                continue;
            }
        }
        return Flow::Next;
    }
}

/// Streams the body into the spool. `None` means the connection was lost or timed out, and
/// nothing was accepted.
async fn receive_data<S>(
    stream: &mut S,
    reader: &mut LineReader,
    session: &Session,
    shared: &Shared,
) -> Option<DataOutcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &shared.config.limits;
    let deadline = Instant::now() + limits.data_timeout;
    let txn = session.data_transaction()?.clone();
    let mut incoming = match shared.spool.receive().await {
        Ok(incoming) => Some(incoming),
        Err(e) => {
            tracing::error!("spool unavailable: {e}");
            None
        }
    };
    let now = shared.clock.now();
    let mut buf = Vec::with_capacity(16 * 1024);
    buf.extend_from_slice(received_header(session, &txn, now).as_bytes());
    if let Some(h) = &txn.warn_header {
        // A `warn` policy rule: tell whoever reads the message.
        buf.extend_from_slice(h.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    let mut rx = DataReceiver::new(limits.max_message_size);
    let mut failed = incoming.is_none();
    let mut peek = HeaderPeek::new();
    loop {
        let before = buf.len();
        let (done, consumed) = match rx.feed(reader.buffered(), &mut buf) {
            Feed::NeedMore => (false, reader.buffered().len()),
            Feed::Done { consumed } => (true, consumed),
        };
        peek.feed(&buf[before..]);
        reader.consume(consumed);
        if (done || buf.len() >= 32 * 1024) && !failed {
            if let Some(inc) = incoming.as_mut()
                && let Err(e) = inc.write(&buf).await
            {
                tracing::error!("spool write failed: {e}");
                failed = true;
            }
            buf.clear();
        } else if failed || rx.exceeded() {
            buf.clear();
        }
        if done {
            break;
        }
        match timeout_at(deadline, reader.fill(stream)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) | Ok(Err(_)) => return None,
            Err(_) => {
                tracing::info!("DATA timed out");
                return None;
            }
        }
    }
    if rx.bare_line_endings() > 0 {
        tracing::info!(
            count = rx.bare_line_endings(),
            "normalized bare CR/LF in message"
        );
    }
    if rx.folded_lines() > 0 {
        tracing::info!(
            count = rx.folded_lines(),
            "folded lines longer than 998 octets in message"
        );
    }
    let Some(incoming) = incoming else {
        // The spool could not even start a message: say so (451), accept nothing.
        return Some(DataOutcome::LocalError);
    };
    if rx.exceeded() {
        incoming.abort();
        return Some(DataOutcome::TooBig);
    }
    if failed {
        incoming.abort();
        return Some(DataOutcome::LocalError);
    }
    let envelope = envelope(session, &txn, now);
    match incoming.commit(envelope).await {
        Ok(id) => {
            tracing::info!(queue_id = %id, from = %txn.mail_from, rcpts = txn.recipients.len(), "queued");
            shared.notifier.notify(&id);
            audit_accept(shared, session, &txn, &id, peek.client_software());
            Some(DataOutcome::Queued(id))
        }
        Err(e) => {
            tracing::error!("spool commit failed: {e}");
            Some(DataOutcome::LocalError)
        }
    }
}

/// Records an audit event for `record`, adding the session's details.
fn audit(
    shared: &Shared,
    session: &Session,
    record: Record,
    extra: Option<(&str, u32, Option<String>)>,
) {
    let s = session.settings();
    let now = shared.clock.now();
    let mut e = Event::new(
        record.kind,
        "smtp",
        crate::audit::event::rfc3339(now),
        record.outcome,
    );
    e.listener = Some(s.role.name().to_string());
    e.session = Some(s.sasl.session.clone());
    e.client_ip = Some(crate::canonical_ip(s.peer.ip()));
    e.client_port = Some(s.peer.port());
    e.tls = s.tls_info.clone();
    e.client_name = session.helo().map(|h| h.chars().take(255).collect());
    e.user_given = record.user_given.clone();
    e.user = record.user.clone();
    e.mechanism = Some(record.mechanism.clone());
    e.class = Some(record.class);
    e.rule = record.rule.clone();
    e.reason = record.reason.clone();
    if let Some((queue_id, recipients, software)) = extra {
        e.queue_id = Some(queue_id.to_string());
        e.recipients = Some(recipients);
        e.client_software = software;
    }
    if let Some(software) = &e.client_software
        && let Some(user) = &e.user
    {
        shared.notices.saw_software(user, software);
    }
    if record.notify
        && let Some(user) = record.user.as_ref().or(record.notify_to.as_ref())
    {
        shared.notify_user(user, &record, &e);
    }
    shared.audit.record(e);
}

/// The canonical local user that `mail_from` names (`user@<local domain>`), if any.
fn sender_user(session: &Session, mail_from: &str) -> Option<String> {
    let s = session.settings();
    let local = crate::smtp::machine::local_part(mail_from, &s.local_domains)?;
    s.sasl.auth.lookup(&local.to_ascii_lowercase())
}

/// Records the acceptance of a message sent under an authentication or an address-based
/// relay authorization, with the client software its headers name.
fn audit_accept(
    shared: &Shared,
    session: &Session,
    txn: &Transaction,
    queue_id: &str,
    software: Option<String>,
) {
    let tls = session.settings().tls_active;
    let record = match (session.authorization(), &txn.relay_authorization) {
        (Some(Authorization::Sasl { user, mechanism }), _) => {
            let mut r = Record::new(
                Kind::Accept,
                mechanism,
                classify(mechanism, tls),
                Outcome::Success,
            );
            r.user = Some(user.clone());
            r
        }
        (_, Some(a)) => {
            let Some(mechanism) = a.address_mechanism() else {
                return;
            };
            let outcome = txn.relay_outcome.unwrap_or(Outcome::Success);
            let mut r = Record::new(
                Kind::Relay,
                mechanism,
                crate::audit::Class::Insecure,
                outcome,
            );
            if let Some(d) = &txn.relay_decision {
                r = r.with_decision(d);
            }
            r.user = a.user().map(str::to_owned);
            r.rule = txn.relay_rule.clone();
            if r.notify && r.user.is_none() {
                // A trusted-network relay has no user: the notice goes to the local user
                // its sender address names, if any.
                r.notify_to = sender_user(session, &txn.mail_from);
            }
            r
        }
        // Inbound mail to local users: not an authentication fact.
        _ => return,
    };
    let rcpts = u32::try_from(txn.recipients.len()).unwrap_or(u32::MAX);
    audit(shared, session, record, Some((queue_id, rcpts, software)));
}

/// The Received header (RFC 5321 §4.4, protocol names per RFC 3848).
fn received_header(session: &Session, txn: &Transaction, now: std::time::SystemTime) -> String {
    let s = session.settings();
    let helo = session.helo().unwrap_or("unknown");
    let helo: String = helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let mut h = format!(
        "Received: from {helo} ([{}])\r\n\tby {} (mailgate) with {}",
        crate::canonical_ip(s.peer.ip()),
        s.hostname,
        session.protocol_name()
    );
    if let Some(tls) = &s.tls_info {
        h.push_str(&format!(" ({tls})"));
    }
    let how = session
        .authorization()
        .or(txn.relay_authorization.as_ref())
        .map(|a| a.describe());
    if let Some(how) = how {
        h.push_str(&format!("\r\n\t({how})"));
    }
    if let [only] = txn.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!("; {}\r\n", httpdate::fmt_http_date(now)));
    h
}

/// The spool envelope for the transaction.
fn envelope(session: &Session, txn: &Transaction, now: std::time::SystemTime) -> Envelope {
    let s = session.settings();
    // The envelope's `authorized_as` names the local mailbox a bounce goes to: the user behind
    // the authorization, and only when the sender address is that user's own. Otherwise a
    // bounce goes to the sender address through the normal route.
    let authorized_as = session
        .authorization()
        .or(txn.relay_authorization.as_ref())
        .and_then(|a| a.user())
        .filter(|user| {
            crate::smtp::machine::sender_belongs_to(&txn.mail_from, user, &s.local_domains)
        })
        .map(str::to_owned);
    Envelope::new(
        txn.mail_from.clone(),
        txn.recipients
            .iter()
            .map(|r| Recipient::new(r.address.clone(), r.local_user.clone()))
            .collect(),
        crate::clock::unix_secs(now),
        format!(
            "{} helo={} {}",
            s.peer,
            session.helo().unwrap_or("-"),
            session
                .authorization()
                .or(txn.relay_authorization.as_ref())
                .map_or_else(|| "unauthenticated".to_string(), |a| a.describe())
        ),
        authorized_as,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::future_size;

    /// Every connection's task holds this future for its whole life: what it needs while
    /// waiting for a command must stay small (issue 5: at most 4 KiB per idle connection, all
    /// costs included). The large states are boxed (it was over 7 KiB before).
    #[test]
    fn connection_future_stays_small() {
        let size = future_size(&serve);
        assert!(size <= 1536, "smtp::conn::serve future is {size} bytes");
        let phase = future_size(&phase::<tokio::net::TcpStream>);
        assert!(phase <= 768, "smtp::conn::phase future is {phase} bytes");
    }
}
