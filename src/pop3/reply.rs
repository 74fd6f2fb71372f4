//! POP3 replies and the message encoder: every byte the server writes is produced here.
//!
//! A [`Reply`] is a status line (`+OK` / `-ERR`, RFC 1939 §3) with an optional response code
//! (RFC 2449 §8: `[IN-USE]`, `[LOGIN-DELAY]`; RFC 3206: `[SYS/TEMP]`, `[SYS/PERM]`, `[AUTH]`),
//! optionally followed by a multi-line body that is byte-stuffed and ends with `.`, or a SASL
//! continuation `+ base64` (RFC 5034 §4). All reply texts live in the named constructors below.
//!
//! [`MessageEncoder`] turns a stored message into the multi-line body of RETR and TOP
//! (RFC 1939 §5, §7) without IO: raw file bytes in, in chunks split anywhere; wire bytes out,
//! with line endings normalised to CRLF and lines starting with `.` byte-stuffed.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::command::ParseError;

/// A response code (RFC 2449 §8, RFC 3206) carried in brackets after the status indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `[IN-USE]`: the maildrop is locked by another session.
    InUse,
    /// `[AUTH]`: the failure concerns the credentials or the way they were sent.
    Auth,
    /// `[SYS/TEMP]`: a temporary system problem.
    SysTemp,
    /// `[SYS/PERM]`: a permanent system problem.
    SysPerm,
}

impl Code {
    /// The code as written between the brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InUse => "IN-USE",
            Code::Auth => "AUTH",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
        }
    }
}

/// What kind of line a [`Reply`] starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `+OK`.
    Ok,
    /// `-ERR`.
    Err,
    /// `+ <base64>`: a SASL challenge.
    Challenge,
    /// Nothing at all: the real reply comes later (see `machine::Action::OpenMailbox`).
    Empty,
}

/// One server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    kind: Kind,
    code: Option<Code>,
    text: Cow<'static, str>,
    lines: Option<Vec<String>>,
}

impl Reply {
    fn new(kind: Kind, code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            code,
            text: text.into(),
            lines: None,
        }
    }

    fn ok(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Ok, None, text)
    }

    fn err(text: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Err, None, text)
    }

    fn err_code(code: Code, text: &'static str) -> Self {
        Self::new(Kind::Err, Some(code), text)
    }

    fn multi(text: impl Into<Cow<'static, str>>, lines: Vec<String>) -> Self {
        Self {
            lines: Some(lines),
            ..Self::ok(text)
        }
    }

    /// The kind of the first line.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is a `+OK` reply.
    pub fn is_ok(&self) -> bool {
        self.kind == Kind::Ok
    }

    /// Whether this is a `-ERR` reply.
    pub fn is_err(&self) -> bool {
        self.kind == Kind::Err
    }

    /// Whether this reply writes nothing.
    pub fn is_empty(&self) -> bool {
        self.kind == Kind::Empty
    }

    /// The response code, if any.
    pub fn code(&self) -> Option<Code> {
        self.code
    }

    /// The human-readable text of the first line (the base64 text of a challenge).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The body lines of a multi-line reply, unstuffed.
    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }

    /// Appends the wire form of the reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.kind {
            Kind::Empty => return,
            Kind::Challenge => out.extend_from_slice(b"+ "),
            Kind::Ok => out.extend_from_slice(b"+OK"),
            Kind::Err => out.extend_from_slice(b"-ERR"),
        }
        if let Some(code) = self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.as_str().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            if self.kind != Kind::Challenge {
                out.push(b' ');
            }
            push_line(out, &self.text);
        }
        out.extend_from_slice(b"\r\n");
        if let Some(lines) = &self.lines {
            for line in lines {
                if line.starts_with('.') {
                    out.push(b'.');
                }
                push_line(out, line);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// A reply that writes nothing.
    pub fn empty() -> Self {
        Self::new(Kind::Empty, None, "")
    }

    /// The greeting, with the APOP timestamp when APOP is offered (RFC 1939 §7).
    pub fn greeting(apop_timestamp: Option<&str>) -> Self {
        match apop_timestamp {
            Some(ts) => Self::ok(format!("mailgate ready {ts}")),
            None => Self::ok("mailgate ready"),
        }
    }

    /// `QUIT` in the AUTHORIZATION state.
    pub fn bye() -> Self {
        Self::ok("mailgate signing off")
    }

    /// `USER` accepted; the client should send `PASS`.
    pub fn send_pass() -> Self {
        Self::ok("send PASS")
    }

    /// `PASS` without a preceding `USER`.
    pub fn user_first() -> Self {
        Self::err("send USER first")
    }

    /// A plaintext login (USER/PASS, PLAIN, LOGIN) refused on an unprotected connection.
    pub fn plaintext_needs_tls(stls_offered: bool) -> Self {
        if stls_offered {
            Self::err_code(
                Code::Auth,
                "plaintext authentication requires TLS (use STLS)",
            )
        } else {
            Self::err_code(Code::Auth, "plaintext authentication requires TLS")
        }
    }

    /// Wrong user or password, or credentials that cannot be checked (RFC 3206 §4).
    pub fn invalid_credentials() -> Self {
        Self::err_code(Code::Auth, "invalid credentials")
    }

    /// The client's SASL message could not be parsed by the mechanism.
    pub fn malformed_auth() -> Self {
        Self::err("malformed authentication exchange")
    }

    /// The client answered a challenge with `*` (RFC 5034 §4).
    pub fn auth_cancelled() -> Self {
        Self::err("authentication cancelled")
    }

    /// A SASL line that is not valid base64 (RFC 5034 §4).
    pub fn bad_base64() -> Self {
        Self::err("invalid base64 in authentication exchange")
    }

    /// A mechanism that is unknown or not allowed on this connection.
    pub fn unsupported_mechanism() -> Self {
        Self::err_code(Code::Auth, "unsupported authentication mechanism")
    }

    /// `AUTH` without arguments: the mechanisms usable now, one per line.
    pub fn mechanisms(names: Vec<String>) -> Self {
        Self::multi("available mechanisms", names)
    }

    /// A SASL challenge, base64-encoded here.
    pub fn challenge(bytes: &[u8]) -> Self {
        Self::new(Kind::Challenge, None, BASE64.encode(bytes))
    }

    /// `APOP` when no timestamp was offered.
    pub fn apop_unavailable() -> Self {
        Self::err("APOP not available")
    }

    /// The `CAPA` response (RFC 2449 §5).
    pub fn capabilities(lines: Vec<String>) -> Self {
        Self::multi("capability list follows", lines)
    }

    /// `STLS` accepted (RFC 2595 §4).
    pub fn begin_tls() -> Self {
        Self::ok("begin TLS negotiation")
    }

    /// `STLS` when it is not offered.
    pub fn tls_unavailable() -> Self {
        Self::err("STLS not available")
    }

    /// `STLS` on a connection that already uses TLS.
    pub fn tls_active() -> Self {
        Self::err("TLS already active")
    }

    /// A TRANSACTION command before authentication.
    pub fn not_authenticated() -> Self {
        Self::err("not authenticated")
    }

    /// An AUTHORIZATION command after authentication.
    pub fn already_authenticated() -> Self {
        Self::err("already authenticated")
    }

    /// A command while the maildrop is being opened.
    pub fn maildrop_not_ready() -> Self {
        Self::err("maildrop not open yet")
    }

    /// A command after the session ended.
    pub fn session_closed() -> Self {
        Self::err("session closed")
    }

    /// An unknown keyword.
    pub fn unknown_command() -> Self {
        Self::err("unknown command")
    }

    /// A line that does not parse.
    pub fn syntax(error: &ParseError) -> Self {
        match error {
            ParseError::Unknown => Self::unknown_command(),
            ParseError::LineTooLong { .. } => Self::line_too_long(),
            other => Self::err(other.to_string()),
        }
    }

    /// A policy refusal of a login (deny, transition): `-ERR [AUTH]` with the rule's message.
    pub fn policy_denied(text: Option<&str>) -> Self {
        Self::new(
            Kind::Err,
            Some(Code::Auth),
            text.map_or(
                Cow::Borrowed("this sign-in method is no longer accepted"),
                |t| Cow::Owned(t.to_string()),
            ),
        )
    }

    /// A policy brownout of a login: `-ERR [SYS/TEMP]`, so clients retry later.
    pub fn policy_brownout(text: Option<&str>) -> Self {
        Self::new(
            Kind::Err,
            Some(Code::SysTemp),
            text.map_or(
                Cow::Borrowed("temporarily unavailable, try again later"),
                |t| Cow::Owned(t.to_string()),
            ),
        )
    }

    /// A login that could not be checked now (the old server is down or slow): RFC 3206's
    /// `SYS/TEMP`, so the client keeps the password and retries.
    pub fn auth_unavailable() -> Self {
        Self::err_code(
            Code::SysTemp,
            "authentication temporarily unavailable, try again later",
        )
    }

    /// Too many bad commands: the session ends (without UPDATE).
    pub fn too_many_errors() -> Self {
        Self::err("too many errors, closing")
    }

    /// A line over the length limit.
    pub fn line_too_long() -> Self {
        Self::err("line too long")
    }

    /// The maildrop is open (RFC 1939 §7, PASS).
    pub fn maildrop(count: usize, octets: u64) -> Self {
        Self::ok(format!("maildrop has {count} messages ({octets} octets)"))
    }

    /// The maildrop is locked by another session (RFC 2449 §8.1.1).
    pub fn in_use() -> Self {
        Self::err_code(Code::InUse, "maildrop already locked")
    }

    /// The connection caps are reached: instead of the greeting (POP3 has no reply code for
    /// it, so the RFC 2449 `SYS/TEMP` response code says it is temporary).
    pub fn too_many_connections() -> Self {
        Self::err_code(Code::SysTemp, "too many connections, try again later")
    }

    /// The server is shutting down (the session ends without entering UPDATE).
    pub fn shutting_down() -> Self {
        Self::err_code(Code::SysTemp, "server shutting down, try again later")
    }

    /// The autologout timer expired (RFC 1939 §3; the session ends without UPDATE).
    pub fn autologout() -> Self {
        Self::err("autologout: idle for too long")
    }

    /// A listed message could not be read back.
    pub fn message_unavailable() -> Self {
        Self::err_code(Code::SysTemp, "message unavailable")
    }

    /// The maildrop could not be read.
    pub fn maildrop_unavailable() -> Self {
        Self::err_code(Code::SysTemp, "unable to open maildrop")
    }

    /// The maildrop is open on the old server (`[pop3.proxy]`), which answers from now on.
    pub fn maildrop_proxied() -> Self {
        Self::ok("maildrop ready")
    }

    /// `STAT` (RFC 1939 §5): the drop listing.
    pub fn stat(count: usize, octets: u64) -> Self {
        Self::ok(format!("{count} {octets}"))
    }

    /// `LIST n`: one scan listing.
    pub fn scan_listing(n: u32, size: u64) -> Self {
        Self::ok(format!("{n} {size}"))
    }

    /// `LIST`: every scan listing.
    pub fn scan_listings(count: usize, octets: u64, entries: &[(u32, u64)]) -> Self {
        let lines = entries
            .iter()
            .map(|(n, size)| format!("{n} {size}"))
            .collect();
        Self::multi(format!("{count} messages ({octets} octets)"), lines)
    }

    /// `UIDL n`: one unique-id listing.
    pub fn unique_id(n: u32, uid: &str) -> Self {
        Self::ok(format!("{n} {uid}"))
    }

    /// `UIDL`: every unique-id listing.
    pub fn unique_ids(entries: &[(u32, &str)]) -> Self {
        let lines = entries
            .iter()
            .map(|(n, uid)| format!("{n} {uid}"))
            .collect();
        Self::multi("unique-id listing follows", lines)
    }

    /// A message number out of range.
    pub fn no_such_message() -> Self {
        Self::err("no such message")
    }

    /// A message number marked as deleted.
    pub fn already_deleted() -> Self {
        Self::err("message already deleted")
    }

    /// `RETR`: the status line before the message.
    pub fn retr(size: u64) -> Self {
        Self::ok(format!("{size} octets"))
    }

    /// `TOP`: the status line before the lines.
    pub fn top() -> Self {
        Self::ok("top of message follows")
    }

    /// `DELE` accepted.
    pub fn deleted(n: u32) -> Self {
        Self::ok(format!("message {n} deleted"))
    }

    /// `NOOP`.
    pub fn noop() -> Self {
        Self::ok("")
    }

    /// `QUIT` in TRANSACTION after the deletions were done (RFC 1939 §6).
    pub fn committed(remaining: usize) -> Self {
        match remaining {
            0 => Self::ok("mailgate signing off (maildrop empty)"),
            n => Self::ok(format!("mailgate signing off ({n} messages left)")),
        }
    }

    /// `QUIT` in TRANSACTION when some deletions failed (RFC 1939 §6).
    pub fn commit_failed() -> Self {
        Self::err("some deleted messages not removed")
    }
}

/// Appends `text`, replacing CR and LF so a reply can never span lines it does not own.
fn push_line(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Encodes a stored message as a RETR or TOP body. Feed the file's bytes with
/// [`MessageEncoder::feed`] in chunks of any size, then call [`MessageEncoder::finish`].
///
/// Bare LF and CRLF both end a line and are written as CRLF; a bare CR is kept as data. A line
/// starting with `.` gets a second `.` (RFC 1939 §3). For TOP, output stops after the header,
/// the blank line and the requested number of body lines.
#[derive(Debug, Clone)]
pub struct MessageEncoder {
    /// Body lines still to send, for TOP.
    budget: Option<u64>,
    in_header: bool,
    line_start: bool,
    line_empty: bool,
    pending_cr: bool,
    done: bool,
}

impl MessageEncoder {
    /// An encoder for RETR (`top` is `None`) or for `TOP msg n` (`top` is `Some(n)`).
    pub fn new(top: Option<u64>) -> Self {
        Self {
            budget: top,
            in_header: true,
            line_start: true,
            line_empty: true,
            pending_cr: false,
            done: false,
        }
    }

    /// Whether TOP has written all it needs: the rest of the file may be skipped.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Encodes the next `chunk` of the file into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 16 + 2);
        for &b in chunk {
            if self.done {
                return;
            }
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.end_line(out);
                    continue;
                }
                self.data(b'\r', out);
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.end_line(out),
                _ => self.data(b, out),
            }
        }
    }

    /// Ends the body: terminates an unfinished last line and writes the `.` line.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if !self.done && (self.pending_cr || !self.line_start) {
            self.end_line(out);
        }
        out.extend_from_slice(b".\r\n");
    }

    fn data(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        self.line_start = false;
        self.line_empty = false;
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        let was_empty = self.line_empty;
        self.line_start = true;
        self.line_empty = true;
        if self.in_header {
            if was_empty {
                self.in_header = false;
                self.done = self.budget == Some(0);
            }
        } else if let Some(left) = self.budget.as_mut() {
            *left = left.saturating_sub(1);
            self.done = *left == 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: Reply) -> String {
        String::from_utf8(reply.to_bytes()).unwrap()
    }

    #[test]
    fn encodes_replies() {
        let cases: Vec<(Reply, &str)> = vec![
            (Reply::greeting(None), "+OK mailgate ready\r\n"),
            (
                Reply::greeting(Some("<1.2@h>")),
                "+OK mailgate ready <1.2@h>\r\n",
            ),
            (Reply::noop(), "+OK\r\n"),
            (Reply::in_use(), "-ERR [IN-USE] maildrop already locked\r\n"),
            (
                Reply::maildrop_unavailable(),
                "-ERR [SYS/TEMP] unable to open maildrop\r\n",
            ),
            (
                Reply::invalid_credentials(),
                "-ERR [AUTH] invalid credentials\r\n",
            ),
            (
                Reply::maildrop(2, 320),
                "+OK maildrop has 2 messages (320 octets)\r\n",
            ),
            (Reply::stat(2, 320), "+OK 2 320\r\n"),
            (Reply::challenge(b""), "+ \r\n"),
            (Reply::challenge(b"hi"), "+ aGk=\r\n"),
            (Reply::empty(), ""),
            (
                Reply::scan_listings(2, 320, &[(1, 120), (2, 200)]),
                "+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n",
            ),
            (
                Reply::unique_ids(&[]),
                "+OK unique-id listing follows\r\n.\r\n",
            ),
            (
                Reply::capabilities(vec!["TOP".into(), ".odd".into()]),
                "+OK capability list follows\r\nTOP\r\n..odd\r\n.\r\n",
            ),
            (
                Reply::syntax(&ParseError::Unknown),
                "-ERR unknown command\r\n",
            ),
            (
                Reply::syntax(&ParseError::InvalidNumber),
                "-ERR invalid number\r\n",
            ),
            (
                Reply::committed(0),
                "+OK mailgate signing off (maildrop empty)\r\n",
            ),
            (
                Reply::committed(3),
                "+OK mailgate signing off (3 messages left)\r\n",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(wire(reply), want);
        }
    }

    #[test]
    fn reply_text_cannot_inject_lines() {
        let reply = Reply::unique_id(1, "a\r\n+OK b");
        assert_eq!(wire(reply), "+OK 1 a  +OK b\r\n");
    }

    fn encode_chunked(input: &[u8], top: Option<u64>, size: usize) -> Vec<u8> {
        let mut enc = MessageEncoder::new(top);
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            enc.feed(chunk, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    #[test]
    fn encodes_messages_at_every_chunk_size() {
        let cases: Vec<(&[u8], Option<u64>, &[u8])> = vec![
            (b"", None, b".\r\n"),
            (b"A: b\r\n\r\nbody\r\n", None, b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b"A: b\n\nbody\n", None, b"A: b\r\n\r\nbody\r\n.\r\n"),
            (
                b"A: b\n\nno newline",
                None,
                b"A: b\r\n\r\nno newline\r\n.\r\n",
            ),
            (
                b"A: b\r\n\r\nends in cr\r",
                None,
                b"A: b\r\n\r\nends in cr\r\n.\r\n",
            ),
            (
                b"A: b\n\n.\n..x\r\n.",
                None,
                b"A: b\r\n\r\n..\r\n...x\r\n..\r\n.\r\n",
            ),
            (
                b"A: b\n\nbare\rcr\n",
                None,
                b"A: b\r\n\r\nbare\rcr\r\n.\r\n",
            ),
            (b"A: b\n\n\r.x\n", None, b"A: b\r\n\r\n\r.x\r\n.\r\n"),
            (
                b"A: b\r\nC: d\r\n\r\n1\r\n2\r\n3\r\n",
                Some(0),
                b"A: b\r\nC: d\r\n\r\n.\r\n",
            ),
            (
                b"A: b\r\n\r\n1\r\n2\r\n3\r\n",
                Some(2),
                b"A: b\r\n\r\n1\r\n2\r\n.\r\n",
            ),
            (b"A: b\n\n.1\n2\n3", Some(1), b"A: b\r\n\r\n..1\r\n.\r\n"),
            (
                b"A: b\n\n1\n2\n3",
                Some(3),
                b"A: b\r\n\r\n1\r\n2\r\n3\r\n.\r\n",
            ),
            (
                b"A: b\n\n1\n2\n3",
                Some(99),
                b"A: b\r\n\r\n1\r\n2\r\n3\r\n.\r\n",
            ),
            (b"A: b\nC: d", Some(0), b"A: b\r\nC: d\r\n.\r\n"),
            (b"A: b\n\n\n\nx", Some(2), b"A: b\r\n\r\n\r\n\r\n.\r\n"),
        ];
        for (input, top, want) in cases {
            let mut size = 1;
            while size <= 512 {
                let got = encode_chunked(input, top, size);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want),
                    "input {:?} top {top:?} chunk {size}",
                    String::from_utf8_lossy(input)
                );
                size *= 2;
            }
        }
    }

    #[test]
    fn top_reports_done_so_the_rest_can_be_skipped() {
        let mut enc = MessageEncoder::new(Some(1));
        let mut out = Vec::new();
        enc.feed(b"A: b\n\n1\n", &mut out);
        assert!(enc.is_done());
        enc.feed(b"2\n", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"A: b\r\n\r\n1\r\n.\r\n");
        assert!(!MessageEncoder::new(None).is_done());
    }

    #[test]
    fn large_message_round_trips_through_unstuffing() {
        let mut input = Vec::new();
        for i in 0..2000 {
            let line = match i % 4 {
                0 => format!(".line {i}\n"),
                1 => format!("line {i}\r\n"),
                2 => "\n".to_string(),
                _ => format!("..{i}\r\n"),
            };
            input.extend_from_slice(line.as_bytes());
        }
        let whole = encode_chunked(&input, None, input.len());
        for size in [1, 7, 64, 512, 4096] {
            assert_eq!(encode_chunked(&input, None, size), whole);
        }
        // Undo the transformation: every line ends in CRLF, stuffed dots come off.
        let text = String::from_utf8(whole).unwrap();
        let body = text.strip_suffix(".\r\n").unwrap();
        let unstuffed: String = body
            .split_inclusive("\r\n")
            .map(|l| l.strip_prefix('.').unwrap_or(l).replace("\r\n", "\n"))
            .collect();
        assert_eq!(
            unstuffed,
            String::from_utf8(input).unwrap().replace("\r\n", "\n")
        );
    }
}
