//! PROXY protocol headers (`mailgate::proxy_protocol::parse`): never a panic; a header never
//! takes more bytes than it was given nor more than the bound; every prefix of a header is
//! incomplete (the answer does not depend on how the reads split); what follows a header does
//! not change it; and `sniff` agrees with the parser on inputs it calls no header.
//!
//! The control prefix's first byte picks raw bytes, v1 tokens, or a v2 header built around
//! the payload (version and command, family, length).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::proxy_protocol::{
    Addresses, Invalid, MAX_HEADER, Parsed, Sniff, V2_SIGNATURE, parse, sniff,
};
use mailgate_fuzz::{control, tokens};

const TOKENS: &[&[u8]] = &[
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"192.0.2.10",
    b"2001:db8::1",
    b"::ffff:1.2.3.4",
    b" ",
    b"0",
    b"110",
    b"65535",
    b"65536",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b":",
    b"\xff",
];

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let input = match ctl[0] % 3 {
        0 => payload.to_vec(),
        1 => tokens(payload, TOKENS),
        _ => {
            let mut v2 = V2_SIGNATURE.to_vec();
            v2.push(0x20 | (ctl[1] & 0x11));
            v2.push([0x00, 0x11, 0x21, 0x31, 0x12, ctl[1]][usize::from(ctl[1] >> 5) % 6]);
            let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
            v2.extend_from_slice(&len.to_be_bytes());
            v2.extend_from_slice(payload);
            v2
        }
    };
    let parsed = parse(&input);
    match parsed {
        Parsed::Header(h) => {
            assert!(h.len <= input.len() && h.len <= MAX_HEADER);
            let header = &input[..h.len];
            assert_eq!(parse(header), parsed);
            for cut in 0..h.len {
                assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "cut at {cut}");
            }
            assert_eq!(sniff(&input), Sniff::Header);
            if let Addresses::Inet {
                source,
                destination,
            } = h.addresses
            {
                assert_eq!(source.is_ipv4(), destination.is_ipv4());
            }
        }
        Parsed::Incomplete => {
            assert!(input.len() < MAX_HEADER);
            assert_ne!(sniff(&input), Sniff::No);
        }
        Parsed::Invalid(Invalid::NotAHeader) => {
            assert_ne!(sniff(&input), Sniff::Header);
        }
        Parsed::Invalid(_) => {}
    }
});
