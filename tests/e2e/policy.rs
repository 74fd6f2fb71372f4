//! Migration policy end to end: `[[policy]]` rules decide SMTP AUTH, POP3 logins and
//! POP-before-SMTP relays in the real gateway. Each action (deny, warn, transition, brownout,
//! dry run) gets its reply code, audit outcome and side effects (warning header, notices, no
//! allowlist entry); each criterion (mechanism, class, user, network, listener, date window)
//! narrows a rule; the first matching rule wins. Notices, the digest, SIGHUP reload and
//! `mailgate check-config` are `policy_ops.rs`, which shares the helpers here.

use std::net::IpAddr;
use std::path::PathBuf;

use mailgate::audit::{Kind, Outcome};

use common::client::Client;
use common::{Gateway, PASSWORD, host};
use mailgate_testkit::{self as common, extra, mech, smarthost};
use mech::wait_one;

pub(crate) const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The base config with `policy` (TOML `[[policy]]` tables) and any key `edits`.
pub(crate) fn config(policy: &str, edits: &[(&str, &str, &str)]) -> String {
    extra::set_all(&common::config_text(policy), edits)
}

pub(crate) async fn start(policy: &str) -> Gateway {
    start_with(policy, &[]).await
}

pub(crate) async fn start_with(policy: &str, edits: &[(&str, &str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    Gateway::start_in(dir, &config(policy, edits)).await
}

pub(crate) fn audit_log(gw: &Gateway) -> PathBuf {
    gw.state().join("audit.log")
}

/// The one audit event of kind `kind` from the client at `(ip, port)`.
pub(crate) async fn event(
    gw: &Gateway,
    ip: IpAddr,
    port: u16,
    kind: Kind,
) -> mailgate::audit::Event {
    wait_one(&audit_log(gw), &format!("{kind:?}"), ip, port, |e| {
        e.kind == kind
    })
    .await
}

/// AUTH PLAIN over implicit TLS (submissions) from `source`; returns the reply.
pub(crate) async fn plain_tls(
    gw: &Gateway,
    source: IpAddr,
    user: &str,
) -> (Client, u16, mech::Exchange) {
    let (mut c, port) = mech::smtp(source, gw.addr("submissions"), true, "c").await;
    let x = mech::smtp_plain(&mut c, user, PASSWORD).await;
    (c, port, x)
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_on_smtp_auth_answers_534_with_the_message_and_url() {
    let gw = start(
        r#"
[[policy]]
name = "no-plain"
mechanisms = ["PLAIN"]
action = "deny"
message = "PLAIN sign-in is retired"
url = "https://example.test/migrate"
"#,
    )
    .await;
    let (mut c, port, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 534, "{:?}", x.lines);
    let line = &x.lines[0];
    assert!(line.starts_with("534 5.7.9 "), "{line}");
    assert!(
        line.contains("PLAIN sign-in is retired") && line.contains("https://example.test/migrate"),
        "{line}"
    );
    // Not authenticated: submission still wants AUTH.
    c.cmd("MAIL FROM:<alice@example.test>", 530).await;
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(e.result, Outcome::Denied);
    assert_eq!(e.rule.as_deref(), Some("no-plain"));
    assert_eq!(e.user.as_deref(), Some("alice"));
    assert_eq!(e.mechanism.as_deref(), Some("PLAIN"));
    assert!(
        e.reason
            .as_deref()
            .is_some_and(|r| r.contains("PLAIN sign-in is retired")),
        "{e:?}"
    );
    // Another mechanism in the same session is not covered.
    assert_eq!(mech::smtp_login(&mut c, "alice", PASSWORD).await.code, 235);
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_on_pop3_login_gives_auth_error_and_no_allowlist_entry() {
    let gw = start(
        r#"
[[policy]]
name = "no-user-pass"
mechanisms = ["USER"]
action = "deny"
message = "Use a modern sign-in"
"#,
    )
    .await;
    let (mut p, port, _) = mech::pop3(host(11), gw.addr("pop3s"), true).await;
    let x = mech::pop_user_pass(&mut p, "alice", PASSWORD).await;
    assert_eq!(x.code, 0, "{:?}", x.lines);
    assert!(
        x.lines[0].starts_with("-ERR [AUTH] ") && x.lines[0].contains("Use a modern sign-in"),
        "{:?}",
        x.lines
    );
    // Refused by policy: no maildrop, back in AUTHORIZATION.
    p.pop_cmd("STAT", false).await;
    let e = event(&gw, host(11), port, Kind::Auth).await;
    assert_eq!(
        (e.result, e.rule.as_deref()),
        (Outcome::Denied, Some("no-user-pass"))
    );
    p.pop_cmd("QUIT", true).await;
    // No relay from that address: the login made no allowlist entry.
    let (mut c, _) = mech::smtp(host(11), gw.addr("smtp"), false, "c").await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<friend@remote.example>", 554).await;
    c.cmd("QUIT", 221).await;
    assert!(
        mech::read_events(&audit_log(&gw))
            .iter()
            .all(|e| e.kind != Kind::Allowlist),
        "a refused login made an allowlist entry"
    );
    // AUTH PLAIN is another mechanism: allowed, and it opens the relay.
    let (mut p, port, _) = mech::pop3(host(11), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_plain(&mut p, "alice", PASSWORD).await.code, 1);
    event(&gw, host(11), port, Kind::Allowlist).await;
    p.pop_cmd("QUIT", true).await;
    let (mut c, _) = mech::smtp(host(11), gw.addr("smtp"), false, "c").await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<friend@remote.example>", 250).await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_on_pop_before_smtp_refuses_the_relay_at_rcpt() {
    let gw = start(
        r#"
[[policy]]
name = "no-pop-before-smtp"
mechanisms = ["pop-before-smtp"]
action = "deny"
message = "Relaying after a POP3 login has ended; use SMTP AUTH"
"#,
    )
    .await;
    let (mut p, _, _) = mech::pop3(host(12), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "alice", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    let (mut c, port) = mech::smtp(host(12), gw.addr("smtp"), false, "c").await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    let r = c.cmd("RCPT TO:<friend@remote.example>", 550).await;
    assert!(
        r[0].starts_with("550 5.7.1 ") && r[0].contains("Relaying after a POP3 login has ended"),
        "{r:?}"
    );
    // Local delivery needs no relay authorization.
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("QUIT", 221).await;
    let e = event(&gw, host(12), port, Kind::Relay).await;
    assert_eq!(e.result, Outcome::Denied);
    assert_eq!(e.rule.as_deref(), Some("no-pop-before-smtp"));
    assert_eq!(e.mechanism.as_deref(), Some("pop-before-smtp"));
    assert_eq!(e.user.as_deref(), Some("alice"));
    gw.stop().await;
}

/// Issue 4: a trusted-network relay that a rule denies is refused at RCPT with 550 5.7.1 and
/// the message, audited as denied without a user; local delivery still works.
#[tokio::test(flavor = "multi_thread")]
async fn deny_on_trusted_network_refuses_the_relay_at_rcpt() {
    let gw = start_with(
        r#"
[[policy]]
name = "no-trusted-relay"
mechanisms = ["trusted-network"]
action = "deny"
message = "Relaying by address has ended; use SMTP AUTH"
"#,
        &[("relay", "trusted_networks", r#"["127.0.0.17/32"]"#)],
    )
    .await;
    let (mut c, port) = mech::smtp(host(17), gw.addr("smtp"), false, "printer").await;
    c.cmd("MAIL FROM:<scanner@example.test>", 250).await;
    let r = c.cmd("RCPT TO:<friend@remote.example>", 550).await;
    assert!(
        r[0].starts_with("550 5.7.1 ") && r[0].contains("Relaying by address has ended"),
        "{r:?}"
    );
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("QUIT", 221).await;
    let e = event(&gw, host(17), port, Kind::Relay).await;
    assert_eq!(
        (e.result, e.rule.as_deref(), e.mechanism.as_deref()),
        (
            Outcome::Denied,
            Some("no-trusted-relay"),
            Some("trusted-network")
        )
    );
    assert_eq!(e.user, None);
    // An address outside the trusted network is not a trusted-network relay at all.
    let (mut c, _) = mech::smtp(host(18), gw.addr("smtp"), false, "other").await;
    c.cmd("MAIL FROM:<x@remote.example>", 250).await;
    let r = c.cmd("RCPT TO:<friend@remote.example>", 554).await;
    assert!(r[0].starts_with("554 5.7.1"), "{r:?}");
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warn_lets_the_client_through_and_marks_its_mail() {
    let gw = start(
        r#"
[[policy]]
name = "warn-plain"
mechanisms = ["PLAIN"]
action = "warn"
header = "X-Auth-Warning: PLAIN will be refused from 2027-01-01"
"#,
    )
    .await;
    let (mut c, port, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 235, "{:?}", x.lines);
    mech::send_mail(&mut c, "alice@example.test", "bob@example.test", "").await;
    c.cmd("QUIT", 221).await;
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(
        (e.result, e.rule.as_deref()),
        (Outcome::Warned, Some("warn-plain"))
    );
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(
        mail[0].contains("\r\nX-Auth-Warning: PLAIN will be refused from 2027-01-01\r\n"),
        "{}",
        mail[0]
    );
    // A mechanism the rule does not name: no header.
    let (mut c, _) = mech::smtp(LOCAL, gw.addr("submissions"), true, "c").await;
    assert_eq!(mech::smtp_login(&mut c, "alice", PASSWORD).await.code, 235);
    mech::send_mail(&mut c, "alice@example.test", "bob@example.test", "").await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("bob", 2).await;
    assert_eq!(
        mail.iter().filter(|m| m.contains("X-Auth-Warning")).count(),
        1,
        "{mail:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warn_headers_travel_with_relayed_mail() {
    let smarthost = smarthost::Smarthost::start(smarthost::Options::default()).await;
    let address = format!("\"{}\"", smarthost.addr());
    let gw = start_with(
        r#"
[[policy]]
name = "warn-plain"
mechanisms = ["PLAIN"]
action = "warn"
header = "X-Auth-Warning: PLAIN is going away"

[[policy]]
name = "warn-pop-before-smtp"
mechanisms = ["pop-before-smtp"]
action = "warn"
header = "X-Auth-Warning: POP-before-SMTP is going away"
"#,
        &[
            ("delivery.upstream", "address", address.as_str()),
            ("delivery.upstream", "tls", r#""none""#),
            ("delivery.upstream", "retry", r#"["200ms", "200ms"]"#),
        ],
    )
    .await;
    // SMTP AUTH PLAIN, relayed to a remote recipient.
    let (mut c, _, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 235, "{:?}", x.lines);
    mech::send_mail(&mut c, "alice@example.test", "friend@remote.example", "").await;
    c.cmd("QUIT", 221).await;
    let got = smarthost.wait_for(1, mech::DEADLINE).await;
    let first = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(
        first.contains("\r\nX-Auth-Warning: PLAIN is going away\r\n"),
        "{first}"
    );
    // POP-before-SMTP: the rule decides at the first relayed recipient.
    let (mut p, _, _) = mech::pop3(host(13), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "bob", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    let (mut c, port) = mech::smtp(host(13), gw.addr("smtp"), false, "old-pc").await;
    let id = mech::send_mail(&mut c, "bob@example.test", "other@remote.example", "").await;
    c.cmd("QUIT", 221).await;
    let got = smarthost.wait_for(2, mech::DEADLINE).await;
    let second = String::from_utf8_lossy(&got[1].data).into_owned();
    assert!(
        second.contains("\r\nX-Auth-Warning: POP-before-SMTP is going away\r\n"),
        "{second}"
    );
    assert!(!second.contains("PLAIN is going away"), "{second}");
    let e = event(&gw, host(13), port, Kind::Relay).await;
    assert_eq!(
        (e.result, e.rule.as_deref(), e.queue_id.as_deref()),
        (
            Outcome::Warned,
            Some("warn-pop-before-smtp"),
            Some(id.as_str())
        )
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transition_answers_432() {
    let gw = start(
        r#"
[[policy]]
name = "new-password"
users = ["bob"]
action = "transition"
"#,
    )
    .await;
    let (_c, port, x) = plain_tls(&gw, LOCAL, "bob").await;
    assert_eq!(x.code, 432, "{:?}", x.lines);
    assert!(x.lines[0].starts_with("432 4.7.12 "), "{:?}", x.lines);
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(
        (e.result, e.rule.as_deref()),
        (Outcome::Denied, Some("new-password"))
    );
    let (_c, _, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 235);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn brownout_refuses_its_share() {
    let gw = start(
        r#"
[[policy]]
name = "brownout-all"
users = ["alice"]
action = "brownout"
share = 1.0
message = "Legacy sign-in is browning out"

[[policy]]
name = "brownout-none"
users = ["bob"]
action = "brownout"
share = 0.0
"#,
    )
    .await;
    for _ in 0..3 {
        let (_c, port, x) = plain_tls(&gw, LOCAL, "alice").await;
        assert_eq!(x.code, 454, "{:?}", x.lines);
        assert!(
            x.lines[0].starts_with("454 4.7.0 ") && x.lines[0].contains("browning out"),
            "{:?}",
            x.lines
        );
        let e = event(&gw, LOCAL, port, Kind::Auth).await;
        assert_eq!(
            (e.result, e.rule.as_deref()),
            (Outcome::Brownout, Some("brownout-all"))
        );
        let (_c, port, x) = plain_tls(&gw, LOCAL, "bob").await;
        assert_eq!(x.code, 235, "{:?}", x.lines);
        let e = event(&gw, LOCAL, port, Kind::Auth).await;
        assert_eq!(
            (e.result, e.rule.as_deref()),
            (Outcome::Warned, Some("brownout-none"))
        );
    }
    // POP3: a temporary refusal.
    let (mut p, _, _) = mech::pop3(LOCAL, gw.addr("pop3s"), true).await;
    let x = mech::pop_user_pass(&mut p, "alice", PASSWORD).await;
    assert!(x.lines[0].starts_with("-ERR [SYS/TEMP] "), "{:?}", x.lines);
    gw.stop().await;
}

/// Issue 4: a brownout with share 0.5 refuses about half. 200 relay decisions in one
/// session (each transaction draws afresh) must see between 40 and 160 refusals; for a fair
/// draw the chance of falling outside is below 1e-17.
#[tokio::test(flavor = "multi_thread")]
async fn brownout_half_refuses_about_half() {
    let gw = start(
        r#"
[[policy]]
name = "half"
mechanisms = ["pop-before-smtp"]
action = "brownout"
share = 0.5
"#,
    )
    .await;
    let (mut p, _, _) = mech::pop3(host(16), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "bob", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    let (mut c, _) = mech::smtp(host(16), gw.addr("smtp"), false, "c").await;
    let mut refused = 0;
    for _ in 0..200 {
        c.cmd("MAIL FROM:<bob@example.test>", 250).await;
        c.send("RCPT TO:<friend@remote.example>").await;
        let (code, lines) = c.reply().await;
        match code {
            250 => {}
            450 => {
                assert!(lines[0].starts_with("450 4.7.0 "), "{lines:?}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {lines:?}"),
        }
        c.cmd("RSET", 250).await;
    }
    c.cmd("QUIT", 221).await;
    assert!((40..=160).contains(&refused), "{refused} of 200 refused");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_allows_and_audits_would_deny() {
    let gw = start(
        r#"
[[policy]]
name = "rehearsal"
mechanisms = ["PLAIN", "USER"]
action = "deny"
dry_run = true
"#,
    )
    .await;
    let (_c, port, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 235, "{:?}", x.lines);
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(
        (e.result, e.rule.as_deref()),
        (Outcome::WouldDeny, Some("rehearsal"))
    );
    let (mut p, port, _) = mech::pop3(LOCAL, gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "bob", PASSWORD).await.code, 1);
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(e.result, Outcome::WouldDeny);
    // Allowed, so the login opened the relay.
    event(&gw, LOCAL, port, Kind::Allowlist).await;
    p.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

/// One login attempt for the criteria table.
#[derive(Debug, Clone, Copy)]
struct Try {
    source: u8,
    listener: &'static str,
    mechanism: &'static str,
    user: &'static str,
    /// 235 allowed, 534 denied (POP3: `+OK` / `-ERR [AUTH]` map to the same).
    want: u16,
}

const fn t(
    source: u8,
    listener: &'static str,
    mechanism: &'static str,
    user: &'static str,
    want: u16,
) -> Try {
    Try {
        source,
        listener,
        mechanism,
        user,
        want,
    }
}

/// Runs `t` against `gw`; returns the SMTP code (POP3 mapped to 235 / 534 / 0).
async fn attempt(gw: &Gateway, t: Try) -> u16 {
    attempt_from(gw, t).await.0
}

/// As [`attempt`], with the client's source port (to find its audit event).
async fn attempt_from(gw: &Gateway, t: Try) -> (u16, u16) {
    let source = host(t.source);
    let tls = matches!(t.listener, "submissions" | "pop3s");
    if t.listener.starts_with("pop3") {
        let (mut p, port, _) = mech::pop3(source, gw.addr(t.listener), tls).await;
        let x = mech::pop_user_pass(&mut p, t.user, PASSWORD).await;
        p.pop_cmd("QUIT", true).await;
        let code = match x.lines[0].as_str() {
            l if l.starts_with("+OK") => 235,
            l if l.starts_with("-ERR [AUTH]") => 534,
            _ => 0,
        };
        return (code, port);
    }
    let (mut c, port) = mech::smtp(source, gw.addr(t.listener), tls, "c").await;
    let x = match t.mechanism {
        "PLAIN" => mech::smtp_plain(&mut c, t.user, PASSWORD).await,
        "CRAM-MD5" => mech::smtp_cram(&mut c, t.user, PASSWORD).await,
        other => panic!("no client for {other}"),
    };
    c.send("QUIT").await;
    (x.code, port)
}

/// One rule criterion per case: its name, its TOML, and attempts with the code a `deny`
/// rule gives (534 where the criterion matches).
fn criteria() -> Vec<(&'static str, &'static str, Vec<Try>)> {
    vec![
        (
            "mechanisms",
            r#"mechanisms = ["CRAM-MD5"]"#,
            vec![
                t(1, "submission", "CRAM-MD5", "alice", 534),
                t(1, "submission", "PLAIN", "alice", 235),
            ],
        ),
        (
            "classes",
            r#"classes = ["insecure"]"#,
            vec![
                t(1, "submission", "PLAIN", "alice", 534),
                t(1, "submissions", "PLAIN", "alice", 235),
                t(1, "submission", "CRAM-MD5", "alice", 235),
                t(1, "pop3", "USER", "alice", 534),
                t(1, "pop3s", "USER", "bob", 235),
            ],
        ),
        (
            "users",
            r#"users = ["Bob"]"#,
            vec![
                t(1, "submissions", "PLAIN", "bob", 534),
                t(1, "submissions", "PLAIN", "alice", 235),
                t(1, "pop3s", "USER", "bob", 534),
            ],
        ),
        (
            "user list",
            r#"users = ["carol", "bob"]"#,
            vec![
                t(1, "submissions", "PLAIN", "bob", 534),
                t(1, "submissions", "PLAIN", "alice", 235),
            ],
        ),
        (
            "networks",
            r#"networks = ["127.0.0.20/31"]"#,
            vec![
                t(20, "submissions", "PLAIN", "alice", 534),
                t(21, "submission", "CRAM-MD5", "alice", 534),
                t(22, "submissions", "PLAIN", "alice", 235),
                t(1, "submissions", "PLAIN", "alice", 235),
            ],
        ),
        (
            "listeners",
            r#"listeners = ["submission", "pop3s"]"#,
            vec![
                t(1, "submission", "PLAIN", "alice", 534),
                t(1, "smtp", "PLAIN", "alice", 235),
                t(1, "submissions", "PLAIN", "alice", 235),
                t(1, "pop3s", "USER", "alice", 534),
                t(1, "pop3", "USER", "alice", 235),
            ],
        ),
        (
            "from in the future",
            r#"from = "2999-01-01""#,
            vec![t(1, "submissions", "PLAIN", "alice", 235)],
        ),
        (
            "until in the past",
            r#"until = "2001-01-01T00:00:00Z""#,
            vec![t(1, "submissions", "PLAIN", "alice", 235)],
        ),
        (
            "window containing now",
            "from = \"2001-01-01\"\nuntil = \"2999-01-01\"",
            vec![t(1, "submissions", "PLAIN", "alice", 534)],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn each_criterion_narrows_a_rule_and_the_first_match_wins() {
    // 127.0.0.0/8 may send cleartext passwords, so PLAIN without TLS is class insecure.
    let cases = criteria();
    for (name, criterion, tries) in cases {
        let policy = format!("\n[[policy]]\nname = \"{name}\"\naction = \"deny\"\n{criterion}\n");
        let gw = start_with(
            &policy,
            &[("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#)],
        )
        .await;
        for attempt_ in tries {
            let got = attempt(&gw, attempt_).await;
            assert_eq!(got, attempt_.want, "rule {name}: {attempt_:?}");
        }
        // Every denial names the rule.
        for e in mech::read_events(&audit_log(&gw)) {
            if e.result == Outcome::Denied {
                assert_eq!(e.rule.as_deref(), Some(name), "{e:?}");
            }
        }
        gw.stop().await;
    }

    // An exception before a broader rule: the first match decides.
    let gw = start(
        r#"
[[policy]]
name = "exempt-alice"
users = ["alice"]
action = "allow"

[[policy]]
name = "deny-everyone"
action = "deny"
"#,
    )
    .await;
    let (_c, port, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 235);
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(
        (e.result, e.rule.as_deref()),
        (Outcome::Success, Some("exempt-alice"))
    );
    let (_c, port, x) = plain_tls(&gw, LOCAL, "bob").await;
    assert_eq!(x.code, 534);
    let e = event(&gw, LOCAL, port, Kind::Auth).await;
    assert_eq!(e.rule.as_deref(), Some("deny-everyone"));
    gw.stop().await;
}

/// Issue 4: `warn` rules with each match kind (mechanism, class, user, user list, network,
/// listener, date window): every attempt gets through; those the criterion matches are
/// audited as warned under the rule, the others as plain successes.
#[tokio::test(flavor = "multi_thread")]
async fn warn_rules_match_by_each_criterion() {
    for (name, criterion, tries) in criteria() {
        let policy = format!("\n[[policy]]\nname = \"{name}\"\naction = \"warn\"\n{criterion}\n");
        let gw = start_with(
            &policy,
            &[("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#)],
        )
        .await;
        for try_ in tries {
            let (code, port) = attempt_from(&gw, try_).await;
            assert_eq!(code, 235, "warn rule {name} must let {try_:?} through");
            let e = event(&gw, host(try_.source), port, Kind::Auth).await;
            let want = if try_.want == 534 {
                (Outcome::Warned, Some(name))
            } else {
                (Outcome::Success, None)
            };
            assert_eq!((e.result, e.rule.as_deref()), want, "rule {name}: {try_:?}");
        }
        gw.stop().await;
    }
}
