//! SMTP command lines (`mailgate::smtp::command::parse`): never panics, every refusal answers
//! with a 5xx reply, and a parsed MAIL or RCPT path survives being written out and parsed again
//! (less any source route, which the written form leaves out).
//!
//! The first control byte's low bit picks raw bytes or keyword tokens for the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::smtp::address::Address;
use mailgate::smtp::command::{Command, parse, xtext_decode};
use mailgate_fuzz::{control, tokens};

const TOKENS: &[&[u8]] = &[
    b"MAIL FROM:",
    b"RCPT TO:",
    b"EHLO ",
    b"HELO ",
    b"AUTH ",
    b"DATA",
    b"RSET",
    b"VRFY ",
    b"STARTTLS",
    b"QUIT",
    b"NOOP",
    b"HELP",
    b"BDAT",
    b"<",
    b">",
    b"<>",
    b"@",
    b".",
    b" ",
    b"\t",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b"IPv6:",
    b"::1",
    b"192.0.2.1",
    b":",
    b",",
    b"@a,@b:",
    b"postmaster",
    b"user",
    b"example.org",
    b" SIZE=",
    b" BODY=",
    b"8BITMIME",
    b"7BIT",
    b" AUTH=",
    b"+2B",
    b"+",
    b"=",
    b"1000",
    b"99999999999999999999",
    b"%",
    b"!",
    b"\r",
    b"\n",
    b"\0",
    b"\x7f",
    b"\xc3\xa9",
    b"\xff",
    b"PLAIN",
    b"LOGIN",
    b"CRAM-MD5",
    b"x",
];

/// The mailbox of an address: what its Display form carries (a source route is left out).
fn mailbox(a: &Address) -> (&str, &str, bool, &str) {
    (&a.local, &a.local_unquoted, a.quoted, &a.domain)
}

fuzz_target!(|data: &[u8]| {
    let (ctl, payload) = control(data);
    let line = if ctl[0] & 1 == 1 {
        tokens(payload, TOKENS)
    } else {
        payload.to_vec()
    };
    match parse(&line) {
        Err(e) => {
            let reply = e.reply();
            assert!(
                (500..600).contains(&reply.code),
                "{e:?} answers {}",
                reply.code
            );
        }
        Ok(Command::Mail { from, params }) => {
            let again = parse(format!("MAIL FROM:{from}").as_bytes());
            match again {
                Ok(Command::Mail { from: f2, .. }) => {
                    assert_eq!(f2.address().map(mailbox), from.address().map(mailbox));
                }
                other => panic!("MAIL FROM:{from} reparsed as {other:?}"),
            }
            if let Some(auth) = params.auth {
                let _ = xtext_decode(&auth);
            }
        }
        Ok(Command::Rcpt { to }) => {
            let again = parse(format!("RCPT TO:{to}").as_bytes());
            match again {
                Ok(Command::Rcpt { to: t2 }) => {
                    assert_eq!(t2.address().map(mailbox), to.address().map(mailbox));
                    assert_eq!(t2.address().is_none(), to.address().is_none());
                }
                other => panic!("RCPT TO:{to} reparsed as {other:?}"),
            }
        }
        Ok(_) => {}
    }
});
