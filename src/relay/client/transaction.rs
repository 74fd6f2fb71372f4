//! One mail transaction on an upstream session: MAIL, RCPT and DATA (RFC 5321 §3.3), pipelined
//! (RFC 2920) or with BDAT (RFC 3030) where offered, the body streamed from its spool file with
//! dot-stuffing (§4.5.2), and a reply per recipient.

use super::*;

/// Chunk size for streaming the message body.
const BODY_CHUNK: usize = 16 * 1024;

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

impl Session {
    /// One mail transaction. Also says whether it ended cleanly (the reply to the end of
    /// DATA was read), so that the session may carry another.
    pub(super) async fn transaction(
        &mut self,
        msg: &Message<'_>,
    ) -> Result<(Vec<Reply>, bool), Error> {
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
pub(super) fn unsendable() -> Reply {
    Reply::new(
        553,
        Some((5, 1, 3)),
        "recipient address cannot be sent in SMTP",
    )
}

/// Whether `addr` can be put between angle brackets in a command: no controls, spaces or
/// brackets, and not absurdly long (RFC 5321 §4.5.3.1.3 allows 256 octets for a path).
pub(super) fn is_sendable(addr: &str) -> bool {
    addr.len() <= 256
        && !addr
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == 0x7f)
}
