//! The upstream SMTP client: hands one spooled message to the smarthost and reports the
//! outcome per recipient.
//!
//! It speaks RFC 5321 (greeting, EHLO with HELO fallback per §4.1.1.1, MAIL/RCPT/DATA,
//! dot-stuffing per §4.5.2, QUIT, reply syntax per §4.2), STARTTLS per RFC 3207, implicit TLS
//! per RFC 8314, AUTH per RFC 4954 with PLAIN (RFC 4616), LOGIN, XOAUTH2 or OAUTHBEARER
//! (RFC 7628 §3.1, including the error challenge of §3.2.2), and the SIZE parameter of
//! RFC 1870. Every command and the connection set-up are bounded by the upstream's
//! `command_timeout`; replies are read with [`ReplyParser`], which bounds their lines and
//! length ([`MAX_REPLY_LINE`](crate::smtp::reply::MAX_REPLY_LINE)). The access
//! token for the OAuth mechanisms comes from the caller ([`Connector::send_as`]); obtaining and
//! refreshing it is `oauth.rs`'s job.
//!
//! The client is written here rather than taken from a mail-sending library because the spool
//! needs two things such send APIs do not give: a separate outcome for every recipient (so
//! that one rejected address fails alone while the others are delivered or retried), and the
//! message streamed from its spool file instead of loaded into memory.
//!
//! Replies are typed ([`Reply`]); the worker decides from the code class, never from text.
//! Connection, TLS and timeout failures are transient ([`Error::is_permanent`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use super::oauth::Secret;
use crate::config::{Upstream, UpstreamAuth, UpstreamTls};
pub use crate::smtp::reply::Reply;
use crate::smtp::reply::{Parsed, ReplyError, ReplyParser};
use crate::spool::Body;

/// Longest AUTH command with an initial response; a longer one is sent as a reply to an empty
/// challenge instead (RFC 4954 §4, with the 512-octet command line of RFC 5321 §4.5.3.1.4).
pub const MAX_AUTH_LINE: usize = 512;

/// Chunk size for streaming the message body.
const BODY_CHUNK: usize = 16 * 1024;

/// The point of the session at which something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// TLS handshake (implicit or after STARTTLS).
    Handshake,
    /// The server greeting.
    Greeting,
    /// EHLO or the HELO fallback.
    Ehlo,
    /// STARTTLS.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA and the message transfer.
    Data,
    /// QUIT.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Handshake => "TLS handshake",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Quit => "QUIT",
        })
    }
}

/// Errors of the upstream client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a failure reply.
    #[error("smarthost rejected {stage}: {reply}")]
    Rejected {
        /// The command it rejected.
        stage: Stage,
        /// Its reply.
        reply: Reply,
    },
    /// No reply or connection within `command_timeout`.
    #[error("smarthost timed out at {stage} after {after:?}")]
    Timeout {
        /// Where it stalled.
        stage: Stage,
        /// The timeout.
        after: Duration,
    },
    /// A socket error.
    #[error("smarthost {addr} at {stage}: {source}")]
    Io {
        /// The smarthost.
        addr: SocketAddr,
        /// Where it happened.
        stage: Stage,
        /// The error (for [`Stage::Handshake`], the TLS failure).
        source: io::Error,
    },
    /// The server closed the connection.
    #[error("smarthost closed the connection at {0}")]
    Closed(Stage),
    /// A reply that does not follow RFC 5321 §4.2, or exceeds the parser's bounds.
    #[error("smarthost reply: {0}")]
    BadReply(#[from] ReplyError),
    /// A reply whose text is unusable where it stands (an AUTH challenge that is not what
    /// RFC 7628 prescribes).
    #[error("malformed smarthost reply {0:?}")]
    Malformed(String),
    /// The server sent bytes after its STARTTLS reply (RFC 3207 §4.2 forbids acting on them).
    #[error("smarthost sent data after its STARTTLS reply")]
    PipelinedTls,
    /// TLS is required but the server does not offer STARTTLS.
    #[error("smarthost does not offer STARTTLS")]
    StartTlsUnavailable,
    /// Credentials are configured but the server does not offer the mechanism for them.
    #[error("smarthost does not offer AUTH {wanted}")]
    AuthUnavailable {
        /// The mechanism(s) we could use.
        wanted: &'static str,
    },
    /// AUTH XOAUTH2 or OAUTHBEARER is configured but no access token was given.
    #[error("no access token for AUTH {0}")]
    NoToken(&'static str),
    /// The TLS set-up is unusable (bad server name or protocol configuration).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The reverse-path cannot be put in an SMTP command.
    #[error("reverse-path {0:?} cannot be sent")]
    InvalidAddress(String),
    /// The message body could not be read from the spool.
    #[error("cannot read message body {path}: {source}")]
    Body {
        /// The body file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl Error {
    /// Whether retrying cannot help: a 5xx to MAIL, RCPT or DATA, or an unusable sender.
    /// Rejections at greeting, EHLO, STARTTLS or AUTH concern our relationship with the
    /// smarthost, not the message, so they are retried until the schedule runs out (as Postfix
    /// does for SASL failures).
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Rejected {
                stage: Stage::Mail | Stage::Rcpt | Stage::Data,
                reply,
            } => reply.is_permanent(),
            Error::InvalidAddress(_) => true,
            _ => false,
        }
    }

    /// Whether the smarthost refused our credentials (535, RFC 4954 §6): for a token, the sign
    /// that it expired or was revoked.
    pub fn is_auth_rejected(&self) -> bool {
        matches!(
            self,
            Error::Rejected {
                stage: Stage::Auth,
                reply,
            } if reply.code == 535
        )
    }

    /// Whether a reused session turned out to be closed before its MAIL command was
    /// answered: a socket error, end of stream or 421 at MAIL. Nothing was accepted then.
    pub fn is_stale_session(&self) -> bool {
        match self {
            Error::Io {
                stage: Stage::Mail, ..
            }
            | Error::Closed(Stage::Mail) => true,
            Error::Rejected {
                stage: Stage::Mail,
                reply,
            } => reply.code == 421,
            _ => false,
        }
    }

    /// The smarthost's reply, if the error is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Error::Rejected { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

/// Dot-stuffing for DATA (RFC 5321 §4.5.2), chunk by chunk; sans-IO.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    /// Appends `chunk` to `out`, doubling every dot that starts a line.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        for &b in chunk {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
        }
    }

    /// Appends the end-of-data marker, with a CRLF first if the message did not end a line.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Reverse-path without brackets; `""` is the null sender.
    pub mail_from: &'a str,
    /// Forward-paths without brackets.
    pub recipients: &'a [String],
    /// The stored message (CRLF line endings, not dot-stuffed).
    pub body: &'a Body,
    /// Its size in octets, for the SIZE parameter.
    pub size: u64,
}

/// A configured smarthost: the settings plus the TLS client configuration, built once, and
/// the sessions kept open for the next message (RFC 5321 §3.3 allows any number of mail
/// transactions per session). Clones share the idle sessions.
#[derive(Clone)]
pub struct Connector {
    upstream: Upstream,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Arc<std::sync::Mutex<Vec<Idle>>>,
}

/// Idle sessions kept at most: one per concurrent delivery (`relay::CONCURRENCY`).
pub const MAX_IDLE_SESSIONS: usize = 20;

/// Transactions per session before it is closed anyway, so that a long-lived session cannot
/// pin the gateway to one smarthost instance behind a load balancer forever.
pub const MAX_TRANSACTIONS: u32 = 100;

/// A session waiting for the next message.
struct Idle {
    session: Session,
    since: tokio::time::Instant,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password that `Upstream` carries.
        f.debug_struct("Connector")
            .field("address", &self.upstream.address)
            .field("tls", &self.upstream.tls)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Prepares the TLS configuration (system trust roots, or any certificate when
    /// `danger_accept_invalid_certs` is set).
    pub fn new(upstream: Upstream) -> Result<Connector, Error> {
        let tls = match upstream.tls {
            UpstreamTls::None => None,
            UpstreamTls::Starttls | UpstreamTls::Tls => {
                let name = ServerName::try_from(upstream.server_name.clone())
                    .map_err(|e| Error::TlsConfig(format!("server name: {e}")))?;
                let config = tls_config(upstream.danger_accept_invalid_certs)?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Connector {
            upstream,
            tls,
            idle: Default::default(),
        })
    }

    /// The smarthost settings.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Sends `msg` in one session, introducing ourselves as `helo`. On success returns one
    /// reply per recipient, in order: the RCPT reply if the recipient was refused, otherwise
    /// the reply to the end of DATA (or to DATA itself if that was refused). An `Err` applies to
    /// every recipient.
    pub async fn send(&self, helo: &str, msg: &Message<'_>) -> Result<Vec<Reply>, Error> {
        self.send_as(helo, msg, None).await
    }

    /// As [`Connector::send`], presenting `token` when the upstream's `auth` is XOAUTH2 or
    /// OAUTHBEARER (without one, those fail with [`Error::NoToken`]). A rejected token shows
    /// as [`Error::is_auth_rejected`].
    pub async fn send_as(
        &self,
        helo: &str,
        msg: &Message<'_>,
        token: Option<&Secret>,
    ) -> Result<Vec<Reply>, Error> {
        if !is_sendable(msg.mail_from) {
            return Err(Error::InvalidAddress(msg.mail_from.to_string()));
        }
        if let Some(mut session) = self.take_idle(token) {
            match session.transaction(msg).await {
                Ok((replies, done)) => {
                    self.finish(session, done).await;
                    return Ok(replies);
                }
                // The smarthost closed the idle session before our MAIL reached it: nothing
                // of this message was accepted, so a fresh session is safe.
                Err(e) if e.is_stale_session() => {
                    tracing::debug!(error = %e, "smarthost: idle session gone; reconnecting");
                }
                Err(e) => {
                    session.quit().await;
                    return Err(e);
                }
            }
        }
        let mut session = self.open(helo, token).await?;
        match session.transaction(msg).await {
            Ok((replies, done)) => {
                self.finish(session, done).await;
                Ok(replies)
            }
            Err(e) => {
                // QUIT is a courtesy; the outcome is already decided.
                session.quit().await;
                Err(e)
            }
        }
    }

    /// Closes (QUIT) the idle sessions that have waited `keep_idle`, or all of them; the
    /// relay worker calls this now and then, so that no session lingers until the smarthost
    /// drops it, and at shutdown.
    pub async fn close_idle(&self, all: bool) {
        let keep = self.upstream.keep_idle;
        let now = tokio::time::Instant::now();
        let expired: Vec<Session> = {
            let mut idle = self.lock_idle();
            let (old, fresh): (Vec<Idle>, Vec<Idle>) = idle
                .drain(..)
                .partition(|i| all || now.duration_since(i.since) >= keep);
            *idle = fresh;
            old.into_iter().map(|i| i.session).collect()
        };
        for mut session in expired {
            session.quit().await;
        }
    }

    /// Idle sessions now open.
    pub fn idle_sessions(&self) -> usize {
        self.lock_idle().len()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle session that is still fresh enough and was authenticated
    /// with `token` (a session opened with a token that has since been replaced is not used
    /// again: the smarthost sees no token after its successor is in use).
    fn take_idle(&self, token: Option<&Secret>) -> Option<Session> {
        let keep = self.upstream.keep_idle;
        let now = tokio::time::Instant::now();
        let mut idle = self.lock_idle();
        while let Some(i) = idle.pop() {
            if now.duration_since(i.since) < keep && i.session.token.as_ref() == token {
                return Some(i.session);
            }
            // Expired or of an older token: dropping closes the socket (no QUIT round trip
            // on this path).
        }
        None
    }

    /// After a transaction: keeps the session for the next message if reuse is on, the
    /// transaction ended cleanly and the session has not served too many; else QUIT.
    async fn finish(&self, mut session: Session, done: bool) {
        session.transactions += 1;
        let keep =
            !self.upstream.keep_idle.is_zero() && done && session.transactions < MAX_TRANSACTIONS;
        if keep {
            let mut idle = self.lock_idle();
            if idle.len() < MAX_IDLE_SESSIONS {
                let since = tokio::time::Instant::now();
                idle.push(Idle { session, since });
                return;
            }
        }
        session.quit().await;
    }

    async fn open(&self, helo: &str, token: Option<&Secret>) -> Result<Session, Error> {
        let up = &self.upstream;
        let t = up.command_timeout;
        let tcp = tokio::time::timeout(t, TcpStream::connect(up.address))
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Connect,
                after: t,
            })?
            .map_err(|source| Error::Io {
                addr: up.address,
                stage: Stage::Connect,
                source,
            })?;
        // Commands are written whole; without this, the final ".\r\n" waits for the
        // smarthost's delayed ACK (about 40 ms per message).
        let _ = tcp.set_nodelay(true);
        let mut s = Session {
            io: Box::new(tcp),
            buf: Vec::new(),
            timeout: t,
            addr: up.address,
            size: false,
            pipelining: false,
            chunking: false,
            token: None,
            transactions: 0,
        };
        if up.tls == UpstreamTls::Tls {
            s = self.handshake(s).await?;
        }
        let greeting = s.read_reply(Stage::Greeting).await?;
        if !greeting.is_success() {
            return Err(Error::Rejected {
                stage: Stage::Greeting,
                reply: greeting,
            });
        }
        let mut caps = s.ehlo(helo).await?;
        if up.tls == UpstreamTls::Starttls {
            if !caps.starttls {
                return Err(Error::StartTlsUnavailable);
            }
            s.command(Stage::StartTls, "STARTTLS").await?;
            if !s.buf.is_empty() {
                return Err(Error::PipelinedTls);
            }
            s = self.handshake(s).await?;
            caps = s.ehlo(helo).await?;
        }
        s.size = caps.size;
        s.pipelining = caps.pipelining;
        s.chunking = caps.chunking;
        match (up.auth, &up.username, &up.password) {
            (UpstreamAuth::Xoauth2 | UpstreamAuth::Oauthbearer, user, _) => {
                let bearer = Bearer {
                    oauthbearer: up.auth == UpstreamAuth::Oauthbearer,
                    user: user.as_deref().unwrap_or_default(),
                    host: &up.server_name,
                    port: up.address.port(),
                };
                let token = token.ok_or(Error::NoToken(bearer.name()))?;
                s.auth_bearer(&caps, &bearer, token).await?;
                s.token = Some(token.clone());
            }
            (_, Some(user), Some(pass)) => s.auth(&caps, up.auth, user, pass).await?,
            _ => {}
        }
        Ok(s)
    }

    async fn handshake(&self, s: Session) -> Result<Session, Error> {
        let Some((connector, name)) = &self.tls else {
            return Err(Error::TlsConfig(
                "TLS requested without a TLS configuration".into(),
            ));
        };
        let t = s.timeout;
        let addr = s.addr;
        let tls = tokio::time::timeout(t, connector.connect(name.clone(), s.io))
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Handshake,
                after: t,
            })?
            .map_err(|source| Error::Io {
                addr,
                stage: Stage::Handshake,
                source,
            })?;
        Ok(Session {
            io: Box::new(tls),
            buf: Vec::new(),
            timeout: t,
            addr,
            size: false,
            pipelining: false,
            chunking: false,
            token: None,
            transactions: 0,
        })
    }
}

/// Anything the session can run over: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the server said it supports in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Debug, Default, PartialEq, Eq)]
struct Caps {
    size: bool,
    starttls: bool,
    pipelining: bool,
    chunking: bool,
    auth: Vec<String>,
}

impl Caps {
    fn parse(ehlo: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => caps.size = true,
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => caps.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        caps
    }
}

struct Session {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
    timeout: Duration,
    addr: SocketAddr,
    size: bool,
    /// The server offered PIPELINING (RFC 2920).
    pipelining: bool,
    /// The server offered CHUNKING (RFC 3030).
    chunking: bool,
    /// The access token this session authenticated with, if any.
    token: Option<Secret>,
    /// Mail transactions completed in this session.
    transactions: u32,
}

impl Session {
    /// One mail transaction. Also says whether it ended cleanly (the reply to the end of
    /// DATA was read), so that the session may carry another.
    async fn transaction(&mut self, msg: &Message<'_>) -> Result<(Vec<Reply>, bool), Error> {
        let mut mail = format!("MAIL FROM:<{}>", msg.mail_from);
        if self.size {
            mail.push_str(&format!(" SIZE={}", msg.size));
        }
        if self.pipelining && self.chunking {
            return self.chunked(msg, &mail).await;
        }
        if self.pipelining {
            return self.pipelined(msg, &mail).await;
        }
        self.command(Stage::Mail, &mail).await?;
        let mut replies = Vec::with_capacity(msg.recipients.len());
        for rcpt in msg.recipients {
            if !is_sendable(rcpt) || rcpt.is_empty() {
                replies.push(unsendable());
                continue;
            }
            self.send_line(Stage::Rcpt, &format!("RCPT TO:<{rcpt}>"))
                .await?;
            replies.push(self.read_reply(Stage::Rcpt).await?);
        }
        if !replies.iter().any(Reply::is_success) {
            // MAIL is still open; RSET or QUIT would be needed before reuse: QUIT it is.
            return Ok((replies, false));
        }
        self.send_line(Stage::Data, "DATA").await?;
        let go = self.read_reply(Stage::Data).await?;
        let (last, done) = if go.is_intermediate() {
            self.stream_body(msg.body).await?;
            (self.read_reply(Stage::Data).await?, true)
        } else {
            (go, false)
        };
        for reply in replies.iter_mut().filter(|r| r.is_success()) {
            *reply = last.clone();
        }
        Ok((replies, done))
    }

    async fn ehlo(&mut self, helo: &str) -> Result<Caps, Error> {
        self.send_line(Stage::Ehlo, &format!("EHLO {helo}")).await?;
        let reply = self.read_reply(Stage::Ehlo).await?;
        if reply.is_success() {
            return Ok(Caps::parse(&reply));
        }
        if !reply.is_permanent() {
            return Err(Error::Rejected {
                stage: Stage::Ehlo,
                reply,
            });
        }
        // An old server that does not know EHLO (RFC 5321 §4.1.1.1 / §3.2).
        self.command(Stage::Ehlo, &format!("HELO {helo}")).await?;
        Ok(Caps::default())
    }

    async fn auth(
        &mut self,
        caps: &Caps,
        mechanism: UpstreamAuth,
        user: &str,
        pass: &str,
    ) -> Result<(), Error> {
        let offered = |m: &str| caps.auth.iter().any(|a| a == m);
        let plain = match mechanism {
            UpstreamAuth::Plain if offered("PLAIN") => true,
            UpstreamAuth::Plain => return Err(Error::AuthUnavailable { wanted: "PLAIN" }),
            UpstreamAuth::Login if offered("LOGIN") => false,
            UpstreamAuth::Login => return Err(Error::AuthUnavailable { wanted: "LOGIN" }),
            _ if offered("PLAIN") => true,
            _ if offered("LOGIN") => false,
            _ => {
                return Err(Error::AuthUnavailable {
                    wanted: "PLAIN or LOGIN",
                });
            }
        };
        if plain {
            let token = Zeroizing::new(format!("\0{user}\0{pass}"));
            let line = Zeroizing::new(format!("AUTH PLAIN {}", BASE64.encode(token.as_bytes())));
            self.command(Stage::Auth, &line).await?;
        } else {
            self.send_line(Stage::Auth, "AUTH LOGIN").await?;
            for secret in [user, pass] {
                let reply = self.read_reply(Stage::Auth).await?;
                if reply.code != 334 {
                    return Err(Error::Rejected {
                        stage: Stage::Auth,
                        reply,
                    });
                }
                let line = Zeroizing::new(BASE64.encode(secret.as_bytes()));
                self.send_line(Stage::Auth, &line).await?;
            }
            let reply = self.read_reply(Stage::Auth).await?;
            if !reply.is_success() {
                return Err(Error::Rejected {
                    stage: Stage::Auth,
                    reply,
                });
            }
        }
        Ok(())
    }

    /// AUTH XOAUTH2 or OAUTHBEARER with `token`. The initial response goes on the AUTH line
    /// if it fits in [`MAX_AUTH_LINE`], else after an empty 334 (RFC 4954 §4). A 334 in reply
    /// is the server's error report (RFC 7628 §3.2.2; XOAUTH2 servers do the same): we answer
    /// with the dummy response it asks for and return the failure that follows.
    async fn auth_bearer(
        &mut self,
        caps: &Caps,
        bearer: &Bearer<'_>,
        token: &Secret,
    ) -> Result<(), Error> {
        let name = bearer.name();
        if !caps.auth.iter().any(|a| a == name) {
            return Err(Error::AuthUnavailable { wanted: name });
        }
        let response = bearer.initial_response(token);
        let line = Zeroizing::new(format!("AUTH {name} {}", response.as_str()));
        if line.len() + 2 <= MAX_AUTH_LINE {
            self.send_line(Stage::Auth, &line).await?;
        } else {
            self.send_line(Stage::Auth, &format!("AUTH {name}")).await?;
            let reply = self.read_reply(Stage::Auth).await?;
            if reply.code != 334 {
                return Err(Error::Rejected {
                    stage: Stage::Auth,
                    reply,
                });
            }
            self.send_line(Stage::Auth, &response).await?;
        }
        let mut reply = self.read_reply(Stage::Auth).await?;
        if reply.code == 334 {
            let detail = BASE64.decode(reply.text().trim()).unwrap_or_default();
            let detail = String::from_utf8_lossy(&detail[..detail.len().min(512)]).into_owned();
            tracing::debug!(addr = %self.addr, mechanism = name, detail, "smarthost: AUTH error");
            // RFC 7628 §3.2.3: a single %x01 (base64 "AQ=="); XOAUTH2 expects an empty line.
            let dummy = if bearer.oauthbearer { "AQ==" } else { "" };
            self.send_line(Stage::Auth, dummy).await?;
            reply = self.read_reply(Stage::Auth).await?;
            if reply.code == 334 {
                // A server that keeps challenging is broken; do not loop.
                return Err(Error::Malformed(
                    "second AUTH challenge after an error".into(),
                ));
            }
        }
        if !reply.is_success() {
            return Err(Error::Rejected {
                stage: Stage::Auth,
                reply,
            });
        }
        Ok(())
    }

    /// Sends a command and expects a 2xx reply.
    async fn command(&mut self, stage: Stage, line: &str) -> Result<Reply, Error> {
        self.send_line(stage, line).await?;
        let reply = self.read_reply(stage).await?;
        if reply.is_success() {
            Ok(reply)
        } else {
            Err(Error::Rejected { stage, reply })
        }
    }

    /// The transaction with PIPELINING and CHUNKING (RFC 3030 §4.2): MAIL, every RCPT and
    /// `BDAT <size> LAST` with the message itself (as stored, no dot-stuffing) go out
    /// without waiting, so a message costs one round trip. The server reads the chunk even
    /// when it refused every recipient, and answers each command in order.
    async fn chunked(
        &mut self,
        msg: &Message<'_>,
        mail: &str,
    ) -> Result<(Vec<Reply>, bool), Error> {
        let body = msg.body;
        let (mut batch, sent) =
            envelope_batch(mail, msg.recipients, &format!("BDAT {} LAST", body.len()));
        match body.in_memory() {
            Some(bytes) if bytes.len() <= BODY_CHUNK => {
                batch.extend_from_slice(bytes);
                self.write(Stage::Mail, &batch).await?;
            }
            _ => {
                self.write(Stage::Mail, &batch).await?;
                self.send_raw(body).await?;
            }
        }
        let mut replies = self.envelope_replies(msg, sent).await?;
        let last = self.read_reply(Stage::Data).await?;
        for reply in replies.iter_mut().filter(|r| r.is_success()) {
            *reply = last.clone();
        }
        Ok((replies, true))
    }

    /// Writes the body as it is stored (for BDAT).
    async fn send_raw(&mut self, body: &Body) -> Result<(), Error> {
        if let Some(bytes) = body.in_memory() {
            return self.write(Stage::Data, bytes).await;
        }
        let mut pos = 0;
        while pos < body.len() {
            let read = read_chunk(body, pos).await?;
            pos += read.len() as u64;
            self.write(Stage::Data, &read).await?;
        }
        Ok(())
    }

    /// The transaction with PIPELINING (RFC 2920 §3.1): MAIL, every RCPT and DATA go out in
    /// one write and their replies are read in order, so a message costs two round trips.
    async fn pipelined(
        &mut self,
        msg: &Message<'_>,
        mail: &str,
    ) -> Result<(Vec<Reply>, bool), Error> {
        let (batch, sent) = envelope_batch(mail, msg.recipients, "DATA");
        self.write(Stage::Mail, &batch).await?;
        let mut replies = self.envelope_replies(msg, sent).await?;
        let go = self.read_reply(Stage::Data).await?;
        let accepted = replies.iter().any(Reply::is_success);
        if !go.is_intermediate() {
            // DATA refused (no recipient accepted, or the message as a whole).
            for reply in replies.iter_mut().filter(|r| r.is_success()) {
                *reply = go.clone();
            }
            return Ok((replies, false));
        }
        if !accepted {
            // A server that answers 354 with no valid recipient gets an empty message, ended
            // at once (RFC 2920 §3.1), and nothing is delivered.
            self.write(Stage::Data, b".\r\n").await?;
            let _ = self.read_reply(Stage::Data).await?;
            return Ok((replies, true));
        }
        self.stream_body(msg.body).await?;
        let last = self.read_reply(Stage::Data).await?;
        for reply in replies.iter_mut().filter(|r| r.is_success()) {
            *reply = last.clone();
        }
        Ok((replies, true))
    }

    /// Reads the replies to a pipelined MAIL and its `sent` RCPTs: one per recipient (a local
    /// refusal for unsendable ones). A refused MAIL is the error; the RCPT replies and the one
    /// to the final command are then 503s (bad sequence) and are read and dropped, unless
    /// the server is closing (421) and sends none.
    async fn envelope_replies(
        &mut self,
        msg: &Message<'_>,
        sent: usize,
    ) -> Result<Vec<Reply>, Error> {
        let mail_reply = self.read_reply(Stage::Mail).await?;
        if !mail_reply.is_success() {
            if mail_reply.code != 421 {
                for _ in 0..=sent {
                    self.read_reply(Stage::Rcpt).await?;
                }
            }
            return Err(Error::Rejected {
                stage: Stage::Mail,
                reply: mail_reply,
            });
        }
        let mut replies = Vec::with_capacity(msg.recipients.len());
        for rcpt in msg.recipients {
            if !is_sendable(rcpt) || rcpt.is_empty() {
                replies.push(unsendable());
                continue;
            }
            replies.push(self.read_reply(Stage::Rcpt).await?);
        }
        Ok(replies)
    }

    async fn stream_body(&mut self, body: &Body) -> Result<(), Error> {
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::with_capacity(BODY_CHUNK.min(body.len() as usize) * 9 / 8 + 8);
        if let Some(bytes) = body.in_memory() {
            stuffer.push(bytes, &mut out);
        } else {
            let mut pos = 0;
            while pos < body.len() {
                let read = read_chunk(body, pos).await?;
                pos += read.len() as u64;
                out.clear();
                stuffer.push(&read, &mut out);
                self.write(Stage::Data, &out).await?;
            }
            out.clear();
        }
        stuffer.finish(&mut out);
        self.write(Stage::Data, &out).await
    }

    async fn send_line(&mut self, stage: Stage, line: &str) -> Result<(), Error> {
        // AUTH lines carry credentials and are never logged.
        if stage != Stage::Auth {
            tracing::trace!(addr = %self.addr, "smarthost <- {line}");
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(line.len() + 2));
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(stage, &bytes).await
    }

    async fn write(&mut self, stage: Stage, bytes: &[u8]) -> Result<(), Error> {
        let (addr, after) = (self.addr, self.timeout);
        let io = &mut self.io;
        let write = async move {
            io.write_all(bytes).await?;
            io.flush().await
        };
        tokio::time::timeout(after, write)
            .await
            .map_err(|_| Error::Timeout { stage, after })?
            .map_err(|source| Error::Io {
                addr,
                stage,
                source,
            })
    }

    async fn read_reply(&mut self, stage: Stage) -> Result<Reply, Error> {
        let after = self.timeout;
        let reply = tokio::time::timeout(after, self.read_reply_untimed(stage))
            .await
            .map_err(|_| Error::Timeout { stage, after })??;
        tracing::trace!(addr = %self.addr, "smarthost -> {reply}");
        Ok(reply)
    }

    async fn read_reply_untimed(&mut self, stage: Stage) -> Result<Reply, Error> {
        let mut parser = ReplyParser::new();
        let mut chunk = [0u8; 1024];
        loop {
            if !self.buf.is_empty() {
                // What follows the reply belongs to the next one (pipelining): it stays.
                match parser.feed(&self.buf)? {
                    Parsed::Reply { reply, consumed } => {
                        self.buf.drain(..consumed);
                        return Ok(reply);
                    }
                    Parsed::NeedMore => self.buf.clear(),
                }
            }
            let n = self.io.read(&mut chunk).await.map_err(|source| Error::Io {
                addr: self.addr,
                stage,
                source,
            })?;
            if n == 0 {
                return Err(Error::Closed(stage));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn quit(&mut self) {
        if self.send_line(Stage::Quit, "QUIT").await.is_ok() {
            let _ = self.read_reply(Stage::Quit).await;
        }
        let _ = self.io.shutdown().await;
    }
}

/// MAIL, a RCPT per sendable recipient and `last` (DATA or BDAT), CRLF-terminated, for one
/// pipelined write; also how many RCPTs it holds.
fn envelope_batch(mail: &str, recipients: &[String], last: &str) -> (Vec<u8>, usize) {
    let mut batch = Vec::with_capacity(mail.len() + recipients.len() * 64 + last.len() + 8);
    batch.extend_from_slice(mail.as_bytes());
    batch.extend_from_slice(b"\r\n");
    let mut sent = 0;
    for rcpt in recipients
        .iter()
        .filter(|r| is_sendable(r) && !r.is_empty())
    {
        batch.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        sent += 1;
    }
    batch.extend_from_slice(last.as_bytes());
    batch.extend_from_slice(b"\r\n");
    (batch, sent)
}

/// Reads up to [`BODY_CHUNK`] bytes of a spooled body at `pos`, on the blocking pool.
async fn read_chunk(body: &Body, pos: u64) -> Result<Vec<u8>, Error> {
    let body_err = |source| Error::Body {
        path: body.path().to_path_buf(),
        source,
    };
    let chunk = body.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; BODY_CHUNK];
        let n = chunk.read_at(&mut buf, pos)?;
        buf.truncate(n);
        Ok(buf)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
    .map_err(body_err)?;
    if read.is_empty() {
        return Err(body_err(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(read)
}

/// The reply recorded for a recipient address that cannot be put in a RCPT command.
fn unsendable() -> Reply {
    Reply::new(
        553,
        Some((5, 1, 3)),
        "recipient address cannot be sent in SMTP",
    )
}

/// The parameters of an XOAUTH2 or OAUTHBEARER exchange.
struct Bearer<'a> {
    oauthbearer: bool,
    user: &'a str,
    host: &'a str,
    port: u16,
}

impl Bearer<'_> {
    fn name(&self) -> &'static str {
        if self.oauthbearer {
            "OAUTHBEARER"
        } else {
            "XOAUTH2"
        }
    }

    /// The base64 initial response: for XOAUTH2 `user=U^Aauth=Bearer T^A^A`; for OAUTHBEARER
    /// the GS2 header `n,a=U,` (RFC 5801 saslname escaping) then `^Ahost=H^Aport=P^Aauth=Bearer
    /// T^A^A` (RFC 7628 §3.1).
    fn initial_response(&self, token: &Secret) -> Zeroizing<String> {
        let t = token.expose();
        let raw = Zeroizing::new(if self.oauthbearer {
            let user = self.user.replace('=', "=3D").replace(',', "=2C");
            format!(
                "n,a={user},\x01host={}\x01port={}\x01auth=Bearer {t}\x01\x01",
                self.host, self.port
            )
        } else {
            format!("user={}\x01auth=Bearer {t}\x01\x01", self.user)
        });
        Zeroizing::new(BASE64.encode(raw.as_bytes()))
    }
}

/// Whether `addr` can be put between angle brackets in a command: no controls, spaces or
/// brackets, and not absurdly long (RFC 5321 §4.5.3.1.3 allows 256 octets for a path).
fn is_sendable(addr: &str) -> bool {
    addr.len() <= 256
        && !addr
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == 0x7f)
}

fn tls_config(accept_any: bool) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsConfig(e.to_string()))?;
    if accept_any {
        let verifier = Arc::new(crate::tls::AcceptAnyCert::new(provider));
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "relay: problem loading system trust roots");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "relay: no system trust roots; smarthost TLS will fail"
        );
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
