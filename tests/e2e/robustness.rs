//! Robustness end to end over loopback: connection caps in all and per address, growing delays
//! for failed logins (per address, per user name, reset by a success, trusted networks exempt),
//! the per-session failure limit, graceful shutdown of the built binary on SIGTERM with the
//! allowlist kept, `restrict_sender`, the roles that honour POP-before-SMTP, POP3 abuse followed
//! by good sessions, and POP-before-SMTP over IPv6.

// End-to-end tests measure real elapsed time (lower bounds on delays, deadlines for
// background delivery); the clock rule is for the gateway, not for its observers.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use common::client::Client;
use common::{Gateway, PASSWORD, host};
use extra::{Binary, eventually, set_all};
use mailgate_testkit::sasl::plain_b64 as plain;
use mailgate_testkit::{self as common, extra};

/// Starts an in-process gateway on the base test config with plaintext logins allowed on
/// loopback (IPv4 and IPv6) and `edits` applied.
async fn start(edits: &[(&str, &str, &str)]) -> Gateway {
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
async fn smtp_from(source: IpAddr, addr: SocketAddr) -> Client {
    let mut c = Client::connect_from(source, addr).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    c
}

/// Logs in over plaintext POP3 (allowed on loopback here) from `source` as `user`.
async fn pop_login(source: IpAddr, addr: SocketAddr, user: &str) -> Client {
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
async fn wait_smtp_slot(source: IpAddr, addr: SocketAddr) {
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

#[tokio::test(flavor = "multi_thread")]
async fn smtp_connections_per_address_are_capped() {
    let gw = start(&[("limits", "max_connections_per_ip", "2")]).await;
    let addr = gw.addr("smtp");
    let mut first = smtp_from(host(1), addr).await;
    let mut second = smtp_from(host(1), addr).await;

    let mut third = Client::connect_from(host(1), addr).await;
    let refused = third.expect(421).await;
    assert!(refused[0].starts_with("421 4.7.0"), "{refused:?}");
    assert!(third.closed().await, "refused connection left open");

    // Another address is served while 127.0.0.1 is at its cap.
    let mut other = smtp_from(host(3), addr).await;
    other.cmd("NOOP", 250).await;
    other.cmd("QUIT", 221).await;

    // The sessions in place are unaffected; closing one frees a slot for the address.
    second.cmd("NOOP", 250).await;
    first.cmd("QUIT", 221).await;
    assert!(first.closed().await);
    wait_smtp_slot(host(1), addr).await;
    second.cmd("NOOP", 250).await;
    second.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_connections_per_address_are_capped() {
    let gw = start(&[("limits", "max_connections_per_ip", "2")]).await;
    let addr = gw.addr("pop3");
    let mut first = pop_login(host(1), addr, "alice").await;
    let mut second = Client::connect_from(host(1), addr).await;
    second.pop(true).await;

    let mut third = Client::connect_from(host(1), addr).await;
    let refused = third.pop(false).await;
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
    assert!(third.closed().await, "refused connection left open");

    let mut other = pop_login(host(3), addr, "bob").await;
    other.pop_cmd("STAT", true).await;
    other.pop_cmd("QUIT", true).await;

    first.pop_cmd("QUIT", true).await;
    assert!(first.closed().await);
    eventually(
        "a free POP3 connection slot",
        Duration::from_secs(5),
        || async {
            let mut c = Client::connect_from(host(1), addr).await;
            c.line().await.is_some_and(|l| l.starts_with("+OK"))
        },
    )
    .await;
    second.pop_cmd("CAPA", true).await;
    second.multiline().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_in_all_are_capped_across_listeners() {
    let gw = start(&[("limits", "max_connections", "3")]).await;
    let (smtp, pop3) = (gw.addr("smtp"), gw.addr("pop3"));
    let mut a = smtp_from(host(11), smtp).await;
    let _b = smtp_from(host(12), gw.addr("submission")).await;
    let mut c = Client::connect_from(host(13), pop3).await;
    c.pop(true).await;

    // Full: every listener refuses, whatever the address.
    let mut d = Client::connect_from(host(14), smtp).await;
    let refused = d.expect(421).await;
    assert!(refused[0].starts_with("421 4.7.0"), "{refused:?}");
    assert!(d.closed().await);
    let mut e = Client::connect_from(host(15), pop3).await;
    assert!(e.pop(false).await.starts_with("-ERR [SYS/TEMP]"));
    assert!(e.closed().await);

    a.cmd("QUIT", 221).await;
    assert!(a.closed().await);
    wait_smtp_slot(host(14), smtp).await;
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

/// The auth settings of the throttling tests: no fixed delay, two free failures, then 300 ms
/// doubling to 1 s; 127.0.0.5 is a trusted network.
const THROTTLE: &[(&str, &str, &str)] = &[
    ("auth", "failure_delay", r#""0s""#),
    ("auth", "max_failures", "10"),
    ("auth.throttle", "free_failures", "2"),
    ("auth.throttle", "base_delay", r#""300ms""#),
    ("auth.throttle", "max_delay", r#""1s""#),
    ("relay", "trusted_networks", r#"["127.0.0.5/32"]"#),
];
const BASE_DELAY: Duration = Duration::from_millis(300);

/// Sends a failing AUTH PLAIN; returns how long the 535 took.
async fn failed_auth(c: &mut Client, user: &str) -> Duration {
    let started = Instant::now();
    c.cmd(&format!("AUTH PLAIN {}", plain(user, "wrong")), 535)
        .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_delayed_per_address_and_a_success_resets() {
    let gw = start(THROTTLE).await;
    let addr = gw.addr("submission");
    let guesser = host(21);
    let mut c = smtp_from(guesser, addr).await;
    for _ in 0..2 {
        failed_auth(&mut c, "bob").await;
    }
    let took = failed_auth(&mut c, "bob").await;
    assert!(
        took >= BASE_DELAY,
        "failure after the free ones answered in {took:?}"
    );
    assert!(gw.shared.auth_throttle(guesser, None).await >= BASE_DELAY);
    // The next guess waits longer still (the delay doubles).
    let took = failed_auth(&mut c, "bob").await;
    assert!(
        took >= 2 * BASE_DELAY,
        "fourth failure answered in {took:?}"
    );

    // Another user from another address logs in as usual.
    let mut other = smtp_from(host(4), addr).await;
    other
        .cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 235)
        .await;
    other.cmd("QUIT", 221).await;
    assert_eq!(
        gw.shared.auth_throttle(host(4), Some("alice")).await,
        Duration::ZERO
    );

    // A success from the guessing address forgets its failures.
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", PASSWORD)), 235)
        .await;
    assert_eq!(
        gw.shared.auth_throttle(guesser, Some("bob")).await,
        Duration::ZERO,
        "a success must reset the address and the user"
    );
    c.cmd("QUIT", 221).await;

    // Trusted networks are exempt by address.
    let mut trusted = smtp_from(host(5), addr).await;
    for _ in 0..4 {
        failed_auth(&mut trusted, "nosuchuser").await;
    }
    assert_eq!(gw.shared.auth_throttle(host(5), None).await, Duration::ZERO);
    trusted.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_failures_count_against_the_user_name_across_addresses() {
    let gw = start(THROTTLE).await;
    let addr = gw.addr("pop3");
    for n in [31, 32, 33] {
        let mut c = Client::connect_from(host(n), addr).await;
        c.pop(true).await;
        c.pop_cmd("USER alice", true).await;
        c.pop_cmd("PASS wrong", false).await;
        c.pop_cmd("QUIT", true).await;
    }
    // One failure per address: no address is throttled, but the user name is.
    assert_eq!(
        gw.shared.auth_throttle(host(31), None).await,
        Duration::ZERO
    );
    assert!(gw.shared.auth_throttle(host(34), Some("alice")).await >= BASE_DELAY);
    let mut c = Client::connect_from(host(34), addr).await;
    c.pop(true).await;
    // While alice's delay runs, her name is refused from any address without checking the
    // password, so the right password does not get through either (guessing it is pointless).
    c.pop_cmd("USER alice", true).await;
    let refused = c.pop_cmd(&format!("PASS {PASSWORD}"), false).await;
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused:?}");
    // Another user logs in as usual from the same address.
    c.pop_cmd("USER bob", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c.pop_cmd("QUIT", true).await;
    // Once the delay (at most max_delay, 1 s) has passed, alice's right password works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Client::connect_from(host(34), addr).await;
    c.pop(true).await;
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd(&format!("PASS {PASSWORD}"), true).await;
    c.pop_cmd("QUIT", true).await;
    assert_eq!(
        gw.shared.auth_throttle(host(34), Some("alice")).await,
        Duration::ZERO
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_auth_failures_count_against_the_user_name_across_addresses() {
    let gw = start(THROTTLE).await;
    let addr = gw.addr("submission");
    // PLAIN with an initial response, LOGIN, and PLAIN in two steps: one failure per address.
    let mut c = smtp_from(host(41), addr).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wrong")), 535)
        .await;
    let mut c = smtp_from(host(42), addr).await;
    c.cmd("AUTH LOGIN", 334).await;
    c.cmd(&B64.encode("alice"), 334).await;
    c.cmd(&B64.encode("wrong"), 535).await;
    let mut c = smtp_from(host(43), addr).await;
    c.cmd("AUTH PLAIN", 334).await;
    c.cmd(&plain("alice", "wrong"), 535).await;
    assert!(
        gw.shared.auth_throttle(host(44), Some("alice")).await >= BASE_DELAY,
        "three failed SMTP logins as alice from three addresses left no delay for alice"
    );
    // A fourth address with the right password is refused without a check, as a guess
    // would be; bob logs in from it as usual.
    let mut c = smtp_from(host(44), addr).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 535)
        .await;
    c.cmd(&format!("AUTH PLAIN {}", plain("bob", PASSWORD)), 235)
        .await;
    c.cmd("QUIT", 221).await;
    // After the delay alice gets one check again, and the right password succeeds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = smtp_from(host(44), addr).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 235)
        .await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

/// Throttle settings under which an address, after one free failure, gets one credential
/// check a second (no fixed failure delay).
const ONE_CHECK_A_SECOND: &[(&str, &str, &str)] = &[
    ("auth", "failure_delay", r#""0s""#),
    ("auth.throttle", "free_failures", "1"),
    ("auth.throttle", "base_delay", r#""1s""#),
    ("auth.throttle", "max_delay", r#""1s""#),
];

/// Sends a wrong AUTH PLAIN credential (each for another unknown user) on every connection at
/// once and waits for all the 535s; returns how long that took and the connections. `staged`:
/// the exchanges were opened before with `AUTH PLAIN`, so only the credential line is sent.
async fn guess_at_once(conns: Vec<Client>, staged: bool) -> (Duration, Vec<Client>) {
    let started = Instant::now();
    let guesses: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, mut c)| {
            tokio::spawn(async move {
                let user = format!("guessed{n}");
                if staged {
                    c.cmd(&plain(&user, "wrong"), 535).await;
                } else {
                    failed_auth(&mut c, &user).await;
                }
                c
            })
        })
        .collect();
    let mut done = Vec::new();
    for g in guesses {
        done.push(g.await.expect("guess task"));
    }
    (started.elapsed(), done)
}

/// Concurrent guesses from one address queue for the address's check slots: they do not each
/// wait the same delay in parallel (which would multiply the guessing rate by the number of
/// connections).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_guesses_from_one_address_are_serialized() {
    let gw = start(ONE_CHECK_A_SECOND).await;
    let addr = gw.addr("submission");
    let guesser = host(51);
    let mut first = smtp_from(guesser, addr).await;
    failed_auth(&mut first, "nosuchuser1").await;
    // One failure: every further check from this address is one second after the one before.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(smtp_from(guesser, addr).await);
    }
    let (took, done) = guess_at_once(conns, false).await;
    // In parallel they would all be answered after about 1 s; queued, the fourth waits for
    // the fourth slot.
    assert!(
        took >= Duration::from_millis(3500),
        "four concurrent guesses answered within {took:?}"
    );
    // Another address is not held up by the queue.
    let mut other = smtp_from(host(52), addr).await;
    let t = Instant::now();
    other
        .cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 235)
        .await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    drop(done);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_failures_in_one_session_close_it() {
    let gw = start(&[
        ("auth", "failure_delay", r#""0s""#),
        ("auth", "max_failures", "3"),
    ])
    .await;
    let mut c = smtp_from(host(1), gw.addr("submission")).await;
    for _ in 0..2 {
        failed_auth(&mut c, "alice").await;
    }
    // The last failure is answered like the others (535, after its delay), then 421.
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "wrong")), 535)
        .await;
    let r = c.expect(421).await;
    assert!(r[0].starts_with("421 4.7.0"), "{r:?}");
    assert!(c.closed().await, "session left open after max_failures");

    let mut p = Client::connect_from(host(1), gw.addr("pop3")).await;
    p.pop(true).await;
    for _ in 0..3 {
        p.pop_cmd("USER alice", true).await;
        p.pop_cmd("PASS wrong", false).await;
    }
    assert!(
        p.closed().await,
        "POP3 session left open after max_failures"
    );

    // The same address may still log in with a new session.
    let mut c = smtp_from(host(1), gw.addr("submission")).await;
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", PASSWORD)), 235)
        .await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_failure_that_ends_a_session_still_counts() {
    // Every session ends at its first failure: reconnecting must not be a way around the
    // throttle.
    let mut edits = THROTTLE.to_vec();
    edits.push(("auth", "max_failures", "1"));
    let gw = start(&edits).await;
    for _ in 0..3 {
        let mut c = smtp_from(host(51), gw.addr("submission")).await;
        c.cmd(&format!("AUTH PLAIN {}", plain("bob", "wrong")), 535)
            .await;
        c.expect(421).await;
        assert!(c.closed().await);
    }
    assert!(
        gw.shared.auth_throttle(host(51), None).await >= BASE_DELAY,
        "SMTP: three failed logins that each ended a session left no delay"
    );
    for _ in 0..3 {
        let mut c = Client::connect_from(host(52), gw.addr("pop3")).await;
        c.pop(true).await;
        c.pop_cmd("USER bob", true).await;
        c.pop_cmd("PASS wrong", false).await;
        assert!(c.closed().await);
    }
    assert!(
        gw.shared.auth_throttle(host(52), None).await >= BASE_DELAY,
        "POP3: three failed logins that each ended a session left no delay"
    );
    gw.stop().await;
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
    assert!(out.contains("127.0.0.61 may relay for 1h 30m"), "{out}");
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
    assert!(!ok && err.contains("not found"), "{err}");
    gw.stop().await;
}

/// A multi-step exchange (AUTH LOGIN: mechanism, user name, password) takes one throttle slot,
/// before the line that carries the credential; and exchanges opened early do not get their
/// credentials checked without waiting for a slot each.
#[tokio::test(flavor = "multi_thread")]
async fn the_throttle_slot_is_taken_where_the_credential_is_checked() {
    let gw = start(ONE_CHECK_A_SECOND).await;
    let addr = gw.addr("submission");
    let mut c = smtp_from(host(71), addr).await;
    failed_auth(&mut c, "nosuchuser").await;
    let started = Instant::now();
    c.cmd("AUTH LOGIN", 334).await;
    c.cmd(&B64.encode("alice"), 334).await;
    let before_password = started.elapsed();
    c.cmd(&B64.encode(PASSWORD), 235).await;
    let took = started.elapsed();
    // Nothing is checked before the password: no wait there. The password waits for the
    // slot (about 1 s); a slot per step would make it 3 s.
    assert!(
        before_password < Duration::from_millis(900),
        "the user name step waited {before_password:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "AUTH LOGIN took {took:?}"
    );
    c.cmd("QUIT", 221).await;

    // Staging: four exchanges opened at once (PLAIN without an initial response answers 334
    // at no cost), then all four credentials sent together. Each check still waits for a
    // slot of its own, one second apart.
    let guesser = host(72);
    let mut first = smtp_from(guesser, addr).await;
    failed_auth(&mut first, "nosuchuser").await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = smtp_from(guesser, addr).await;
        c.cmd("AUTH PLAIN", 334).await;
        conns.push(c);
    }
    let (took, _) = guess_at_once(conns, true).await;
    assert!(
        took >= Duration::from_millis(3500),
        "four staged guesses answered within {took:?}"
    );
    gw.stop().await;
}
