//! SMTP paths (`ForwardPath::parse`, `ReversePath::parse`, `Address::relay_trick`): never
//! panics, and a parsed address written out in its Display form parses again to the same value.
//!
//! The first control byte's low bit picks raw text or address tokens for the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::smtp::address::{Address, ForwardPath, MAX_PATH_LEN, ReversePath};
use mailgate_fuzz::{control, tokens};

const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"<>",
    b"@",
    b".",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b"IPv6:",
    b"::",
    b":",
    b"1",
    b"192.0.2.1",
    b"ffff",
    b"@a,@b:",
    b",",
    b"postmaster",
    b"PostMaster",
    b"user",
    b"a",
    b"example.org",
    b"-",
    b"%",
    b"!",
    b" ",
    b"\t",
    b"+",
    b"=",
    b"\xc3\xa9",
    b"\0",
    b"\x7f",
];

fn round_trip(addr: &Address) {
    let _ = addr.relay_trick();
    let text = addr.to_string();
    let again = Address::parse(&text)
        .unwrap_or_else(|e| panic!("{text:?} from {addr:?} does not parse again: {e}"));
    assert_eq!(again.local, addr.local);
    assert_eq!(again.local_unquoted, addr.local_unquoted);
    assert_eq!(again.quoted, addr.quoted);
    assert_eq!(again.domain, addr.domain);
    // Display leaves out a source route, and with it that reason to refuse.
    if !addr.had_source_route {
        assert_eq!(again.relay_trick(), addr.relay_trick());
    }
}

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let bytes = if ctl[0] & 1 == 1 {
        tokens(payload, TOKENS)
    } else {
        payload.to_vec()
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return;
    };
    if let Ok((path, rest)) = ForwardPath::parse(text) {
        assert!(text.len() - rest.len() <= MAX_PATH_LEN);
        if let Some(addr) = path.address() {
            round_trip(addr);
            let shown = path.to_string();
            let (again, tail) = ForwardPath::parse(&shown).expect("Display form parses");
            assert!(tail.is_empty());
            assert_eq!(again.address().map(|a| &a.domain), Some(&addr.domain));
        }
    }
    if let Ok((path, rest)) = ReversePath::parse(text) {
        assert!(text.len() - rest.len() <= MAX_PATH_LEN);
        if let Some(addr) = path.address() {
            round_trip(addr);
        }
    }
    if let Ok(addr) = Address::parse(text) {
        round_trip(&addr);
    }
});
