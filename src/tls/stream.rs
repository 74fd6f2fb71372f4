//! The stream of a session after its TLS handshake, whichever library made it: rustls (TLS
//! 1.2 and 1.3, everyone), or OpenSSL for a `[tls] legacy_networks` client (with the
//! `legacy-tls` feature). The session driver reads and writes it without knowing which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A server-side TLS stream over `S`.
// The OpenSSL variant is a pointer, the rustls one the session itself: boxing the common
// variant would add an allocation to every TLS session for the sake of the rare legacy one.
#[allow(clippy::large_enum_variant)]
pub enum ServerStream<S> {
    /// A rustls session.
    Rustls(tokio_rustls::server::TlsStream<S>),
    /// An OpenSSL session, for a legacy network's client.
    #[cfg(feature = "legacy-tls")]
    OpenSsl(tokio_openssl::SslStream<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Rustls(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "legacy-tls")]
            ServerStream::OpenSsl(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Rustls(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "legacy-tls")]
            ServerStream::OpenSsl(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Rustls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "legacy-tls")]
            ServerStream::OpenSsl(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Rustls(s) => s.is_write_vectored(),
            #[cfg(feature = "legacy-tls")]
            ServerStream::OpenSsl(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Rustls(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "legacy-tls")]
            ServerStream::OpenSsl(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Rustls(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "legacy-tls")]
            ServerStream::OpenSsl(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
