//! The login dialogues with the old server (`mailgate::upstream::dialogue`: POP3, IMAP, SMTP,
//! with or without STARTTLS, with or without an authorization identity), fed the server's
//! lines: never panics; every command sent is one whole line (or an IMAP literal's data) that
//! ends in CRLF and holds no other CR or LF, so nothing the server says can make the gateway
//! send a second command of its own; and once a dialogue is done it sends nothing more.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailgate::auth::Secret;
use mailgate::config::{OldProtocol, OldServer, UpstreamTls};
use mailgate::upstream::{Login, Next, dialogue};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let protocol = match mode % 3 {
        0 => OldProtocol::Pop3,
        1 => OldProtocol::Imap,
        _ => OldProtocol::Smtp,
    };
    let server = OldServer {
        address: ([127, 0, 0, 1], 110).into(),
        server_name: "localhost".into(),
        protocol,
        tls: if mode & 4 != 0 {
            UpstreamTls::Starttls
        } else {
            UpstreamTls::None
        },
        ca_file: None,
        timeout: std::time::Duration::from_secs(10),
    };
    let login = Login {
        user: "alice".into(),
        password: Secret::new("pä\"ss \\word".as_bytes().to_vec()),
        authzid: (mode & 8 != 0).then(|| "bob".to_owned()),
    };
    let mut d = dialogue(&server, login, "gw.example");
    let mut done = false;
    for line in rest.split(|&b| b == b'\n').take(300) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut next = d.line(line);
        if let Next::StartTls = next {
            next = d.tls_started();
        }
        match next {
            Next::Send(bytes) => {
                assert!(!done, "a finished dialogue sent {bytes:?}");
                assert!(bytes.ends_with(b"\r\n"), "{bytes:?}");
                let body = &bytes[..bytes.len() - 2];
                assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{bytes:?}");
            }
            Next::Done(_) => done = true,
            Next::Read | Next::StartTls => {}
        }
    }
});
