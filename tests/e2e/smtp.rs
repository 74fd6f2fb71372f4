//! SMTP end to end over loopback: relay decisions, AUTH and its TLS rule, STARTTLS, DATA
//! framing and abuse cases, each followed by a good session.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use common::client::Client;
use common::{Gateway, host};
use mailgate_testkit::sasl::plain_b64 as plain;
use mailgate_testkit::{self as common, sasl};

/// A complete good session: proves the server still serves after whatever came before.
async fn good_session(gw: &Gateway) {
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO good.example", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b"Subject: good\r\n\r\nfine\r\n.\r\n").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_local_delivery_and_unknown_user() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    let ehlo = c.cmd("EHLO client.example", 250).await;
    let text = ehlo.join("\n");
    for ext in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(text.contains(ext), "{ext} missing in {text}");
    }
    c.cmd("MAIL FROM:<someone@remote.example>", 250).await;
    let r = c.cmd("RCPT TO:<nobody@example.test>", 550).await;
    assert!(r[0].contains("5.1.1"), "{r:?}");
    c.cmd("RCPT TO:<Alice@Example.Test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b"Subject: hi\r\n\r\nhello\r\n..dot\r\n.\r\n")
        .await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("alice", 1).await;
    assert!(
        mail[0].starts_with("Return-Path: <someone@remote.example>\r\nReceived: from client.example ([127.0.0.1])\r\n"),
        "{}",
        mail[0]
    );
    assert!(
        mail[0].contains("\r\nSubject: hi\r\n\r\nhello\r\n.dot\r\n"),
        "{}",
        mail[0]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_relay_and_old_tricks_are_refused() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect_from(host(9), gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO spammer.example", 250).await;
    c.cmd("MAIL FROM:<a@remote.example>", 250).await;
    for rcpt in [
        "<victim@elsewhere.example>",
        "<\"victim@elsewhere.example\"@example.test>",
        "<victim%elsewhere.example@example.test>",
        "<elsewhere.example!victim@example.test>",
        "<@example.test:victim@elsewhere.example>",
        "<victim@[192.0.2.1]>",
    ] {
        c.send(&format!("RCPT TO:{rcpt}")).await;
        let (code, lines) = c.reply().await;
        assert!(
            code == 554 && lines[0].starts_with("554 5.7.1"),
            "{rcpt}: {lines:?}"
        );
    }
    // RFC 5321 §3.3: no valid recipients, so DATA is refused (554 or 503).
    c.send("DATA").await;
    assert!(c.reply().await.0 >= 500);
    c.cmd("QUIT", 221).await;
    good_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn submission_requires_auth_and_tls_for_plain() {
    let gw = Gateway::start("").await;
    // 127.0.0.9 is not in insecure_plaintext_networks (the test config has none).
    let mut c = Client::connect_from(host(9), gw.addr("submission")).await;
    c.expect(220).await;
    let ehlo = c.cmd("EHLO c", 250).await.join("\n");
    assert!(
        !ehlo.contains("PLAIN") && !ehlo.contains("LOGIN"),
        "plaintext offered: {ehlo}"
    );
    assert!(ehlo.contains("CRAM-MD5"), "{ehlo}");
    c.cmd("MAIL FROM:<alice@example.test>", 530).await;
    let r = c
        .cmd(
            &format!("AUTH PLAIN {}", plain("alice", common::PASSWORD)),
            530,
        )
        .await;
    assert!(r[0].contains("5.7.0"), "{r:?}");
    c.cmd("STARTTLS", 220).await;
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO c", 250).await.join("\n");
    assert!(ehlo.contains("AUTH PLAIN LOGIN CRAM-MD5"), "{ehlo}");
    assert!(ehlo.contains("AUTH=PLAIN LOGIN CRAM-MD5"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wrong")), 535)
        .await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", common::PASSWORD)),
        235,
    )
    .await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", common::PASSWORD)),
        503,
    )
    .await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b"Subject: sub\r\n\r\nx\r\n.\r\n").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(mail[0].contains("ESMTPSA"), "{}", mail[0]);
    assert!(
        mail[0].contains("authenticated as alice with PLAIN"),
        "{}",
        mail[0]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_reply_codes() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("AUTH NOSUCH", 504).await;
    c.cmd("AUTH PLAIN !!!notbase64", 501).await;
    c.cmd("AUTH PLAIN", 334).await;
    c.cmd("*", 501).await;
    // LOGIN with the exact prompts, and the user name given inline.
    let r = c.cmd("AUTH LOGIN", 334).await;
    assert_eq!(r[0], format!("334 {}", B64.encode("Username:")));
    let r = c.cmd(&B64.encode("alice"), 334).await;
    assert_eq!(r[0], format!("334 {}", B64.encode("Password:")));
    c.cmd(&B64.encode("bad"), 535).await;
    let r = c
        .cmd(&format!("AUTH LOGIN {}", B64.encode("alice")), 334)
        .await;
    assert_eq!(r[0], format!("334 {}", B64.encode("Password:")));
    c.cmd(&B64.encode(common::PASSWORD), 235).await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("AUTH LOGIN", 503).await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cram_md5_over_plaintext() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect_from(host(9), gw.addr("submission")).await;
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    let r = c.cmd("AUTH CRAM-MD5", 334).await;
    let challenge = B64.decode(r[0][4..].trim()).unwrap();
    assert!(challenge.starts_with(b"<") && challenge.ends_with(b"@mail.example.test>"));
    let response = sasl::cram_md5("alice", common::PASSWORD.as_bytes(), &challenge);
    c.cmd(&B64.encode(response), 235).await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@remote.example>", 250).await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_network_may_relay() {
    let gw = Gateway::start("").await;
    drop(gw);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), common::USERS).unwrap();
    let text = common::config_text("").replace(
        "local_domains = [\"example.test\"]",
        "local_domains = [\"example.test\"]\ntrusted_networks = [\"127.0.0.5/32\"]",
    );
    let gw = Gateway::start_in(dir, &text).await;
    let mut c = Client::connect_from(host(5), gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO printer", 250).await;
    c.cmd("MAIL FROM:<printer@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@remote.example>", 250).await;
    c.cmd("QUIT", 221).await;
    let mut c = Client::connect_from(host(6), gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO other", 250).await;
    c.cmd("MAIL FROM:<x@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@remote.example>", 554).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_attempts_never_split_a_message() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<alice@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    // Each of these would end DATA on a lenient server and start a second, forged message.
    c.send_raw(
        b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<forged@x>\r\nRCPT TO:<bob@example.test>\r\n\
          a\r.\rb\r\n\r\n.\nDATA\r\nmore\n.\r\nend\r\n.\r\n",
    )
    .await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("alice", 1).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].contains("MAIL FROM:<forged@x>") && mail[0].contains("end\r\n"),
        "{}",
        mail[0]
    );
    assert!(
        gw.mailbox("bob").is_empty(),
        "a smuggled message was delivered"
    );
    good_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_injection_is_discarded() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    // The injected commands arrive in the same packet as STARTTLS.
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<alice@example.test>\r\n")
        .await;
    c.expect(220).await;
    let mut c = c.starttls().await;
    // Had the injected MAIL been executed after TLS, this would be 503 (nested MAIL) or the
    // server would answer the injected commands first.
    c.cmd("NOOP", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 503).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("QUIT", 221).await;
    good_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_long_message_lines_are_folded_not_passed_on() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<alice@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    let long: String = (0..200_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    c.send_raw(format!("Subject: long\r\n\r\n{long}\r\nafter\r\n.\r\n").as_bytes())
        .await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("alice", 1).await;
    let lines: Vec<&str> = mail[0].split("\r\n").collect();
    assert!(
        lines.iter().all(|l| l.len() <= 998),
        "a delivered line is longer than 998 octets"
    );
    // Unfolding (drop each CRLF SP) gives the line back whole.
    let body = &mail[0][mail[0].find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.replace("\r\n ", ""), format!("{long}\r\nafter\r\n"));
    good_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_lines_idle_timeout_and_size() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    let long = format!("EHLO {}", "a".repeat(10_000));
    let r = c.cmd(&long, 500).await;
    assert!(r[0].contains("5.5.2"), "{r:?}");
    c.cmd("EHLO c", 250).await;
    let r = c
        .cmd("MAIL FROM:<x@remote.example> SIZE=999999999999", 552)
        .await;
    assert!(r[0].contains("5.3.4"), "{r:?}");
    c.cmd("NOOP", 250).await;
    // The idle timeout (3 s in tests) closes the connection with 421.
    let (code, _) = c.reply().await;
    assert_eq!(code, 421);
    assert!(c.closed().await);
    good_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_transaction() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO c", 250).await;
    c.send_raw(b"MAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n").await;
    for code in [250, 250, 250, 550, 354] {
        c.expect(code).await;
    }
    c.send_raw(b"Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n").await;
    c.expect(250).await;
    c.expect(221).await;
    gw.wait_for_mail("alice", 1).await;
    gw.wait_for_mail("bob", 1).await;
    gw.stop().await;
}
