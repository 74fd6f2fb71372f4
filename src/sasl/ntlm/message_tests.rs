//! Tests of the NTLM message parser and encoder, against the MS-NLMP §4.2.4.3 messages.

use super::*;

fn h(text: &str) -> Vec<u8> {
    hex::decode(text.split_whitespace().collect::<String>()).expect("test hex")
}

/// MS-NLMP §4.2.4.3: the NTLMv2 example's CHALLENGE_MESSAGE.
fn spec_challenge() -> Vec<u8> {
    h(
        "4e 54 4c 4d 53 53 50 00 02 00 00 00 0c 00 0c 00 38 00 00 00 33 82 8a e2 01 23 45 67
       89 ab cd ef 00 00 00 00 00 00 00 00 24 00 24 00 44 00 00 00 06 00 70 17 00 00 00 0f
       53 00 65 00 72 00 76 00 65 00 72 00 02 00 0c 00 44 00 6f 00 6d 00 61 00 69 00 6e 00
       01 00 0c 00 53 00 65 00 72 00 76 00 65 00 72 00 00 00 00 00",
    )
}

/// MS-NLMP §4.2.4.3: the NTLMv2 example's AUTHENTICATE_MESSAGE.
pub(in super::super) fn spec_authenticate() -> Vec<u8> {
    h(
        "4e 54 4c 4d 53 53 50 00 03 00 00 00 18 00 18 00 6c 00 00 00 54 00 54 00 84 00 00 00
       0c 00 0c 00 48 00 00 00 08 00 08 00 54 00 00 00 10 00 10 00 5c 00 00 00 10 00 10 00
       d8 00 00 00 35 82 88 e2 05 01 28 0a 00 00 00 0f 44 00 6f 00 6d 00 61 00 69 00 6e 00
       55 00 73 00 65 00 72 00 43 00 4f 00 4d 00 50 00 55 00 54 00 45 00 52 00 86 c3 50 97
       ac 9c ec 10 25 54 76 4a 57 cc cc 19 aa aa aa aa aa aa aa aa 68 cd 0a b8 51 e5 1c 96
       aa bc 92 7b eb ef 6a 1c 01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 aa aa aa aa
       aa aa aa aa 00 00 00 00 02 00 0c 00 44 00 6f 00 6d 00 61 00 69 00 6e 00 01 00 0c 00
       53 00 65 00 72 00 76 00 65 00 72 00 00 00 00 00 00 00 00 00 c5 da d2 54 4f c9 79 90
       94 ce 1c e9 0b c9 d0 3e",
    )
}

#[test]
fn spec_challenge_parses() {
    let c = Challenge::parse(&spec_challenge()).expect("parses");
    assert_eq!(c.flags, 0xe28a_8233);
    assert_eq!(
        c.server_challenge,
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
    );
    assert_eq!(decode_string(&c.target_name, true), Ok("Server".to_owned()));
    let pairs = parse_target_info(&c.target_info).expect("target info");
    let domain = crate::sasl::ntlm::crypto::utf16le("Domain");
    let server = crate::sasl::ntlm::crypto::utf16le("Server");
    assert_eq!(
        pairs,
        vec![
            (av::NB_DOMAIN_NAME, domain.as_slice()),
            (av::NB_COMPUTER_NAME, server.as_slice())
        ]
    );
    assert_eq!(c.version, [0x06, 0x00, 0x70, 0x17, 0x00, 0x00, 0x00, 0x0f]);
}

#[test]
fn spec_authenticate_parses_and_round_trips() {
    let a = Authenticate::parse(&spec_authenticate()).expect("parses");
    assert_eq!(decode_string(&a.domain, true), Ok("Domain".to_owned()));
    assert_eq!(decode_string(&a.user, true), Ok("User".to_owned()));
    assert_eq!(
        decode_string(&a.workstation, true),
        Ok("COMPUTER".to_owned())
    );
    assert_eq!(a.lm_response.len(), 24);
    assert_eq!(a.nt_response.len(), 84);
    assert_eq!(a.nt_response[..4], [0x68, 0xcd, 0x0a, 0xb8]);
    assert_eq!(a.session_key.len(), 16);
    assert_eq!(a.flags, Some(0xe288_8235));
    // Our encoding (64-byte header, payload in field order) parses to the same fields.
    assert_eq!(Authenticate::parse(&a.encode()), Ok(a));
}

#[test]
fn round_trips() {
    let n = Negotiate {
        flags: flags::UNICODE | flags::OEM_DOMAIN_SUPPLIED | flags::OEM_WORKSTATION_SUPPLIED,
        domain: b"DOM".to_vec(),
        workstation: b"WS".to_vec(),
    };
    assert_eq!(Negotiate::parse(&n.encode()), Ok(n));
    let c = Challenge {
        flags: flags::NTLM | flags::UNICODE,
        target_name: encode_string("DOM", true),
        server_challenge: [9; 8],
        target_info: target_info(&[(av::NB_DOMAIN_NAME, b"D\0")]),
        version: [0; 8],
    };
    let bytes = c.encode();
    assert_eq!(&bytes[..8], SIGNATURE);
    assert_eq!(u32_at(&bytes, 16), 56, "payload follows the 56-byte header");
    assert_eq!(Challenge::parse(&bytes), Ok(c));
    let a = Authenticate {
        lm_response: vec![1; 24],
        nt_response: vec![2; 24],
        domain: b"d".to_vec(),
        user: b"u".to_vec(),
        workstation: Vec::new(),
        session_key: Vec::new(),
        flags: Some(flags::OEM),
    };
    assert_eq!(Authenticate::parse(&a.encode()), Ok(a));
}

#[test]
fn negotiate_forms_clients_send() {
    // The 16-byte form of old clients: signature, type, flags.
    let short = h("4e544c4d535350000100000002020000");
    assert_eq!(
        Negotiate::parse(&short),
        Ok(Negotiate {
            flags: 0x0202,
            ..Negotiate::default()
        })
    );
    // Fields that their SUPPLIED flag does not announce are not read, whatever they hold.
    let mut unannounced = Negotiate {
        flags: flags::UNICODE,
        ..Negotiate::default()
    }
    .encode();
    unannounced[16..24].copy_from_slice(&[5, 0, 5, 0, 0xff, 0xff, 0, 0]);
    assert!(Negotiate::parse(&unannounced).is_ok());
}

/// Writes the security buffer at `at`: length `len` at offset `offset`.
fn set_field(msg: &mut [u8], at: usize, len: u16, offset: u32) {
    msg[at..at + 2].copy_from_slice(&len.to_le_bytes());
    msg[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
    msg[at + 4..at + 8].copy_from_slice(&offset.to_le_bytes());
}

#[test]
fn malformed_authenticate_messages() {
    let good = spec_authenticate();
    let len = good.len() as u32;
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut m = good.clone();
        f(&mut m);
        m
    };
    let cases: Vec<(Vec<u8>, Error)> = vec![
        (Vec::new(), Error::Truncated),
        (good[..11].to_vec(), Error::Truncated),
        (good[..51].to_vec(), Error::Truncated),
        (with(&|m| m[0] = b'X'), Error::Signature),
        (
            with(&|m| m[8] = 1),
            Error::WrongType("expected an NTLM AUTHENTICATE message"),
        ),
        (
            with(&|m| m[8] = 2),
            Error::WrongType("expected an NTLM AUTHENTICATE message"),
        ),
        // The NT response reaches one byte past the end.
        (
            with(&|m| set_field(m, 20, 0x54, len - 0x53)),
            Error::Field("NTLM NT response field out of bounds"),
        ),
        // An offset past the end, and one that wraps.
        (
            with(&|m| set_field(m, 36, 8, len)),
            Error::Field("NTLM user field out of bounds"),
        ),
        (
            with(&|m| set_field(m, 28, 12, u32::MAX)),
            Error::Field("NTLM domain field out of bounds"),
        ),
        // A field pointing into the fixed header.
        (
            with(&|m| set_field(m, 12, 24, 8)),
            Error::Field("NTLM LM response field out of bounds"),
        ),
        (
            with(&|m| set_field(m, 44, 16, len - 15)),
            Error::Field("NTLM workstation field out of bounds"),
        ),
        (vec![0; MAX_TOKEN_LEN + 1], Error::TooLong),
    ];
    for (i, (msg, want)) in cases.iter().enumerate() {
        assert_eq!(Authenticate::parse(msg), Err(*want), "case {i}");
    }
    // Truncated anywhere in the payload: an error, never a panic.
    for cut in 0..good.len() {
        assert!(Authenticate::parse(&good[..cut]).is_err(), "cut at {cut}");
    }
    // Empty fields may carry any offset.
    assert!(Authenticate::parse(&with(&|m| set_field(m, 52, 0, u32::MAX))).is_ok());
}

#[test]
fn malformed_negotiate_and_challenge_messages() {
    let n = Negotiate {
        flags: flags::OEM_DOMAIN_SUPPLIED,
        domain: b"DOMAIN".to_vec(),
        workstation: Vec::new(),
    }
    .encode();
    let mut past = n.clone();
    set_field(&mut past, 16, 7, 32);
    let cases: Vec<(Vec<u8>, Error)> = vec![
        (n[..15].to_vec(), Error::Truncated),
        (
            spec_authenticate(),
            Error::WrongType("expected an NTLM NEGOTIATE message"),
        ),
        (
            past,
            Error::Field("NTLM NEGOTIATE domain field out of bounds"),
        ),
        (b"NTLMSSP".to_vec(), Error::Truncated),
        (b"NTLMSSQ\0\x01\0\0\0\0\0\0\0".to_vec(), Error::Signature),
    ];
    for (i, (msg, want)) in cases.iter().enumerate() {
        assert_eq!(Negotiate::parse(msg), Err(*want), "case {i}");
    }
    for cut in 16..n.len() {
        assert!(Negotiate::parse(&n[..cut]).is_err(), "cut at {cut}");
    }
    let c = spec_challenge();
    for cut in 0..c.len() {
        assert!(Challenge::parse(&c[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn strings() {
    let cases: Vec<(&[u8], bool, Result<&str, Error>)> = vec![
        (b"U\0s\0e\0r\0", true, Ok("User")),
        (b"", true, Ok("")),
        (b"\xfc\0", true, Ok("\u{fc}")),
        // U+1F600 as a surrogate pair.
        (b"\x3d\xd8\x00\xde", true, Ok("\u{1f600}")),
        (
            b"U\0s",
            true,
            Err(Error::String("NTLM Unicode string has an odd length")),
        ),
        (
            b"\x3d\xd8",
            true,
            Err(Error::String("NTLM Unicode string is not valid UTF-16")),
        ),
        (b"User", false, Ok("User")),
        (b"J\xc3\xbcrgen", false, Ok("J\u{fc}rgen")),
        (b"J\xfcrgen", false, Ok("J\u{fc}rgen")),
    ];
    for (bytes, unicode, want) in cases {
        let want = want.map(str::to_owned);
        assert_eq!(decode_string(bytes, unicode), want, "{bytes:?}");
    }
    assert_eq!(encode_string("Us", true), b"U\0s\0");
    assert_eq!(encode_string("Us", false), b"Us");
}

#[test]
fn target_info_lists() {
    let list = target_info(&[(av::NB_COMPUTER_NAME, b"ab"), (av::TIMESTAMP, &[1; 8])]);
    assert_eq!(
        parse_target_info(&list),
        Ok(vec![
            (av::NB_COMPUTER_NAME, &b"ab"[..]),
            (av::TIMESTAMP, &[1u8; 8][..])
        ])
    );
    for cut in 0..list.len() {
        assert_eq!(
            parse_target_info(&list[..cut]),
            Err(Error::TargetInfo),
            "cut {cut}"
        );
    }
}
