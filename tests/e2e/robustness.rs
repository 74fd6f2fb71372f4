//! Robustness end to end over loopback: graceful shutdown of the built binary on SIGTERM with
//! the allowlist kept, `restrict_sender`, the roles that honour POP-before-SMTP, POP3 abuse
//! followed by good sessions, POP-before-SMTP over IPv6, endless lines, idle sessions and the
//! `mailgate allowlist` command. Connection caps, login delays and failure limits are
//! `robustness_limits.rs`, which shares the helpers here.

// End-to-end tests measure real elapsed time (lower bounds on delays, deadlines for
// background delivery); the clock rule is for the gateway, not for its observers.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::client::Client;
use common::{Gateway, PASSWORD, host};
use extra::{Binary, eventually, set_all};
use mailgate_testkit::{self as common, extra};

/// Starts an in-process gateway on the base test config with plaintext logins allowed on
/// loopback (IPv4 and IPv6) and `edits` applied.
pub(crate) async fn start(edits: &[(&str, &str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let mut all = vec![(
        "auth",
        "insecure_plaintext_networks",
        r#"["127.0.0.0/8", "::1"]"#,
    )];
    all.extend_from_slice(edits);
    Gateway::start_in(dir, &set_all(&common::config_text(""), &all)).await
}

/// Connects to an SMTP listener from `source` and sends EHLO.
pub(crate) async fn smtp_from(source: IpAddr, addr: SocketAddr) -> Client {
    let mut c = Client::connect_from(source, addr).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    c
}

/// Logs in over plaintext POP3 (allowed on loopback here) from `source` as `user`.
pub(crate) async fn pop_login(source: IpAddr, addr: SocketAddr, user: &str) -> Client {
    let mut c = Client::connect_from(source, addr).await;
    c.pop(true).await;
    c.pop_cmd(&format!("USER {user}"), true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c
}

/// One transaction from `source`: the reply codes to MAIL and (if MAIL was accepted) RCPT.
async fn attempt(source: IpAddr, addr: SocketAddr, from: &str, rcpt: &str) -> (u16, Option<u16>) {
    let mut c = smtp_from(source, addr).await;
    c.send(&format!("MAIL FROM:<{from}>")).await;
    let (mail, _) = c.reply().await;
    let rcpt = if mail == 250 {
        c.send(&format!("RCPT TO:<{rcpt}>")).await;
        Some(c.reply().await.0)
    } else {
        None
    };
    c.cmd("QUIT", 221).await;
    (mail, rcpt)
}

/// Waits until a new SMTP connection from `source` is greeted with 220 (a slot came free).
pub(crate) async fn wait_smtp_slot(source: IpAddr, addr: SocketAddr) {
    eventually(
        "a free SMTP connection slot",
        Duration::from_secs(5),
        || async {
            let mut c = Client::connect_from(source, addr).await;
            c.reply_opt().await == Some(220)
        },
    )
    .await;
}

/// A complete good SMTP session: the server still serves after whatever came before.
async fn good_smtp_session(gw: &Gateway) {
    let mut c = smtp_from(host(1), gw.addr("smtp")).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b"Subject: good\r\n\r\nfine\r\n.\r\n").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
}

/// The built binary's config for the shutdown test.
fn binary_config(dir: &std::path::Path, smtp: u16, pop3: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("users"), common::USERS).expect("users file");
    let text = format!(
        r#"hostname = "mail.example.test"
state_dir = "state"
[listeners]
smtp = ["127.0.0.1:{smtp}"]
pop3 = ["127.0.0.1:{pop3}"]
[auth]
users_file = "users"
insecure_plaintext_networks = ["127.0.0.0/8"]
failure_delay = "0s"
[relay]
local_domains = ["example.test"]
[limits]
shutdown_grace = "3s"
"#
    );
    let path = dir.join("mailgate.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_sessions_exits_cleanly_and_keeps_the_allowlist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (smtp_port, pop3_port) = (extra::free_port(), extra::free_port());
    let config = binary_config(dir.path(), smtp_port, pop3_port);
    let (smtp, pop3) = (extra::local(smtp_port), extra::local(pop3_port));
    let mut gw = Binary::start(crate::MAILGATE, &config);
    extra::wait_listening(smtp).await;
    extra::wait_listening(pop3).await;

    let mut login = pop_login(host(7), pop3, "alice").await;
    login.pop_cmd("QUIT", true).await;
    let mut idle_pop = pop_login(host(9), pop3, "bob").await;
    let mut idle = smtp_from(host(9), smtp).await;
    // A session in the middle of DATA when the signal comes may still finish its message.
    let mut sending = smtp_from(host(9), smtp).await;
    sending.cmd("MAIL FROM:<x@remote.example>", 250).await;
    sending.cmd("RCPT TO:<alice@example.test>", 250).await;
    sending.cmd("DATA", 354).await;
    sending
        .send_raw(b"Subject: in flight\r\nX-Marker: sent-during-shutdown\r\n\r\nfirst half\r\n")
        .await;

    gw.terminate();
    let r = idle.expect(421).await;
    assert!(r[0].starts_with("421 4.3.2"), "{r:?}");
    assert!(idle.closed().await, "idle SMTP session left open");
    let r = idle_pop.line().await.unwrap_or_default();
    assert!(
        r.starts_with("-ERR [SYS/TEMP]"),
        "idle POP3 session got {r:?}"
    );
    // Shutdown is under way (the idle sessions were told); the transfer completes.
    sending.send_raw(b"second half\r\n.\r\n").await;
    sending.expect(250).await;

    let status = gw.wait_exit(Duration::from_secs(10)).await;
    let log = gw.log_text();
    let status = status.unwrap_or_else(|| panic!("no exit within the grace period; log:\n{log}"));
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        dir.path().join("state/allowlist.json").exists(),
        "no allowlist snapshot; log:\n{log}"
    );

    let gw = Binary::start(crate::MAILGATE, &config);
    extra::wait_listening(smtp).await;
    let (_, rcpt) = attempt(host(7), smtp, "alice@example.test", "friend@remote.example").await;
    assert_eq!(rcpt, Some(250), "127.0.0.7 lost its POP-before-SMTP entry");
    let (_, rcpt) = attempt(host(8), smtp, "alice@example.test", "friend@remote.example").await;
    assert_eq!(rcpt, Some(554), "127.0.0.8 never logged in");
    // The message accepted during shutdown is delivered (before the exit or after the start).
    let maildir = dir.path().join("state/maildir/alice");
    eventually("the in-flight message", Duration::from_secs(10), || {
        let got = common::mailbox_files(&maildir);
        async move {
            got.iter()
                .any(|m| m.contains("X-Marker: sent-during-shutdown"))
        }
    })
    .await;
    gw.terminate();
    drop(gw);
}

#[tokio::test(flavor = "multi_thread")]
async fn restrict_sender_limits_mail_from_to_the_logged_in_user() {
    let gw = start(&[("pop_before_smtp", "restrict_sender", "true")]).await;
    let smtp = gw.addr("smtp");
    let mut login = pop_login(host(7), gw.addr("pop3"), "alice").await;
    login.pop_cmd("QUIT", true).await;

    let mut c = smtp_from(host(7), smtp).await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<friend@remote.example>", 250).await;
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<Alice@Example.Test>", 250).await;
    c.cmd("RCPT TO:<friend@remote.example>", 250).await;
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<bob@example.test>", 250).await;
    let r = c.cmd("RCPT TO:<friend@remote.example>", 550).await;
    assert!(r[0].starts_with("550 5.7.1"), "{r:?}");
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<alice@elsewhere.example>", 250).await;
    let r = c.cmd("RCPT TO:<friend@remote.example>", 550).await;
    assert!(r[0].starts_with("550 5.7.1"), "{r:?}");
    // Mail for local users is not relaying and is not restricted.
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<bob@example.test>", 250).await;
    c.cmd("RCPT TO:<alice@example.test>", 250).await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn submission_honours_the_allowlist_only_when_listed() {
    for (listeners, submission_may_relay) in
        [(None, false), (Some(r#"["smtp", "submission"]"#), true)]
    {
        let edits: Vec<_> = listeners
            .map(|l| ("pop_before_smtp", "listeners", l))
            .into_iter()
            .collect();
        let gw = start(&edits).await;
        let mut login = pop_login(host(7), gw.addr("pop3"), "alice").await;
        login.pop_cmd("QUIT", true).await;
        let got = attempt(
            host(7),
            gw.addr("submission"),
            "alice@example.test",
            "friend@remote.example",
        )
        .await;
        if submission_may_relay {
            assert_eq!(got, (250, Some(250)), "listeners = {listeners:?}");
        } else {
            assert_eq!(got, (530, None), "listeners = {listeners:?}");
        }
        // The smtp role honours it either way.
        let got = attempt(
            host(7),
            gw.addr("smtp"),
            "alice@example.test",
            "friend@remote.example",
        )
        .await;
        assert_eq!(got, (250, Some(250)), "listeners = {listeners:?}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_abuse_then_good_sessions() {
    let gw = start(&[]).await;
    let pop3 = gw.addr("pop3");
    // A message big enough that RETR is still streaming when the client goes away.
    let line = format!("{}\r\n", "x".repeat(998));
    let mut body = String::from("Subject: big\r\n\r\n");
    for _ in 0..4000 {
        body.push_str(&line);
    }
    body.push_str("END-MARKER\r\n.\r\n");
    let mut c = smtp_from(host(1), gw.addr("smtp")).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<alice@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(body.as_bytes()).await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    gw.wait_for_mail("alice", 1).await;

    // An over-long line gets -ERR and the session goes on, before and after login.
    let mut c = Client::connect_from(host(1), pop3).await;
    c.pop(true).await;
    c.pop_cmd(&format!("NOOP {}", "a".repeat(100_000)), false)
        .await;
    c.pop_cmd("CAPA", true).await;
    c.multiline().await;
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c.pop_cmd(&format!("LIST {}", "9".repeat(100_000)), false)
        .await;
    c.pop_cmd("STAT", true).await;
    c.pop_cmd("QUIT", true).await;
    // The maildrop lock is released by the time the connection closes.
    assert!(c.closed().await);

    // 100 garbage lines: the session may close, or answer each and stay usable.
    let mut g = Client::connect_from(host(2), pop3).await;
    g.pop(true).await;
    let mut garbage = Vec::new();
    for i in 0..100 {
        garbage.extend_from_slice(format!("\x01\x7fGARBAGE{i} \u{fffd}\r\n").as_bytes());
    }
    g.send_raw(&garbage).await;
    let mut answered = 0;
    while answered < 100 {
        match g.line().await {
            Some(l) => {
                assert!(l.starts_with("-ERR"), "garbage accepted: {l:?}");
                answered += 1;
            }
            None => break,
        }
    }
    if answered == 100 {
        g.pop_cmd("CAPA", true).await;
        g.multiline().await;
    }
    drop(g);

    // A client that goes away in the middle of RETR.
    let mut r = pop_login(host(3), pop3, "alice").await;
    r.pop_cmd("RETR 1", true).await;
    for _ in 0..10 {
        r.line().await.expect("message line");
    }
    drop(r);

    // The maildrop lock is released and the message is intact and still there.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        let mut c = Client::connect_from(host(3), pop3).await;
        c.pop(true).await;
        c.pop_cmd("USER alice", true).await;
        c.send(&format!("PASS {PASSWORD}")).await;
        let r = c.line().await.expect("reply to PASS");
        if r.starts_with("+OK") {
            break c;
        }
        assert!(r.contains("[IN-USE]"), "{r}");
        assert!(Instant::now() < deadline, "alice's maildrop still locked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(c.pop_cmd("STAT", true).await.starts_with("+OK 1 "));
    c.pop_cmd("RETR 1", true).await;
    let got = c.multiline().await;
    assert_eq!(got.last().map(String::as_str), Some("END-MARKER"));
    assert_eq!(got.iter().filter(|l| l.len() == 998).count(), 4000);
    c.pop_cmd("QUIT", true).await;
    good_smtp_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop_before_smtp_over_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: cannot bind [::1]:0 on this machine");
        return;
    }
    let gw = start(&[
        ("listeners", "pop3", r#"["[::1]:0"]"#),
        ("listeners", "smtp", r#"["[::1]:0"]"#),
    ])
    .await;
    let (pop3, smtp) = (gw.addr("pop3"), gw.addr("smtp"));
    assert!(pop3.is_ipv6() && smtp.is_ipv6());
    let connect = |addr: SocketAddr| async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect over IPv6");
        Client::over(Box::new(tcp))
    };
    let relay = || async {
        let mut c = connect(smtp).await;
        c.expect(220).await;
        c.cmd("EHLO v6.example", 250).await;
        c.cmd("MAIL FROM:<alice@example.test>", 250).await;
        c.send("RCPT TO:<friend@remote.example>").await;
        let code = c.reply().await.0;
        c.cmd("QUIT", 221).await;
        code
    };
    assert_eq!(relay().await, 554, "relay before any login");

    let mut c = connect(pop3).await;
    c.pop(true).await;
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c.pop_cmd("QUIT", true).await;

    // The entry covers ::1's /64 (privacy addresses rotate within it), and nothing wider.
    let now = std::time::SystemTime::now();
    let same_64 = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0x1234, 0x5678, 0x9abc, 0xdef0));
    let other_64 = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 1, 0, 0, 0, 1));
    let list = &gw.shared.allowlist;
    assert!(list.lookup(same_64, now).await.unwrap().is_some());
    assert!(list.lookup(other_64, now).await.unwrap().is_none());
    assert_eq!(relay().await, 250, "relay after a POP3 login from ::1");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_endless_line_is_refused_and_the_session_goes_on() {
    let gw = start(&[]).await;
    let mut c = smtp_from(host(1), gw.addr("smtp")).await;
    // 1 MiB with no line end, in pieces: the reader must not keep it all.
    let chunk = vec![b'A'; 64 * 1024];
    for _ in 0..16 {
        c.send_raw(&chunk).await;
    }
    c.send_raw(b"\r\n").await;
    let r = c.expect(500).await;
    assert!(r[0].starts_with("500 5.5.2"), "{r:?}");
    c.cmd("NOOP", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<alice@example.test>", 250).await;
    c.cmd("QUIT", 221).await;
    good_smtp_session(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_idle_sessions_are_dropped_without_update() {
    let gw = start(&[
        ("limits", "preauth_idle_timeout", r#""1s""#),
        ("limits", "pop3_idle_timeout", r#""1s""#),
    ])
    .await;
    good_smtp_session(&gw).await;
    gw.wait_for_mail("bob", 1).await;
    let pop3 = gw.addr("pop3");

    let mut c = Client::connect_from(host(1), pop3).await;
    c.pop(true).await;
    let r = c.pop(false).await;
    assert!(r.contains("autologout"), "{r}");
    assert!(c.closed().await);

    // Idle after login: the marked deletion is not carried out (RFC 1939 §3).
    let mut c = pop_login(host(1), pop3, "bob").await;
    c.pop_cmd("DELE 1", true).await;
    let r = c.pop(false).await;
    assert!(r.contains("autologout"), "{r}");
    assert!(c.closed().await);
    assert_eq!(gw.mailbox("bob").len(), 1, "deleted without QUIT");
    let mut c = pop_login(host(1), pop3, "bob").await;
    assert!(c.pop_cmd("STAT", true).await.starts_with("+OK 1 "));
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

/// Issue: a client cut off by `data_timeout` got no reply before the close.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_timeout_answers_421_and_accepts_nothing() {
    let gw = start(&[("limits", "data_timeout", r#""1s""#)]).await;
    let mut c = Client::connect_from(host(1), gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO slow", 250).await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send("Subject: never finished").await;
    let r = c.expect(421).await;
    assert!(r[0].starts_with("421 4.4.2"), "{r:?}");
    assert!(c.closed().await);
    good_smtp_session(&gw).await;
    gw.wait_for_mail("bob", 1).await;
    assert_eq!(
        gw.mailbox("bob").len(),
        1,
        "the cut-off message was accepted"
    );
    gw.stop().await;
}

/// Runs the built `mailgate` with `args`; returns (success, stdout, stderr).
async fn mailgate_cli(args: Vec<String>) -> (bool, String, String) {
    let out = common::run(env!("CARGO_BIN_EXE_mailgate"), args, None).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allowlist_command_changes_who_may_relay() {
    let gw = start(&[]).await;
    // The command reads the control address from the config: name the bound one.
    let control = gw.control.expect("control listener");
    let text = std::fs::read_to_string(gw.dir.path().join("mailgate.toml")).unwrap();
    let cli = gw.dir.path().join("cli.toml");
    std::fs::write(
        &cli,
        text.replace(
            "control = \"127.0.0.1:0\"",
            &format!("control = \"{control}\""),
        ),
    )
    .unwrap();
    let run = |words: &[&str]| {
        let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        args.extend(["--config".to_string(), cli.display().to_string()]);
        mailgate_cli(args)
    };
    let (printer, smtp) = (host(61), gw.addr("smtp"));
    let relay = move |expect: u16| async move {
        let mut c = Client::connect_from(printer, smtp).await;
        c.expect(220).await;
        c.cmd("EHLO printer", 250).await;
        c.cmd("MAIL FROM:<scanner@example.test>", 250).await;
        c.cmd("RCPT TO:<someone@elsewhere.example>", expect).await;
        c.cmd("QUIT", 221).await;
    };
    relay(554).await;

    let (ok, out, err) = run(&[
        "allowlist",
        "add",
        "127.0.0.61",
        "--ttl",
        "1h30m",
        "--user",
        "printer",
    ])
    .await;
    assert!(ok, "add failed: {out} {err}");
    assert!(
        out.contains("127.0.0.61/32 may relay until") && out.contains("(1h 30m, user printer)"),
        "{out}"
    );
    relay(250).await;
    let (ok, out, _) = run(&["allowlist", "list"]).await;
    assert!(ok);
    let row = out
        .lines()
        .find(|l| l.starts_with("127.0.0.61/32"))
        .unwrap_or_else(|| panic!("not listed: {out}"));
    assert!(row.contains("printer"), "{row}");
    assert!(!out.contains("\nOK"), "{out}");

    // A TTL in another syntax is refused with a hint, and changes nothing.
    let (ok, _, err) = run(&["allowlist", "add", "127.0.0.62", "--ttl", "90 minutes"]).await;
    assert!(!ok && err.contains("--ttl"), "{err}");

    // Without the key (another state folder) nothing can be changed.
    let stranger = gw.dir.path().join("stranger.toml");
    std::fs::write(
        &stranger,
        std::fs::read_to_string(&cli)
            .unwrap()
            .replace("state_dir = \"state\"", "state_dir = \"elsewhere\""),
    )
    .unwrap();
    let (ok, _, err) = mailgate_cli(vec![
        "allowlist".into(),
        "remove".into(),
        "127.0.0.61".into(),
        "--config".into(),
        stranger.display().to_string(),
    ])
    .await;
    assert!(!ok && err.contains("control key"), "{err}");
    relay(250).await;

    let (ok, out, err) = run(&["allowlist", "remove", "127.0.0.61"]).await;
    assert!(ok && out.contains("removed"), "{out} {err}");
    relay(554).await;
    let (ok, _, err) = run(&["allowlist", "remove", "127.0.0.61"]).await;
    assert!(
        !ok && err.contains("no entry lets 127.0.0.61 relay"),
        "{err}"
    );

    // A network is stored as written and lets every address in it relay.
    let lab: IpAddr = "127.0.7.9".parse().unwrap();
    let (ok, out, err) = run(&["allowlist", "add", "127.0.7.0/24", "--user", "lab"]).await;
    assert!(ok && out.contains("127.0.7.0/24 may relay"), "{out} {err}");
    let mut c = Client::connect_from(lab, smtp).await;
    c.expect(220).await;
    c.cmd("EHLO lab", 250).await;
    c.cmd("MAIL FROM:<lab@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@elsewhere.example>", 250).await;
    c.cmd("QUIT", 221).await;
    // An IPv6 address is that one host; --prefix widens it on purpose.
    let (ok, out, err) = run(&["allowlist", "add", "2001:db8::1234"]).await;
    assert!(
        ok && out.contains("2001:db8::1234/128 may relay"),
        "{out} {err}"
    );
    let (ok, out, err) = run(&["allowlist", "add", "2001:db8:5::77", "--prefix", "64"]).await;
    assert!(
        ok && out.contains("2001:db8:5::/64 may relay"),
        "{out} {err}"
    );
    let (ok, _, err) = run(&["allowlist", "add", "10.0.0.0/8"]).await;
    assert!(
        !ok && err.contains("wider than an allowlist entry"),
        "{err}"
    );
    let (ok, out, err) = run(&["allowlist", "list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let nets: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["net"].as_str())
        .collect();
    assert_eq!(
        nets,
        ["127.0.7.0/24", "2001:db8::1234/128", "2001:db8:5::/64"],
        "{out}"
    );
    // An address removes the network entry that lets it relay.
    let (ok, out, err) = run(&["allowlist", "remove", "127.0.7.9"]).await;
    assert!(ok && out.contains("127.0.7.0/24 removed"), "{out} {err}");
    gw.stop().await;
}
