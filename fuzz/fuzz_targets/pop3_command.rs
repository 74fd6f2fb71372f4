//! POP3 command lines (`mailgate::pop3::command::parse`): never panics, and what parses
//! respects the line and argument bounds.
//!
//! The first control byte's low bit picks raw bytes or keyword tokens for the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::pop3::command::{
    Command, MAX_ARG_LEN, MAX_AUTH_LINE_LEN, MAX_LINE_LEN, MAX_PASSWORD_LEN, parse,
};
use mailgate_fuzz::{control, tokens};

const TOKENS: &[&[u8]] = &[
    b"USER ",
    b"PASS ",
    b"APOP ",
    b"AUTH ",
    b"CAPA",
    b"STLS",
    b"STAT",
    b"LIST",
    b"UIDL",
    b"RETR ",
    b"TOP ",
    b"DELE ",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"user",
    b"uSeR",
    b" ",
    b"  ",
    b"1",
    b"0",
    b"4294967295",
    b"4294967296",
    b"18446744073709551616",
    b"-1",
    b"+1",
    b"=",
    b"PLAIN",
    b"dXNlcg==",
    b"c99f2fe6d4c4e1a0d0a0a0a0a0a0a0a0",
    b"\t",
    b"\0",
    b"\r",
    b"\n",
    b"\xc3\xa9",
    b"\xff",
    b"\x7f",
    b"*",
];

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let line = if ctl[0] & 1 == 1 {
        tokens(payload, TOKENS)
    } else {
        payload.to_vec()
    };
    let Ok(cmd) = parse(&line) else {
        return;
    };
    assert!(line.len() <= MAX_AUTH_LINE_LEN);
    match cmd {
        Command::Pass(secret) => {
            let pw = secret.expose();
            assert!(!pw.is_empty() && pw.len() <= MAX_PASSWORD_LEN);
            assert!(!pw.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'));
        }
        Command::Auth { mechanism, initial } => {
            assert!(
                mechanism
                    .as_ref()
                    .is_none_or(|m| !m.is_empty() && m.len() <= MAX_ARG_LEN)
            );
            assert!(mechanism.is_some() || initial.is_none());
        }
        Command::User(name) | Command::Apop { user: name, .. } => {
            assert!(line.len() <= MAX_LINE_LEN);
            assert!(!name.is_empty() && name.len() <= MAX_ARG_LEN);
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name:?}");
        }
        _ => assert!(line.len() <= MAX_LINE_LEN),
    }
});
