//! A bounded look at a message's header section as it streams past (RFC 5322 §2.2): finds the
//! client software (`User-Agent`, else `X-Mailer`) for the audit log, without holding more
//! than the first [`MAX_HEADER_BYTES`] of the message.

/// How much of the message start is examined.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Longest client-software value kept.
pub const MAX_VALUE: usize = 200;

/// Collects the header section of a streamed message, up to [`MAX_HEADER_BYTES`].
#[derive(Debug, Default)]
pub struct HeaderPeek {
    buf: Vec<u8>,
    done: bool,
}

impl HeaderPeek {
    /// A new, empty peek.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the (unstuffed, CRLF) message.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        let room = MAX_HEADER_BYTES - self.buf.len();
        let take = &bytes[..bytes.len().min(room)];
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(take);
        if let Some(end) = find(&self.buf[from..], b"\r\n\r\n") {
            self.buf.truncate(from + end + 2);
            self.done = true;
        } else if self.buf.len() >= MAX_HEADER_BYTES {
            self.done = true;
        }
    }

    /// The `User-Agent` value, else `X-Mailer`, unfolded, printable and bounded.
    pub fn client_software(&self) -> Option<String> {
        self.header("user-agent")
            .or_else(|| self.header("x-mailer"))
    }

    /// The first value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let mut lines = text.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if !field.eq_ignore_ascii_case(name) {
                continue;
            }
            let mut value = value.trim().to_string();
            // Folded continuation lines start with white space.
            while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            }
            let clean: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_VALUE)
                .collect();
            return (!clean.is_empty()).then_some(clean);
        }
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(msg: &[u8], chunk: usize) -> HeaderPeek {
        let mut p = HeaderPeek::new();
        for c in msg.chunks(chunk) {
            p.feed(c);
        }
        p
    }

    #[test]
    fn finds_user_agent_then_x_mailer_at_any_split() {
        let msg = b"Subject: x\r\nX-Mailer: Microsoft Outlook Express 6.00.2900\r\nUser-Agent: Mutt/1.5\r\n\tfolded\r\n\r\nUser-Agent: body\r\n";
        for chunk in [1, 2, 3, 7, 512] {
            let p = peek(msg, chunk);
            assert_eq!(
                p.client_software().as_deref(),
                Some("Mutt/1.5 folded"),
                "{chunk}"
            );
        }
        let p = peek(b"x-mailer: Canon iR-ADV\r\n\r\n", 4);
        assert_eq!(p.client_software().as_deref(), Some("Canon iR-ADV"));
        assert_eq!(
            peek(b"Subject: x\r\n\r\nUser-Agent: no\r\n", 5).client_software(),
            None
        );
    }

    #[test]
    fn stays_bounded() {
        let mut msg = b"User-Agent: ".to_vec();
        msg.extend(std::iter::repeat_n(b'a', 100_000));
        let p = peek(&msg, 4096);
        assert!(p.buf.len() <= MAX_HEADER_BYTES);
        assert_eq!(p.client_software().map(|s| s.len()), Some(MAX_VALUE));
    }
}
