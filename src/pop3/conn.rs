//! POP3 on the session driver (`session/driver.rs`): how the POP3 core is built for each
//! phase, its replies for the situations every protocol meets (greeting, autologout, shutdown),
//! and the actions only POP3 has: opening and locking the maildrop (RFC 1939 §8), entering the
//! POP-before-SMTP allowlist on a login, streaming RETR/TOP from Maildir, committing deletions
//! in the UPDATE state, and the delay after a failed login.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::audit::{Kind, Record};
use crate::gateway::{Gateway, TlsPhase};
use crate::io::flush;
use crate::maildir::{self, MailboxError};
use crate::pop3::machine::{Action, Output, Session, Settings};
use crate::pop3::reply::{MessageEncoder, Reply};
use crate::session::{Conn, Flow, Io, Protocol};
use crate::store::MailboxLease;

/// What a POP3 session holds besides its core: the maildrop lock once logged in, and, while a
/// login is checked with `[pop3.proxy]` on, the cleartext password it carried (for the login
/// at the old server should the mailbox be served from there; zeroed when dropped).
#[derive(Default)]
pub struct Held {
    /// The maildrop lock.
    pub lease: Option<MailboxLease>,
    /// The password of the login being checked.
    pub password: Option<crate::auth::Secret>,
}

/// POP3 on one listener: with STLS (`pop3`) or over implicit TLS (`pop3s`).
#[derive(Debug, Clone, Copy)]
pub struct Pop3 {
    /// Whether the listener speaks TLS from the first byte.
    pub implicit_tls: bool,
}

impl Pop3 {
    /// The listener role, for policy rules and the audit (STLS on `pop3` stays `pop3`).
    fn listener(&self) -> &'static str {
        if self.implicit_tls { "pop3s" } else { "pop3" }
    }
}

impl Protocol for Pop3 {
    type Session = Session;
    type Output = Output;
    type Held = Held;

    fn span(&self, conn: &Conn) -> tracing::Span {
        tracing::info_span!("pop3", session = %conn.id, peer = %conn.peer, listener = self.listener())
    }

    fn implicit_tls(&self) -> bool {
        self.implicit_tls
    }

    fn starttls_name(&self) -> &'static str {
        "STLS"
    }

    fn session(&self, shared: &Gateway, conn: &Conn, tls: Option<TlsPhase<'_>>) -> Session {
        Session::new(settings(shared, conn, tls, self.listener()))
    }

    fn after_tls(
        &self,
        before: Session,
        shared: &Gateway,
        conn: &Conn,
        tls: TlsPhase<'_>,
    ) -> Session {
        before.after_tls(settings(shared, conn, Some(tls), self.listener()))
    }

    fn greeting(session: &Session, out: &mut Vec<u8>) {
        session.greeting().encode(out);
    }

    fn line_limit(session: &Session, _: &Gateway) -> usize {
        session.line_limit()
    }

    fn idle_timeout(_: &Session, held: &Held, shared: &Gateway) -> Duration {
        let limits = &shared.config.limits;
        if held.lease.is_some() {
            limits.pop3_idle_timeout
        } else {
            limits.preauth_idle_timeout
        }
    }

    fn authenticated(_: &Session, held: &Held) -> bool {
        held.lease.is_some()
    }

    fn sasl_state(session: &Session) -> (bool, bool) {
        (session.in_sasl(), session.sasl_next_verifies())
    }

    fn handle_line(session: &mut Session, _now: SystemTime, line: &[u8]) -> Output {
        session.handle_line(line)
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

    fn note_check(check: &crate::sasl::Check, held: &mut Held, shared: &Gateway) {
        if let crate::sasl::Check::Password { password, .. } = check
            && shared.pop3_proxy.is_some()
        {
            held.password = Some(password.clone());
        }
    }

    fn handle_verified(session: &mut Session, answer: crate::sasl::Answer) -> Output {
        session.handle_verified(answer)
    }

    fn shutting_down(_: &Gateway, out: &mut Vec<u8>) {
        Reply::shutting_down().encode(out);
    }

    fn timed_out(_: &Gateway, out: &mut Vec<u8>) {
        // RFC 1939 §3: an autologout timer ends the session without entering UPDATE.
        Reply::autologout().encode(out);
    }

    fn reply_only(output: Output, out: &mut Vec<u8>) -> Option<Output> {
        // A match by value: borrowing `output` to test it would keep its storage in the
        // connection's future across the driver's await.
        match output {
            Output {
                reply,
                action: Action::Continue,
                audit: None,
                ..
            } => {
                reply.encode(out);
                None
            }
            output => Some(output),
        }
    }

    async fn act<S>(
        &self,
        mut output: Output,
        io: &mut Io<S>,
        session: &mut Session,
        conn: &Conn,
        held: &mut Held,
        shared: &Arc<Gateway>,
    ) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let peer = conn.peer;
        loop {
            if let Some(record) = output.audit.take() {
                audit(shared, session, conn, record);
            }
            match output.action {
                Action::Continue => output.reply.encode(&mut io.out),
                Action::Close => {
                    // The UPDATE state is done (deletions committed): release the maildrop
                    // before the final reply rather than just after it (RFC 1939 §6 names no
                    // order that a client could see), so a client that logs in again right
                    // after its +OK to QUIT is not told -ERR [IN-USE] by its own ending
                    // session. Seen under load in the audit tests.
                    held.lease = None;
                    output.reply.encode(&mut io.out);
                    let _ = io.flush().await;
                    return Flow::Closed;
                }
                Action::StartTls => {
                    output.reply.encode(&mut io.out);
                    if io.flush().await.is_err() {
                        return Flow::Closed;
                    }
                    return Flow::StartTls;
                }
                Action::Verify(check) => {
                    output =
                        session.handle_verified(shared.verifier.verify(check, peer.ip()).await);
                    continue;
                }
                Action::AuthFailed { user, note, close } => {
                    held.password = None;
                    tracing::info!(
                        user = user.as_deref().unwrap_or("-"),
                        "login failed: {note}"
                    );
                    let delay = shared
                        .auth_failure_delay(peer.ip(), user.as_deref(), note)
                        .await;
                    tokio::time::sleep(delay).await;
                    output.reply.encode(&mut io.out);
                    if close {
                        let mut lockout = Record::new(
                            Kind::Lockout,
                            "-",
                            crate::audit::Class::Insecure,
                            crate::audit::Outcome::Failure,
                        );
                        lockout.user_given = user;
                        lockout.reason = Some("too many failed logins".into());
                        audit(shared, session, conn, lockout);
                        let _ = io.flush().await;
                        return Flow::Closed;
                    }
                }
                Action::OpenMailbox { user, method } => {
                    shared.auth_succeeded(peer.ip(), &user).await;
                    if let Some(proxy) = &shared.pop3_proxy
                        && !super::proxy::local(shared, &user).await
                    {
                        let proxy = proxy.clone();
                        match super::proxy::serve(&proxy, io, session, conn, held, shared, &user)
                            .await
                        {
                            Ok(flow) => return flow,
                            Err(e) => {
                                output = session.handle_mailbox(Err(e));
                                continue;
                            }
                        }
                    }
                    held.password = None;
                    let (result, new_lock) = open_mailbox(shared, &user).await;
                    match &result {
                        Ok(mb) => {
                            tracing::info!(%user, mechanism = %method, messages = mb.messages.len(), "logged in");
                            allowlist_login(shared, session, conn, &user).await;
                        }
                        Err(MailboxError::InUse) => {
                            tracing::info!(%user, mechanism = %method, "login refused: mailbox in use");
                        }
                        Err(MailboxError::Io(e)) => {
                            tracing::error!(%user, "cannot open mailbox: {e}");
                        }
                    }
                    held.lease = new_lock;
                    output = session.handle_mailbox(result);
                    continue;
                }
                Action::SendMessage { path, top } => {
                    let sent =
                        send_message(&mut io.stream, &mut io.out, output.reply, &path, top).await;
                    if let Err(e) = sent {
                        tracing::warn!(path = %path.display(), "cannot send message: {e}");
                        return Flow::Closed;
                    }
                }
                Action::Commit { delete } => {
                    let n = delete.len();
                    let removed =
                        tokio::task::spawn_blocking(move || maildir::remove(&delete)).await;
                    let ok = match removed {
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
}

fn settings(
    shared: &Gateway,
    conn: &Conn,
    tls: Option<TlsPhase<'_>>,
    listener: &'static str,
) -> Settings {
    let tls_active = tls.is_some();
    let cfg = &shared.config;
    let ip = crate::canonical_ip(conn.peer.ip());
    let apop_timestamp = cfg.auth.apop.then(|| {
        format!(
            "<{}.{}@{}>",
            conn.id,
            crate::clock::unix_secs(shared.clock.now()),
            cfg.hostname
        )
    });
    Settings {
        hostname: cfg.hostname.clone(),
        sasl: shared.sasl_environment("pop", &conn.id, tls),
        mechanisms: shared.mechanisms.clone(),
        plaintext_allowed: tls_active || shared.networks().plaintext_allowed(ip),
        stls_available: !tls_active,
        tls_active,
        apop_timestamp,
        policy: shared.policy(),
        listener,
        peer: conn.peer.ip(),
        tls_info: tls.map(|t| t.description.clone()),
        tls_legacy: tls.is_some_and(|t| t.legacy),
        max_failures: cfg.auth.max_failures,
        max_errors: cfg.limits.max_errors,
    }
}

/// Locks and lists the maildrop.
async fn open_mailbox(
    shared: &Arc<Gateway>,
    user: &str,
) -> (Result<maildir::Mailbox, MailboxError>, Option<MailboxLease>) {
    // The lease releases the lock when dropped: at QUIT, or however the session ends.
    let lock = match shared.mailboxes.acquire(user).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return (Err(MailboxError::InUse), None),
        Err(e) => return (Err(MailboxError::Io(std::io::Error::other(e))), None),
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

/// Enters the client address into the POP-before-SMTP allowlist after a login; the service
/// records the audit event with the session's details.
pub(super) async fn allowlist_login(shared: &Gateway, session: &Session, conn: &Conn, user: &str) {
    let s = session.settings();
    let from = crate::allowlist::Login {
        peer: conn.peer,
        listener: s.listener,
        session: &s.sasl.session,
        tls: s.tls_info.as_deref(),
        client_name: session.client_hint(),
    };
    if let Err(e) = shared
        .allowlist
        .login(&from, user, shared.clock.now())
        .await
    {
        tracing::warn!(%user, "cannot allowlist the address: {e}");
    }
}

/// Records an audit event for `record`, adding the session's details.
fn audit(shared: &Gateway, session: &Session, conn: &Conn, record: Record) {
    let s = session.settings();
    let who = crate::session::audit::Who {
        protocol: "pop3",
        listener: s.listener,
        session: &conn.id,
        peer: conn.peer,
        tls: s.tls_info.as_deref(),
        client_cert: s.sasl.client_cert.as_deref(),
        client_name: session.client_hint(),
    };
    let e = crate::session::audit::event(shared, who, &record);
    crate::session::audit::record(shared, e, &record);
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

    /// As for SMTP: the future every connection's task holds stays small, its large states
    /// boxed.
    #[test]
    fn connection_future_stays_small() {
        let size = future_size(
            &crate::session::serve::<Pop3, crate::server::Front<tokio::net::TcpStream>>,
        );
        assert!(size <= 1536, "POP3 session future is {size} bytes");
    }
}
