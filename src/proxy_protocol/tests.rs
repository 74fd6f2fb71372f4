//! Every header shape of both versions, truncated at every length, and the bounds.

use super::*;

fn inet(src: &str, dst: &str) -> Addresses {
    Addresses::Inet {
        source: src.parse().unwrap(),
        destination: dst.parse().unwrap(),
    }
}

fn header(version: u8, command: Command, addresses: Addresses, len: usize) -> Parsed {
    Parsed::Header(Header {
        version,
        command,
        addresses,
        len,
    })
}

/// A version 2 header: `ver_cmd`, `family`, the address block and the TLVs.
fn v2(ver_cmd: u8, family: u8, block: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    let len = u16::try_from(block.len() + tlvs.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(block);
    out.extend_from_slice(tlvs);
    out
}

fn inet4_block() -> Vec<u8> {
    let mut b = vec![192, 0, 2, 10, 198, 51, 100, 1];
    b.extend_from_slice(&50123u16.to_be_bytes());
    b.extend_from_slice(&110u16.to_be_bytes());
    b
}

/// Every strict prefix of a complete header is incomplete, and the whole header parses to
/// `expected` with trailing session bytes left alone.
fn complete(wire: &[u8], expected: Parsed) {
    for cut in 0..wire.len() {
        assert_eq!(
            parse(&wire[..cut]),
            Parsed::Incomplete,
            "{:?}",
            &wire[..cut]
        );
    }
    assert_eq!(parse(wire), expected);
    let mut more = wire.to_vec();
    more.extend_from_slice(b"\x16\x03\x01 USER x\r\n");
    assert_eq!(parse(&more), expected);
}

#[test]
fn v1_tcp4() {
    let wire = b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 110\r\n";
    let want = header(
        1,
        Command::Proxy,
        inet("192.0.2.10:50123", "198.51.100.1:110"),
        wire.len(),
    );
    complete(wire, want);
}

#[test]
fn v1_tcp6() {
    let wire = b"PROXY TCP6 2001:db8::10 2001:db8::1 65535 0\r\n";
    let want = header(
        1,
        Command::Proxy,
        inet("[2001:db8::10]:65535", "[2001:db8::1]:0"),
        wire.len(),
    );
    complete(wire, want);
}

#[test]
fn v1_unknown() {
    for wire in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ] {
        complete(
            wire,
            header(1, Command::Proxy, Addresses::Unspecified, wire.len()),
        );
    }
}

#[test]
fn v1_longest_line_is_taken_and_one_more_byte_is_not() {
    let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let tcp6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
    let want = header(
        1,
        Command::Proxy,
        inet(&format!("[{full}]:65535"), &format!("[{full}]:65535")),
        tcp6.len(),
    );
    assert_eq!(parse(tcp6.as_bytes()), want);
    // The spec's worst case.
    let longest = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
    assert_eq!(longest.len(), V1_MAX);
    let want = header(1, Command::Proxy, Addresses::Unspecified, V1_MAX);
    assert_eq!(parse(longest.as_bytes()), want);
    let over = format!("PROXY UNKNOWN {full} {full} 65535 655355\r\n");
    assert_eq!(over.len(), V1_MAX + 1);
    assert_eq!(parse(over.as_bytes()), Parsed::Invalid(Invalid::V1TooLong));
    let over = over.as_bytes();
    assert_eq!(parse(&over[..V1_MAX]), Parsed::Invalid(Invalid::V1TooLong));
    assert_eq!(parse(&over[..V1_MAX - 1]), Parsed::Incomplete);
}

#[test]
fn v1_malformed_lines() {
    let cases: &[&[u8]] = &[
        b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 110\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 50123\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 110 7\r\n",
        b"PROXY TCP4  192.0.2.10 198.51.100.1 50123 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 50123 110 \r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.1 50123 110\r\n",
        b"PROXY TCP6 192.0.2.10 2001:db8::1 50123 110\r\n",
        b"PROXY TCP4 192.0.2.256 198.51.100.1 50123 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 050123 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 01 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 +1 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 110\r\n",
        b"PROXY UDP4 192.0.2.10 198.51.100.1 50123 110\r\n",
        b"PROXY tcp4 192.0.2.10 198.51.100.1 50123 110\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY \r\n",
        b"PROXY \xff\r\n",
    ];
    for case in cases {
        assert!(
            matches!(parse(case), Parsed::Invalid(Invalid::V1Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(case),
            parse(case)
        );
    }
}

#[test]
fn not_a_header() {
    for case in [
        &b"USER alice\r\n"[..],
        b"PROXY\r\n",
        b"PROXX TCP4",
        b"\x16\x03\x01\x02\x00",
        b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c",
        b"\r\r",
        b"EHLO x\r\n",
    ] {
        assert_eq!(
            parse(case),
            Parsed::Invalid(Invalid::NotAHeader),
            "{case:?}"
        );
    }
}

#[test]
fn v2_proxy_inet() {
    let wire = v2(0x21, 0x11, &inet4_block(), &[]);
    let want = header(
        2,
        Command::Proxy,
        inet("192.0.2.10:50123", "198.51.100.1:110"),
        28,
    );
    complete(&wire, want);
}

#[test]
fn v2_proxy_inet6_with_tlvs() {
    let mut block = Vec::new();
    block.extend_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&[0xc3, 0x50, 0x03, 0xe3]);
    // ALPN "pop3", an empty NOOP, and a unique id.
    let tlvs = [
        &[0x01, 0x00, 0x04][..],
        b"pop3",
        &[0x04, 0x00, 0x00],
        &[0x05, 0x00, 0x03, 1, 2, 3],
    ]
    .concat();
    let wire = v2(0x21, 0x21, &block, &tlvs);
    let want = header(
        2,
        Command::Proxy,
        inet("[2001:db8::10]:50000", "[2001:db8::1]:995"),
        wire.len(),
    );
    complete(&wire, want);
}

#[test]
fn v2_local_ignores_its_addresses() {
    let bare = v2(0x20, 0x00, &[], &[]);
    complete(&bare, header(2, Command::Local, Addresses::Unspecified, 16));
    let with = v2(0x20, 0x11, &inet4_block(), &[]);
    complete(&with, header(2, Command::Local, Addresses::Unspecified, 28));
}

#[test]
fn v2_unspec_and_unix_keep_the_connection_endpoints() {
    let unspec = v2(0x21, 0x00, &[], &[0x04, 0x00, 0x01, 0x00]);
    complete(
        &unspec,
        header(2, Command::Proxy, Addresses::Unspecified, 20),
    );
    let unix = v2(0x21, 0x31, &[b'/'; 216], &[]);
    complete(&unix, header(2, Command::Proxy, Addresses::Unix, 232));
}

#[test]
fn v2_refusals() {
    let block = inet4_block();
    let cases = [
        (v2(0x11, 0x11, &block, &[]), Invalid::V2Version(1)),
        (v2(0x31, 0x11, &block, &[]), Invalid::V2Version(3)),
        (v2(0x22, 0x11, &block, &[]), Invalid::V2Command(2)),
        (v2(0x21, 0x12, &block, &[]), Invalid::V2Family(0x12)),
        (v2(0x21, 0x22, &[0; 36], &[]), Invalid::V2Family(0x22)),
        (v2(0x21, 0x41, &block, &[]), Invalid::V2Family(0x41)),
        (v2(0x21, 0x10, &block, &[]), Invalid::V2Family(0x10)),
        (v2(0x20, 0x13, &block, &[]), Invalid::V2Family(0x13)),
        (v2(0x21, 0x11, &block[..11], &[]), Invalid::V2Short),
        (v2(0x21, 0x21, &block, &[]), Invalid::V2Short),
        (v2(0x21, 0x11, &block, &[0x01]), Invalid::V2Tlv),
        (v2(0x21, 0x11, &block, &[0x01, 0x00]), Invalid::V2Tlv),
        (
            v2(0x21, 0x11, &block, &[0x01, 0x00, 0x02, 9]),
            Invalid::V2Tlv,
        ),
    ];
    for (wire, why) in cases {
        assert_eq!(parse(&wire), Parsed::Invalid(why), "{wire:?}");
    }
}

#[test]
fn v2_length_is_bounded_before_the_payload_arrives() {
    let mut wire = V2_SIGNATURE.to_vec();
    wire.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert_eq!(parse(&wire), Parsed::Invalid(Invalid::V2TooLong(65535)));
    let most = v2(
        0x21,
        0x11,
        &inet4_block(),
        &[[0x04, 0x07, 0xf1].as_slice(), &[0; 2033]].concat(),
    );
    assert_eq!(most.len(), MAX_HEADER);
    assert!(matches!(parse(&most), Parsed::Header(h) if h.len == MAX_HEADER));
    let over = v2(
        0x21,
        0x11,
        &inet4_block(),
        &[[0x04, 0x07, 0xf2].as_slice(), &[0; 2034]].concat(),
    );
    assert_eq!(parse(&over), Parsed::Invalid(Invalid::V2TooLong(2049)));
}

#[test]
fn wrong_signature_is_refused_as_soon_as_it_differs() {
    let mut wire = v2(0x21, 0x11, &inet4_block(), &[]);
    for at in 0..12 {
        let saved = wire[at];
        wire[at] ^= 0x40;
        assert_eq!(
            parse(&wire[..=at]),
            Parsed::Invalid(Invalid::NotAHeader),
            "{at}"
        );
        wire[at] = saved;
    }
}

#[test]
fn sniffing_the_first_bytes() {
    assert_eq!(sniff(b""), Sniff::Maybe);
    assert_eq!(sniff(b"P"), Sniff::Maybe);
    assert_eq!(sniff(b"PROXY"), Sniff::Maybe);
    assert_eq!(sniff(b"PROXY "), Sniff::Header);
    assert_eq!(sniff(b"PROXY TCP4 1.2.3.4"), Sniff::Header);
    assert_eq!(sniff(b"\r\n"), Sniff::Maybe);
    assert_eq!(sniff(b"\r\n\r\n\0\r\nQUIT"), Sniff::Maybe);
    assert_eq!(sniff(&V2_SIGNATURE), Sniff::Header);
    assert_eq!(sniff(b"\r\n\r\nUSER"), Sniff::No);
    assert_eq!(sniff(b"PASS x"), Sniff::No);
    assert_eq!(sniff(b"USER alice\r\n"), Sniff::No);
    assert_eq!(sniff(b"\x16\x03\x01"), Sniff::No);
}
