//! The relay client's reply reader (`mailgate::relay::client::take_line` and `ReplyParser`):
//! the replies found do not depend on how the socket data arrives, lines and replies stay
//! within their bounds, and where all lines are short the codes agree with the SMTP module's
//! streaming parser (`mailgate::smtp::reply::ReplyParser`).
//!
//! Control bytes seed the split points; the first one's bit 3 picks raw bytes or reply tokens.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::relay::client::{MAX_LINE, MAX_LINES, Reply, ReplyParser, take_line};
use mailgate::smtp::reply::{self, Parsed};
use mailgate_fuzz::{chunks, control, tokens};

const TOKENS: &[&[u8]] = &[
    b"250",
    b"220",
    b"354",
    b"421",
    b"550",
    b"199",
    b"600",
    b"-",
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b"2.0.0",
    b"5.1.1 ",
    b"OK",
    b"PIPELINING",
    b"AUTH PLAIN LOGIN",
    b"\xff",
    b"\0",
];

/// What the client reads from `parts` arriving one after another: each reply (code and line
/// count), then `None` at the first error.
fn read(parts: &[&[u8]]) -> Vec<Option<(u16, Vec<String>)>> {
    let mut buf = Vec::new();
    let mut parser = ReplyParser::default();
    let mut found = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            let line = match take_line(&mut buf) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(_) => {
                    found.push(None);
                    return found;
                }
            };
            assert!(line.len() < MAX_LINE && !line.contains(&b'\n'));
            match parser.push_line(&line) {
                Ok(None) => {}
                Ok(Some(Reply { code, lines })) => {
                    assert!((200..600).contains(&code));
                    assert!(!lines.is_empty() && lines.len() <= MAX_LINES);
                    found.push(Some((code, lines)));
                }
                Err(_) => {
                    found.push(None);
                    return found;
                }
            }
        }
        assert!(buf.len() <= MAX_LINE, "{} bytes buffered", buf.len());
    }
    found
}

/// The codes and line counts the SMTP module's parser finds in `input`, `None` at an error.
fn smtp_module(input: &[u8]) -> Vec<Option<(u16, usize)>> {
    let mut parser = reply::ReplyParser::new();
    let mut rest = input;
    let mut found = Vec::new();
    loop {
        match parser.feed(rest) {
            Ok(Parsed::NeedMore) => return found,
            Ok(Parsed::Reply { reply, consumed }) => {
                found.push(Some((reply.code, reply.lines.len())));
                rest = &rest[consumed..];
            }
            Err(_) => {
                found.push(None);
                return found;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let input = if ctl[0] & 8 == 8 {
        tokens(payload, TOKENS)
    } else {
        payload.to_vec()
    };
    let whole = read(&[&input]);
    let split = read(&chunks(ctl, &input));
    assert_eq!(split, whole, "replies depend on the split");
    if input.split(|&b| b == b'\n').all(|l| l.len() < 1000) {
        let ours: Vec<_> = whole
            .iter()
            .map(|r| r.as_ref().map(|(c, l)| (*c, l.len())))
            .collect();
        assert_eq!(ours, smtp_module(&input), "the two reply parsers disagree");
    }
});
