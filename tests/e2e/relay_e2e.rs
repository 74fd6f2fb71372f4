//! Relaying end to end: mail submitted to the real gateway (SMTP AUTH on the submission ports,
//! or POP-before-SMTP on the smtp port) reaches a scripted smarthost on loopback with its
//! envelope, a Received header naming the authorization, and its dot lines intact; upstream
//! STARTTLS and AUTH; a 451 is retried and delivered; a 550 and an exhausted schedule bounce to
//! the sender's mailbox. Also the built binary, SIGKILLed in the middle of a stream of relayed
//! messages and started again: every message that got a 250 reaches the smarthost.

// End-to-end tests measure real elapsed time (lower bounds on delays, deadlines for
// background delivery); the clock rule is for the gateway, not for its observers.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::Client;
use common::{Gateway, PASSWORD, host};
use extra::{Binary, eventually, set_all};
use mailgate_testkit::sasl::plain_b64 as plain;
use mailgate_testkit::{self as common, extra, smarthost};
use smarthost::{Fault, Options, Smarthost, Stage};

const WAIT: Duration = Duration::from_secs(15);

/// Starts a gateway relaying to `upstream` (the smarthost) with a short retry schedule;
/// `upstream` adds or overrides `[delivery.upstream]` keys.
async fn start(smarthost: &Smarthost, upstream: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let address = format!("\"{}\"", smarthost.addr());
    let mut edits = vec![
        ("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#),
        ("delivery.upstream", "address", address.as_str()),
        ("delivery.upstream", "tls", r#""none""#),
        ("delivery.upstream", "retry", r#"["200ms", "200ms"]"#),
    ];
    edits.extend(upstream.iter().map(|(k, v)| ("delivery.upstream", *k, *v)));
    Gateway::start_in(dir, &set_all(&common::config_text(""), &edits)).await
}

/// A body with every dot case: a dot-stuffed line, a line that is only "." and one that is
/// "..", as sent on the wire (stuffed), and as the recipient must see it (unstuffed).
const WIRE_BODY: &str = "Subject: dots\r\n\r\n..leading dot\r\n..\r\n...\r\n.. \r\nlast\r\n.\r\n";
const SEEN_BODY: &str = "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\n. \r\nlast\r\n";

/// Sends one message on an open session (after EHLO and any AUTH).
async fn send_message(c: &mut Client, from: &str, rcpts: &[&str], wire_body: &str) {
    c.cmd(&format!("MAIL FROM:<{from}>"), 250).await;
    for rcpt in rcpts {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), 250).await;
    }
    c.cmd("DATA", 354).await;
    c.send_raw(wire_body.as_bytes()).await;
    c.expect(250).await;
}

/// Submits as alice over the implicit-TLS submission port with AUTH PLAIN.
async fn submit_as_alice(gw: &Gateway, rcpts: &[&str], wire_body: &str) {
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO laptop.example", 250).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 235)
        .await;
    send_message(&mut c, "alice@example.test", rcpts, wire_body).await;
    c.cmd("QUIT", 221).await;
}

/// Whether the gateway's spool holds no envelope.
fn spool_is_empty(gw: &Gateway) -> bool {
    mailgate::spool::inspect(&gw.state().join("spool")).is_ok_and(|q| q.is_empty())
}

async fn wait_spool_empty(gw: &Gateway) {
    eventually("the spool to empty", WAIT, || {
        let empty = spool_is_empty(gw);
        async move { empty }
    })
    .await;
}

/// Waits for the bounce in alice's mailbox; on timeout, names the mailboxes and dead letters
/// that exist instead.
async fn wait_for_bounce(gw: &Gateway) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(bounce) = gw.mailbox("alice").into_iter().next() {
            return bounce;
        }
        if std::time::Instant::now() >= deadline {
            let names = |dir: &str| -> Vec<String> {
                std::fs::read_dir(gw.state().join(dir))
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            panic!(
                "no bounce in alice's mailbox; maildirs: {:?}; dead letters: {:?}",
                names("maildir"),
                names("dead-letter")
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The message text as the smarthost received it.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn submission_and_pop_before_smtp_relay_with_dots_intact() {
    let smarthost = Smarthost::start(Options::default()).await;
    let gw = start(&smarthost, &[]).await;

    // SMTP AUTH on submissions, one remote and one local recipient.
    submit_as_alice(
        &gw,
        &["friend@remote.example", "bob@example.test"],
        WIRE_BODY,
    )
    .await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].mail_from, "alice@example.test");
    assert_eq!(got[0].rcpt_to, vec!["friend@remote.example"]);
    let msg = text(&got[0].data);
    assert!(
        msg.starts_with("Received: from laptop.example ([127.0.0.1])"),
        "{msg}"
    );
    assert!(msg.contains("(authenticated as alice with PLAIN)"), "{msg}");
    assert!(
        msg.ends_with(SEEN_BODY),
        "dot lines changed on the way:\n{msg}"
    );
    let local = gw.wait_for_mail("bob", 1).await;
    assert!(local[0].ends_with(SEEN_BODY), "{}", local[0]);

    // POP-before-SMTP from 127.0.0.7 on the smtp port.
    let mut pop = Client::connect_from(host(7), gw.addr("pop3")).await;
    pop.pop(true).await;
    pop.pop_cmd("USER alice", true).await;
    pop.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    pop.pop_cmd("QUIT", true).await;
    let mut c = Client::connect_from(host(7), gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO old-client.example", 250).await;
    send_message(
        &mut c,
        "alice@example.test",
        &["other@remote.example"],
        WIRE_BODY,
    )
    .await;
    c.cmd("QUIT", 221).await;
    let got = smarthost.wait_for(2, WAIT).await;
    assert_eq!(got[1].mail_from, "alice@example.test");
    assert_eq!(got[1].rcpt_to, vec!["other@remote.example"]);
    let msg = text(&got[1].data);
    assert!(
        msg.starts_with("Received: from old-client.example ([127.0.0.7])"),
        "{msg}"
    );
    assert!(msg.contains("(pop-before-smtp for alice)"), "{msg}");
    assert!(
        msg.ends_with(SEEN_BODY),
        "dot lines changed on the way:\n{msg}"
    );
    assert_eq!(got[1].auth_user, None);
    assert!(!got[1].tls);
    wait_spool_empty(&gw).await;
    assert_eq!(smarthost.messages().len(), 2, "delivered more than once");
    gw.stop().await;
}

/// Relays through an authenticating smarthost over STARTTLS (the client submitting over
/// STARTTLS too) and over implicit TLS (the client on the submissions port).
#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_modes_and_auth() {
    for implicit in [false, true] {
        let smarthost = Smarthost::start(Options {
            auth: Some(("gw-user".into(), "upstream-secret".into())),
            starttls: !implicit,
            implicit_tls: implicit,
            faults: vec![],
        })
        .await;
        let mode = if implicit {
            r#""tls""#
        } else {
            r#""starttls""#
        };
        let gw = start(
            &smarthost,
            &[
                ("tls", mode),
                ("danger_accept_invalid_certs", "true"),
                ("username", r#""gw-user""#),
                ("password", r#""upstream-secret""#),
            ],
        )
        .await;
        let mut c = if implicit {
            let mut c = Client::connect_tls(gw.addr("submissions")).await;
            c.expect(220).await;
            c
        } else {
            let mut c = Client::connect_from(host(9), gw.addr("submission")).await;
            c.expect(220).await;
            c.cmd("EHLO laptop.example", 250).await;
            c.cmd("STARTTLS", 220).await;
            c.starttls().await
        };
        c.cmd("EHLO laptop.example", 250).await;
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 235)
            .await;
        send_message(
            &mut c,
            "alice@example.test",
            &["friend@remote.example"],
            WIRE_BODY,
        )
        .await;
        c.cmd("QUIT", 221).await;

        let got = smarthost.wait_for(1, WAIT).await;
        assert_eq!(got[0].auth_user.as_deref(), Some("gw-user"));
        assert!(got[0].tls, "relayed without TLS (implicit: {implicit})");
        assert_eq!(got[0].rcpt_to, vec!["friend@remote.example"]);
        let msg = text(&got[0].data);
        assert!(msg.contains("ESMTPSA"), "{msg}");
        assert!(msg.ends_with(SEEN_BODY), "{msg}");
        wait_spool_empty(&gw).await;
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_451_at_rcpt_is_retried_and_delivered() {
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::first(Stage::Rcpt, 451, 1)],
        ..Options::default()
    })
    .await;
    let gw = start(&smarthost, &[]).await;
    submit_as_alice(&gw, &["friend@remote.example"], WIRE_BODY).await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["friend@remote.example"]);
    assert!(text(&got[0].data).ends_with(SEEN_BODY));
    assert!(smarthost.sessions() >= 2, "delivered without a retry");
    wait_spool_empty(&gw).await;
    assert!(
        gw.mailbox("alice").is_empty(),
        "a bounce for a delivered message"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_550_bounces_to_the_senders_mailbox() {
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Rcpt, 550).for_rcpt("nobody@remote.example")],
        ..Options::default()
    })
    .await;
    let gw = start(&smarthost, &[]).await;
    submit_as_alice(
        &gw,
        &["nobody@remote.example", "friend@remote.example"],
        WIRE_BODY,
    )
    .await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["friend@remote.example"]);
    let bounce = wait_for_bounce(&gw).await;
    assert!(bounce.starts_with("Return-Path: <>\r\n"), "{bounce}");
    assert!(
        bounce.contains("Final-Recipient: rfc822; nobody@remote.example"),
        "{bounce}"
    );
    assert!(bounce.contains("550"), "{bounce}");
    assert!(bounce.contains("Subject: dots"), "{bounce}");
    assert!(!bounce.contains("friend@remote.example"), "{bounce}");
    wait_spool_empty(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_451_past_the_last_retry_bounces() {
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Rcpt, 451)],
        ..Options::default()
    })
    .await;
    let gw = start(&smarthost, &[]).await;
    submit_as_alice(&gw, &["friend@remote.example"], WIRE_BODY).await;
    let bounce = wait_for_bounce(&gw).await;
    assert!(bounce.starts_with("Return-Path: <>\r\n"), "{bounce}");
    assert!(
        bounce.contains("Final-Recipient: rfc822; friend@remote.example"),
        "{bounce}"
    );
    assert!(bounce.contains("451"), "{bounce}");
    // The first attempt and one per retry.
    assert_eq!(smarthost.sessions(), 3);
    assert!(smarthost.messages().is_empty());
    wait_spool_empty(&gw).await;
    gw.stop().await;
}

/// The built binary's config: the smtp listener on `smtp`, 127.0.0.1 trusted to relay, and
/// the smarthost as upstream.
fn binary_config(dir: &std::path::Path, smtp: u16, upstream: SocketAddr) -> std::path::PathBuf {
    std::fs::write(dir.join("users"), common::USERS).expect("users file");
    let text = format!(
        r#"hostname = "mail.example.test"
state_dir = "state"
[listeners]
smtp = ["127.0.0.1:{smtp}"]
[auth]
users_file = "users"
[relay]
local_domains = ["example.test"]
trusted_networks = ["127.0.0.1/32"]
[delivery.upstream]
address = "{upstream}"
tls = "none"
retry = ["200ms", "500ms", "1s"]
"#
    );
    let path = dir.join("mailgate.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

/// Relays messages numbered from 0 until the connection fails, recording each that got 250;
/// returns why it stopped.
async fn stream_messages(addr: SocketAddr, accepted: Arc<Mutex<Vec<usize>>>) -> String {
    for n in 0.. {
        let tcp = match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return format!("message {n}: connect: {e}"),
            Err(_) => return format!("message {n}: connect timed out"),
        };
        let mut c = Client::over(Box::new(tcp));
        let greeting = c.reply_opt().await;
        if greeting != Some(220) {
            return format!("message {n}: greeting {greeting:?}");
        }
        for line in [
            "EHLO loader",
            "MAIL FROM:<load@example.test>",
            &format!("RCPT TO:<r{n}@remote.example>"),
        ] {
            c.send(line).await;
            let reply = c.reply_opt().await;
            if reply != Some(250) {
                return format!("message {n}: {line}: {reply:?}");
            }
        }
        c.send("DATA").await;
        let reply = c.reply_opt().await;
        if reply != Some(354) {
            return format!("message {n}: DATA: {reply:?}");
        }
        let body = format!(
            "Subject: msg-{n}\r\nX-Seq: {n}\r\n\r\n{}\r\n.\r\n",
            "x".repeat(2000)
        );
        if let Err(e) = c.try_send_raw(body.as_bytes()).await {
            return format!("message {n}: sending the body: {e}");
        }
        let reply = c.reply_opt().await;
        if reply != Some(250) {
            return format!("message {n}: end of data: {reply:?}");
        }
        accepted.lock().expect("lock").push(n);
        c.send("QUIT").await;
    }
    unreachable!("the stream only ends when the gateway goes away")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_no_relayed_message() {
    let smarthost = Smarthost::start(Options::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = extra::free_port();
    let config = binary_config(dir.path(), port, smarthost.addr());
    let addr = extra::local(port);
    let mut gw = Binary::start(crate::MAILGATE, &config);
    extra::wait_listening(addr).await;

    let accepted = Arc::new(Mutex::new(Vec::new()));
    let stream = tokio::spawn(stream_messages(addr, accepted.clone()));
    // Kill once a few messages are in, while the stream keeps going.
    let deadline = std::time::Instant::now() + WAIT;
    while accepted.lock().expect("lock").len() < 8 {
        if stream.is_finished() || std::time::Instant::now() >= deadline {
            gw.kill();
            let why = stream.await.unwrap_or_default();
            panic!(
                "stream stopped before the kill: {why}; log:\n{}",
                gw.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.kill();
    tokio::time::timeout(WAIT, stream)
        .await
        .expect("the stream ends when the gateway dies")
        .expect("stream task");
    let accepted = accepted.lock().expect("lock").clone();

    let gw = Binary::start(crate::MAILGATE, &config);
    extra::wait_listening(addr).await;
    let mut missing = accepted.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() && std::time::Instant::now() < deadline {
        let got = smarthost.messages();
        missing.retain(|n| {
            !got.iter()
                .any(|m| text(&m.data).contains(&format!("\r\nX-Seq: {n}\r\n")))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = gw.log_text();
    drop(gw);
    assert!(
        missing.is_empty(),
        "accepted but never relayed after SIGKILL: {missing:?} of {}; log:\n{log}",
        accepted.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mailgate_queue_lists_a_deferred_message_while_the_gateway_runs() {
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Rcpt, 451)],
        ..Options::default()
    })
    .await;
    let gw = start(&smarthost, &[("retry", r#"["1h"]"#)]).await;
    submit_as_alice(
        &gw,
        &["friend@remote.example", "bob@example.test"],
        WIRE_BODY,
    )
    .await;
    // Bob's copy is delivered; the remote recipient is deferred for an hour.
    eventually("a deferred attempt", WAIT, || {
        let q = mailgate::spool::inspect(&gw.state().join("spool")).unwrap_or_default();
        async move { q.first().is_some_and(|e| e.attempts == 1) }
    })
    .await;
    let config = gw
        .state()
        .parent()
        .expect("gateway folder")
        .join("mailgate.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["queue", "--config"])
        .arg(&config)
        .output()
        .expect("run mailgate queue");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from alice@example.test"), "{text}");
    assert!(text.contains("attempts 1"), "{text}");
    assert!(text.contains("friend@remote.example: pending"), "{text}");
    assert!(
        text.contains("bob@example.test (local): delivered"),
        "{text}"
    );
    assert!(text.contains("1 message(s) in"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["queue", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("run mailgate queue --json");
    let line = String::from_utf8_lossy(&out.stdout);
    let env = mailgate::spool::Envelope::parse(line.trim().as_bytes()).expect("one envelope");
    assert_eq!(env.mail_from, "alice@example.test");
    assert_eq!(env.recipients.len(), 2);
    gw.stop().await;
}

/// `mailgate queue flush|hold|release|delete` act on the running gateway: a message the
/// smarthost keeps deferring is tried again at once on `flush`, left alone while held, and
/// gone after `delete`; the listing shows the recipient's last error; each action is audited.
#[tokio::test(flavor = "multi_thread")]
async fn queue_actions_flush_hold_release_and_delete_a_deferred_message() {
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Rcpt, 451)],
        ..Options::default()
    })
    .await;
    let gw = start(&smarthost, &[("retry", r#"["1h", "1h", "1h", "1h"]"#)]).await;
    submit_as_alice(&gw, &["friend@remote.example"], WIRE_BODY).await;
    let attempts = |gw: &Gateway| {
        let q = mailgate::spool::inspect(&gw.state().join("spool")).unwrap_or_default();
        q.first().map(|e| (e.id.clone(), e.attempts, e.held))
    };
    let wait_attempts = |n: u32| {
        let gw = &gw;
        async move {
            eventually("the next attempt", WAIT, || {
                let now = attempts(gw);
                async move { now.is_some_and(|(_, a, _)| a == n) }
            })
            .await;
        }
    };
    wait_attempts(1).await;
    let (id, _, _) = attempts(&gw).expect("queued");

    // The command finds the running gateway by the control address in the config.
    let control = gw.control.expect("control listener");
    let dir = gw.state().parent().expect("gateway folder").to_path_buf();
    let config = dir.join("cli.toml");
    let text = std::fs::read_to_string(dir.join("mailgate.toml")).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "control = \"127.0.0.1:0\"",
            &format!("control = \"{control}\""),
        ),
    )
    .expect("cli config");
    let queue = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run mailgate queue");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let (ok, listing) = queue(&[]);
    assert!(ok, "{listing}");
    assert!(
        listing.contains("friend@remote.example: pending; last error: 451"),
        "{listing}"
    );

    // Flush: tried again now, not in an hour.
    let (ok, said) = queue(&["flush", &id]);
    assert!(ok && said.contains("due now"), "{said}");
    wait_attempts(2).await;
    let (ok, said) = queue(&["flush"]);
    assert!(ok && said.contains("1 message(s) due now"), "{said}");
    wait_attempts(3).await;

    // Hold: listed as held, not tried even when flushed, until released.
    let (ok, said) = queue(&["hold", &id]);
    assert!(ok && said.contains("held"), "{said}");
    assert_eq!(attempts(&gw).map(|(_, _, held)| held), Some(true));
    let (ok, listing) = queue(&[]);
    assert!(ok && listing.contains("HELD"), "{listing}");
    let (ok, said) = queue(&["flush", &id]);
    assert!(!ok && said.contains("is held"), "{said}");
    let (ok, said) = queue(&["flush"]);
    assert!(ok && said.contains("0 message(s) due now"), "{said}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        attempts(&gw).map(|(_, a, _)| a),
        Some(3),
        "a held message waits"
    );
    let (ok, said) = queue(&["release", &id]);
    assert!(ok && said.contains("released"), "{said}");
    wait_attempts(4).await;

    // Delete: gone, neither delivered nor bounced; a second delete says so.
    let (ok, said) = queue(&["delete", &id]);
    assert!(ok && said.contains("deleted"), "{said}");
    assert!(spool_is_empty(&gw));
    let (ok, said) = queue(&["delete", &id]);
    assert!(!ok && said.contains("no message"), "{said}");
    let audit_log = gw.state().join("audit.log");
    let _dir = gw.stop().await;
    let audit = std::fs::read_to_string(audit_log).unwrap_or_default();
    for done in ["flushed", "held", "released", "deleted"] {
        assert!(
            audit.lines().any(|l| l.contains("\"kind\":\"queue\"")
                && l.contains(&format!("\"reason\":\"{done}\""))),
            "no queue event {done}: {audit}"
        );
    }
}
