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
//!
//! This file holds the types, the pool of idle sessions and the session's line IO;
//! `client/connect.rs` sets a session up (TCP, TLS, EHLO, AUTH) and `client/transaction.rs`
//! sends one message on it.

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

mod connect;
mod transaction;

pub use connect::MAX_AUTH_LINE;
use connect::tls_config;
pub use transaction::DotStuffer;
use transaction::is_sendable;

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
}

/// Anything the session can run over: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

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

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
