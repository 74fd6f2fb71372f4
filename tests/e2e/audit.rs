//! The audit log end to end: the real gateway writes one JSON event per authentication
//! decision, lockout, allowlist entry, address-authorized relay and accepted message, each with
//! the session's details (protocol, listener, session id, client address and port, TLS) and the
//! mechanism's class; and no secret (password, its base64 form, PLAIN blob, CRAM or APOP
//! digest, NTLM or SCRAM response, bearer token) reaches the audit log or the gateway's log.
//!
//! Events are matched to connections by the client's source address and port; the log is
//! polled until they appear (the writer flushes every 200 ms).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mailgate::audit::{Class, Event, Kind, Outcome};

use common::{Gateway, PASSWORD, host};
use mailgate_testkit::{self as common, extra, jwt, mech, sasl};
use mech::{Exchange, wait_events, wait_one};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The base test config with every mechanism under test, NTLM's domain, and 127.0.0.3 allowed
/// cleartext passwords without TLS; `edits` change further keys.
fn config(edits: &[(&str, &str, &str)]) -> String {
    let mut all = vec![
        (
            "auth",
            "mechanisms",
            r#"["PLAIN", "LOGIN", "CRAM-MD5", "NTLM", "SCRAM-SHA-256"]"#,
        ),
        ("auth", "ntlm_domain", r#""EXAMPLE""#),
        ("auth", "insecure_plaintext_networks", r#"["127.0.0.3/32"]"#),
    ];
    all.extend_from_slice(edits);
    extra::set_all(&common::config_text(""), &all)
}

async fn start(edits: &[(&str, &str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    Gateway::start_in(dir, &config(edits)).await
}

fn audit_log(gw: &Gateway) -> PathBuf {
    gw.state().join("audit.log")
}

/// Checks the fields every SMTP or POP3 authentication event carries.
#[allow(clippy::too_many_arguments)]
fn check_auth(
    e: &Event,
    protocol: &str,
    listener: &str,
    tls: bool,
    mechanism: &str,
    class: Class,
    result: Outcome,
    user: Option<&str>,
) {
    let shown = serde_json::to_string(e).unwrap_or_default();
    assert_eq!(e.v, mailgate::audit::event::VERSION, "{shown}");
    assert_eq!(e.kind, Kind::Auth, "{shown}");
    assert_eq!(e.protocol, protocol, "{shown}");
    assert_eq!(e.listener.as_deref(), Some(listener), "{shown}");
    assert!(
        e.session.as_deref().is_some_and(|s| !s.is_empty()),
        "{shown}"
    );
    assert!(
        e.time.ends_with('Z') && humantime::parse_rfc3339(&e.time).is_ok(),
        "{shown}"
    );
    match tls {
        true => assert!(
            e.tls.as_deref().is_some_and(|t| t.starts_with("TLSv1.")),
            "TLS missing: {shown}"
        ),
        false => assert_eq!(e.tls, None, "{shown}"),
    }
    assert_eq!(e.mechanism.as_deref(), Some(mechanism), "{shown}");
    assert_eq!(e.class, Some(class), "{shown}");
    assert_eq!(e.result, result, "{shown}");
    assert_eq!(e.user.as_deref(), user, "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_logins_are_audited_with_their_class() {
    let gw = start(&[]).await;
    let log = audit_log(&gw);
    let auth = |e: &Event| e.kind == Kind::Auth;

    // PLAIN over implicit TLS: basic.
    let (mut c, port) = mech::smtp(LOCAL, gw.addr("submissions"), true, "tls.example").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    let e = wait_one(&log, "PLAIN over TLS", LOCAL, port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submissions",
        true,
        "PLAIN",
        Class::Basic,
        Outcome::Success,
        Some("alice"),
    );
    assert_eq!(e.user_given.as_deref(), Some("alice"));
    assert_eq!(e.client_name.as_deref(), Some("tls.example"));
    assert_eq!(e.rule, None);
    c.cmd("QUIT", 221).await;

    // PLAIN without TLS from a network allowed cleartext: insecure.
    let (mut c, port) = mech::smtp(host(3), gw.addr("submission"), false, "lan").await;
    assert_eq!(mech::smtp_plain(&mut c, "Bob", PASSWORD).await.code, 235);
    let e = wait_one(&log, "PLAIN in the clear", host(3), port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submission",
        false,
        "PLAIN",
        Class::Insecure,
        Outcome::Success,
        Some("bob"),
    );
    assert_eq!(e.user_given.as_deref(), Some("Bob"), "as given");
    c.cmd("QUIT", 221).await;

    // LOGIN after STARTTLS: basic, with the TLS session.
    let (mut c, port) = mech::smtp(LOCAL, gw.addr("submission"), false, "c").await;
    c.cmd("STARTTLS", 220).await;
    let mut c = c.starttls().await;
    c.cmd("EHLO c", 250).await;
    assert_eq!(mech::smtp_login(&mut c, "alice", PASSWORD).await.code, 235);
    let e = wait_one(&log, "LOGIN after STARTTLS", LOCAL, port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submission",
        true,
        "LOGIN",
        Class::Basic,
        Outcome::Success,
        Some("alice"),
    );
    c.cmd("QUIT", 221).await;

    // CRAM-MD5 in the clear: weak.
    let (mut c, port) = mech::smtp(host(9), gw.addr("submission"), false, "c").await;
    assert_eq!(mech::smtp_cram(&mut c, "alice", PASSWORD).await.code, 235);
    let e = wait_one(&log, "CRAM-MD5", host(9), port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submission",
        false,
        "CRAM-MD5",
        Class::Weak,
        Outcome::Success,
        Some("alice"),
    );
    c.cmd("QUIT", 221).await;

    // NTLM, recorded as its variant: NTLMv2, weak.
    let (mut c, port) = mech::smtp(host(9), gw.addr("submission"), false, "c").await;
    assert_eq!(mech::smtp_ntlm(&mut c, "bob", PASSWORD).await.code, 235);
    let e = wait_one(&log, "NTLM", host(9), port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submission",
        false,
        "NTLMv2",
        Class::Weak,
        Outcome::Success,
        Some("bob"),
    );
    c.cmd("QUIT", 221).await;

    // SCRAM-SHA-256: modern even without TLS.
    let (mut c, port) = mech::smtp(host(9), gw.addr("submission"), false, "c").await;
    assert_eq!(mech::smtp_scram(&mut c, "alice", PASSWORD).await.code, 235);
    let e = wait_one(&log, "SCRAM-SHA-256", host(9), port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submission",
        false,
        "SCRAM-SHA-256",
        Class::Modern,
        Outcome::Success,
        Some("alice"),
    );
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

/// Issue 4: the bearer-token mechanisms (modern over TLS, insecure in the clear) and POP3
/// SASL logins (CRAM-MD5 weak, NTLM recorded as NTLMv2, weak) get their class.
#[tokio::test(flavor = "multi_thread")]
async fn oauth_and_pop3_sasl_logins_are_audited_with_their_class() {
    const HS256_KEY: &str = "hs256-shared-secret-for-the-class-test-0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    std::fs::write(dir.path().join("hs256.key"), HS256_KEY).expect("key file");
    let text = extra::set_all(
        &common::config_text(
            "[auth.oauth]\nhs256_secret_file = \"hs256.key\"\nalgorithms = [\"HS256\"]\n\
             audience = [\"mailgate\"]\n",
        ),
        &[
            (
                "auth",
                "mechanisms",
                r#"["PLAIN", "CRAM-MD5", "NTLM", "XOAUTH2", "OAUTHBEARER"]"#,
            ),
            ("auth", "ntlm_domain", r#""EXAMPLE""#),
            ("auth", "insecure_plaintext_networks", r#"["127.0.0.3/32"]"#),
        ],
    );
    let gw = Gateway::start_in(dir, &text).await;
    let log = audit_log(&gw);
    let auth = |e: &Event| e.kind == Kind::Auth;
    let token = hs256_token(HS256_KEY.as_bytes(), "alice");

    // XOAUTH2 over TLS: modern; in the clear (from a network allowed it): insecure.
    for (source, listener, tls, class) in [
        (LOCAL, "submissions", true, Class::Modern),
        (host(3), "submission", false, Class::Insecure),
    ] {
        let (mut c, port) = mech::smtp(source, gw.addr(listener), tls, "c").await;
        let x = mech::smtp_xoauth2(&mut c, "alice", &token).await;
        assert_eq!(x.code, 235, "{:?}", x.lines);
        let e = wait_one(&log, "XOAUTH2", source, port, auth).await;
        check_auth(
            &e,
            "smtp",
            listener,
            tls,
            "XOAUTH2",
            class,
            Outcome::Success,
            Some("alice"),
        );
        c.cmd("QUIT", 221).await;
    }

    // OAUTHBEARER over TLS: modern.
    let (mut c, port) = mech::smtp(LOCAL, gw.addr("submissions"), true, "c").await;
    let ir = sasl::oauthbearer_b64("alice", None, &token);
    c.cmd(&format!("AUTH OAUTHBEARER {ir}"), 235).await;
    let e = wait_one(&log, "OAUTHBEARER", LOCAL, port, auth).await;
    check_auth(
        &e,
        "smtp",
        "submissions",
        true,
        "OAUTHBEARER",
        Class::Modern,
        Outcome::Success,
        Some("alice"),
    );
    c.cmd("QUIT", 221).await;

    // POP3 AUTH CRAM-MD5 in the clear: weak.
    let (mut p, port, _) = mech::pop3(host(8), gw.addr("pop3"), false).await;
    p.send("AUTH CRAM-MD5").await;
    let challenge = p.line().await.expect("challenge");
    let challenge = B64
        .decode(challenge.strip_prefix("+ ").expect("+ challenge").trim())
        .expect("base64");
    p.send(&B64.encode(sasl::cram_md5("alice", PASSWORD.as_bytes(), &challenge)))
        .await;
    let ok = p.line().await.expect("reply");
    assert!(ok.starts_with("+OK"), "{ok}");
    let e = wait_one(&log, "POP3 CRAM-MD5", host(8), port, auth).await;
    check_auth(
        &e,
        "pop3",
        "pop3",
        false,
        "CRAM-MD5",
        Class::Weak,
        Outcome::Success,
        Some("alice"),
    );
    p.pop_cmd("QUIT", true).await;

    // POP3 AUTH NTLM over TLS: recorded as its variant, NTLMv2, weak.
    let (mut p, port, _) = mech::pop3(host(8), gw.addr("pop3s"), true).await;
    p.send(&format!("AUTH NTLM {}", sasl::ntlm_negotiate_b64()))
        .await;
    let challenge = p.line().await.expect("challenge");
    let creds = sasl::ntlm_credentials("bob", "", PASSWORD);
    let blob =
        sasl::ntlm_authenticate_b64(challenge.strip_prefix("+ ").expect("+ challenge"), &creds)
            .expect("NTLM CHALLENGE");
    p.send(&blob).await;
    let ok = p.line().await.expect("reply");
    assert!(ok.starts_with("+OK"), "{ok}");
    let e = wait_one(&log, "POP3 NTLM", host(8), port, auth).await;
    check_auth(
        &e,
        "pop3",
        "pop3s",
        true,
        "NTLMv2",
        Class::Weak,
        Outcome::Success,
        Some("bob"),
    );
    p.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_carry_a_reason_and_the_name_given() {
    let gw = start(&[("auth", "max_failures", "5")]).await;
    let log = audit_log(&gw);
    let (mut c, port) = mech::smtp(LOCAL, gw.addr("submissions"), true, "c").await;
    assert_eq!(mech::smtp_plain(&mut c, "Alice", "nope").await.code, 535);
    assert_eq!(mech::smtp_cram(&mut c, "alice", "nope").await.code, 535);
    assert_eq!(mech::smtp_plain(&mut c, "nobody", "nope").await.code, 535);
    let failed = wait_events(&log, "three failures", 3, |e| {
        e.client_port == Some(port) && e.result == Outcome::Failure
    })
    .await;
    // A name that exists is resolved (so "Alice" failing and "alice" succeeding group
    // together in the report); one that does not stays as given only.
    for (e, mechanism, class, given, user) in [
        (&failed[0], "PLAIN", Class::Basic, "Alice", Some("alice")),
        (&failed[1], "CRAM-MD5", Class::Weak, "alice", Some("alice")),
        (&failed[2], "PLAIN", Class::Basic, "nobody", None),
    ] {
        check_auth(
            e,
            "smtp",
            "submissions",
            true,
            mechanism,
            class,
            Outcome::Failure,
            user,
        );
        assert_eq!(e.user_given.as_deref(), Some(given), "{e:?}");
        let reason = e.reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with(mechanism), "{e:?}");
    }
    // The session goes on and a good login is recorded after the failures.
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    wait_one(&log, "success after failures", LOCAL, port, |e| {
        e.result == Outcome::Success
    })
    .await;
    c.cmd("QUIT", 221).await;

    // POP3: a wrong PASS for a name typed in capitals.
    let (mut p, port, _) = mech::pop3(LOCAL, gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "ALICE", "nope").await.code, 0);
    let e = wait_one(&log, "POP3 failure", LOCAL, port, |_| true).await;
    check_auth(
        &e,
        "pop3",
        "pop3s",
        true,
        "USER",
        Class::Basic,
        Outcome::Failure,
        Some("alice"),
    );
    assert_eq!(e.user_given.as_deref(), Some("ALICE"));
    assert!(e.reason.is_some(), "{e:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_after_max_failures() {
    let gw = start(&[("auth", "max_failures", "2")]).await;
    let log = audit_log(&gw);
    let (mut c, port) = mech::smtp(host(4), gw.addr("submissions"), true, "c").await;
    assert_eq!(mech::smtp_plain(&mut c, "bob", "guess1").await.code, 535);
    assert_eq!(mech::smtp_plain(&mut c, "bob", "guess2").await.code, 535);
    c.expect(421).await;
    assert!(c.closed().await, "session left open after the lockout");
    let e = wait_one(&log, "SMTP lockout", host(4), port, |e| {
        e.kind == Kind::Lockout
    })
    .await;
    assert_eq!(
        (e.protocol.as_str(), e.listener.as_deref(), e.result),
        ("smtp", Some("submissions"), Outcome::Failure)
    );
    assert_eq!(e.user_given.as_deref(), Some("bob"));
    assert!(e.reason.is_some() && e.session.is_some(), "{e:?}");
    let fails = wait_events(&log, "the failures before it", 2, |x| {
        x.client_port == Some(port) && x.kind == Kind::Auth && x.result == Outcome::Failure
    })
    .await;
    assert_eq!(fails.len(), 2);
    assert_eq!(fails[0].session, e.session, "one session");

    let (mut p, port, _) = mech::pop3(host(4), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "alice", "guess1").await.code, 0);
    assert_eq!(mech::pop_user_pass(&mut p, "alice", "guess2").await.code, 0);
    assert!(p.closed().await, "POP3 session left open after the lockout");
    let e = wait_one(&log, "POP3 lockout", host(4), port, |e| {
        e.kind == Kind::Lockout
    })
    .await;
    assert_eq!(
        (e.protocol.as_str(), e.listener.as_deref()),
        ("pop3", Some("pop3s"))
    );
    assert_eq!(e.user_given.as_deref(), Some("alice"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_logins_and_the_allowlist_are_audited() {
    let gw = start(&[]).await;
    let log = audit_log(&gw);

    // USER/PASS after STLS: basic, with TLS.
    let (mut p, port, _) = mech::pop3(host(6), gw.addr("pop3"), false).await;
    p.pop_cmd("STLS", true).await;
    let mut p = p.starttls().await;
    assert_eq!(mech::pop_user_pass(&mut p, "alice", PASSWORD).await.code, 1);
    let e = wait_one(&log, "USER/PASS", host(6), port, |e| e.kind == Kind::Auth).await;
    check_auth(
        &e,
        "pop3",
        "pop3",
        true,
        "USER",
        Class::Basic,
        Outcome::Success,
        Some("alice"),
    );
    assert_eq!(e.user_given.as_deref(), Some("alice"));
    // The login opened the relay for this address: an allowlist event.
    let a = wait_one(&log, "allowlist entry", host(6), port, |e| {
        e.kind == Kind::Allowlist
    })
    .await;
    assert_eq!(a.protocol, "pop3");
    assert_eq!(a.mechanism.as_deref(), Some("pop-before-smtp"));
    assert_eq!(a.class, Some(Class::Insecure));
    assert_eq!(a.result, Outcome::Success);
    assert_eq!(a.user.as_deref(), Some("alice"));
    assert_eq!(a.reason.as_deref(), Some("added"));
    assert_eq!(a.session, e.session);
    p.pop_cmd("QUIT", true).await;

    // APOP in the clear: weak, no TLS; the second login from the address refreshes the entry.
    let (mut p, port, greeting) = mech::pop3(host(6), gw.addr("pop3"), false).await;
    let x = mech::pop_apop(&mut p, &greeting, "alice", PASSWORD).await;
    assert_eq!(x.code, 1, "{:?}", x.lines);
    let e = wait_one(&log, "APOP", host(6), port, |e| e.kind == Kind::Auth).await;
    check_auth(
        &e,
        "pop3",
        "pop3",
        false,
        "APOP",
        Class::Weak,
        Outcome::Success,
        Some("alice"),
    );
    let a = wait_one(&log, "allowlist refresh", host(6), port, |e| {
        e.kind == Kind::Allowlist
    })
    .await;
    assert_eq!(a.reason.as_deref(), Some("refreshed"));
    p.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

/// Entries added over the control channel (as the CLI sends them), removed over the HTTP API,
/// and expired (swept by the housekeeping's call, not waiting for its tick) are audited too.
#[tokio::test(flavor = "multi_thread")]
async fn control_http_and_expiry_changes_to_the_allowlist_are_audited() {
    use mailgate::clock::{Clock, ManualClock, SystemClock};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    std::fs::write(dir.path().join("admin-token"), "tok-77e1\n").expect("token file");
    let admin = ("listeners", "admin", r#""127.0.0.1:0""#);
    let text = config(&[admin, ("admin", "token_file", r#""admin-token""#)]);
    let clock = std::sync::Arc::new(ManualClock::new(SystemClock.now()));
    let gw = Gateway::start_with_clock(dir, &text, clock.clone()).await;
    let key_file = gw.state().join(mailgate::control::KEY_FILE);
    let key = mailgate::control::Key::read(&key_file).expect("control key");
    for line in ["ADD 127.0.0.21 3600 printer", "ADD 127.0.0.22 60 scanner"] {
        let control = gw.control.expect("control listener");
        let answer = mailgate::control::request(control, &key, line).await;
        let answer = answer.expect("control request");
        assert!(
            mailgate::control::parse_list(&answer).is_ok_and(|e| e.len() == 1),
            "{line}: {answer}"
        );
    }
    let mut http = common::client::Client::connect(gw.admin()).await;
    let req = "DELETE /api/allowlist/127.0.0.21 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
               Authorization: Bearer tok-77e1\r\nConnection: close\r\n\r\n";
    http.send_raw(req.as_bytes()).await;
    let status = http.line().await.unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 204"), "{status}");
    clock.advance(Duration::from_secs(61));
    assert_eq!(gw.shared.allowlist.expire(clock.now()).await.ok(), Some(1));
    let allowlist = |e: &Event| e.kind == Kind::Allowlist;
    let events = wait_events(&audit_log(&gw), "allowlist changes", 4, allowlist).await;
    let shown = |e: &Event| {
        let s = |f: &Option<String>| f.clone().unwrap_or_default();
        let (l, m, r, u) = (s(&e.listener), s(&e.mechanism), s(&e.reason), s(&e.user));
        let (p, o, c) = (&e.protocol, e.result, e.class);
        let ip = e.client_ip.map(|i| i.to_string()).unwrap_or_default();
        format!("{p} {l} {m} {r} {u} {ip} {o:?} {c:?}")
    };
    let want = [
        "control control admin added printer 127.0.0.21 Success Some(Insecure)",
        "control control admin added scanner 127.0.0.22 Success Some(Insecure)",
        "control admin admin removed printer 127.0.0.21 Success Some(Insecure)",
        "control  expiry expired scanner 127.0.0.22 Success Some(Insecure)",
    ];
    assert_eq!(events.iter().map(shown).collect::<Vec<_>>(), want);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn address_authorized_relays_and_accepted_mail_name_the_client_software() {
    let gw = start(&[("relay", "trusted_networks", r#"["127.0.0.5/32"]"#)]).await;
    let log = audit_log(&gw);

    // POP-before-SMTP: log in over POP3 from 127.0.0.7, then relay from there.
    let (mut p, _, _) = mech::pop3(host(7), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "alice", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    let (mut c, port) = mech::smtp(host(7), gw.addr("smtp"), false, "old-pc").await;
    let id = mech::send_mail(
        &mut c,
        "alice@example.test",
        "friend@remote.example",
        "X-Mailer: Microsoft Outlook Express 6.00.2900.5512\r\n",
    )
    .await;
    c.cmd("QUIT", 221).await;
    let e = wait_one(&log, "POP-before-SMTP relay", host(7), port, |e| {
        e.kind == Kind::Relay
    })
    .await;
    assert_eq!(e.protocol, "smtp");
    assert_eq!(e.listener.as_deref(), Some("smtp"));
    assert_eq!(e.mechanism.as_deref(), Some("pop-before-smtp"));
    assert_eq!(e.class, Some(Class::Insecure));
    assert_eq!(e.result, Outcome::Success);
    assert_eq!(e.user.as_deref(), Some("alice"));
    assert_eq!(e.client_name.as_deref(), Some("old-pc"));
    assert_eq!(
        e.client_software.as_deref(),
        Some("Microsoft Outlook Express 6.00.2900.5512")
    );
    assert_eq!(e.queue_id.as_deref(), Some(id.as_str()));
    assert_eq!(e.recipients, Some(1));
    assert_eq!(e.tls, None);

    // A trusted network: no user, User-Agent preferred over X-Mailer.
    let (mut c, port) = mech::smtp(host(5), gw.addr("smtp"), false, "printer").await;
    let id = mech::send_mail(
        &mut c,
        "printer@example.test",
        "someone@remote.example",
        "X-Mailer: ignored\r\nUser-Agent: ScanToMail/2.1\r\n",
    )
    .await;
    c.cmd("QUIT", 221).await;
    let e = wait_one(&log, "trusted-network relay", host(5), port, |e| {
        e.kind == Kind::Relay
    })
    .await;
    assert_eq!(e.mechanism.as_deref(), Some("trusted-network"));
    assert_eq!(e.class, Some(Class::Insecure));
    assert_eq!(e.user, None);
    assert_eq!(e.client_software.as_deref(), Some("ScanToMail/2.1"));
    assert_eq!(e.queue_id.as_deref(), Some(id.as_str()));

    // Mail submitted after SASL: an accept event with the mechanism, user and software.
    let (mut c, port) = mech::smtp(LOCAL, gw.addr("submissions"), true, "laptop").await;
    assert_eq!(mech::smtp_plain(&mut c, "bob", PASSWORD).await.code, 235);
    let id = mech::send_mail(
        &mut c,
        "bob@example.test",
        "alice@example.test",
        "User-Agent: Mozilla Thunderbird 128.0\r\n",
    )
    .await;
    c.cmd("QUIT", 221).await;
    let e = wait_one(&log, "accept", LOCAL, port, |e| e.kind == Kind::Accept).await;
    assert_eq!(e.listener.as_deref(), Some("submissions"));
    assert_eq!(e.mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(e.class, Some(Class::Basic));
    assert_eq!(e.user.as_deref(), Some("bob"));
    assert_eq!(e.result, Outcome::Success);
    assert_eq!(
        e.client_software.as_deref(),
        Some("Mozilla Thunderbird 128.0")
    );
    assert_eq!(e.queue_id.as_deref(), Some(id.as_str()));
    assert!(e.tls.is_some());

    // Plain inbound mail to a local user is not an authentication fact: no event.
    let (mut c, port) = mech::smtp(host(8), gw.addr("smtp"), false, "mx.remote").await;
    mech::send_mail(&mut c, "x@remote.example", "bob@example.test", "").await;
    c.cmd("QUIT", 221).await;
    gw.wait_for_mail("bob", 1).await;
    // The accept event of the message before was flushed; this one has none.
    wait_events(&log, "earlier events", 1, |e| e.kind == Kind::Accept).await;
    assert!(
        mech::read_events(&log)
            .iter()
            .all(|e| e.client_port != Some(port)),
        "inbound mail was audited"
    );
    gw.stop().await;
}

/// Everything a client sent that carries a credential, plus the passwords and their base64.
fn secrets(exchanges: &[Exchange], passwords: &[&str]) -> Vec<String> {
    use base64::Engine as _;
    let mut out: Vec<String> = exchanges.iter().flat_map(|x| x.sent.clone()).collect();
    for p in passwords {
        out.push(p.to_string());
        out.push(base64::engine::general_purpose::STANDARD.encode(p));
    }
    // Lines shorter than this would match by chance (and none of ours are).
    out.retain(|s| s.len() >= 8);
    out.sort();
    out.dedup();
    out
}

fn hs256_token(secret: &[u8], user: &str) -> String {
    let now =
        mailgate::clock::unix_secs(mailgate::clock::Clock::now(&mailgate::clock::SystemClock));
    let claims = serde_json::json!({
        "sub": user, "aud": "mailgate", "iat": now, "exp": now + 600,
    });
    jwt::Minter::hs256(secret).mint(&claims)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_audit_log_or_the_gateway_log() {
    const GOOD: &str = "Ex7raordinary-Passw0rd";
    const WRONG: &str = "Wr0ng-Guess-Passw0rd";
    const HS256_KEY: &str = "hs256-shared-secret-for-the-audit-test-0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("users"),
        format!("alice:{{PLAIN}}{GOOD}\nbob:{{PLAIN}}{GOOD}\npostmaster:{{PLAIN}}{GOOD}\n"),
    )
    .expect("users file");
    std::fs::write(dir.path().join("hs256.key"), HS256_KEY).expect("key file");
    let ports = mech::Ports::free();
    let text = extra::set_all(
        &ports.apply(&common::config_text(
            "[auth.oauth]\nhs256_secret_file = \"hs256.key\"\nalgorithms = [\"HS256\"]\n\
             audience = [\"mailgate\"]\n",
        )),
        &[
            (
                "auth",
                "mechanisms",
                r#"["PLAIN", "LOGIN", "CRAM-MD5", "NTLM", "SCRAM-SHA-256", "XOAUTH2"]"#,
            ),
            ("auth", "ntlm_domain", r#""EXAMPLE""#),
            ("auth", "max_failures", "20"),
        ],
    );
    let config = dir.path().join("mailgate.toml");
    std::fs::write(&config, &text).expect("config");
    let mut gw = extra::Binary::start_with_log(crate::MAILGATE, &config, "debug");
    for role in ["smtp", "submission", "submissions", "pop3", "pop3s"] {
        extra::wait_listening(ports.addr(role)).await;
    }
    let log = dir.path().join("state/audit.log");

    let mut sent = Vec::new();
    let good_token = hs256_token(HS256_KEY.as_bytes(), "alice");
    let bad_token = hs256_token(b"another-secret-another-secret-0123456789", "alice");
    let (mut c, _) = mech::smtp(LOCAL, ports.addr("submissions"), true, "c").await;
    for (password, want) in [(WRONG, 535), (GOOD, 235)] {
        let x = mech::smtp_plain(&mut c, "alice", password).await;
        assert_eq!(x.code, want, "PLAIN {:?}", x.lines);
        sent.push(x);
    }
    let runs: [(&str, u16); 2] = [(WRONG, 535), (GOOD, 235)];
    for (password, want) in runs {
        let (mut c, _) = mech::smtp(LOCAL, ports.addr("submissions"), true, "c").await;
        let x = mech::smtp_login(&mut c, "alice", password).await;
        assert_eq!(x.code, want, "LOGIN {:?}", x.lines);
        sent.push(x);
        let (mut c, _) = mech::smtp(LOCAL, ports.addr("submission"), false, "c").await;
        let x = mech::smtp_cram(&mut c, "alice", password).await;
        assert_eq!(x.code, want, "CRAM-MD5 {:?}", x.lines);
        sent.push(x);
        let (mut c, _) = mech::smtp(LOCAL, ports.addr("submission"), false, "c").await;
        let x = mech::smtp_ntlm(&mut c, "alice", password).await;
        assert_eq!(x.code, want, "NTLM {:?}", x.lines);
        sent.push(x);
        let (mut c, _) = mech::smtp(LOCAL, ports.addr("submission"), false, "c").await;
        let x = mech::smtp_scram(&mut c, "alice", password).await;
        assert_eq!(x.code, want, "SCRAM {:?}", x.lines);
        sent.push(x);
        let (mut p, _, _) = mech::pop3(LOCAL, ports.addr("pop3s"), true).await;
        let x = mech::pop_user_pass(&mut p, "alice", password).await;
        assert_eq!(x.code, u16::from(want == 235), "USER/PASS {:?}", x.lines);
        sent.push(x);
        if want == 235 {
            p.pop_cmd("QUIT", true).await;
        }
        let (mut p, _, greeting) = mech::pop3(LOCAL, ports.addr("pop3"), false).await;
        let x = mech::pop_apop(&mut p, &greeting, "bob", password).await;
        assert_eq!(x.code, u16::from(want == 235), "APOP {:?}", x.lines);
        sent.push(x);
        if want == 235 {
            p.pop_cmd("QUIT", true).await;
        }
        let (mut p, _, _) = mech::pop3(LOCAL, ports.addr("pop3s"), true).await;
        let x = mech::pop_plain(&mut p, "bob", password).await;
        assert_eq!(x.code, u16::from(want == 235), "POP3 PLAIN {:?}", x.lines);
        sent.push(x);
        if want == 235 {
            p.pop_cmd("QUIT", true).await;
        }
    }
    for (token, want) in [(&bad_token, 535), (&good_token, 235)] {
        let (mut c, _) = mech::smtp(LOCAL, ports.addr("submissions"), true, "c").await;
        let x = mech::smtp_xoauth2(&mut c, "alice", token).await;
        assert_eq!(x.code, want, "XOAUTH2 {:?}", x.lines);
        sent.push(x);
    }
    // Every login above was audited (failures included) before looking for secrets in it.
    let mechanisms = [
        "PLAIN",
        "LOGIN",
        "CRAM-MD5",
        "NTLMv2",
        "SCRAM-SHA-256",
        "USER",
        "APOP",
        "XOAUTH2",
    ];
    for m in mechanisms {
        // A failed NTLM exchange is recorded as the variant the client sent (NTLMv2 here).
        for result in [Outcome::Success, Outcome::Failure] {
            wait_events(&log, &format!("{m} {result:?}"), 1, |e| {
                e.kind == Kind::Auth && e.mechanism.as_deref() == Some(m) && e.result == result
            })
            .await;
        }
    }
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(15)).await.is_some(),
        "gateway did not exit"
    );
    let audit = std::fs::read_to_string(&log).expect("audit log");
    let gateway_log = gw.log_text();
    assert!(
        gateway_log.contains("authenticated") && gateway_log.contains("failed"),
        "the gateway log has no login lines:\n{gateway_log}"
    );
    let mut needles = secrets(&sent, &[GOOD, WRONG, HS256_KEY]);
    needles.push(good_token.clone());
    needles.push(bad_token.clone());
    // A JWT's signature alone is a secret too.
    for t in [&good_token, &bad_token] {
        needles.push(t.rsplit('.').next().unwrap_or_default().to_string());
    }
    for needle in &needles {
        assert!(
            !audit.contains(needle.as_str()),
            "secret {needle:?} in the audit log:\n{audit}"
        );
        assert!(
            !gateway_log.contains(needle.as_str()),
            "secret {needle:?} in the gateway log:\n{gateway_log}"
        );
    }
}
