//! Tests of the upstream SMTP client: reply parsing at every read size, dot-stuffing, and
//! sessions against a scripted loopback server (AUTH PLAIN, LOGIN, XOAUTH2, OAUTHBEARER).

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::connect::{Bearer, Caps};
use super::transaction::unsendable;
use super::*;

/// A body for sessions that fail before DATA.
static EMPTY: std::sync::LazyLock<Body> = std::sync::LazyLock::new(|| Body::from_bytes(vec![]));

/// The reply a server sends as `code` and `lines`, parsed as the client parses it (an enhanced
/// status code at the start of the text is split off).
fn reply(code: u16, lines: &[&str]) -> Reply {
    let mut wire = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        wire.push_str(&format!("{code}{sep}{line}\r\n"));
    }
    if lines.is_empty() {
        wire.push_str(&format!("{code}\r\n"));
    }
    match ReplyParser::new().feed(wire.as_bytes()) {
        Ok(Parsed::Reply { reply, .. }) => reply,
        other => panic!("{wire:?}: {other:?}"),
    }
}

#[test]
fn ehlo_capabilities() {
    let r = reply(250, &["mx.example", "SIZE 1000", "AUTH PLAIN LOGIN"]);
    assert_eq!(
        Caps::parse(&r),
        Caps {
            size: true,
            starttls: false,
            pipelining: false,
            chunking: false,
            auth: vec!["PLAIN".into(), "LOGIN".into()]
        }
    );
    let r = reply(
        250,
        &["mx.example", "pipelining", "CHUNKING", "STARTTLS", "SIZE"],
    );
    let caps = Caps::parse(&r);
    assert!(caps.pipelining && caps.chunking && caps.starttls && caps.size);
}

#[test]
fn delivery_status_keeps_the_enhanced_code() {
    assert_eq!(
        reply(550, &["5.1.1 no such user"]).detail(),
        "5.1.1 no such user"
    );
    assert_eq!(reply(250, &["ok"]).detail(), "ok");
    assert_eq!(
        unsendable().detail(),
        "5.1.3 recipient address cannot be sent in SMTP"
    );
}

#[test]
fn dot_stuffing_at_every_chunk_size() {
    let cases: [(&[u8], &[u8]); 6] = [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"no newline", b"no newline\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b".a\r\nb.\r\n..c\r\n", b"..a\r\nb.\r\n...c\r\n.\r\n"),
        (b"x\r\n.\r\n.", b"x\r\n..\r\n..\r\n.\r\n"),
    ];
    for (input, want) in cases {
        for chunk in [1, 2, 4, 8, 16, 512] {
            let mut s = DotStuffer::default();
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                s.push(piece, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, want, "{:?} at {chunk}", String::from_utf8_lossy(input));
        }
    }
}

#[test]
fn permanence() {
    let rej = |stage, code| Error::Rejected {
        stage,
        reply: reply(code, &["x"]),
    };
    assert!(rej(Stage::Mail, 550).is_permanent());
    assert!(rej(Stage::Data, 554).is_permanent());
    assert!(!rej(Stage::Mail, 451).is_permanent());
    assert!(!rej(Stage::Auth, 535).is_permanent());
    assert!(!rej(Stage::Greeting, 554).is_permanent());
    assert!(!Error::Closed(Stage::Data).is_permanent());
    assert!(Error::InvalidAddress("a b".into()).is_permanent());
    assert!(reply(451, &[]).is_transient() && reply(550, &[]).is_permanent());
    assert!(is_sendable("") && is_sendable("a@b") && !is_sendable("a>\r\nRSET"));
}

/// A one-connection scripted server: sends the greeting, then answers each received line
/// with the next scripted reply, reading a whole DATA transfer as one entry after a 354.
/// Returns what it received.
async fn scripted(script: &[&str]) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let (addr, task) = scripted_sessions(&[script]).await;
    let task = tokio::spawn(async move { task.await.unwrap().concat() });
    (addr, task)
}

/// One scripted session per connection, in order; returns what each session received.
async fn scripted_sessions(scripts: &[&[&str]]) -> (SocketAddr, JoinHandle<Vec<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scripts: Vec<Vec<String>> = scripts
        .iter()
        .map(|s| s.iter().map(|l| l.to_string()).collect())
        .collect();
    let task = tokio::spawn(async move {
        let mut sessions = Vec::new();
        for script in scripts {
            let (sock, _) = listener.accept().await.unwrap();
            sessions.push(serve_script(sock, script).await);
        }
        sessions
    });
    (addr, task)
}

async fn serve_script(sock: tokio::net::TcpStream, script: Vec<String>) -> Vec<String> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let mut seen = Vec::new();
    let mut replies = script.into_iter();
    let Some(greeting) = replies.next() else {
        return seen;
    };
    w.write_all(greeting.as_bytes()).await.unwrap();
    let mut in_data = false;
    loop {
        let mut entry = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return seen;
            }
            entry.push_str(&line);
            if !in_data || line == ".\r\n" {
                break;
            }
        }
        seen.push(entry);
        let Some(next) = replies.next() else {
            return seen;
        };
        in_data = next.starts_with("354");
        w.write_all(next.as_bytes()).await.unwrap();
    }
}

const ONE_MESSAGE: [&str; 5] = [
    "250 ok\r\n",
    "250 ok\r\n",
    "354 go\r\n",
    "250 queued\r\n",
    "",
];

#[tokio::test]
async fn sessions_are_reused_for_the_next_message_and_closed_when_idle() {
    let first: Vec<&str> = ["220 mx\r\n", "250 mx\r\n"]
        .into_iter()
        .chain(ONE_MESSAGE[..4].iter().copied())
        .chain(ONE_MESSAGE[..4].iter().copied())
        .chain(["221 bye\r\n"])
        .collect();
    let (addr, server) = scripted_sessions(&[&first]).await;
    let mut up = upstream(addr);
    up.keep_idle = Duration::from_secs(30);
    let connector = Connector::new(up).unwrap();
    let rcpts = vec!["a@x".to_string()];
    let body = Body::from_bytes(b"hi\r\n".to_vec());
    let msg = message_with(&rcpts, &body);
    for _ in 0..2 {
        let got = connector.send("gw", &msg).await.unwrap();
        assert_eq!(got, vec![reply(250, &["queued"])]);
        assert_eq!(connector.idle_sessions(), 1);
    }
    connector.close_idle(true).await;
    assert_eq!(connector.idle_sessions(), 0);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 1, "one connection");
    let commands: Vec<&str> = seen[0].iter().map(|c| c.lines().next().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "EHLO gw",
            "MAIL FROM:<s@x>",
            "RCPT TO:<a@x>",
            "DATA",
            "hi",
            "MAIL FROM:<s@x>",
            "RCPT TO:<a@x>",
            "DATA",
            "hi",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn pipelining_sends_the_envelope_in_one_write() {
    let script = [
        "220 mx\r\n",
        "250-mx\r\n250 PIPELINING\r\n",
        "250 ok\r\n",
        "550 5.1.1 no such user\r\n",
        "250 ok\r\n",
        "354 go\r\n",
        "250 queued\r\n",
        // Second message: MAIL refused; the RCPT and DATA replies are 503s.
        "451 4.3.0 try later\r\n",
        "503 5.5.1 no MAIL\r\n",
        "503 5.5.1 no MAIL\r\n",
        "503 5.5.1 no MAIL\r\n",
        "221 bye\r\n",
    ];
    let (addr, server) = scripted(&script).await;
    let mut up = upstream(addr);
    up.keep_idle = Duration::from_secs(30);
    let connector = Connector::new(up).unwrap();
    let rcpts = vec!["a@x".to_string(), "b@x".into()];
    let body = Body::from_bytes(b"hi\r\n".to_vec());
    let msg = message_with(&rcpts, &body);
    let got = connector.send("gw", &msg).await.unwrap();
    assert_eq!(
        got,
        vec![reply(550, &["5.1.1 no such user"]), reply(250, &["queued"])]
    );
    let err = connector.send("gw", &msg).await.unwrap_err();
    assert!(matches!(&err, Error::Rejected { stage: Stage::Mail, reply } if reply.code == 451));
    assert!(
        !err.is_stale_session(),
        "a live session's refusal is the message's"
    );
    // The refused MAIL ended that session (QUIT).
    assert_eq!(connector.idle_sessions(), 0);
    let seen = server.await.unwrap();
    let commands: Vec<&str> = seen.iter().map(|c| c.lines().next().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "EHLO gw",
            "MAIL FROM:<s@x>",
            "RCPT TO:<a@x>",
            "RCPT TO:<b@x>",
            "DATA",
            "hi",
            "MAIL FROM:<s@x>",
            "RCPT TO:<a@x>",
            "RCPT TO:<b@x>",
            "DATA",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn pipelining_with_every_recipient_refused_but_354_sends_an_empty_message() {
    let script = [
        "220 mx\r\n",
        "250-mx\r\n250 PIPELINING\r\n",
        "250 ok\r\n",
        "550 no\r\n",
        "354 go\r\n",
        "554 no valid recipients\r\n",
        "221 bye\r\n",
    ];
    let (addr, server) = scripted(&script).await;
    let rcpts = vec!["a@x".to_string()];
    let body = Body::from_bytes(b"secret\r\n".to_vec());
    let msg = message_with(&rcpts, &body);
    let got = send_once(addr, &msg).await;
    assert_eq!(got, vec![reply(550, &["no"])]);
    let seen = server.await.unwrap();
    assert_eq!(seen[4], ".\r\n", "{seen:?}");
    assert!(!seen.concat().contains("secret"));
}

#[tokio::test]
async fn chunking_sends_the_whole_message_in_one_write_without_dot_stuffing() {
    // The scripted server answers per line: the BDAT line gets nothing, the chunk (one line
    // here) gets the BDAT reply.
    let script = [
        "220 mx\r\n",
        "250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n",
        "250 ok\r\n",
        "550 5.1.1 unknown\r\n",
        "250 ok\r\n",
        "",
        "250 2.0.0 queued\r\n",
        "221 bye\r\n",
    ];
    let (addr, server) = scripted(&script).await;
    let rcpts = vec!["a@x".to_string(), "b@x".into()];
    let body = Body::from_bytes(b".x\r\n".to_vec());
    let msg = message_with(&rcpts, &body);
    let got = send_once(addr, &msg).await;
    assert_eq!(
        got,
        vec![
            reply(550, &["5.1.1 unknown"]),
            reply(250, &["2.0.0 queued"])
        ]
    );
    let seen = server.await.unwrap();
    assert_eq!(
        seen,
        [
            "EHLO gw\r\n",
            "MAIL FROM:<s@x>\r\n",
            "RCPT TO:<a@x>\r\n",
            "RCPT TO:<b@x>\r\n",
            "BDAT 4 LAST\r\n",
            ".x\r\n",
            "QUIT\r\n"
        ]
    );
}

#[tokio::test]
async fn a_session_closed_while_idle_is_replaced_without_losing_the_message() {
    let once: Vec<&str> = ["220 mx\r\n", "250 mx\r\n"]
        .into_iter()
        .chain(ONE_MESSAGE[..4].iter().copied())
        .collect();
    // The first server session ends after one message (as if it timed us out); the second
    // carries the next message, and a 421 to MAIL on the third is treated the same way.
    let third: Vec<&str> = vec!["220 mx\r\n", "250 mx\r\n", "421 4.4.2 idle too long\r\n"];
    let (addr, server) = scripted_sessions(&[&once, &third, &once]).await;
    let mut up = upstream(addr);
    up.keep_idle = Duration::from_secs(30);
    let connector = Connector::new(up).unwrap();
    let rcpts = vec!["a@x".to_string()];
    let body = Body::from_bytes(b"hi\r\n".to_vec());
    let msg = message_with(&rcpts, &body);
    connector.send("gw", &msg).await.unwrap();
    // The idle session is dead: the message goes over a fresh one, whose MAIL gets 421:
    // that is a reply from a live session, so it is the message's (transient) failure.
    let err = connector.send("gw", &msg).await.unwrap_err();
    assert!(matches!(&err, Error::Rejected { stage: Stage::Mail, reply } if reply.code == 421));
    let got = connector.send("gw", &msg).await.unwrap();
    assert_eq!(got, vec![reply(250, &["queued"])]);
    connector.close_idle(true).await;
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 3);
    // The second MAIL reached the first session as it closed, unanswered.
    assert_eq!(seen[0].len(), 6, "{:?}", seen[0]);
    assert_eq!(seen[1].last().map(String::as_str), Some("QUIT\r\n"));
}

fn upstream(addr: SocketAddr) -> Upstream {
    Upstream {
        address: addr,
        server_name: "127.0.0.1".into(),
        tls: UpstreamTls::None,
        danger_accept_invalid_certs: false,
        username: None,
        password: None,
        retry: vec![],
        command_timeout: Duration::from_secs(5),
        keep_idle: Duration::ZERO,
        auth: crate::config::UpstreamAuth::Auto,
        oauth: None,
    }
}

#[tokio::test]
async fn helo_fallback_per_recipient_results_and_stuffing() {
    let (addr, server) = scripted(&[
        "220 mx ESMTP\r\n",
        "502 5.5.1 what\r\n",
        "250 mx\r\n",
        "250 ok\r\n",
        "250 ok\r\n",
        "550 5.1.1 unknown\r\n",
        "451 4.3.0 later\r\n",
        "354 go\r\n",
        "250-2.0.0 queued\r\n250 as 12\r\n",
        "221 bye\r\n",
    ])
    .await;
    // The body comes from a real spool slot, streamed from the file.
    let dir = tempfile::tempdir().unwrap();
    let spool = crate::spool::Spool::open(dir.path()).unwrap();
    let env = crate::spool::Envelope::new("s@x", vec![], 0, "test", None);
    let id = spool
        .enqueue_bytes(env, b"Subject: t\r\n\r\n.hidden\r\nend")
        .unwrap();
    let body = spool.body(&id).unwrap();
    assert!(body.in_memory().is_none());
    let rcpts = vec!["a@x".to_string(), "b@x".into(), "c@x".into()];
    let msg = message_with(&rcpts, &body);
    let got = Connector::new(upstream(addr))
        .unwrap()
        .send("gw.test", &msg)
        .await
        .unwrap();
    let queued = reply(250, &["2.0.0 queued", "as 12"]);
    assert_eq!(
        got,
        vec![
            queued,
            reply(550, &["5.1.1 unknown"]),
            reply(451, &["4.3.0 later"])
        ]
    );
    let seen = server.await.unwrap();
    assert_eq!(
        seen,
        vec![
            "EHLO gw.test\r\n",
            "HELO gw.test\r\n",
            "MAIL FROM:<s@x>\r\n",
            "RCPT TO:<a@x>\r\n",
            "RCPT TO:<b@x>\r\n",
            "RCPT TO:<c@x>\r\n",
            "DATA\r\n",
            "Subject: t\r\n\r\n..hidden\r\nend\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
}

#[tokio::test]
async fn auth_login_and_size() {
    let (addr, server) = scripted(&[
        "220 mx\r\n",
        "250-mx\r\n250-SIZE 100000\r\n250 AUTH LOGIN\r\n",
        "334 VXNlcm5hbWU6\r\n",
        "334 UGFzc3dvcmQ6\r\n",
        "235 2.7.0 ok\r\n",
        "250 ok\r\n",
        "550 no\r\n",
        "221 bye\r\n",
    ])
    .await;
    let mut up = upstream(addr);
    up.username = Some("gw".into());
    up.password = Some("s3cret".into());
    let rcpts = vec!["r@x".to_string()];
    let msg = Message {
        mail_from: "",
        recipients: &rcpts,
        body: &EMPTY,
        size: 5,
    };
    let got = Connector::new(up).unwrap().send("gw", &msg).await.unwrap();
    // No recipient accepted: no DATA, so the missing body file is never opened.
    assert_eq!(got, vec![reply(550, &["no"])]);
    let seen = server.await.unwrap();
    assert_eq!(
        seen[1..6],
        [
            "AUTH LOGIN\r\n",
            "Z3c=\r\n",
            "czNjcmV0\r\n",
            "MAIL FROM:<> SIZE=5\r\n",
            "RCPT TO:<r@x>\r\n"
        ]
    );
}

#[test]
fn bearer_initial_responses() {
    // RFC 7628 §4.1 and the XOAUTH2 example of Google's protocol description.
    let oauthbearer = Bearer {
        oauthbearer: true,
        user: "user@example.com",
        host: "server.example.com",
        port: 143,
    };
    let token = Secret::new("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==".into());
    assert_eq!(
        oauthbearer.initial_response(&token).as_str(),
        "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVh\
         cmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
    );
    let xoauth2 = Bearer {
        oauthbearer: false,
        user: "someuser@example.com",
        host: "",
        port: 0,
    };
    let token = Secret::new("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg".into());
    assert_eq!(
        xoauth2.initial_response(&token).as_str(),
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr\
         QmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    );
    // RFC 5801 saslname: "=" and "," are escaped in the authzid.
    let odd = Bearer {
        user: "a=b,c",
        ..oauthbearer
    };
    let raw = BASE64
        .decode(odd.initial_response(&Secret::new("t".into())).as_str())
        .unwrap();
    assert!(raw.starts_with(b"n,a=a=3Db=2Cc,\x01host="));
}

/// A message from `s@x` with `body`, its size the body's.
fn message_with<'a>(rcpts: &'a [String], body: &'a Body) -> Message<'a> {
    Message {
        mail_from: "s@x",
        recipients: rcpts,
        body,
        size: body.len(),
    }
}

/// Sends `msg` in a session of its own (no reuse) and expects a result.
async fn send_once(addr: SocketAddr, msg: &Message<'_>) -> Vec<Reply> {
    Connector::new(upstream(addr))
        .unwrap()
        .send("gw", msg)
        .await
        .unwrap()
}

fn message(rcpts: &[String]) -> Message<'_> {
    Message {
        mail_from: "s@x",
        recipients: rcpts,
        body: &EMPTY,
        size: 1,
    }
}

fn oauth_upstream(addr: SocketAddr, auth: UpstreamAuth) -> Upstream {
    let mut up = upstream(addr);
    up.auth = auth;
    up.username = Some("relay@example.com".into());
    up
}

#[tokio::test]
async fn xoauth2_with_initial_response() {
    let (addr, server) = scripted(&[
        "220 mx\r\n",
        "250-mx\r\n250 AUTH LOGIN PLAIN XOAUTH2\r\n",
        "235 2.7.0 ok\r\n",
        "250 ok\r\n",
        "550 no\r\n",
        "221 bye\r\n",
    ])
    .await;
    let rcpts = vec!["r@x".to_string()];
    let token = Secret::new("tok-1".into());
    let c = Connector::new(oauth_upstream(addr, UpstreamAuth::Xoauth2)).unwrap();
    let got = c.send_as("gw", &message(&rcpts), Some(&token)).await;
    assert_eq!(got.unwrap(), vec![reply(550, &["no"])]);
    let seen = server.await.unwrap();
    let want = BASE64.encode("user=relay@example.com\x01auth=Bearer tok-1\x01\x01");
    assert_eq!(seen[1], format!("AUTH XOAUTH2 {want}\r\n"));
    assert_eq!(seen[2], "MAIL FROM:<s@x>\r\n");
}

#[tokio::test]
async fn oauthbearer_error_challenge_then_535() {
    let (addr, server) = scripted(&[
        "220 mx\r\n",
        "250-mx\r\n250 AUTH OAUTHBEARER\r\n",
        "334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9\r\n",
        "535 5.7.8 token expired\r\n",
        "221 bye\r\n",
    ])
    .await;
    let rcpts = vec!["r@x".to_string()];
    let mut up = oauth_upstream(addr, UpstreamAuth::Oauthbearer);
    up.server_name = "smtp.example.com".into();
    let c = Connector::new(up).unwrap();
    let token = Secret::new("tok-1".into());
    let err = c
        .send_as("gw", &message(&rcpts), Some(&token))
        .await
        .unwrap_err();
    assert!(err.is_auth_rejected() && !err.is_permanent(), "{err}");
    let seen = server.await.unwrap();
    let port = addr.port();
    let want = BASE64.encode(format!(
        "n,a=relay@example.com,\x01host=smtp.example.com\x01port={port}\x01\
         auth=Bearer tok-1\x01\x01"
    ));
    assert_eq!(
        seen[1..],
        [format!("AUTH OAUTHBEARER {want}\r\n"), "AQ==\r\n".into()]
    );
}

#[tokio::test]
async fn long_token_waits_for_the_empty_challenge() {
    let (addr, server) = scripted(&[
        "220 mx\r\n",
        "250-mx\r\n250 AUTH XOAUTH2\r\n",
        "334 \r\n",
        "334 eyJzdGF0dXMiOiI0MDEifQ==\r\n",
        "535 5.7.3 Authentication unsuccessful\r\n",
        "221 bye\r\n",
    ])
    .await;
    let rcpts = vec!["r@x".to_string()];
    let token = Secret::new("x".repeat(600));
    let c = Connector::new(oauth_upstream(addr, UpstreamAuth::Xoauth2)).unwrap();
    let err = c
        .send_as("gw", &message(&rcpts), Some(&token))
        .await
        .unwrap_err();
    assert!(err.is_auth_rejected(), "{err}");
    let seen = server.await.unwrap();
    assert_eq!(seen[1], "AUTH XOAUTH2\r\n");
    let sent = BASE64.decode(seen[2].trim_end()).unwrap();
    assert!(sent.ends_with(format!("Bearer {}\x01\x01", token.expose()).as_bytes()));
    // XOAUTH2 answers the error challenge with an empty line.
    assert_eq!(seen[3], "\r\n");
}

#[tokio::test]
async fn mechanism_choice_follows_the_config() {
    let rcpts = vec!["r@x".to_string()];
    let msg = message(&rcpts);
    // (auth, EHLO reply, expected AUTH line or error)
    let cases: [(UpstreamAuth, &str, Result<&str, &str>); 6] = [
        (
            UpstreamAuth::Auto,
            "250 AUTH LOGIN PLAIN",
            Ok("AUTH PLAIN AHUAcA=="),
        ),
        (UpstreamAuth::Auto, "250 AUTH LOGIN", Ok("AUTH LOGIN")),
        (
            UpstreamAuth::Login,
            "250 AUTH PLAIN LOGIN",
            Ok("AUTH LOGIN"),
        ),
        (UpstreamAuth::Plain, "250 AUTH LOGIN", Err("AUTH PLAIN")),
        (
            UpstreamAuth::Xoauth2,
            "250 AUTH PLAIN OAUTHBEARER",
            Err("AUTH XOAUTH2"),
        ),
        (
            UpstreamAuth::Oauthbearer,
            "250 AUTH PLAIN",
            Err("AUTH OAUTHBEARER"),
        ),
    ];
    for (auth, ehlo, want) in cases {
        let ehlo = format!("250-mx\r\n{ehlo}\r\n");
        let (addr, server) = scripted(&["220 mx\r\n", &ehlo, "421 4.3.0 stop\r\n"]).await;
        let mut up = upstream(addr);
        up.auth = auth;
        up.username = Some("u".into());
        up.password = Some("p".into());
        let token = Secret::new("t".into());
        let result = Connector::new(up)
            .unwrap()
            .send_as("gw", &msg, Some(&token))
            .await;
        let seen = server.await.unwrap();
        match (result, want) {
            (Err(Error::AuthUnavailable { wanted }), Err(line)) => {
                assert_eq!(format!("AUTH {wanted}"), line);
            }
            (Err(Error::Rejected { stage, .. }), Ok(line)) => {
                assert_eq!(stage, Stage::Auth);
                assert_eq!(seen[1], format!("{line}\r\n"), "{auth:?}");
            }
            (got, want) => panic!("{auth:?}: got {got:?}, want {want:?}"),
        }
    }
    // An OAuth mechanism without a token does not even connect to AUTH.
    let (addr, _server) = scripted(&["220 mx\r\n", "250-mx\r\n250 AUTH XOAUTH2\r\n"]).await;
    let c = Connector::new(oauth_upstream(addr, UpstreamAuth::Xoauth2)).unwrap();
    let err = c.send("gw", &msg).await.unwrap_err();
    assert!(matches!(err, Error::NoToken("XOAUTH2")), "{err}");
}

/// Sends `msg` to a server answering with `script`; the error it must end in.
async fn failure(script: &[&str], msg: &Message<'_>) -> Error {
    let (addr, _server) = scripted(script).await;
    Connector::new(upstream(addr))
        .unwrap()
        .send("gw", msg)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn session_failures() {
    let rcpts = vec!["r@x".to_string()];
    let msg = Message {
        mail_from: "s@x",
        recipients: &rcpts,
        body: &EMPTY,
        size: 1,
    };

    let err = failure(&["220 mx\r\n", "250 mx\r\n", "552 5.3.4 too big\r\n"], &msg).await;
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.reply(), Some(&reply(552, &["5.3.4 too big"])));

    let err = failure(&["421 4.3.2 busy\r\n"], &msg).await;
    assert!(
        matches!(
            err,
            Error::Rejected {
                stage: Stage::Greeting,
                ..
            }
        ) && !err.is_permanent()
    );

    let (addr, _server) = scripted(&["220 mx\r\n", "250 mx\r\n"]).await;
    let mut up = upstream(addr);
    up.tls = UpstreamTls::Starttls;
    up.danger_accept_invalid_certs = true;
    let err = Connector::new(up)
        .unwrap()
        .send("gw", &msg)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StartTlsUnavailable), "{err}");

    let (addr, _server) = scripted(&["220 mx\r\n", "250 mx\r\n"]).await;
    let mut up = upstream(addr);
    up.username = Some("u".into());
    up.password = Some("p".into());
    let err = Connector::new(up)
        .unwrap()
        .send("gw", &msg)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthUnavailable { .. }), "{err}");

    // A reply that breaks RFC 5321 §4.2 (the code changes inside a multi-line reply): the
    // session ends, transiently.
    let err = failure(&["220 mx\r\n", "250-mx\r\n251 SIZE\r\n"], &msg).await;
    assert!(
        matches!(err, Error::BadReply(ReplyError::CodeMismatch { .. })) && !err.is_permanent(),
        "{err}"
    );

    // A server that accepts but never speaks: the greeting times out.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut up = upstream(silent.local_addr().unwrap());
    up.command_timeout = Duration::from_millis(100);
    let err = Connector::new(up)
        .unwrap()
        .send("gw", &msg)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                stage: Stage::Greeting,
                ..
            }
        ),
        "{err}"
    );

    let bad = Message {
        mail_from: "a b@x",
        ..msg.clone()
    };
    let err = Connector::new(upstream(addr))
        .unwrap()
        .send("gw", &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidAddress(_)) && err.is_permanent());
}
