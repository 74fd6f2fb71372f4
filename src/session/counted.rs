//! A stream that counts the bytes read from and written to it, for the connection's closing
//! log line. The counts live beside the session (borrowed), so they outlive the STARTTLS
//! switch that consumes the stream; counting is two relaxed additions per read or write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes in and out of one connection.
#[derive(Debug, Default)]
pub struct Bytes {
    read: AtomicU64,
    written: AtomicU64,
}

impl Bytes {
    /// Bytes read from the client (on the wire: TLS records included).
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to the client.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// `S`, counting into `bytes`.
#[derive(Debug)]
pub struct Counted<'a, S> {
    inner: S,
    bytes: &'a Bytes,
}

impl<'a, S> Counted<'a, S> {
    /// Counts what passes through `inner` into `bytes`.
    pub fn new(inner: S, bytes: &'a Bytes) -> Self {
        Counted { inner, bytes }
    }
}

fn add(n: &AtomicU64, by: usize) {
    n.fetch_add(u64::try_from(by).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            add(&self.bytes.read, buf.filled().len().saturating_sub(before));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            add(&self.bytes.written, n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            add(&self.bytes.written, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_both_ways() {
        let (client, server) = tokio::io::duplex(64);
        let bytes = Bytes::default();
        let mut counted = Counted::new(server, &bytes);
        let mut client = client;
        client.write_all(b"EHLO x\r\n").await.unwrap();
        let mut buf = [0u8; 8];
        counted.read_exact(&mut buf).await.unwrap();
        counted.write_all(b"250 ok\r\n").await.unwrap();
        counted.flush().await.unwrap();
        assert_eq!((bytes.read(), bytes.written()), (8, 8));
        let mut back = [0u8; 8];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"250 ok\r\n");
    }
}
