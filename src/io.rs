//! Shared tokio plumbing for the session loops: a bounded line reader that keeps whatever the
//! client pipelined behind a line (RFC 2920), and reply flushing.
//!
//! The reader never holds more than `max_line` bytes of an unfinished line: a longer line is
//! reported once as [`Line::TooLong`] and the rest of it, up to its LF, is discarded, so a
//! client cannot grow a session's memory by never sending a line end. An idle session holds no
//! read buffer at all: [`LineReader::shrink`] gives the buffer back once it has been consumed,
//! and the next read goes to a scratch buffer on the stack, so the heap buffer is allocated
//! only when bytes have arrived.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use zeroize::Zeroize;

/// Smallest read granted to the socket at a time.
const MIN_READ: usize = 1024;

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line; the range indexes [`LineReader::slice`] and excludes CRLF (or LF).
    Complete(Range<usize>),
    /// The line exceeded the limit; it has been (or will be) discarded up to its end.
    TooLong,
}

/// A bounded, pipelining-aware line reader.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Start of unconsumed data.
    start: usize,
    /// End of valid data.
    end: usize,
    max_line: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
}

impl LineReader {
    /// A reader refusing lines longer than `max_line` bytes (CRLF excluded).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_line,
            discarding: false,
        }
    }

    /// Changes the line cap (e.g. larger while a SASL exchange runs).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// The bytes of a completed line.
    pub fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Bytes received but not yet consumed (pipelined input).
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Overwrites the bytes of a consumed line that carried credentials (PASS, AUTH data), so
    /// they do not linger in the buffer.
    pub fn wipe(&mut self, range: Range<usize>) {
        if let Some(bytes) = self.buf.get_mut(range) {
            bytes.zeroize();
        }
    }

    /// Drops everything buffered (RFC 3207 §4.2: plaintext sent before the TLS handshake
    /// must not be executed after it).
    pub fn clear(&mut self) {
        self.buf.zeroize();
        self.buf.clear();
        self.start = 0;
        self.end = 0;
        self.discarding = false;
    }

    /// Whether a complete line is already buffered (so replies can wait to be flushed).
    pub fn has_line(&self) -> bool {
        memchr::memchr(b'\n', self.buffered()).is_some()
    }

    /// Releases the buffer's memory while the session idles (when everything in it has been
    /// consumed; an unfinished line or pipelined input stays).
    pub fn shrink(&mut self) {
        if self.start == self.end && self.buf.capacity() > 0 {
            self.buf.zeroize();
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes of memory the buffer holds.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Returns the next line from the buffer without reading, if one is complete.
    pub fn next_buffered(&mut self) -> Option<Line> {
        loop {
            let data = &self.buf[self.start..self.end];
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    let line_start = self.start;
                    self.start += i + 1;
                    if self.discarding {
                        self.discarding = false;
                        self.compact_if_empty();
                        continue;
                    }
                    let mut line_end = line_start + i;
                    if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                        line_end -= 1;
                    }
                    if line_end - line_start > self.max_line {
                        return Some(Line::TooLong);
                    }
                    return Some(Line::Complete(line_start..line_end));
                }
                None => {
                    if data.len() > self.max_line + 1 {
                        // Over the cap without a line end: drop what we have and skip to LF.
                        let was_discarding = self.discarding;
                        self.start = 0;
                        self.end = 0;
                        self.discarding = true;
                        if !was_discarding {
                            return Some(Line::TooLong);
                        }
                    }
                    return None;
                }
            }
        }
    }

    /// Reads until a line is complete. `Ok(None)` means the peer closed the connection.
    pub async fn next_line<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> io::Result<Option<Line>> {
        loop {
            if let Some(line) = self.next_buffered() {
                return Ok(Some(line));
            }
            if self.fill(stream).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes from `stream` into the buffer; returns how many (0 at EOF).
    ///
    /// Without a buffer (a new reader, or after [`LineReader::shrink`]) the read goes to a
    /// scratch buffer on the stack, and the buffer is allocated only once bytes have arrived:
    /// a session waiting for its client holds no read buffer.
    pub async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            return std::future::poll_fn(|cx| self.poll_first(stream, cx)).await;
        }
        // Keep the unfinished line at the front so the buffer never grows past one line plus
        // a few reads of pipelined input.
        if self.start > 0 && self.buf.len() - self.end < MIN_READ {
            self.buf.copy_within(self.start..self.end, 0);
            let old_end = self.end;
            self.end -= self.start;
            self.start = 0;
            // Leave no stale copy of earlier lines (which may have carried credentials).
            self.buf[self.end..old_end].zeroize();
        }
        if self.buf.len() - self.end < MIN_READ {
            let want = (self.buf.len() * 2).clamp(
                self.end + MIN_READ,
                self.cap_total().max(self.end + MIN_READ),
            );
            self.buf.resize(want, 0);
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// One read into a stack buffer, copied to a newly allocated buffer if it brought bytes.
    /// The scratch buffer is not kept across a pending poll: `poll_read` puts nothing in the
    /// buffer it is given when it returns `Pending`.
    fn poll_first<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut scratch = [0u8; MIN_READ];
        let mut read = ReadBuf::new(&mut scratch);
        ready!(Pin::new(stream).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n > 0 {
            self.buf.resize(MIN_READ, 0);
            self.buf[..n].copy_from_slice(read.filled());
            self.start = 0;
            self.end = n;
        }
        // The bytes may carry credentials (AUTH, PASS): leave no copy on the stack.
        scratch.zeroize();
        Poll::Ready(Ok(n))
    }

    fn cap_total(&self) -> usize {
        // One line plus room for pipelined commands behind it.
        self.max_line + 2 + 4 * MIN_READ
    }

    fn compact_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

/// How a connection loop treats a line: `None` for an ordinary command; `Some(reserve)` for a
/// line that belongs to authentication and so runs through the credential path (the throttle
/// slot, then the session verifier): a SASL continuation while `in_sasl`, or AUTH with a
/// mechanism, PASS or APOP (a bare `AUTH`, POP3's mechanism list, is ordinary).
///
/// `reserve` says whether the throttle's address slot is taken before the line: whether it
/// checks a credential. A continuation does when `next_verifies`
/// ([`Mechanism::verifies_next`](crate::sasl::Mechanism::verifies_next)); a command does for
/// PASS, APOP, and AUTH with an initial response that the mechanism checks at once (PLAIN, the
/// bearer mechanisms), not for one that only starts a longer exchange (LOGIN's user name,
/// NTLM's NEGOTIATE, SCRAM's client-first message). An exchange thus takes one slot, before the
/// line that carries the credential, whatever the mechanism's steps.
pub fn credential_step(in_sasl: bool, next_verifies: bool, line: &[u8]) -> Option<bool> {
    if in_sasl {
        return Some(next_verifies);
    }
    let mut words = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    let verb = words.next().unwrap_or_default();
    if verb.eq_ignore_ascii_case(b"AUTH") {
        let mechanism = words.next()?;
        let initial_response = words.next().is_some();
        return Some(
            initial_response
                && std::str::from_utf8(mechanism)
                    .ok()
                    .and_then(crate::sasl::find)
                    .is_some_and(|d| d.initial_response_verifies),
        );
    }
    (verb.eq_ignore_ascii_case(b"PASS") || verb.eq_ignore_ascii_case(b"APOP")).then_some(true)
}

/// The size of the future that `f` returns, without calling it: the connection loops' tests
/// keep the future every connection's task holds small.
#[cfg(test)]
pub(crate) fn future_size<F, A, B, C, D, E, G, R>(_: &F) -> usize
where
    F: Fn(A, B, C, D, E, G) -> R,
{
    std::mem::size_of::<R>()
}

/// Writes `out` fully and flushes, then clears it for reuse.
pub async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize, chunk: usize) -> Vec<Result<Vec<u8>, ()>> {
        let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
        let owned = input.to_vec();
        let writer = tokio::spawn(async move {
            for c in owned.chunks(chunk) {
                tx.write_all(c).await.unwrap();
            }
        });
        let mut r = LineReader::new(max);
        let mut out = Vec::new();
        writer.await.unwrap();
        // The writer half was dropped: the reader sees EOF after the data.
        while let Some(line) = r.next_line(&mut rx).await.unwrap() {
            match line {
                Line::Complete(range) => out.push(Ok(r.slice(range).to_vec())),
                Line::TooLong => out.push(Err(())),
            }
        }
        out
    }

    /// Commands outside SASL: which go through the credential check, and which of those take
    /// the throttle slot first.
    #[test]
    fn credential_commands_are_recognized() {
        let step = |line: &[u8]| credential_step(false, false, line);
        for line in [
            &b"AUTH PLAIN abc"[..],
            b"AUTH PLAIN AGFsaWNlAHB3",
            b"auth xoauth2 dXNlcj1h",
            b"PASS secret",
            b"PASS",
            b"apop u d",
            b"APOP alice 0123",
        ] {
            assert_eq!(step(line), Some(true), "{line:?}");
        }
        for line in [
            &b"auth login"[..],
            b"AUTH\tPLAIN",
            b"AUTH PLAIN",
            b"AUTH LOGIN dXNlcg==",
            b"AUTH NTLM TlRMTVNTUAABAAAA",
            b"AUTH SCRAM-SHA-256 biwsbj11c2Vy",
            b"AUTH CRAM-MD5",
            b"AUTH NOSUCH abc",
        ] {
            assert_eq!(step(line), Some(false), "{line:?}");
        }
        for line in [
            &b"MAIL FROM:<a@b>"[..],
            b"AUTHX",
            b"",
            b"PASSWORD x",
            b"AUTH",
            b"auth  ",
            b"USER alice",
            b"NOOP",
        ] {
            assert_eq!(step(line), None, "{line:?}");
        }
    }

    /// Inside SASL every line goes through the check; the mechanism says which takes the slot.
    #[test]
    fn continuations_follow_the_mechanism() {
        assert_eq!(credential_step(true, false, b"dXNlcg=="), Some(false));
        assert_eq!(credential_step(true, true, b"cGFzcw=="), Some(true));
        assert_eq!(credential_step(true, true, b"NOOP"), Some(true));
    }

    #[tokio::test]
    async fn splits_lines_at_any_chunk_size() {
        let input = b"EHLO a\r\nMAIL FROM:<x@y>\nNOOP\r\n";
        for chunk in [1, 2, 3, 4, 8, 16, 512] {
            let got = lines(input, 64, chunk).await;
            assert_eq!(
                got,
                vec![
                    Ok(b"EHLO a".to_vec()),
                    Ok(b"MAIL FROM:<x@y>".to_vec()),
                    Ok(b"NOOP".to_vec())
                ],
                "chunk {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn over_long_line_reported_once_then_next_line_served() {
        let mut input = vec![b'A'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        for chunk in [1, 7, 512, 8192] {
            let got = lines(&input, 100, chunk).await;
            assert_eq!(got, vec![Err(()), Ok(b"NOOP".to_vec())], "chunk {chunk}");
        }
    }

    /// Polls `fut` once; `None` while it is pending.
    async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await;
        match polled {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn waiting_for_a_line_holds_no_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut r = LineReader::new(512);
        for round in 0..3 {
            {
                let mut next = Box::pin(r.next_line(&mut server));
                assert!(poll_once(&mut next).await.is_none(), "round {round}");
            }
            assert_eq!(r.capacity(), 0, "round {round}");
            client.write_all(b"NOOP\r\n").await.unwrap();
            let line = r.next_line(&mut server).await.unwrap();
            let Some(Line::Complete(range)) = line else {
                panic!("round {round}: {line:?}");
            };
            assert_eq!(r.slice(range), b"NOOP");
            assert!(r.capacity() > 0);
            r.shrink();
            assert_eq!(r.capacity(), 0);
        }
        // An unfinished line survives `shrink`.
        client.write_all(b"NO").await.unwrap();
        while r.buffered().len() < 2 {
            r.fill(&mut server).await.unwrap();
        }
        r.shrink();
        assert_eq!(r.buffered(), b"NO");
        client.write_all(b"OP\r\n").await.unwrap();
        let Some(Line::Complete(range)) = r.next_line(&mut server).await.unwrap() else {
            panic!("no line");
        };
        assert_eq!(r.slice(range), b"NOOP");
    }

    #[tokio::test]
    async fn memory_stays_bounded_without_line_end() {
        let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let junk = vec![b'x'; 1 << 16];
            for _ in 0..16 {
                if tx.write_all(&junk).await.is_err() {
                    return;
                }
            }
        });
        let mut r = LineReader::new(512);
        let mut too_long = 0;
        while let Some(line) = r.next_line(&mut rx).await.unwrap() {
            assert_eq!(line, Line::TooLong);
            too_long += 1;
            assert!(r.buf.len() <= 512 + 2 + 4 * MIN_READ);
        }
        assert_eq!(too_long, 1);
    }
}
