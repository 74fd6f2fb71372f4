//! Upstream SMTP replies (`mailgate::smtp::reply::ReplyParser::feed`): the replies found do not
//! depend on how the input is split, and each one survives `Reply::encode` and parsing again.
//!
//! Control bytes seed the split points; the first one's bit 3 picks raw bytes or reply tokens.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::smtp::reply::{
    MAX_REPLY_LINE, MAX_REPLY_LINES, Parsed, Reply, ReplyError, ReplyParser,
};
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
    b"4.7.0",
    b"5.1.1",
    b"2.1.5 ",
    b"5.",
    b"1234",
    b"OK",
    b"mx.example",
    b"\xff",
    b"\0",
    b".",
];

/// Every reply in `parts`, in order, up to and including the first error.
fn replies(parts: &[&[u8]]) -> Vec<Result<Reply, ReplyError>> {
    let mut parser = ReplyParser::new();
    let mut found = Vec::new();
    for part in parts {
        let mut rest = *part;
        loop {
            match parser.feed(rest) {
                Ok(Parsed::NeedMore) => break,
                Ok(Parsed::Reply { reply, consumed }) => {
                    assert!(consumed > 0 && consumed <= rest.len());
                    assert!(rest[..consumed].ends_with(b"\n"));
                    found.push(Ok(reply));
                    rest = &rest[consumed..];
                }
                Err(e) => {
                    found.push(Err(e));
                    return found;
                }
            }
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let input = if ctl[0] & 8 == 8 {
        tokens(payload, TOKENS)
    } else {
        payload.to_vec()
    };
    let whole = replies(&[&input]);
    let split = replies(&chunks(ctl, &input));
    assert_eq!(split, whole, "replies depend on the split");
    for reply in whole.iter().flatten() {
        assert!((200..600).contains(&reply.code));
        assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES);
        // Encoding repeats the enhanced code on lines that lacked it, which may push a line
        // near the limit past it; and it writes a CR inside a line as a space, which can turn
        // "5.1.1\rtext" into a recognized enhanced code. The round trip is checked without those.
        if reply
            .lines
            .iter()
            .any(|l| l.len() > MAX_REPLY_LINE - 16 || l.contains('\r'))
        {
            continue;
        }
        let wire = reply.to_bytes();
        let again = replies(&[&wire]);
        let [Ok(again)] = &again[..] else {
            panic!("{reply:?} encodes as {wire:?}, which parses as {again:?}");
        };
        assert_eq!(again, reply, "round trip through {wire:?}");
    }
});
