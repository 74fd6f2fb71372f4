//! The admin endpoint: a small HTTP/1.1 server on `[listeners] admin` with the gateway's
//! metrics, a health check, the audit report as JSON, the allowlist, and a dashboard page.
//!
//! ```text
//! GET    /                     the dashboard (one self-contained HTML page)
//! GET    /healthz              200 "ok"
//! GET    /metrics              Prometheus text format 0.0.4 (see metrics.rs)
//! GET    /api/report           the audit report as JSON (filters as `mailgate audit`)
//! GET    /api/timeline         counts per time bucket, for the dashboard's chart
//! GET    /api/migration        users checked by the old server only (during a migration)
//! GET    /api/refusals         the last SMTP refusals, newest first
//! GET    /api/allowlist        the allowlist entries
//! POST   /api/allowlist        {"ip", "ttl", "user"}: add an entry
//! DELETE /api/allowlist/{ip}   remove the entry covering an address
//! ```
//!
//! Access ([`Access`]): with `[admin] token_file`, `/metrics` and `/api/*` need the header
//! `Authorization: Bearer <token>` (compared in constant time); without one, only loopback
//! peers are served (configuration refuses a non-loopback `listeners.admin` without a token),
//! only requests whose `Host` names loopback (`localhost`, `127.0.0.1`, `[::1]`; so that a web
//! page cannot reach the endpoint through DNS rebinding), and only reads: adding to the
//! allowlist lets an address relay, and every local user can reach loopback, so changes over
//! HTTP need the token (or `mailgate allowlist`, which needs the control key).
//! The dashboard page and `/healthz` carry no data and are served to any allowed peer; the page
//! asks the API with the token. The server holds at most [`MAX_CONNECTIONS`] connections,
//! closes one idle for [`IDLE_TIMEOUT`] and reads request bodies of at most [`MAX_BODY`] bytes.
//! With `[admin] tls = true` it speaks HTTPS with the gateway's certificate (the one in force:
//! a SIGHUP reload applies here too); handshakes run beside the accept loop, each bounded by
//! `limits.tls_handshake_timeout`, so a slow client holds up no one else.
//! Handlers live in `routes.rs`; the metrics they serve are kept in `crate::metrics`.

mod health;
mod routes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::http::{HeaderMap, header};
use axum::serve::IncomingStream;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::gateway::Gateway;

/// Connections served at once; further ones wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection with no read or write for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request body (an allowlist entry).
pub const MAX_BODY: usize = 4096;
/// Largest token file.
pub const MAX_TOKEN_FILE: u64 = 4096;

/// Why the admin endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token file could not be read.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The token file holds no token, or more than [`MAX_TOKEN_FILE`] bytes, or not UTF-8.
    #[error("token file {path}: {why}")]
    BadToken {
        /// The file.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Who may use the endpoint: the holder of a bearer token, or (without one) loopback peers.
pub struct Access {
    /// SHA-256 of the token, so that comparing takes the same time whatever the lengths.
    token: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "set"))
            .finish()
    }
}

/// What [`Access::check`] decides for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// 401: the token is missing or wrong.
    Unauthorized,
    /// 403: no token is configured and the request may not be served without one; why.
    Forbidden(&'static str),
}

/// What a request does, for [`Access::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The page or the health check: no data.
    Open,
    /// Reads data (metrics, report, allowlist).
    Read,
    /// Changes the allowlist.
    Write,
}

impl Access {
    /// Reads the token from `file` (surrounding whitespace removed); `None`: no token, loopback
    /// peers only.
    pub fn load(file: Option<&Path>) -> Result<Access, Error> {
        let Some(path) = file else {
            return Ok(Access { token: None });
        };
        let shown = || path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| Error::TokenFile {
            path: shown(),
            source,
        })?;
        if meta.len() > MAX_TOKEN_FILE {
            return Err(Error::BadToken {
                path: shown(),
                why: "larger than 4096 bytes",
            });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| Error::TokenFile {
            path: shown(),
            source,
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::BadToken {
            path: shown(),
            why: "not UTF-8",
        })?;
        Access::with_token(text.trim()).ok_or_else(|| Error::BadToken {
            path: shown(),
            why: "empty",
        })
    }

    /// Requires `token` (non-empty, else `None`).
    pub fn with_token(token: &str) -> Option<Access> {
        if token.is_empty() {
            return None;
        }
        Some(Access {
            token: Some(Zeroizing::new(Sha256::digest(token.as_bytes()).into())),
        })
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Decides for a request from `peer` with `headers` that does `what`.
    pub fn check(&self, peer: SocketAddr, headers: &HeaderMap, what: Use) -> Verdict {
        let Some(want) = &self.token else {
            if !crate::canonical_ip(peer.ip()).is_loopback() {
                return Verdict::Forbidden("loopback clients only");
            }
            if !loopback_host(headers) {
                return Verdict::Forbidden("the Host header must name loopback");
            }
            if what == Use::Write {
                return Verdict::Forbidden(
                    "changing the allowlist over HTTP needs [admin] token_file",
                );
            }
            return Verdict::Allow;
        };
        if what == Use::Open {
            return Verdict::Allow;
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        let Some(given) = given else {
            return Verdict::Unauthorized;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        match bool::from(given.ct_eq(&**want)) {
            true => Verdict::Allow,
            false => Verdict::Unauthorized,
        }
    }
}

/// Whether the `Host` header (if any: HTTP/1.0 may omit it) names loopback: `localhost` or a
/// loopback address, with or without a port.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = value.to_str() else {
        return false;
    };
    let host = host.trim();
    // Drop a port: after the bracket of an IPv6 literal, or after the only colon.
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        },
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| crate::canonical_ip(ip).is_loopback())
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1; scheme
/// case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Serves the admin endpoint on `listener` until `shutdown` fires; requests in progress are
/// finished (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    access: Access,
    shared: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(role = "admin", %addr, token = access.requires_token(), "listening");
    }
    let local = listener.local_addr();
    let (ready, incoming) = mpsc::channel(MAX_CONNECTIONS);
    tokio::spawn(accept_loop(
        listener,
        shared.clone(),
        ready,
        shutdown.clone(),
    ));
    let app = routes::router(shared, Arc::new(access));
    let listener = Capped { incoming, local };
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::warn!("admin endpoint stopped: {e}");
    }
}

/// The client address of a connection (for the loopback rule).
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, Capped>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Capped>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// Accepts connections while fewer than [`MAX_CONNECTIONS`] are open (a connection holds a
/// permit until closed), runs the TLS handshake if `[admin] tls` is on, and hands each ready
/// connection to [`Capped`]. Stops at `shutdown`, closing the listening socket.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Gateway>,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = accept_with_permit(&listener, &slots) => a,
            () = shutdown.cancelled() => return,
        };
        let (stream, peer, permit) = accepted;
        let _ = stream.set_nodelay(true);
        if !shared.config.admin_tls {
            if ready
                .send((Conn::new(Box::new(stream), permit), peer))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let (shared, ready) = (shared.clone(), ready.clone());
        tokio::spawn(async move {
            if let Some((tls, _)) = shared.accept_tls(stream, "admin TLS", None).await {
                let _ = ready.send((Conn::new(Box::new(tls), permit), peer)).await;
            }
        });
    }
}

async fn accept_with_permit(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) {
    loop {
        // The semaphore is never closed; should acquiring fail, serve without a permit.
        let permit = slots.clone().acquire_owned().await.ok();
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, permit),
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!("admin: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The listener axum serves: the connections [`accept_loop`] has made ready.
struct Capped {
    incoming: mpsc::Receiver<(Conn, SocketAddr)>,
    local: io::Result<SocketAddr>,
}

impl axum::serve::Listener for Capped {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.incoming.recv().await {
            Some(ready) => ready,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// A byte stream of the admin endpoint: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection that fails its next read or write once idle for [`IDLE_TIMEOUT`], so a client
/// that stops mid-request (or keeps an idle keep-alive) gives its slot back.
struct Conn {
    stream: Box<dyn Stream>,
    idle: Pin<Box<Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Conn {
    fn new(stream: Box<dyn Stream>, permit: Option<OwnedSemaphorePermit>) -> Conn {
        Conn {
            stream,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _permit: permit,
        }
    }

    /// After progress: push the deadline out. While waiting: fail once it has passed.
    fn track<T>(&mut self, cx: &mut Context<'_>, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match p {
            Poll::Ready(r) => {
                self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.track(cx, p)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.track(cx, p)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.stream).poll_flush(cx);
        this.track(cx, p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn access_rules() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let open = Access::load(None).unwrap();
        let token = Access::with_token("s3cret").unwrap();
        use Verdict::*;
        const LOOPBACK: Verdict = Forbidden("loopback clients only");
        const WRITE: Verdict =
            Forbidden("changing the allowlist over HTTP needs [admin] token_file");
        let cases: [(&Access, SocketAddr, Option<&str>, Use, Verdict); 15] = [
            (&open, local, None, Use::Read, Allow),
            (&open, mapped, None, Use::Read, Allow),
            (&open, local, None, Use::Open, Allow),
            (&open, local, None, Use::Write, WRITE),
            (&open, remote, None, Use::Read, LOOPBACK),
            (&open, remote, None, Use::Open, LOOPBACK),
            (&token, remote, Some("Bearer s3cret"), Use::Read, Allow),
            (&token, local, Some("bearer  s3cret "), Use::Write, Allow),
            (&token, local, None, Use::Read, Unauthorized),
            (&token, local, None, Use::Write, Unauthorized),
            (&token, local, Some("Bearer s3cre"), Use::Read, Unauthorized),
            (
                &token,
                local,
                Some("Bearer s3cret2"),
                Use::Read,
                Unauthorized,
            ),
            (&token, local, Some("Basic s3cret"), Use::Read, Unauthorized),
            (&token, local, Some("Bearer"), Use::Read, Unauthorized),
            (&token, remote, None, Use::Open, Allow),
        ];
        for (access, peer, auth, what, want) in cases {
            assert_eq!(
                access.check(peer, &headers(auth), what),
                want,
                "{peer} {auth:?} {what:?} token={}",
                access.requires_token()
            );
        }
    }

    #[test]
    fn without_a_token_the_host_must_name_loopback() {
        let open = Access::load(None).unwrap();
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // (Host header, allowed?)
        let cases = [
            ("localhost", true),
            ("LOCALHOST:8080", true),
            ("127.0.0.1:2580", true),
            ("127.9.9.9", true),
            ("[::1]:2580", true),
            ("[::1]", true),
            ("[::ffff:127.0.0.1]", true),
            ("evil.example", false),
            ("evil.example:2580", false),
            ("localhost.evil.example", false),
            ("192.0.2.1:2580", false),
            ("[::1", false),
            ("[::1]x", false),
            ("", false),
        ];
        for (host, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            let got = open.check(local, &h, Use::Read) == Verdict::Allow;
            assert_eq!(got, want, "Host: {host:?}");
        }
        // No Host header (HTTP/1.0): loopback peer, allowed.
        assert_eq!(
            open.check(local, &HeaderMap::new(), Use::Read),
            Verdict::Allow
        );
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "  abc123\n").unwrap();
        let access = Access::load(Some(&good)).unwrap();
        assert!(access.requires_token());
        assert_eq!(
            access.check(
                "127.0.0.1:1".parse().unwrap(),
                &headers(Some("Bearer abc123")),
                Use::Read
            ),
            Verdict::Allow
        );
        assert!(!format!("{access:?}").contains("abc123"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(matches!(
            Access::load(Some(&empty)),
            Err(Error::BadToken { why: "empty", .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, "x".repeat(MAX_TOKEN_FILE as usize + 1)).unwrap();
        assert!(matches!(
            Access::load(Some(&big)),
            Err(Error::BadToken { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            Access::load(Some(&missing)),
            Err(Error::TokenFile { .. })
        ));
    }
}
