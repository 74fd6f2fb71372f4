//! The DATA receiver (`mailgate::smtp::data::DataReceiver`): the result must not depend on how
//! the input is split (output, `consumed`, `exceeded()`, size and counters all equal to feeding
//! it whole), within the size cap the output never holds a bare CR or LF, and no output line is
//! longer than `MAX_LINE` octets (longer ones are folded).
//!
//! Control bytes: both seed the split points; the second one's low bit picks raw bytes or
//! line-ending tokens, and its other bits set the size cap.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::smtp::data::{DataReceiver, Feed, MAX_LINE};
use mailgate_fuzz::{chunks, control, has_bare_cr_or_lf, tokens};

const TOKENS: &[&[u8]] = &[
    b".",
    b"..",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n.\r\n",
    b".\r\n",
    b"\n.\n",
    b"\r.\r",
    b"a",
    b" ",
    b"MAIL FROM:<a@b>\r\n",
    b"\0",
];

struct Run {
    out: Vec<u8>,
    consumed: Option<usize>,
    exceeded: bool,
    size: u64,
    bare: u64,
    longest: u64,
    folded: u64,
}

fn run(max: u64, parts: &[&[u8]]) -> Run {
    let mut rx = DataReceiver::new(max);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut consumed = None;
    for part in parts {
        match rx.feed(part, &mut out) {
            Feed::NeedMore => {
                assert!(!rx.is_done());
                offset += part.len();
            }
            Feed::Done { consumed: n } => {
                assert!(n <= part.len() && rx.is_done());
                consumed = Some(offset + n);
                break;
            }
        }
    }
    if consumed.is_some() {
        let before = out.len();
        assert_eq!(
            rx.feed(b"more\r\n.\r\n", &mut out),
            Feed::Done { consumed: 0 }
        );
        assert_eq!(out.len(), before, "output after the terminator");
    }
    Run {
        out,
        consumed,
        exceeded: rx.exceeded(),
        size: rx.size(),
        bare: rx.bare_line_endings(),
        longest: rx.longest_line(),
        folded: rx.folded_lines(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let input = if ctl[1] & 1 == 1 {
        tokens(payload, TOKENS)
    } else {
        payload.to_vec()
    };
    let max = u64::from(ctl[1] >> 1) * 16;
    let whole = run(max, &[&input]);
    let split = run(max, &chunks(ctl, &input));
    assert_eq!(split.out, whole.out, "output depends on the split");
    assert_eq!(
        split.consumed, whole.consumed,
        "consumed depends on the split"
    );
    assert_eq!(split.exceeded, whole.exceeded);
    assert_eq!(split.size, whole.size);
    assert_eq!(split.bare, whole.bare);
    assert_eq!(split.longest, whole.longest);
    assert_eq!(split.folded, whole.folded);
    assert!(whole.longest <= MAX_LINE, "a line of {} octets", whole.longest);
    assert!(
        whole
            .out
            .split(|&b| b == b'\n')
            .all(|l| l.strip_suffix(b"\r").unwrap_or(l).len() as u64 <= MAX_LINE),
        "an output line longer than {MAX_LINE} octets"
    );
    assert_eq!(whole.exceeded, whole.size > max);
    if !whole.exceeded {
        assert_eq!(whole.out.len() as u64, whole.size);
        assert!(
            !has_bare_cr_or_lf(&whole.out),
            "bare CR or LF in {:?}",
            whole.out
        );
    }
    if let Some(n) = whole.consumed {
        if !whole.exceeded {
            assert!(whole.out.is_empty() || whole.out.ends_with(b"\r\n"));
        }
        assert!(input[..n].ends_with(b"\r\n.\r\n") || input[..n] == *b".\r\n");
    }
});
