//! The upstream side of SMTP replies: [`ReplyParser`] reads the replies of a server we talk
//! to (the relay's smarthost), incrementally and bounded, into [`Reply`] values.
//!
//! Implements reply syntax of RFC 5321 §4.2 (multi-line replies §4.2.1, codes §4.2.2-3) and
//! the enhanced status codes of RFC 2034 §4 on every line. Sans-IO.

use std::borrow::Cow;

use super::Reply;

/// Longest reply line [`ReplyParser`] accepts, excluding the line ending (RFC 5321 §4.5.3.1.5
/// says 512; real servers send longer EHLO lines, so we allow more).
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines [`ReplyParser`] accepts in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 100;

/// Why [`ReplyParser`] gave up. The stream is out of sync afterwards: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`MAX_REPLY_LINE`].
    #[error("reply line longer than {limit} octets")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_REPLY_LINES`] lines in one reply.
    #[error("reply has more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// A line that does not start with a 2yz-5yz code followed by SP, `-` or the line end.
    #[error("malformed reply line")]
    Malformed,
    /// A continuation line whose code differs from the first line's (RFC 5321 §4.2.1).
    #[error("reply code changed from {first} to {line} inside a multi-line reply")]
    CodeMismatch {
        /// The first line's code.
        first: u16,
        /// The offending line's code.
        line: u16,
    },
}

/// What [`ReplyParser::feed`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// All input was consumed; no reply is complete yet.
    NeedMore,
    /// A complete reply; `consumed` bytes of the input were used, the rest belongs to the next
    /// reply (pipelining, RFC 2920).
    Reply {
        /// The reply.
        reply: Reply,
        /// Input bytes used, up to and including the last line's LF.
        consumed: usize,
    },
}

/// Incremental parser for replies from an upstream server.
///
/// Feed it whatever the socket returned; it keeps at most one partial line
/// ([`MAX_REPLY_LINE`]) and one reply's lines ([`MAX_REPLY_LINES`]). Lines may end in CRLF or a
/// bare LF. Enhanced codes are recognized when the first line has one whose class matches the
/// reply code, and then stripped from every line that repeats it; replies without them parse
/// fine. Text that is not UTF-8 is kept lossily. The result does not depend on how the input
/// was split.
#[derive(Debug, Default)]
pub struct ReplyParser {
    line: Vec<u8>,
    code: Option<u16>,
    enhanced: Option<(u8, u16, u16)>,
    lines: Vec<Cow<'static, str>>,
}

impl ReplyParser {
    /// A parser waiting for the first line of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes input until one reply is complete or the input runs out. Call again with the
    /// unconsumed rest after a [`Parsed::Reply`]. After an error the parser is reset, but the
    /// connection should be dropped.
    pub fn feed(&mut self, input: &[u8]) -> Result<Parsed, ReplyError> {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let (chunk, ended) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            pos += chunk.len() + usize::from(ended);
            // Allow one extra byte for the CR of a CRLF that ends exactly at the limit.
            if self.line.len() + chunk.len() > MAX_REPLY_LINE + 1 {
                *self = Self::new();
                return Err(ReplyError::LineTooLong {
                    limit: MAX_REPLY_LINE,
                });
            }
            self.line.extend_from_slice(chunk);
            if !ended {
                break;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            match self.handle_line(&line) {
                Ok(Some(reply)) => {
                    return Ok(Parsed::Reply {
                        reply,
                        consumed: pos,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    *self = Self::new();
                    return Err(e);
                }
            }
        }
        Ok(Parsed::NeedMore)
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong {
                limit: MAX_REPLY_LINE,
            });
        }
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Err(ReplyError::Malformed);
        }
        let code = line[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        let (last, text) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(ReplyError::Malformed),
        };
        match self.code {
            None => self.code = Some(code),
            Some(first) if first != code => {
                return Err(ReplyError::CodeMismatch { first, line: code });
            }
            Some(_) => {}
        }
        let text = String::from_utf8_lossy(text);
        let text = if self.lines.is_empty() {
            match split_enhanced(&text, code) {
                Some((enhanced, rest)) => {
                    self.enhanced = Some(enhanced);
                    rest.to_owned()
                }
                None => text.into_owned(),
            }
        } else {
            match split_enhanced(&text, code) {
                Some((e, rest)) if Some(e) == self.enhanced => rest.to_owned(),
                _ => text.into_owned(),
            }
        };
        if self.lines.len() == MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines {
                limit: MAX_REPLY_LINES,
            });
        }
        self.lines.push(Cow::Owned(text));
        if !last {
            return Ok(None);
        }
        let reply = Reply {
            code,
            enhanced: self.enhanced,
            lines: std::mem::take(&mut self.lines),
        };
        *self = Self::new();
        Ok(Some(reply))
    }
}

/// Splits a leading RFC 3463 code (`class.subject.detail`, 1-3 digits each, class matching the
/// reply code) off `text`.
fn split_enhanced(text: &str, code: u16) -> Option<((u8, u16, u16), &str)> {
    let (token, rest) = match text.split_once(' ') {
        Some((t, r)) => (t, r),
        None => (text, ""),
    };
    let mut parts = token.split('.');
    let mut num = |max: usize| -> Option<u16> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > max || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let class = num(1)?;
    let subject = num(3)?;
    let detail = num(3)?;
    if parts.next().is_some() || class != code / 100 || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    // class is a single digit, so it fits in u8.
    Some(((class as u8, subject, detail), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::{ehlo, no_such_user, ok, start_data};

    fn parse_all(input: &[u8], chunk: usize) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            let mut pos = 0;
            loop {
                match p.feed(&piece[pos..])? {
                    Parsed::NeedMore => break,
                    Parsed::Reply { reply, consumed } => {
                        out.push(reply);
                        pos += consumed;
                    }
                }
            }
        }
        Ok(out)
    }

    fn rep(code: u16, enhanced: Option<(u8, u16, u16)>, lines: &[&'static str]) -> Reply {
        Reply {
            code,
            enhanced,
            lines: lines.iter().map(|l| Cow::Borrowed(*l)).collect(),
        }
    }

    #[test]
    fn parses_replies_at_every_chunk_size() {
        let cases: Vec<(&[u8], Vec<Reply>)> = vec![
            (
                b"220 mx.test ESMTP\r\n",
                vec![rep(220, None, &["mx.test ESMTP"])],
            ),
            (
                b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                vec![rep(250, None, &["mx.test", "PIPELINING", "8BITMIME"])],
            ),
            (
                b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go\r\n",
                vec![
                    rep(250, Some((2, 1, 0)), &["OK"]),
                    rep(250, Some((2, 1, 5)), &["OK"]),
                    rep(354, None, &["go"]),
                ],
            ),
            (
                b"550-5.1.1 no such\n550 5.1.1 user\n",
                vec![rep(550, Some((5, 1, 1)), &["no such", "user"])],
            ),
            (b"250\r\n", vec![rep(250, None, &[""])]),
            (
                b"451 5.0.0 mismatch\r\n",
                vec![rep(451, None, &["5.0.0 mismatch"])],
            ),
            (b"250 2.0.0\r\n", vec![rep(250, Some((2, 0, 0)), &[""])]),
            (
                b"334 VXNlcm5hbWU6\r\n",
                vec![rep(334, None, &["VXNlcm5hbWU6"])],
            ),
        ];
        for (input, want) in &cases {
            let mut chunk = 1;
            while chunk <= 512 {
                assert_eq!(&parse_all(input, chunk).unwrap(), want, "chunk {chunk}");
                chunk *= 2;
            }
        }
    }

    #[test]
    fn rejects_bad_replies() {
        let long = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE));
        let many: String = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 x\r\n";
        let cases: Vec<(&[u8], ReplyError)> = vec![
            (b"hello\r\n", ReplyError::Malformed),
            (b"25\r\n", ReplyError::Malformed),
            (b"250x\r\n", ReplyError::Malformed),
            (b"650 x\r\n", ReplyError::Malformed),
            (
                b"250-a\r\n251 b\r\n",
                ReplyError::CodeMismatch {
                    first: 250,
                    line: 251,
                },
            ),
            (
                long.as_bytes(),
                ReplyError::LineTooLong {
                    limit: MAX_REPLY_LINE,
                },
            ),
            (
                many.as_bytes(),
                ReplyError::TooManyLines {
                    limit: MAX_REPLY_LINES,
                },
            ),
        ];
        for (input, want) in cases {
            for chunk in [1, 7, 512] {
                assert_eq!(parse_all(input, chunk), Err(want.clone()), "chunk {chunk}");
            }
        }
        // Exactly at the line limit is fine.
        let edge = format!("250 {}\r\n", "x".repeat(MAX_REPLY_LINE - 4));
        assert!(parse_all(edge.as_bytes(), 3).is_ok());
    }

    #[test]
    fn encode_then_parse_round_trips() {
        for reply in [
            ok(),
            ehlo("h", ["AUTH PLAIN".into()]),
            no_such_user(),
            start_data(),
        ] {
            let bytes = reply.to_bytes();
            assert_eq!(parse_all(&bytes, 3).unwrap(), vec![reply]);
        }
    }
}
