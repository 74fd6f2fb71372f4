//! POP3 end to end over loopback: login methods and their TLS rule, retrieval, deletion only
//! in the UPDATE state, stable UIDL, exclusive maildrop access, and POP-before-SMTP.

use std::sync::Arc;
use std::time::Duration;

use common::client::Client;
use common::{Gateway, PASSWORD, host};
use mailgate::clock::{Clock, ManualClock, SystemClock};
use mailgate_testkit::{self as common, sasl};

/// Delivers a message to `user` over SMTP.
async fn deliver(gw: &Gateway, user: &str, subject: &str) {
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO sender", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{user}@example.test>"), 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(format!("Subject: {subject}\r\n\r\nline one\r\n..leading dot\r\n.\r\n").as_bytes())
        .await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
}

/// Logs in over POP3S as `user`.
async fn login_tls(gw: &Gateway, user: &str) -> Client {
    let mut c = Client::connect_tls(gw.addr("pop3s")).await;
    c.pop(true).await;
    c.pop_cmd(&format!("USER {user}"), true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_and_delete_only_on_quit() {
    let gw = Gateway::start("").await;
    deliver(&gw, "alice", "first").await;
    deliver(&gw, "alice", "second").await;
    gw.wait_for_mail("alice", 2).await;

    let mut c = login_tls(&gw, "alice").await;
    let stat = c.pop_cmd("STAT", true).await;
    assert!(stat.starts_with("+OK 2 "), "{stat}");
    c.pop_cmd("LIST", true).await;
    assert_eq!(c.multiline().await.len(), 2);
    c.pop_cmd("UIDL", true).await;
    let uidl = c.multiline().await;
    // The two messages were delivered concurrently: either may be number 1.
    c.pop_cmd("RETR 1", true).await;
    let body = c.multiline().await.join("\n");
    assert!(body.contains("\n.leading dot"), "{body}");
    let (one, two) = if body.contains("Subject: first") {
        ("first", "second")
    } else {
        ("second", "first")
    };
    assert!(body.contains(&format!("Subject: {one}")), "{body}");
    c.pop_cmd("TOP 2 0", true).await;
    let top = c.multiline().await.join("\n");
    assert!(
        top.contains(&format!("Subject: {two}")) && !top.contains("line one"),
        "{top}"
    );
    c.pop_cmd("DELE 1", true).await;
    c.pop_cmd("DELE 1", false).await;
    c.pop_cmd("RETR 1", false).await;
    c.pop_cmd("RSET", true).await;
    c.pop_cmd("DELE 1", true).await;
    // Dropping the connection without QUIT must not delete anything.
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gw.mailbox("alice").len(), 2);

    let mut c = login_tls(&gw, "alice").await;
    c.pop_cmd("UIDL", true).await;
    assert_eq!(c.multiline().await, uidl, "UIDL changed across sessions");
    c.pop_cmd("DELE 1", true).await;
    c.pop_cmd("QUIT", true).await;
    assert_eq!(gw.mailbox("alice").len(), 1);

    let mut c = login_tls(&gw, "alice").await;
    c.pop_cmd("UIDL", true).await;
    let rest = c.multiline().await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].split(' ').nth(1), uidl[1].split(' ').nth(1));
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_login_needs_tls_and_mailbox_is_exclusive() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("pop3")).await;
    let greeting = c.pop(true).await;
    assert!(
        greeting.contains('<') && greeting.contains("@mail.example.test>"),
        "{greeting}"
    );
    c.pop_cmd("CAPA", true).await;
    let capa = c.multiline().await;
    assert!(capa.contains(&"STLS".to_string()), "{capa:?}");
    assert!(!capa.contains(&"USER".to_string()), "{capa:?}");
    let r = c.pop_cmd("USER alice", false).await;
    assert!(r.contains("[AUTH]"), "{r}");
    c.pop_cmd("STLS", true).await;
    let mut c = c.starttls().await;
    c.pop_cmd("CAPA", true).await;
    let capa = c.multiline().await;
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;

    let mut other = Client::connect_tls(gw.addr("pop3s")).await;
    other.pop(true).await;
    other
        .pop_cmd(
            &format!("AUTH PLAIN {}", sasl::plain_b64("alice", PASSWORD)),
            false,
        )
        .await
        .contains("[IN-USE]")
        .then_some(())
        .expect("second session must get [IN-USE]");
    c.pop_cmd("QUIT", true).await;
    let mut third = Client::connect_tls(gw.addr("pop3s")).await;
    third.pop(true).await;
    third
        .pop_cmd(
            &format!("AUTH PLAIN {}", sasl::plain_b64("alice", PASSWORD)),
            true,
        )
        .await;
    third.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stls_injection_is_discarded() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("pop3")).await;
    c.pop(true).await;
    // USER arrives in the same packet as STLS, in plaintext.
    c.send_raw(b"STLS\r\nUSER alice\r\n").await;
    c.pop(true).await;
    let mut c = c.starttls().await;
    // Had the injected USER been executed after the handshake, its +OK would come first and
    // this PASS would log in.
    let r = c.pop_cmd(&format!("PASS {PASSWORD}"), false).await;
    assert!(r.starts_with("-ERR"), "{r}");
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apop_and_wrong_password() {
    let gw = Gateway::start("").await;
    let mut c = Client::connect(gw.addr("pop3")).await;
    let greeting = c.pop(true).await;
    let ts = &greeting[greeting.find('<').unwrap()..=greeting.rfind('>').unwrap()];
    let digest = sasl::apop(ts, PASSWORD);
    c.pop_cmd("APOP alice 0123456789abcdef0123456789abcdef", false)
        .await;
    c.pop_cmd(&format!("APOP alice {digest}"), true).await;
    c.pop_cmd("STAT", true).await;
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop_before_smtp_allows_same_address_until_ttl() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), common::USERS).unwrap();
    let gw = Gateway::start_with_clock(dir, &common::config_text(""), clock.clone()).await;

    // Before any login, 127.0.0.7 may not relay.
    let relay = |source| {
        let addr = gw.addr("smtp");
        async move {
            let mut c = Client::connect_from(host(source), addr).await;
            c.expect(220).await;
            c.cmd("EHLO device", 250).await;
            c.cmd("MAIL FROM:<alice@example.test>", 250).await;
            c.send("RCPT TO:<friend@remote.example>").await;
            let (code, _) = c.reply().await;
            c.cmd("QUIT", 221).await;
            code
        }
    };
    assert_eq!(relay(7).await, 554);

    // A failed login records nothing.
    let mut c = Client::connect_tls_from(host(7), gw.addr("pop3s")).await;
    c.pop(true).await;
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd("PASS wrong", false).await;
    assert_eq!(relay(7).await, 554);
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c.pop_cmd("QUIT", true).await;

    assert_eq!(relay(7).await, 250, "same address after login");
    assert_eq!(relay(8).await, 554, "another address");
    clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(relay(7).await, 250, "within the 30 minute TTL");
    clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(relay(7).await, 554, "after the TTL");
    gw.stop().await;
}

/// One POP3S USER/PASS attempt; whether it was accepted.
async fn pop3s_login(gw: &Gateway, user: &str, password: &str) -> bool {
    let mut c = Client::connect_tls(gw.addr("pop3s")).await;
    c.pop(true).await;
    c.pop_cmd(&format!("USER {user}"), true).await;
    c.send(&format!("PASS {password}")).await;
    let ok = c.line().await.is_some_and(|l| l.starts_with("+OK"));
    c.send("QUIT").await;
    ok
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_added_to_the_users_file_can_log_in_without_a_restart() {
    let gw = Gateway::start("").await;
    assert!(!pop3s_login(&gw, "carol", "carols-pw").await);
    let users = gw.dir.path().join("users");
    // The way `mailgate passwd` writes: a new file renamed over the old one.
    let tmp = gw.dir.path().join("users.new");
    std::fs::write(&tmp, format!("{}carol:{{PLAIN}}carols-pw\n", common::USERS)).unwrap();
    std::fs::rename(&tmp, &users).unwrap();
    let mut accepted = false;
    for _ in 0..60 {
        if pop3s_login(&gw, "carol", "carols-pw").await {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted, "carol was never accepted");
    // The users who were there before still log in.
    assert!(pop3s_login(&gw, "alice", PASSWORD).await);
    gw.stop().await;
}

/// Logs in over plain POP3 with APOP as `user`; the reply to APOP.
async fn apop(gw: &Gateway, user: &str) -> (Client, String) {
    let mut c = Client::connect(gw.addr("pop3")).await;
    let greeting = c.pop(true).await;
    let ts = &greeting[greeting.find('<').unwrap()..=greeting.rfind('>').unwrap()];
    let digest = sasl::apop(ts, PASSWORD);
    c.send(&format!("APOP {user} {digest}")).await;
    let reply = c.line().await.unwrap_or_default();
    (c, reply)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_maildrop_is_free_once_quit_is_answered() {
    let gw = Gateway::start("").await;
    // A polling client logs in again as soon as its QUIT is answered: never [IN-USE].
    let (mut c, reply) = apop(&gw, "alice").await;
    assert!(reply.starts_with("+OK"), "{reply}");
    for round in 0..50 {
        c.send("QUIT").await;
        let bye = c.line().await.unwrap_or_default();
        assert!(bye.starts_with("+OK"), "round {round}: {bye}");
        let (next, reply) = apop(&gw, "alice").await;
        assert!(reply.starts_with("+OK"), "round {round}: {reply}");
        c = next;
    }
    gw.stop().await;
}

/// Logs in as alice and lists the maildrop: STAT, then `(uid, size)` per message from UIDL
/// and LIST; QUITs.
async fn listing(gw: &Gateway) -> (String, Vec<(String, String)>) {
    let mut c = login_tls(gw, "alice").await;
    let stat = c.pop_cmd("STAT", true).await;
    c.pop_cmd("UIDL", true).await;
    let uidl = c.multiline().await;
    c.pop_cmd("LIST", true).await;
    let list = c.multiline().await;
    c.pop_cmd("QUIT", true).await;
    let second = |line: &String| line.split(' ').nth(1).unwrap_or_default().to_string();
    let pairs = uidl
        .iter()
        .map(second)
        .zip(list.iter().map(second))
        .collect();
    (stat, pairs)
}

/// The file in alice's `cur/` whose content contains `text`.
fn file_with(gw: &Gateway, text: &str) -> std::path::PathBuf {
    let cur = gw.state().join("maildir/alice/cur");
    std::fs::read_dir(cur)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains(text))
        .unwrap()
}

/// The maildrop listing is kept between sessions (`maildir::cache`): changes made behind the
/// gateway's back between two sessions (an admin's `rm`, a flag rename by another reader, a
/// file dropped into new/ by another delivery agent, one moved into cur/) show in the next
/// session, and unique-ids stay what they were.
#[tokio::test(flavor = "multi_thread")]
async fn changes_behind_the_gateway_show_in_the_next_session() {
    let gw = Gateway::start("").await;
    for n in 0..3 {
        deliver(&gw, "alice", &format!("m{n}")).await;
    }
    gw.wait_for_mail("alice", 3).await;
    let (stat, first) = listing(&gw).await;
    assert!(stat.starts_with("+OK 3 "), "{stat}");
    // Unchanged: the same answer.
    assert_eq!(listing(&gw).await.1, first);

    // The unique-id of m0, by a session's TOP.
    let mut c = login_tls(&gw, "alice").await;
    let mut m0 = None;
    for n in 1..=3 {
        c.pop_cmd(&format!("TOP {n} 0"), true).await;
        if c.multiline().await.iter().any(|l| l == "Subject: m0") {
            m0 = Some(first[n - 1].clone());
        }
    }
    c.pop_cmd("QUIT", true).await;
    let m0 = m0.unwrap();

    // An admin removes m0; another reader marks m1 as seen.
    std::fs::remove_file(file_with(&gw, "Subject: m0")).unwrap();
    let seen = file_with(&gw, "Subject: m1");
    std::fs::rename(&seen, format!("{}S", seen.display())).unwrap();
    // Another delivery agent drops a message into new/; one appears in cur/.
    let dir = gw.state().join("maildir/alice");
    std::fs::write(dir.join("new/1000000001.other.host,S=7"), "a\r\nbc\r\n").unwrap();
    std::fs::write(dir.join("tmp/1000000002.moved.host"), "x\r\n").unwrap();
    std::fs::rename(
        dir.join("tmp/1000000002.moved.host"),
        dir.join("cur/1000000002.moved.host:2,"),
    )
    .unwrap();

    let (stat, after) = listing(&gw).await;
    assert!(stat.starts_with("+OK 4 "), "{stat}");
    let mut want = vec![
        ("1000000001.other.host,S=7".to_string(), "7".to_string()),
        ("1000000002.moved.host".to_string(), "3".to_string()),
    ];
    want.extend(first.iter().filter(|m| **m != m0).cloned());
    assert_eq!(after, want);

    // A deletion through POP3 shows in the next session too.
    let mut c = login_tls(&gw, "alice").await;
    c.pop_cmd("DELE 1", true).await;
    c.pop_cmd("QUIT", true).await;
    assert_eq!(listing(&gw).await.1, want[1..].to_vec());
}
