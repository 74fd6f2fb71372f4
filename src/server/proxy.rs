//! The PROXY protocol at the listeners: a connection from a `[listeners] proxy_protocol_from`
//! source (a load balancer) opens with a header naming the client it relays, which then stands
//! for the connection's peer everywhere after (the caps per address and network, the
//! allowlist, the throttle, policy networks, logs, the audit log, the Received header); a
//! connection from anywhere else must not open with one.
//!
//! Both are refusals, each closed without an answer, counted in
//! `mailgate_connections_refused_total` (cap `proxy-header`: a balancer's connection without a
//! valid header; cap `proxy-unexpected`: a header from another source) and logged in one line,
//! at most one a second of each kind (the next line counts those left out), so that a flood
//! of them cannot flood the log.
//! A header from another source is refused because it would let any client choose the address
//! the gateway judges it by.
//!
//! The header is read before anything else ([`read_header`]), all of it within
//! `[listeners] proxy_header_timeout` ([`HEADER_TIMEOUT`] by default) however its bytes
//! trickle in, so a silent or slow connection holds its service's permit only briefly; bytes read past the header (a
//! TLS ClientHello in the same segment) are handed to the session first by [`Front`]. A
//! version 2 `LOCAL` header (a balancer's health check) ends the connection at once, logged at
//! debug. The parsing is in [`crate::proxy_protocol`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::gateway::Gateway;
use crate::proxy_protocol::{self, Addresses, Command, Invalid, MAX_HEADER, Parsed, Sniff};

/// How long a balancer's connection may take to send its header, by default
/// (`[listeners] proxy_header_timeout`). Balancers send it at once
/// with the connection (HAProxy, nginx, cloud balancers); a few seconds cover a slow network.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether connections from `ip` must open with a PROXY header.
pub fn from_balancer(shared: &Gateway, ip: std::net::IpAddr) -> bool {
    let ip = crate::canonical_ip(ip);
    let nets = &shared.config.listeners.proxy_protocol_from;
    nets.iter().any(|n| n.contains(&ip))
}

/// Reads the PROXY header of a balancer's connection and returns the stream for the session
/// with the client's address; `None` when the connection is over (a `LOCAL` header, or a
/// refusal, already counted and logged).
pub async fn read_header(
    mut tcp: TcpStream,
    balancer: SocketAddr,
    listener: &'static str,
    shared: &Gateway,
) -> Option<(Front<TcpStream>, SocketAddr)> {
    let refuse = |why: &dyn std::fmt::Display| {
        shared.metrics.connection_refused(listener, "proxy-header");
        if let Some(more) = MISSING.admit(shared) {
            tracing::warn!(
                listener,
                %balancer,
                refused_unlogged = more,
                "connection refused: {why} from a listeners.proxy_protocol_from source"
            );
        }
    };
    // One deadline for the whole header, however the bytes trickle in.
    let limit = shared.config.listeners.proxy_header_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    // Sized for the longest header taken, only while it is read.
    let mut buf = vec![0u8; MAX_HEADER];
    let mut filled = 0;
    let header = loop {
        match proxy_protocol::parse(&buf[..filled]) {
            Parsed::Header(h) => break h,
            Parsed::Invalid(why) => {
                refuse(&why);
                return None;
            }
            Parsed::Incomplete => {}
        }
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut buf[filled..])).await;
        match read {
            Ok(Ok(0)) if filled == 0 => {
                // A bare connect-and-close: a balancer's plain TCP health check.
                tracing::debug!(listener, %balancer, "closed before a PROXY header");
                return None;
            }
            Ok(Ok(0)) => {
                refuse(&"the connection closed inside the PROXY header");
                return None;
            }
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => {
                tracing::debug!(listener, %balancer, "reading the PROXY header: {e}");
                return None;
            }
            Err(_) => {
                refuse(&format_args!("no whole PROXY header within {limit:?}"));
                return None;
            }
        }
    };
    let client = match (header.command, header.addresses) {
        (Command::Local, _) => {
            tracing::debug!(listener, %balancer, "PROXY v2 LOCAL (a health check): closed");
            return None;
        }
        // An IPv4 client named as IPv4-mapped IPv6 (a balancer on a dual-stack socket) is
        // the IPv4 client.
        (Command::Proxy, Addresses::Inet { source, .. }) => {
            SocketAddr::new(crate::canonical_ip(source.ip()), source.port())
        }
        (Command::Proxy, other) => {
            // The spec's rule: no client address named, the connection's own stands.
            tracing::debug!(
                listener,
                %balancer,
                "PROXY v{} header names no client address ({other:?}); keeping the balancer's",
                header.version
            );
            balancer
        }
    };
    let rest = buf[header.len..filled].to_vec();
    Some((Front::replaying(tcp, rest), client))
}

/// Logs the refusal of a client a balancer relays because its address or network is at its
/// cap (at most one line a second, as at accept).
pub fn log_cap_refusal(shared: &Gateway, listener: &str, cap: &str, client: SocketAddr) {
    if let Some(more) = CAPS.admit(shared) {
        tracing::warn!(
            listener,
            cap,
            %client,
            refused_unlogged = more,
            "connection through a load balancer refused: the {cap} connection cap is reached \
             (limits.max_connections_per_{})",
            if cap == "address" { "ip" } else { "network" }
        );
    }
}

/// Refusals of relayed clients over the caps per address and network, for [`Quiet`].
static CAPS: Quiet = Quiet::new();
/// Refusals of balancer connections without a valid header, for [`Quiet`].
static MISSING: Quiet = Quiet::new();
/// Refusals of headers from other sources, for [`Quiet`].
static UNEXPECTED: Quiet = Quiet::new();

/// One log line a second at most for one kind of refusal.
struct Quiet {
    /// The second (since the Unix epoch) of the last line.
    last: AtomicU64,
    /// Refusals since then not logged.
    missed: AtomicU64,
}

impl Quiet {
    const fn new() -> Quiet {
        Quiet {
            last: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    /// `Some(refusals left out since the last line)` if this one may be logged.
    fn admit(&self, shared: &Gateway) -> Option<u64> {
        let now = shared.clock.now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        let won = second > last
            && self
                .last
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if won {
            Some(self.missed.swap(0, Ordering::Relaxed))
        } else {
            self.missed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The stream a session runs on: the socket, after the bytes read past a PROXY header (if
/// any); on a connection that must not carry a header, it watches the first bytes and fails
/// the read that would hand a header to the session.
pub struct Front<S> {
    inner: S,
    replay: Vec<u8>,
    at: usize,
    watch: Option<Box<Watch>>,
}

/// What a watching [`Front`] needs to refuse a header: the first bytes so far and who to
/// blame.
struct Watch {
    seen: [u8; 12],
    len: usize,
    listener: &'static str,
    peer: SocketAddr,
    shared: Arc<Gateway>,
}

impl<S> Front<S> {
    /// A stream from a source that must not send a header.
    pub fn watching(
        inner: S,
        listener: &'static str,
        peer: SocketAddr,
        shared: Arc<Gateway>,
    ) -> Self {
        let watch = Watch {
            seen: [0; 12],
            len: 0,
            listener,
            peer,
            shared,
        };
        Front {
            inner,
            replay: Vec::new(),
            at: 0,
            watch: Some(Box::new(watch)),
        }
    }

    /// A stream whose header has been read, with the bytes read past it.
    pub fn replaying(inner: S, rest: Vec<u8>) -> Self {
        Front {
            inner,
            replay: rest,
            at: 0,
            watch: None,
        }
    }

    /// The socket (for an answer written on it directly).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl Watch {
    /// Looks at newly read bytes; `Err` if the stream turns out to open with a header.
    fn look(&mut self, new: &[u8]) -> Result<bool, io::Error> {
        let take = new.len().min(self.seen.len() - self.len);
        self.seen[self.len..self.len + take].copy_from_slice(&new[..take]);
        self.len += take;
        match proxy_protocol::sniff(&self.seen[..self.len]) {
            Sniff::No => Ok(true),
            Sniff::Maybe => Ok(false),
            Sniff::Header => {
                let listener = self.listener;
                self.shared
                    .metrics
                    .connection_refused(listener, "proxy-unexpected");
                if let Some(more) = UNEXPECTED.admit(&self.shared) {
                    tracing::warn!(
                        listener,
                        peer = %self.peer,
                        refused_unlogged = more,
                        "connection refused: a PROXY protocol header from a source not in \
                         listeners.proxy_protocol_from"
                    );
                }
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Invalid::NotAHeader.to_string(),
                ))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Front<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.replay.len() {
            let n = buf.remaining().min(this.replay.len() - this.at);
            buf.put_slice(&this.replay[this.at..this.at + n]);
            this.at += n;
            if this.at == this.replay.len() {
                this.replay = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watch)) = (&polled, this.watch.as_mut()) {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                match watch.look(new) {
                    Ok(true) => this.watch = None,
                    Ok(false) => {}
                    Err(e) => {
                        buf.set_filled(before);
                        this.watch = None;
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Front<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all<S: AsyncRead + Unpin>(mut s: S) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn replayed_bytes_come_first() {
        let (mut far, near) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut far, b" world")
            .await
            .unwrap();
        drop(far);
        let front = Front::replaying(near, b"hello".to_vec());
        assert_eq!(read_all(front).await.unwrap(), b"hello world");
    }
}
