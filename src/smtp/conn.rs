//! SMTP on the session driver (`session/driver.rs`): how the SMTP core is built for each
//! phase, its replies for the situations every protocol meets (greeting, idle timeout,
//! shutdown), and the actions only SMTP has: streaming DATA into the spool with the Received
//! header, the delay after a failed AUTH and the lockout, and the audit facts of a session
//! (authentications, address-authorized relays, accepted messages).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use crate::audit::{Kind, Outcome, Record, classify_session};
use crate::config::SmtpRole;
use crate::gateway::{Gateway, TlsPhase};
use crate::io::LineReader;
use crate::metrics::Stage;
use crate::session::{Conn, Flow, Io, Protocol};
use crate::smtp::data::{DataReceiver, Feed};
use crate::smtp::headers::HeaderPeek;
use crate::smtp::machine::{
    Action, Authorization, DataOutcome, Output, Session, Settings, Transaction,
};
use crate::smtp::reply;
use crate::spool::entry::{Envelope, Recipient};

/// Largest base64 line during an AUTH exchange (a full SASL token, base64-encoded).
const MAX_SASL_LINE: usize = crate::sasl::MAX_TOKEN_LEN / 3 * 4 + 8;

/// SMTP as one listener role speaks it.
#[derive(Debug, Clone, Copy)]
pub struct Smtp {
    /// The listener role.
    pub role: SmtpRole,
}

impl Protocol for Smtp {
    type Session = Session;
    type Output = Output;
    type Held = ();

    fn span(&self, conn: &Conn) -> tracing::Span {
        tracing::info_span!("smtp", session = %conn.id, peer = %conn.peer, listener = self.role.name())
    }

    fn implicit_tls(&self) -> bool {
        self.role == SmtpRole::Submissions
    }

    fn starttls_name(&self) -> &'static str {
        "STARTTLS"
    }

    fn session(&self, shared: &Gateway, conn: &Conn, tls: Option<TlsPhase<'_>>) -> Session {
        Session::new(settings(shared, self.role, conn, tls))
    }

    fn after_tls(
        &self,
        before: Session,
        shared: &Gateway,
        conn: &Conn,
        tls: TlsPhase<'_>,
    ) -> Session {
        before.after_tls(settings(shared, self.role, conn, Some(tls)))
    }

    fn greeting(session: &Session, out: &mut Vec<u8>) {
        session.greeting().encode(out);
    }

    fn line_limit(session: &Session, shared: &Gateway) -> usize {
        if session.in_sasl() {
            MAX_SASL_LINE
        } else {
            shared.config.limits.max_line_length
        }
    }

    fn idle_timeout(_: &Session, _: &(), shared: &Gateway) -> Duration {
        shared.config.limits.smtp_idle_timeout
    }

    fn authenticated(session: &Session, _: &()) -> bool {
        session.authorization().is_some()
    }

    fn sasl_state(session: &Session) -> (bool, bool) {
        (session.in_sasl(), session.sasl_next_verifies())
    }

    fn handle_line(session: &mut Session, now: SystemTime, line: &[u8]) -> Output {
        session.handle_line(now, line)
    }

    fn handle_overlong(session: &mut Session) -> Output {
        session.handle_overlong()
    }

    fn take_check(output: &mut Output) -> Option<crate::sasl::Check> {
        match std::mem::replace(&mut output.action, Action::Continue) {
            Action::Verify(check) => Some(check),
            other => {
                output.action = other;
                None
            }
        }
    }

    fn handle_verified(session: &mut Session, answer: crate::sasl::Answer) -> Output {
        session.handle_verified(answer)
    }

    fn shutting_down(shared: &Gateway, out: &mut Vec<u8>) {
        reply::shutting_down(&shared.config.hostname).encode(out);
    }

    fn timed_out(shared: &Gateway, out: &mut Vec<u8>) {
        reply::timeout(&shared.config.hostname).encode(out);
    }

    fn reply_only(output: Output, out: &mut Vec<u8>) -> Option<Output> {
        // A match by value: borrowing `output` to test it would keep its storage in the
        // connection's future across the driver's await.
        match output {
            Output {
                reply,
                action: Action::Continue,
                audit: None,
                refusal: None,
            } => {
                reply.encode(out);
                None
            }
            output => Some(output),
        }
    }

    async fn act<S>(
        &self,
        mut next: Output,
        io: &mut Io<S>,
        session: &mut Session,
        _conn: &Conn,
        _held: &mut (),
        shared: &Arc<Gateway>,
    ) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        loop {
            if let Some(record) = next.audit.take() {
                audit(shared, session, record, None);
            }
            if let Some(refusal) = next.refusal.take() {
                refused(shared, session, &refusal, &next.reply);
            }
            match next.action {
                Action::Continue => next.reply.encode(&mut io.out),
                Action::Close => {
                    next.reply.encode(&mut io.out);
                    let _ = io.flush().await;
                    return Flow::Closed;
                }
                Action::StartTls => {
                    next.reply.encode(&mut io.out);
                    if io.flush().await.is_err() {
                        return Flow::Closed;
                    }
                    return Flow::StartTls;
                }
                Action::Verify(check) => {
                    let peer = session.settings().peer.ip();
                    next = session.handle_verified(shared.verifier.verify(check, peer).await);
                    continue;
                }
                Action::AuthFailed { user, note, close } => {
                    tracing::info!(
                        user = user.as_deref().unwrap_or("-"),
                        "authentication failed: {note}"
                    );
                    let ip = session.settings().peer.ip();
                    let delay = shared.auth_failure_delay(ip, user.as_deref(), &note).await;
                    tokio::time::sleep(delay).await;
                    next.reply.encode(&mut io.out);
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
                        reply::too_many_auth_failures(&shared.config.hostname).encode(&mut io.out);
                        let _ = io.flush().await;
                        return Flow::Closed;
                    }
                }
                Action::Authenticated { user, mechanism } => {
                    tracing::info!(user = %user, mechanism, tls = session.settings().tls_active, "authenticated");
                    shared
                        .auth_succeeded(session.settings().peer.ip(), &user)
                        .await;
                    next.reply.encode(&mut io.out);
                }
                Action::CheckAllowlist { ip } => {
                    // Nothing is sent yet: the machine answers the command with the
                    // allowlist's answer (once per mail transaction).
                    let now = shared.clock.now();
                    let entry = shared.allowlist.relay_lookup(ip, now).await;
                    next = session.handle_allowlist(now, entry);
                    continue;
                }
                Action::ReceiveData => {
                    next.reply.encode(&mut io.out);
                    if io.flush().await.is_err() {
                        return Flow::Closed;
                    }
                    let Some(outcome) =
                        receive_data(&mut io.stream, &mut io.reader, session, shared).await
                    else {
                        return Flow::Closed;
                    };
                    next = session.handle_data_end(outcome);
                    continue;
                }
            }
            return Flow::Next;
        }
    }
}

/// Builds the machine settings for one phase (plaintext, or after TLS).
fn settings(shared: &Gateway, role: SmtpRole, conn: &Conn, tls: Option<TlsPhase<'_>>) -> Settings {
    let tls_info = tls.map(|t| t.description.clone());
    let cfg = &shared.config;
    let nets = shared.networks();
    let peer = conn.peer;
    let ip = crate::canonical_ip(peer.ip());
    let tls_active = tls_info.is_some();
    let pbs = &cfg.pop_before_smtp;
    Settings {
        role,
        hostname: cfg.hostname.clone(),
        peer,
        tls_active,
        tls_info,
        tls_legacy: tls.is_some_and(|t| t.legacy),
        starttls_available: role != SmtpRole::Submissions,
        plaintext_allowed: tls_active || nets.plaintext_allowed(ip),
        trusted: nets.trusted(ip),
        pop_before_smtp: pbs.enabled && pbs.listeners.contains(&role),
        restrict_sender: pbs.restrict_sender,
        sasl: shared.sasl_environment("smtp", &conn.id, tls),
        policy: shared.policy(),
        mechanisms: shared.mechanisms.clone(),
        local_domains: nets.local_domains.clone(),
        route_unmigrated: shared.config.delivery.route_unmigrated_to.is_some(),
        max_message_size: cfg.limits.max_message_size,
        max_recipients: cfg.limits.max_recipients,
        max_auth_failures: cfg.auth.max_failures,
        max_errors: cfg.limits.max_errors,
        queue: shared.spool.gauge(),
    }
}

/// Streams the body into the spool. `None` means the connection was lost or timed out, and
/// nothing was accepted.
async fn receive_data<S>(
    stream: &mut S,
    reader: &mut LineReader,
    session: &Session,
    shared: &Gateway,
) -> Option<DataOutcome>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
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
                tracing::info!(
                    timeout_secs = limits.data_timeout.as_secs(),
                    "DATA timed out; nothing accepted"
                );
                if let Some(inc) = incoming {
                    inc.abort();
                }
                // RFC 5321 §4.5.3.2: say why before closing; a client that reads nothing
                // more gets at most a few seconds of our time.
                let mut out = Vec::new();
                Smtp::timed_out(shared, &mut out);
                let _ = timeout(Duration::from_secs(5), stream.write_all(&out)).await;
                let _ = timeout(Duration::from_secs(5), stream.flush()).await;
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
            let rcpts = u64::try_from(txn.recipients.len()).unwrap_or(u64::MAX);
            shared.metrics.flow.messages(Stage::Received, rcpts);
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
    shared: &Gateway,
    session: &Session,
    record: Record,
    extra: Option<(&str, u32, Option<String>)>,
) {
    let s = session.settings();
    let who = crate::session::audit::Who {
        protocol: "smtp",
        listener: s.role.name(),
        session: &s.sasl.session,
        peer: s.peer,
        tls: s.tls_info.as_deref(),
        client_cert: s.sasl.client_cert.as_deref(),
        client_name: session.helo().map(|h| h.chars().take(255).collect()),
    };
    let mut e = crate::session::audit::event(shared, who, &record);
    if let Some((queue_id, recipients, software)) = extra {
        e.queue_id = Some(queue_id.to_string());
        e.recipients = Some(recipients);
        e.client_software = software;
    }
    crate::session::audit::record(shared, e, &record);
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
    shared: &Gateway,
    session: &Session,
    txn: &Transaction,
    queue_id: &str,
    software: Option<String>,
) {
    let (tls, legacy) = (session.settings().tls_active, session.settings().tls_legacy);
    let record = match (session.authorization(), &txn.relay_authorization) {
        (Some(Authorization::Sasl { user, mechanism }), _) => {
            let mut r = Record::new(
                Kind::Accept,
                mechanism,
                classify_session(mechanism, tls, legacy),
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

/// Logs a refusal (one line, in the spirit of Postfix's `NOQUEUE: reject`) and counts it.
fn refused(
    shared: &Gateway,
    session: &Session,
    refusal: &crate::smtp::machine::Refusal,
    reply: &crate::smtp::reply::Reply,
) {
    let listener = session.settings().role.name();
    shared.metrics.smtp_reject(listener, refusal.reason);
    shared.refusals.push(crate::gateway::refusals::Refusal {
        time: crate::audit::event::rfc3339(shared.clock.now()),
        listener,
        client: crate::canonical_ip(session.settings().peer.ip()),
        helo: session.helo().map(str::to_owned),
        from: refusal.sender.clone(),
        to: refusal.recipient.clone(),
        reply: reply.to_string().trim_end().to_string(),
        reason: refusal.reason,
    });
    tracing::info!(
        listener,
        helo = session.helo().unwrap_or("-"),
        from = refusal.sender.as_deref().unwrap_or("-"),
        to = refusal.recipient.as_deref().unwrap_or("-"),
        reason = refusal.reason,
        reply = %reply.to_string().trim_end(),
        "refused"
    );
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
        let size = future_size(
            &crate::session::serve::<Smtp, crate::server::Front<tokio::net::TcpStream>>,
        );
        assert!(size <= 1536, "SMTP session future is {size} bytes");
    }
}
