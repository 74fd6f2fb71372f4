//! The one session driver for SMTP and POP3: from accept to close, around a sans-IO protocol
//! core. It owns what both protocols do the same way:
//!
//! - implicit TLS, or the plaintext phase and the STARTTLS/STLS handshake after it (plaintext
//!   pipelined behind the command is dropped, RFC 3207 §4.2, RFC 2595 §4, and the core is
//!   rebuilt for the TLS phase);
//! - the greeting, bounded line reads ([`LineReader`]), replies batched while the client
//!   pipelines (RFC 2920 §3.2), the idle timeout the core asks for, and the answer to a
//!   shutdown;
//! - the credential path: the throttle slot before a line that checks a credential, the
//!   round trip of every [`Check`](crate::sasl::Check) through the session verifier, and the
//!   wiping of such lines from the read buffer.
//!
//! What differs lives behind [`Protocol`]: how the core is built and fed, its replies for the
//! shared situations, and [`Protocol::act`], which carries out the core's other actions (DATA
//! into the spool; the maildrop). The driver is generic over the stream, so a stream that has
//! already been read from (a PROXY protocol header) or an in-memory one serves as well as a
//! socket.
//!
//! At `debug` the driver logs one line when a connection opens and one when it closes, with
//! its duration and the bytes read and written (counted on the wire, [`Counted`]).
//!
//! Memory per idle connection is kept small: the task holds only what waiting for the next
//! command needs. The rarely live, large states (the TLS handshake and the session after it,
//! the throttle wait, a credential check, every action) are boxed futures allocated when they
//! start, and the read and reply buffers are given back whenever the session waits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::gateway::{Gateway, TlsPhase};
use crate::io::{Line, LineReader, flush};
use crate::session::counted::{Bytes, Counted};
use crate::session::load::{Load, STRESS_IDLE};

/// Room reserved for the replies to one command (or one pipelined batch); the buffer is
/// released while the session waits for the client.
const REPLY_CAPACITY: usize = 512;

/// One client connection, as the driver knows it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The session id (every log line and audit event of the connection carries it).
    pub id: String,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The stream of one phase with its read and reply buffers.
pub struct Io<S> {
    /// The stream.
    pub stream: S,
    /// Lines from the client.
    pub reader: LineReader,
    /// Replies not yet written.
    pub out: Vec<u8>,
}

impl<S: AsyncWrite + Unpin> Io<S> {
    /// Writes the pending replies and flushes.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        flush(&mut self.stream, &mut self.out).await
    }
}

/// What the driver does after [`Protocol::act`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Next,
    /// The session is over.
    Closed,
    /// STARTTLS/STLS was accepted and its reply sent: run the handshake, then go on with
    /// [`Protocol::after_tls`].
    StartTls,
}

/// One protocol as the driver drives it: SMTP (`smtp/conn.rs`) or POP3 (`pop3/conn.rs`).
pub trait Protocol: Send + Sync + 'static {
    /// The sans-IO session.
    type Session: Send + 'static;
    /// What the core answers a line with.
    type Output: Send;
    /// What a connection holds beside its core across commands (POP3: the maildrop lock);
    /// dropped when the connection ends, however it ends.
    type Held: Default + Send;

    /// The log span of a connection.
    fn span(&self, conn: &Conn) -> tracing::Span;
    /// Whether the listener speaks TLS from the first byte.
    fn implicit_tls(&self) -> bool;
    /// The name of the TLS upgrade command, for logs (`STARTTLS`, `STLS`).
    fn starttls_name(&self) -> &'static str;
    /// A fresh core for the plaintext phase (`tls` is `None`) or an implicit-TLS connection.
    fn session(&self, shared: &Gateway, conn: &Conn, tls: Option<TlsPhase<'_>>) -> Self::Session;
    /// The core after a STARTTLS/STLS handshake, from the one that accepted the command.
    fn after_tls(
        &self,
        before: Self::Session,
        shared: &Gateway,
        conn: &Conn,
        tls: TlsPhase<'_>,
    ) -> Self::Session;
    /// Encodes the greeting.
    fn greeting(session: &Self::Session, out: &mut Vec<u8>);
    /// The longest line the core takes now.
    fn line_limit(session: &Self::Session, shared: &Gateway) -> usize;
    /// How long the session may wait for the client now.
    fn idle_timeout(session: &Self::Session, held: &Self::Held, shared: &Gateway) -> Duration;
    /// Whether the client has authenticated (its idle timeout is then kept under stress:
    /// [`crate::session::load`]).
    fn authenticated(session: &Self::Session, held: &Self::Held) -> bool;
    /// Whether a SASL exchange waits for a client line, and whether that line checks a
    /// credential (see [`crate::io::credential_step`]).
    fn sasl_state(session: &Self::Session) -> (bool, bool);
    /// Feeds one line.
    fn handle_line(session: &mut Self::Session, now: SystemTime, line: &[u8]) -> Self::Output;
    /// Feeds the fact that a line was over the limit (the reader discarded it).
    fn handle_overlong(session: &mut Self::Session) -> Self::Output;
    /// The credential check `output` asks for, if any, taken out of it.
    fn take_check(output: &mut Self::Output) -> Option<crate::sasl::Check>;
    /// Sees a check before it is verified, to keep what the protocol needs after the login
    /// (POP3 keeps a cleartext password for the `[pop3.proxy]` login upstream). The default
    /// keeps nothing.
    fn note_check(check: &crate::sasl::Check, held: &mut Self::Held, shared: &Gateway) {
        let _ = (check, held, shared);
    }
    /// Feeds the answer to a check.
    fn handle_verified(session: &mut Self::Session, answer: crate::sasl::Answer) -> Self::Output;
    /// Encodes the answer to a shutdown (SMTP 421, POP3 `-ERR`).
    fn shutting_down(shared: &Gateway, out: &mut Vec<u8>);
    /// Encodes the answer to an idle timeout.
    fn timed_out(shared: &Gateway, out: &mut Vec<u8>);
    /// Encodes the reply of an output that asks for nothing else and returns `None`; gives
    /// any other output back for [`Protocol::act`].
    fn reply_only(output: Self::Output, out: &mut Vec<u8>) -> Option<Self::Output>;
    /// Carries out the output's action (and records its audit fact), encoding its reply and
    /// following up with the core's answer where the action produces one.
    fn act<S>(
        &self,
        output: Self::Output,
        io: &mut Io<S>,
        session: &mut Self::Session,
        conn: &Conn,
        held: &mut Self::Held,
        shared: &Arc<Gateway>,
    ) -> impl Future<Output = Flow> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send;
}

/// How a phase of the session ended.
enum End<S, T> {
    /// The session is over.
    Closed,
    /// STARTTLS was accepted: run the handshake on the stream, then continue.
    StartTls(S, Box<T>),
}

/// What every phase of one connection shares.
struct Ctx<'a, P> {
    protocol: &'a P,
    conn: &'a Conn,
    shared: &'a Arc<Gateway>,
    shutdown: &'a CancellationToken,
    load: &'a Load,
}

/// Serves one connection from accept to close.
pub async fn serve<P, S>(
    protocol: P,
    stream: S,
    peer: SocketAddr,
    shared: Arc<Gateway>,
    shutdown: CancellationToken,
    load: Arc<Load>,
) where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let conn = Conn {
        id: shared.next_session_id(),
        peer,
    };
    let span = protocol.span(&conn);
    let cx = Ctx {
        protocol: &protocol,
        conn: &conn,
        shared: &shared,
        shutdown: &shutdown,
        load: &load,
    };
    let bytes = Bytes::default();
    let opened = Instant::now();
    let stream = Counted::new(stream, &bytes);
    // Instrument rather than enter: an entered span would leak onto other tasks polled on this
    // worker across awaits and mislabel their log lines.
    async {
        // At debug only, like Postfix's connect/disconnect lines; with debug off each is one
        // check of a cached level, no formatting and no allocation.
        tracing::debug!("connection opened");
        serve_in_span(&cx, stream).await;
        tracing::debug!(
            duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_in = bytes.read(),
            bytes_out = bytes.written(),
            "connection closed"
        );
    }
    .instrument(span)
    .await;
}

async fn serve_in_span<P, S>(cx: &Ctx<'_, P>, stream: S)
where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut held = P::Held::default();
    if cx.protocol.implicit_tls() {
        // Boxed: the handshake and the TLS stream are large, and this task only waits on them.
        Box::pin(serve_tls(cx, stream, None, &mut held)).await;
        return;
    }
    let session = Box::new(cx.protocol.session(cx.shared, cx.conn, None));
    let io = Io {
        stream,
        reader: LineReader::new(P::line_limit(&session, cx.shared)),
        out: Vec::new(),
    };
    let (stream, session) = match phase(cx, io, session, &mut held, true).await {
        End::Closed => return,
        End::StartTls(stream, session) => (stream, session),
    };
    Box::pin(serve_tls(cx, stream, Some(session), &mut held)).await;
}

/// The TLS part of a connection: the handshake, then the session over TLS. `before` is the
/// core that accepted STARTTLS/STLS (`None` for implicit TLS, which greets after the
/// handshake).
async fn serve_tls<P, S>(
    cx: &Ctx<'_, P>,
    stream: S,
    before: Option<Box<P::Session>>,
    held: &mut P::Held,
) where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let what = if before.is_some() {
        cx.protocol.starttls_name()
    } else {
        "TLS"
    };
    let Some((tls, server_tls)) = cx.shared.accept_tls(stream, what).await else {
        return;
    };
    let phase_tls = (tls.get_ref().1, &*server_tls);
    let (session, greet) = match before {
        Some(session) => {
            tracing::debug!(tls = %crate::tls::describe(tls.get_ref().1), "{what} complete");
            let after = cx
                .protocol
                .after_tls(*session, cx.shared, cx.conn, phase_tls);
            (Box::new(after), false)
        }
        None => {
            let fresh = cx.protocol.session(cx.shared, cx.conn, Some(phase_tls));
            (Box::new(fresh), true)
        }
    };
    let io = Io {
        stream: tls,
        reader: LineReader::new(P::line_limit(&session, cx.shared)),
        out: Vec::new(),
    };
    let _ = phase(cx, io, session, held, greet).await;
}

/// Runs the command loop on one stream until the session ends or switches to TLS.
async fn phase<P, S>(
    cx: &Ctx<'_, P>,
    mut io: Io<S>,
    // Boxed: an async fn keeps its arguments apart from its locals, so a large one would be
    // stored twice in every connection's task.
    mut session: Box<P::Session>,
    held: &mut P::Held,
    greet: bool,
) -> End<S, P::Session>
where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let shared = cx.shared;
    if greet {
        P::greeting(&session, &mut io.out);
        if io.flush().await.is_err() {
            return End::Closed;
        }
    }
    loop {
        // Flush replies only when no further pipelined command is already buffered.
        if !io.reader.has_line() {
            if io.flush().await.is_err() {
                return End::Closed;
            }
            // Waiting for the client: hold no buffers meanwhile.
            io.reader.shrink();
            io.out = Vec::new();
        }
        io.reader.set_max_line(P::line_limit(&session, shared));
        let idle = P::idle_timeout(&session, held, shared);
        // Under stress a session that has not authenticated gets a short wait, also when the
        // stress begins while it waits.
        let spared = P::authenticated(&session, held);
        let started = Instant::now();
        let deadline = started + idle;
        let mut ticket = None;
        let line = loop {
            // A session that has not authenticated looks at its service's stress every
            // STRESS_IDLE (no shared waiter list to join on every wait): under stress it has
            // waited long enough, and meanwhile it may be chosen to make room.
            let mut wake = deadline;
            if !spared {
                let now = Instant::now();
                if cx.load.stressed() {
                    if now >= started + STRESS_IDLE {
                        break None;
                    }
                    if ticket.is_none() {
                        ticket = Some(cx.load.idle_since(started));
                    }
                    wake = wake.min(started + STRESS_IDLE);
                } else {
                    wake = wake.min(now + STRESS_IDLE);
                }
            }
            tokio::select! {
                r = timeout_at(wake, io.reader.next_line(&mut io.stream)) => match r {
                    Ok(line) => break Some(line),
                    Err(_) if Instant::now() >= deadline => break None,
                    Err(_) => {}
                },
                _ = cx.shutdown.cancelled() => {
                    P::shutting_down(shared, &mut io.out);
                    let _ = io.flush().await;
                    return End::Closed;
                }
                _ = evicted(&mut ticket), if ticket.is_some() => {
                    P::timed_out(shared, &mut io.out);
                    let _ = io.flush().await;
                    tracing::info!("closed to make room for a new client: idle longest, not \
                                    authenticated, with the service at its connection cap");
                    return End::Closed;
                }
            }
        };
        drop(ticket);
        // A command arrived (or the wait ended): room for its replies in one allocation.
        io.out.reserve(REPLY_CAPACITY);
        let output = match line {
            None => {
                P::timed_out(shared, &mut io.out);
                let _ = io.flush().await;
                tracing::info!("idle timeout");
                return End::Closed;
            }
            Some(Err(_)) | Some(Ok(None)) => return End::Closed,
            Some(Ok(Some(Line::TooLong))) => P::handle_overlong(&mut session),
            Some(Ok(Some(Line::Complete(range)))) => {
                let now = shared.clock.now();
                let (in_sasl, next_verifies) = P::sasl_state(&session);
                let line = io.reader.slice(range.clone());
                match crate::io::credential_step(in_sasl, next_verifies, line) {
                    Some(reserve) => {
                        let ip = cx.conn.peer.ip();
                        let wait = shared.credential_slot(ip, reserve).await;
                        if wait.is_zero() {
                            let line = io.reader.slice(range.clone());
                            let out = P::handle_line(&mut session, now, line);
                            io.reader.wipe(range);
                            out
                        } else {
                            // Boxed: the throttle wait is rarely live.
                            let Some(out) = Box::pin(wait_for_slot::<P, S>(
                                &mut session,
                                &mut io,
                                range,
                                wait,
                                cx,
                            ))
                            .await
                            else {
                                return End::Closed;
                            };
                            out
                        }
                    }
                    None => P::handle_line(&mut session, now, line),
                }
            }
        };
        // Most commands only answer; the rest run boxed, so their state is no part of every
        // waiting connection.
        let flow = match P::reply_only(output, &mut io.out) {
            None => Flow::Next,
            Some(output) => Box::pin(act(cx, output, &mut io, &mut session, held)).await,
        };
        match flow {
            Flow::Next => {}
            Flow::Closed => return End::Closed,
            Flow::StartTls => {
                // RFC 3207 §4.2 / RFC 2595 §4 (CVE-2011-0411): anything pipelined behind the
                // command was sent in plaintext and must not be executed after the handshake.
                if !io.reader.buffered().is_empty() {
                    tracing::warn!(
                        bytes = io.reader.buffered().len(),
                        "discarded plaintext pipelined after {}",
                        cx.protocol.starttls_name()
                    );
                }
                io.reader.clear();
                return End::StartTls(io.stream, session);
            }
        }
    }
}

/// Completes when the session holding `ticket` is chosen to make room (never without one).
async fn evicted(ticket: &mut Option<crate::session::load::IdleTicket<'_>>) {
    match ticket {
        Some(t) => t.evicted().await,
        None => std::future::pending().await,
    }
}

/// Most bytes read ahead while a session waits for its throttle slot; beyond it the wait is
/// no longer watched for the client leaving.
const WATCH_LIMIT: usize = 64 * 1024;

/// Waits `wait` for the throttle slot of the credential line at `range`, watching the client
/// meanwhile: the line is copied out (and wiped from the reader) so that reading can go on,
/// and a client that leaves before the slot comes gives it back and is not checked (`None`).
/// Otherwise the line is handed to the core when the slot comes.
async fn wait_for_slot<P, S>(
    session: &mut P::Session,
    io: &mut Io<S>,
    range: std::ops::Range<usize>,
    wait: Duration,
    cx: &Ctx<'_, P>,
) -> Option<P::Output>
where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let line = zeroize::Zeroizing::new(io.reader.slice(range.clone()).to_vec());
    io.reader.wipe(range);
    let deadline = tokio::time::Instant::now() + wait;
    let left = loop {
        if io.reader.buffered().len() >= WATCH_LIMIT {
            tokio::time::sleep_until(deadline).await;
            break false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break false,
            read = io.reader.fill(&mut io.stream) => match read {
                Ok(0) | Err(_) => break true,
                // Pipelined input: kept for after the check.
                Ok(_) => {}
            },
        }
    };
    if left {
        cx.shared.release_credential_slot(cx.conn.peer.ip()).await;
        tracing::info!(
            waited_ms = (wait.as_millis() as u64),
            "client left while waiting for its throttle slot; credential not checked"
        );
        return None;
    }
    Some(P::handle_line(session, cx.shared.clock.now(), &line))
}

/// Answers the credential checks `output` asks for through the verifier, then hands what the
/// core says next to the protocol.
async fn act<P, S>(
    cx: &Ctx<'_, P>,
    mut output: P::Output,
    io: &mut Io<S>,
    session: &mut P::Session,
    held: &mut P::Held,
) -> Flow
where
    P: Protocol,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    while let Some(check) = P::take_check(&mut output) {
        P::note_check(&check, held, cx.shared);
        let answer = cx.shared.verifier.verify(check, cx.conn.peer.ip()).await;
        output = P::handle_verified(session, answer);
    }
    cx.protocol
        .act(output, io, session, cx.conn, held, cx.shared)
        .await
}
