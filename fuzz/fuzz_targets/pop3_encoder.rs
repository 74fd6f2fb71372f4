//! The RETR/TOP body encoder (`mailgate::pop3::reply::MessageEncoder`): the output does not
//! depend on how the file is read in chunks, no line before the end is a lone ".", every line
//! starting with "." is stuffed, RETR output unstuffs back to the (CRLF-normalized) message,
//! and TOP output is a prefix of RETR output.
//!
//! Control bytes seed the split points; the second one picks RETR (odd) or TOP and its count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::pop3::reply::MessageEncoder;
use mailgate_fuzz::{chunks, control};

/// Encodes `parts` with a fresh encoder; returns the output and whether TOP finished early.
fn encode(top: Option<u64>, parts: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut enc = MessageEncoder::new(top);
    let mut out = Vec::new();
    for part in parts {
        if enc.is_done() {
            let before = out.len();
            enc.feed(part, &mut out);
            assert_eq!(out.len(), before, "output after TOP was done");
            continue;
        }
        enc.feed(part, &mut out);
    }
    let done = enc.is_done();
    enc.finish(&mut out);
    (out, done)
}

/// What RETR must send for `msg`, before the terminating ".": every line ending as CRLF (a bare
/// CR at the very end counts as one), a final line end added, leading dots doubled.
fn expected_retr(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < msg.len() {
        let b = msg[i];
        let ends = b == b'\n'
            || (b == b'\r' && msg.get(i + 1) == Some(&b'\n'))
            || (b == b'\r' && i + 1 == msg.len());
        if ends {
            out.extend_from_slice(b"\r\n");
            i += if b == b'\r' && msg.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            line_start = true;
            continue;
        }
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = false;
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (ctl, msg) = control(data);
    let top = (ctl[1] & 1 == 0).then_some(u64::from(ctl[1] >> 1) % 8);
    let whole = encode(top, &[msg]);
    let split = encode(top, &chunks(ctl, msg));
    assert_eq!(split, whole, "output depends on the split");
    let (out, _) = whole;
    let body = out
        .strip_suffix(b".\r\n")
        .expect("ends with the terminator");
    // Split at each LF: the piece after the last one must be empty (the body ends a line).
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let (last, lines) = lines.split_last().expect("split yields at least one piece");
    assert!(last.is_empty(), "unterminated last line");
    for line in lines {
        let line = line
            .strip_suffix(b"\r")
            .expect("every LF is part of a CRLF");
        assert!(
            !line.starts_with(b".") || line.starts_with(b".."),
            "unstuffed {line:?}"
        );
    }
    let (retr, _) = encode(None, &[msg]);
    let retr_body = &retr[..retr.len() - 3];
    match top {
        None => assert_eq!(body, expected_retr(msg), "RETR output"),
        Some(_) => assert!(retr_body.starts_with(body), "TOP is not a prefix of RETR"),
    }
});
