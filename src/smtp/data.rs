//! The DATA receiver: turns the bytes a client sends after `354` into the canonical message.
//!
//! Implements the mail-data rules of RFC 5321 §4.1.1.4 (end of data is CRLF "." CRLF, where the
//! first CRLF may be the one that ended the DATA command or the previous line), transparency
//! (dot-unstuffing) of §4.5.2, and the size limit of RFC 1870 §6. Sans-IO and streaming: the
//! receiver keeps a few bytes of state between calls, so memory does not grow with line length,
//! and the result does not depend on how the input was split.
//!
//! # Line endings and SMTP smuggling
//! Only a real CRLF ends a line. A bare LF or bare CR never ends the message and never starts a
//! line that could be dot-unstuffed or taken as the terminator, so `\n.\n`, `\r.\r`,
//! `\r\n.\n`, `\n.\r\n` and friends are message content. The output is canonical: each bare LF
//! or bare CR becomes CRLF (counted in [`DataReceiver::bare_line_endings`] for the log). A line
//! that began with `.` after a bare line ending therefore keeps its dot; whoever transmits the
//! message onward must dot-stuff every line starting with `.` (as RFC 5321 §4.5.2 requires
//! anyway), so the conversion cannot forge a terminator downstream.
//!
//! # Line length
//! RFC 5321 §4.5.3.1.6 limits a line to 998 octets before its CRLF, and so does every hop after
//! this one. A longer line (scripts and old devices do send them) is not refused: it is folded,
//! CRLF and a space inserted after each 998 octets ([`MAX_LINE`]), so what is stored and
//! relayed keeps every octet of content and stays within the limit, and a line never grows the
//! receiver's state. The space makes a folded header line a valid continuation (RFC 5322
//! §2.2.3); in a body it adds one space per fold, which [`DataReceiver::folded_lines`] counts
//! for the log.

use memchr::memchr2;

/// The longest line, in octets before its CRLF, that the receiver emits (RFC 5321
/// §4.5.3.1.6).
pub const MAX_LINE: u64 = 998;

/// What [`DataReceiver::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All input was consumed and the terminator has not been seen yet.
    NeedMore,
    /// The terminator ended within the input. `consumed` bytes (up to and including the
    /// terminator's LF) belong to the message; the rest are the client's next, pipelined
    /// commands (RFC 2920).
    Done {
        /// Input bytes used.
        consumed: usize,
    },
}

/// Where the receiver is relative to line boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after a real CRLF (or at the very start).
    LineStart,
    /// A `.` at a real line start; it is either stuffing or the start of the terminator.
    Dot,
    /// `.` CR at a real line start: one LF away from the terminator.
    DotCr,
    /// Inside a line (which includes right after a bare CR or LF).
    Middle,
    /// A CR inside a line: CRLF if an LF follows, a bare CR otherwise.
    Cr,
    /// The terminator has been seen.
    Done,
}

/// Receives one message body after `354`. Create one per DATA command.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    max_size: u64,
    size: u64,
    bare: u64,
    line_len: u64,
    longest: u64,
    folded: u64,
}

impl DataReceiver {
    /// A receiver that writes at most `max_size` octets of canonical message to its output.
    pub fn new(max_size: u64) -> Self {
        DataReceiver {
            state: State::LineStart,
            max_size,
            size: 0,
            bare: 0,
            line_len: 0,
            longest: 0,
            folded: 0,
        }
    }

    /// Consumes `input`, appending the unstuffed, CRLF-canonical message text to `out`.
    ///
    /// Returns [`Feed::Done`] once the terminator is seen; later calls return
    /// `Done { consumed: 0 }` and consume nothing. Once the message passes `max_size`, nothing
    /// more is written to `out` (what was written is a truncated prefix; discard it), but the
    /// input is still scanned for the terminator: check [`exceeded`](Self::exceeded) after
    /// `Done` and answer 552 5.3.4.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return Feed::Done { consumed: 0 },
                State::LineStart => {
                    if input[i] == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::Middle;
                    }
                }
                // The dot was stuffing: drop it and treat the next byte as line content.
                State::Dot => {
                    if input[i] == b'\r' {
                        self.state = State::DotCr;
                        i += 1;
                    } else {
                        self.state = State::Middle;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::Done;
                        return Feed::Done { consumed: i + 1 };
                    }
                    // "." then a bare CR: the dot was stuffing, the CR is content.
                    self.line_end(out, true);
                    self.state = State::Middle;
                }
                State::Middle => {
                    let rest = &input[i..];
                    match memchr2(b'\r', b'\n', rest) {
                        None => {
                            self.emit_text(out, rest);
                            i = input.len();
                        }
                        Some(k) => {
                            self.emit_text(out, &rest[..k]);
                            i += k + 1;
                            if rest[k] == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.line_end(out, true);
                            }
                        }
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.line_end(out, false);
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        // Bare CR; the current byte is looked at again in Middle.
                        self.line_end(out, true);
                        self.state = State::Middle;
                    }
                }
            }
        }
        if self.state == State::Done {
            // Only reachable when called again with empty input after Done.
            return Feed::Done { consumed: 0 };
        }
        Feed::NeedMore
    }

    /// Whether the message grew past `max_size` (answer 552 5.3.4 after the terminator).
    pub fn exceeded(&self) -> bool {
        self.size > self.max_size
    }

    /// Whether the terminator has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Canonical message size so far in octets, counting what was not written past the cap.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many bare CRs and bare LFs were converted to CRLF.
    pub fn bare_line_endings(&self) -> u64 {
        self.bare
    }

    /// The longest line so far in octets, without its line ending (RFC 5321 §4.5.3.1.6 allows
    /// 998).
    pub fn longest_line(&self) -> u64 {
        self.longest.max(self.line_len)
    }

    /// How many over-long lines were folded (CRLF and a space inserted after [`MAX_LINE`]
    /// octets).
    pub fn folded_lines(&self) -> u64 {
        self.folded
    }

    /// Appends line content, folding the line whenever it reaches [`MAX_LINE`] octets.
    fn emit_text(&mut self, out: &mut Vec<u8>, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE.saturating_sub(self.line_len);
            if room == 0 {
                let line_len = self.line_len;
                self.emit(out, b"\r\n ");
                self.longest = self.longest.max(line_len);
                self.line_len = 1;
                self.folded += 1;
                continue;
            }
            // `room` is at most MAX_LINE, so the cast cannot truncate.
            let n = (room as usize).min(bytes.len());
            self.emit(out, &bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// Appends message text, up to the size cap.
    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len() as u64;
        let room = self.max_size.saturating_sub(self.size);
        // `room` is below `bytes.len()` whenever the cast would matter, so no truncation.
        let n = room.min(len) as usize;
        out.extend_from_slice(&bytes[..n]);
        self.size += len;
        self.line_len += len;
    }

    /// Ends the current line with CRLF; `bare` when it was a lone CR or LF on input.
    fn line_end(&mut self, out: &mut Vec<u8>, bare: bool) {
        if bare {
            self.bare += 1;
        }
        let line_len = self.line_len;
        self.emit(out, b"\r\n");
        self.longest = self.longest.max(line_len);
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes; returns output, consumed count and the
    /// receiver.
    fn run(input: &[u8], chunk: usize, max: u64) -> (Vec<u8>, Option<usize>, DataReceiver) {
        let mut rx = DataReceiver::new(max);
        let mut out = Vec::new();
        let mut offset = 0;
        for piece in input.chunks(chunk) {
            if let Feed::Done { consumed } = rx.feed(piece, &mut out) {
                return (out, Some(offset + consumed), rx);
            }
            offset += piece.len();
        }
        (out, None, rx)
    }

    const CHUNKS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

    /// Input, expected output, bytes consumed (`None`: still waiting), bare line endings.
    struct Case(&'static [u8], &'static [u8], Option<usize>, u64);

    #[test]
    fn transcripts_at_every_chunk_size() {
        // (input, output, consumed (None: still waiting), bare line endings)
        let cases: &[Case] = &[
            Case(b".\r\n", b"", Some(3), 0),
            Case(b".\r\nQUIT\r\n", b"", Some(3), 0),
            Case(b"\r\n.\r\n", b"\r\n", Some(5), 0),
            Case(
                b"Subject: x\r\n\r\nbody\r\n.\r\n",
                b"Subject: x\r\n\r\nbody\r\n",
                Some(23),
                0,
            ),
            Case(b"a\r\n..b\r\n.\r\nRSET\r\n", b"a\r\n.b\r\n", Some(11), 0),
            Case(b"..\r\n.\r\n", b".\r\n", Some(7), 0),
            Case(b"...\r\n.\r\n", b"..\r\n", Some(8), 0),
            Case(b".x\r\n.\r\n", b"x\r\n", Some(7), 0),
            Case(b"a.\r\n.\r\n", b"a.\r\n", Some(7), 0),
            Case(b"a\r\n. \r\n.\r\n", b"a\r\n \r\n", Some(10), 0),
            // Smuggling attempts: none of these end the message.
            Case(
                b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
                b"a\r\n.\r\nMAIL FROM:<x@y>\r\n",
                Some(24),
                2,
            ),
            Case(b"a\r.\rb\r\n.\r\n", b"a\r\n.\r\nb\r\n", Some(10), 2),
            Case(b"a\r\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(11), 1),
            Case(b"a\n.\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n", Some(11), 1),
            Case(b"a\r\n.\rb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(11), 1),
            Case(b"a\r\n.\r\r\n.\r\n", b"a\r\n\r\n\r\n", Some(10), 1),
            Case(b"a\r\r\n.\r\n", b"a\r\n\r\n", Some(7), 1),
            Case(b"\n.\n", b"\r\n.\r\n", None, 2),
            Case(b"\r.\r", b"\r\n.", None, 1),
            Case(b"a\r\n.\r", b"a\r\n", None, 0),
            Case(b"a\r\n.", b"a\r\n", None, 0),
            Case(b"a\r\n", b"a\r\n", None, 0),
            Case(b"a\n\n\n.\r\n", b"a\r\n\r\n\r\n.\r\n", None, 3),
        ];
        for &Case(input, want, consumed, bare) in cases {
            for chunk in CHUNKS {
                let (out, got, rx) = run(input, chunk, u64::MAX);
                let show = String::from_utf8_lossy(input);
                assert_eq!(out, want, "{show:?} chunk {chunk}");
                assert_eq!(got, consumed, "{show:?} chunk {chunk}");
                assert_eq!(rx.bare_line_endings(), bare, "{show:?} chunk {chunk}");
                assert_eq!(rx.size(), want.len() as u64);
                assert!(!rx.exceeded());
            }
        }
    }

    #[test]
    fn size_cap_stops_writing_but_finds_terminator() {
        let input = b"0123456789\r\n0123456789\r\n.\r\nQUIT\r\n";
        for chunk in CHUNKS {
            let (out, consumed, rx) = run(input, chunk, 15);
            assert_eq!(out, b"0123456789\r\n012");
            assert_eq!(consumed, Some(27));
            assert!(rx.exceeded());
            assert_eq!(rx.size(), 24);
        }
        // Exactly at the cap is not exceeded.
        let (out, _, rx) = run(input, 3, 24);
        assert_eq!(out.len(), 24);
        assert!(!rx.exceeded());
    }

    #[test]
    fn tracks_longest_line_and_stops_after_done() {
        let (_, _, rx) = run(b"abc\r\nabcdefg\nab\r\n.\r\n", 5, u64::MAX);
        assert_eq!(rx.longest_line(), 7);
        let mut rx = DataReceiver::new(100);
        let mut out = Vec::new();
        assert_eq!(
            rx.feed(b"x\r\n.\r\nNOOP\r\n", &mut out),
            Feed::Done { consumed: 6 }
        );
        assert!(rx.is_done());
        assert_eq!(rx.feed(b"NOOP\r\n", &mut out), Feed::Done { consumed: 0 });
        assert_eq!(rx.feed(b"", &mut out), Feed::Done { consumed: 0 });
        assert_eq!(out, b"x\r\n");
    }

    #[test]
    fn over_long_lines_are_folded_whatever_the_chunking() {
        // One 2,500-octet line (no dot), a short one, then a line of exactly MAX_LINE.
        let long: Vec<u8> = (0..2500).map(|i| b'a' + (i % 26) as u8).collect();
        let exact = vec![b'z'; MAX_LINE as usize];
        let mut input = long.clone();
        input.extend_from_slice(b"\r\nshort\r\n");
        input.extend_from_slice(&exact);
        input.extend_from_slice(b"\r\n.\r\n");
        for chunk in CHUNKS.into_iter().chain([997, 998, 999, 4096]) {
            let (out, consumed, rx) = run(&input, chunk, u64::MAX);
            assert_eq!(consumed, Some(input.len()), "chunk {chunk}");
            let lines: Vec<&[u8]> = out
                .strip_suffix(b"\r\n")
                .unwrap()
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .collect();
            assert!(
                lines.iter().all(|l| l.len() <= MAX_LINE as usize),
                "chunk {chunk}"
            );
            // 2,500 = 998 + 997 + 505 after the inserted spaces: three lines.
            assert_eq!(lines.len(), 3 + 1 + 1, "chunk {chunk}");
            assert_eq!(lines[0].len(), 998);
            assert!(lines[1].starts_with(b" ") && lines[2].starts_with(b" "));
            // Unfolding gives the content back, octet for octet.
            let unfolded: Vec<u8> = [lines[0], &lines[1][1..], &lines[2][1..]].concat();
            assert_eq!(unfolded, long, "chunk {chunk}");
            assert_eq!(lines[3], b"short");
            assert_eq!(
                lines[4],
                &exact[..],
                "a line of exactly 998 octets is left alone"
            );
            assert_eq!(rx.folded_lines(), 2, "chunk {chunk}");
            assert_eq!(rx.longest_line(), MAX_LINE);
        }
    }

    /// A deliberately naive model of the rules, used to check the streaming receiver: split
    /// on real CRLF, stop at a line that is exactly ".", drop one leading dot, turn every bare
    /// CR or LF into CRLF. A trailing CR at the end of input is still undecided, so it is held.
    fn model(input: &[u8]) -> (Vec<u8>, Option<usize>, u64) {
        let (mut out, mut pos, mut bare) = (Vec::new(), 0, 0);
        loop {
            let end = input[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|e| pos + e);
            let mut line = match end {
                Some(e) => &input[pos..e],
                None => &input[pos..],
            };
            if let Some(e) = end
                && line == b"."
            {
                return (out, Some(e + 2), bare);
            }
            if line.first() == Some(&b'.') {
                line = &line[1..];
            }
            if end.is_none() && line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            for &b in line {
                if b == b'\r' || b == b'\n' {
                    out.extend_from_slice(b"\r\n");
                    bare += 1;
                } else {
                    out.push(b);
                }
            }
            match end {
                Some(e) => {
                    out.extend_from_slice(b"\r\n");
                    pos = e + 2;
                }
                None => return (out, None, bare),
            }
        }
    }

    #[test]
    fn matches_model_on_random_input() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 48) as usize;
            let input: Vec<u8> = (0..len).map(|_| b"\r\n.a"[(next() % 4) as usize]).collect();
            let (want, consumed, bare) = model(&input);
            let cap = next() % 40;
            for chunk in CHUNKS {
                let (out, got, rx) = run(&input, chunk, u64::MAX);
                let show = String::from_utf8_lossy(&input);
                assert_eq!(out, want, "{show:?} chunk {chunk}");
                assert_eq!(got, consumed, "{show:?} chunk {chunk}");
                assert_eq!(rx.bare_line_endings(), bare, "{show:?} chunk {chunk}");
                let longest = want
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len());
                assert_eq!(
                    rx.longest_line(),
                    longest.max().unwrap_or(0) as u64,
                    "{show:?}"
                );
                let (capped, _, crx) = run(&input, chunk, cap);
                assert_eq!(
                    capped,
                    &want[..want.len().min(cap as usize)],
                    "{show:?} cap {cap}"
                );
                assert_eq!(crx.exceeded(), want.len() as u64 > cap);
                // Canonical: every CR is followed by LF and every LF preceded by CR.
                assert!(out.windows(2).all(|w| (w[0] == b'\r') == (w[1] == b'\n')));
            }
        }
    }
}
