//! DIGEST-MD5 (RFC 2831) against the real gateway: the kit's line client on SMTP and POP3
//! (right and wrong passwords, a stored `{DIGEST-MD5}` form, a response replayed into another
//! exchange, a foreign digest-uri, a security layer asked for), GNU SASL's `gsasl` on SMTP
//! (it speaks no POP3) and swaks (through Authen::SASL).
//!
//! The client tests skip with a notice when their client is missing, unless
//! `MAILGATE_REQUIRE_CLIENTS=1` (CI), which turns the skip into a failure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use common::client::Client;
use common::{Gateway, PASSWORD, USERS, config_text, have};
use mailgate_testkit as common;
use mailgate_testkit::sasl;

const HOST: &str = "mail.example.test";
const CAROL_PASSWORD: &str = "carol's pw";

/// A gateway offering PLAIN and DIGEST-MD5; alice is `{PLAIN}`, carol `{ARGON2ID}` plus
/// `{DIGEST-MD5}` for the default realm (the host name).
async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("users");
    std::fs::write(&users, USERS).expect("users file");
    let mechanisms = vec!["DIGEST-MD5".to_owned()];
    let forms =
        mailgate::auth::stored_forms("carol", CAROL_PASSWORD.as_bytes(), &mechanisms, Some(HOST));
    assert!(forms.iter().any(|f| f.starts_with("{DIGEST-MD5}")));
    mailgate::auth::set_user(&users, "carol", &forms).expect("set carol");
    let text = config_text("").replace(
        "[auth]\n",
        "[auth]\nmechanisms = [\"PLAIN\", \"DIGEST-MD5\"]\n",
    );
    Gateway::start_in(dir, &text).await
}

/// An SMTP client past EHLO, on the submission port without TLS.
async fn smtp(gw: &Gateway) -> Client {
    let mut c = Client::connect(gw.addr("submission")).await;
    c.expect(220).await;
    let ehlo = c.cmd("EHLO client.example", 250).await;
    assert!(
        ehlo.iter()
            .any(|l| l.contains("AUTH") && l.contains("DIGEST-MD5")),
        "{ehlo:?}"
    );
    c
}

/// Starts `AUTH DIGEST-MD5` and returns the decoded challenge.
async fn smtp_challenge(c: &mut Client) -> Vec<u8> {
    let r = c.cmd("AUTH DIGEST-MD5", 334).await;
    B64.decode(r[0][4..].trim()).expect("challenge is base64")
}

/// Sends a digest-response; returns the reply code and lines.
async fn smtp_send(c: &mut Client, response: &str) -> (u16, Vec<String>) {
    c.send(&B64.encode(response)).await;
    c.reply().await
}

fn respond(user: &str, password: &str, challenge: &[u8], uri: &str) -> String {
    sasl::digest_md5(user, password, challenge, uri, "cn0nce", None).expect("challenge")
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_line_client_logins_refusals_and_a_replay() {
    let gw = gateway().await;
    let uri = format!("smtp/{HOST}");
    let mut captured = String::new();
    for (user, password) in [("alice", PASSWORD), ("carol", CAROL_PASSWORD)] {
        let mut c = smtp(&gw).await;
        let challenge = smtp_challenge(&mut c).await;
        let text = String::from_utf8_lossy(&challenge).into_owned();
        assert!(
            text.starts_with(&format!("realm=\"{HOST}\",nonce=\""))
                && text.contains("qop=\"auth\""),
            "{text}"
        );
        let response = respond(user, password, &challenge, &uri);
        let (code, lines) = smtp_send(&mut c, &response).await;
        assert_eq!(code, 334, "{user}: {lines:?}");
        let rspauth = B64.decode(lines[0][4..].trim()).expect("base64");
        assert!(rspauth.starts_with(b"rspauth="), "{rspauth:?}");
        c.send("").await;
        c.expect(235).await;
        c.cmd("QUIT", 221).await;
        if user == "alice" {
            captured = response;
        }
    }
    // The same response in another exchange: that exchange's nonce differs.
    let mut c = smtp(&gw).await;
    smtp_challenge(&mut c).await;
    let (code, lines) = smtp_send(&mut c, &captured).await;
    assert_eq!(code, 535, "replayed response: {lines:?}");
    // Wrong password, a digest-uri naming another host, a security layer asked for.
    type Make<'a> = &'a dyn Fn(&[u8]) -> String;
    let cases: [(&str, Make); 3] = [
        ("wrong password", &|ch| respond("alice", "nope", ch, &uri)),
        ("foreign digest-uri", &|ch| {
            respond("alice", PASSWORD, ch, "smtp/evil.example")
        }),
        ("auth-int", &|ch| {
            respond("alice", PASSWORD, ch, &uri).replace("qop=auth", "qop=auth-int")
        }),
    ];
    c.cmd("QUIT", 221).await;
    // One connection each: a session ends after a few failures.
    for (what, make) in cases {
        let mut c = smtp(&gw).await;
        let challenge = smtp_challenge(&mut c).await;
        let (code, lines) = smtp_send(&mut c, &make(&challenge)).await;
        assert_eq!(code, 535, "{what}: {lines:?}");
        c.cmd("QUIT", 221).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_line_client() {
    let gw = gateway().await;
    let uri = format!("pop/{HOST}");
    let attempt = |user: &'static str, password: &'static str, uri: String| {
        let addr = gw.addr("pop3");
        async move {
            let mut c = Client::connect(addr).await;
            assert!(c.line().await.expect("greeting").starts_with("+OK"));
            c.send("AUTH DIGEST-MD5").await;
            let line = c.line().await.expect("challenge");
            let challenge = B64
                .decode(line.trim_start_matches('+').trim())
                .expect("challenge is base64");
            c.send(&B64.encode(respond(user, password, &challenge, &uri)))
                .await;
            let line = c.line().await.expect("reply");
            if !line.starts_with("+ ") {
                return line;
            }
            let rspauth = B64.decode(line[2..].trim()).expect("base64");
            assert!(rspauth.starts_with(b"rspauth="), "{rspauth:?}");
            c.send("").await;
            c.line().await.expect("final reply")
        }
    };
    let ok = attempt("alice", PASSWORD, uri.clone()).await;
    assert!(ok.starts_with("+OK"), "{ok}");
    let ok = attempt("carol", CAROL_PASSWORD, uri.clone()).await;
    assert!(ok.starts_with("+OK"), "{ok}");
    let wrong = attempt("alice", "nope", uri).await;
    assert!(wrong.starts_with("-ERR [AUTH]"), "{wrong}");
    // A response made for SMTP does not log in to POP3.
    let smtp_uri = attempt("alice", PASSWORD, format!("smtp/{HOST}")).await;
    assert!(smtp_uri.starts_with("-ERR [AUTH]"), "{smtp_uri}");
    gw.stop().await;
}

/// gsasl in SMTP mode, bounded by `timeout`; returns whether it succeeded and its output.
async fn gsasl(port: u16, user: &str, password: &str) -> (bool, String) {
    let args: Vec<String> = [
        "20",
        "gsasl",
        "--smtp",
        "--no-starttls",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--mechanism",
        "DIGEST-MD5",
        "--authentication-id",
        user,
        "--password",
        password,
        "--hostname",
        HOST,
        "--realm",
        HOST,
        "--quality-of-protection=qop-auth",
        "--verbose",
    ]
    .map(String::from)
    .to_vec();
    mailgate_testkit::run_text("timeout", args, Some(String::new())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn gsasl_smtp() {
    if !have("gsasl") {
        return;
    }
    let gw = gateway().await;
    let port = gw.addr("submission").port();
    for (user, password) in [("alice", PASSWORD), ("carol", CAROL_PASSWORD)] {
        let (ok, text) = gsasl(port, user, password).await;
        assert!(ok && text.contains("235"), "gsasl {user}:\n{text}");
    }
    let (ok, text) = gsasl(port, "alice", "nope").await;
    assert!(!ok && text.contains("535"), "gsasl wrong password:\n{text}");
    gw.stop().await;
}

async fn swaks(port: u16, password: &str) -> (bool, String) {
    let args: Vec<String> = [
        "20",
        "swaks",
        "--server",
        &format!("127.0.0.1:{port}"),
        "--auth",
        "DIGEST-MD5",
        "--auth-user",
        "alice",
        "--auth-password",
        password,
        "--auth-extra",
        &format!("dmd5-host={HOST},realm={HOST}"),
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--header",
        "Subject: via swaks DIGEST-MD5",
    ]
    .map(String::from)
    .to_vec();
    mailgate_testkit::run_text("timeout", args, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_smtp() {
    if !have("swaks") {
        return;
    }
    let gw = gateway().await;
    let port = gw.addr("submission").port();
    let (ok, text) = swaks(port, PASSWORD).await;
    assert!(ok && text.contains("235 2.7.0"), "swaks:\n{text}");
    let (ok, text) = swaks(port, "nope").await;
    assert!(
        !ok && text.contains("535 5.7.8"),
        "swaks wrong password:\n{text}"
    );
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(mail.iter().any(|m| m.contains("via swaks DIGEST-MD5")));
    gw.stop().await;
}
