//! Migration policy end to end, the operator's side: notices to users under `warn` (one per
//! interval, naming the client software), the admin digest on its timer, the built binary
//! reloading the policy on SIGHUP, and `mailgate check-config` showing what each rule covers.
//! The decisions themselves (actions and criteria) are `policy.rs`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mailgate::audit::{Kind, Outcome};
use mailgate::clock::{Clock, ManualClock, SystemClock};

use common::{Gateway, PASSWORD, host};
use mailgate_testkit::{self as common, extra, mech, smarthost};
use mech::wait_events;

use crate::policy::{LOCAL, audit_log, config, event, plain_tls, start, start_with};

#[tokio::test(flavor = "multi_thread")]
async fn notify_under_warn_sends_one_notice_per_interval() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let text = config(
        r#"
[[policy]]
name = "cram-sunset"
mechanisms = ["CRAM-MD5"]
action = "warn"
notify = true
refuse_from = "2027-06-01"
message = "CRAM-MD5 is being retired"
"#,
        &[("notices", "interval", r#""7d""#)],
    );
    let gw = Gateway::start_with_clock(dir, &text, clock.clone()).await;
    let maildir = gw.state().join("maildir").join("alice");
    let login = || async {
        let (mut c, port) = mech::smtp(host(9), gw.addr("submission"), false, "OldMailer").await;
        assert_eq!(mech::smtp_cram(&mut c, "alice", PASSWORD).await.code, 235);
        c.cmd("QUIT", 221).await;
        let e = event(&gw, host(9), port, Kind::Auth).await;
        assert_eq!(
            (e.result, e.rule.as_deref()),
            (Outcome::Warned, Some("cram-sunset"))
        );
    };
    login().await;
    let notices = mech::wait_mail(&maildir, 1, "the first notice").await;
    for want in [
        "To: <alice>",
        "Auto-Submitted: auto-generated",
        "127.0.0.9",
        "CRAM-MD5",
        "OldMailer",
        "From 2027-06-01 it will be refused.",
        "CRAM-MD5 is being retired",
    ] {
        assert!(
            notices[0].contains(want),
            "{want} missing in {}",
            notices[0]
        );
    }
    // Within the interval: no second notice.
    login().await;
    login().await;
    // After the interval: one more.
    clock.advance(Duration::from_secs(8 * 86_400));
    login().await;
    let notices = mech::wait_mail(&maildir, 2, "the notice after the interval").await;
    // The logins within the interval had their chance to deliver before the last one.
    let audit = wait_events(&audit_log(&gw), "four warned logins", 4, |e| {
        e.result == Outcome::Warned
    })
    .await;
    assert_eq!(audit.len(), 4);
    assert_eq!(notices.len(), 2, "{notices:?}");
    // Bob, on a mechanism the rule does not name, gets nothing.
    let (_c, _, x) = plain_tls(&gw, LOCAL, "bob").await;
    assert_eq!(x.code, 235);
    assert!(gw.mailbox("bob").is_empty());
    gw.stop().await;
}

/// Issue 4: relays authorized by address (POP-before-SMTP, trusted network) under a `warn`
/// rule with `notify` get a notice when their message is accepted, naming the software its
/// headers name; a trusted-network relay's notice goes to the local user its sender names.
#[tokio::test(flavor = "multi_thread")]
async fn relay_notices_under_warn_name_the_software_of_the_message() {
    let smarthost = smarthost::Smarthost::start(smarthost::Options::default()).await;
    let address = format!("\"{}\"", smarthost.addr());
    let gw = start_with(
        r#"
[[policy]]
name = "relay-sunset"
mechanisms = ["pop-before-smtp", "trusted-network"]
action = "warn"
notify = true
refuse_from = "2027-09-01"
message = "Relaying without a login is being retired"
"#,
        &[
            ("relay", "trusted_networks", r#"["127.0.0.21/32"]"#),
            ("delivery.upstream", "address", address.as_str()),
            ("delivery.upstream", "tls", r#""none""#),
            ("delivery.upstream", "retry", r#"["200ms", "200ms"]"#),
        ],
    )
    .await;
    // POP-before-SMTP: bob's POP3 login opens the relay; his message names its mailer.
    let (mut p, _, _) = mech::pop3(host(14), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "bob", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    let (mut c, _) = mech::smtp(host(14), gw.addr("smtp"), false, "bobs-pc").await;
    mech::send_mail(
        &mut c,
        "bob@example.test",
        "friend@remote.example",
        "User-Agent: OldOutlook/2003\r\n",
    )
    .await;
    c.cmd("QUIT", 221).await;
    let notices = mech::wait_mail(&gw.state().join("maildir/bob"), 1, "bob's notice").await;
    for want in [
        "pop-before-smtp",
        "127.0.0.14",
        "OldOutlook/2003",
        "From 2027-09-01 it will be refused.",
    ] {
        assert!(
            notices[0].contains(want),
            "{want} missing in {}",
            notices[0]
        );
    }
    // Trusted network: no login at all; the sender address names alice.
    let (mut c, _) = mech::smtp(host(21), gw.addr("smtp"), false, "scanner").await;
    mech::send_mail(
        &mut c,
        "alice@example.test",
        "friend@remote.example",
        "X-Mailer: ScanToMail 1.2\r\n",
    )
    .await;
    c.cmd("QUIT", 221).await;
    let notices = mech::wait_mail(&gw.state().join("maildir/alice"), 1, "alice's notice").await;
    for want in ["trusted-network", "127.0.0.21", "ScanToMail 1.2"] {
        assert!(
            notices[0].contains(want),
            "{want} missing in {}",
            notices[0]
        );
    }
    smarthost.wait_for(2, mech::DEADLINE).await;
    gw.stop().await;
}

/// Issue 4: a notice sent at AUTH time names the software last seen in the user's mail
/// (User-Agent / X-Mailer), not the EHLO name, once such a header has been seen.
#[tokio::test(flavor = "multi_thread")]
async fn auth_notice_names_the_software_last_seen_for_the_user() {
    let gw = start(
        r#"
[[policy]]
name = "cram-sunset"
mechanisms = ["CRAM-MD5"]
action = "warn"
notify = true
"#,
    )
    .await;
    // A message from alice's mail program, over a login no rule names.
    let (mut c, _, x) = plain_tls(&gw, LOCAL, "alice").await;
    assert_eq!(x.code, 235);
    mech::send_mail(
        &mut c,
        "alice@example.test",
        "bob@example.test",
        "User-Agent: Thunderbird/128.0\r\n",
    )
    .await;
    c.cmd("QUIT", 221).await;
    gw.wait_for_mail("bob", 1).await;
    // Then a CRAM-MD5 login: the notice names the mail program, not the EHLO name.
    let (mut c, _) = mech::smtp(host(9), gw.addr("submission"), false, "ALICE-LAPTOP").await;
    assert_eq!(mech::smtp_cram(&mut c, "alice", PASSWORD).await.code, 235);
    c.cmd("QUIT", 221).await;
    let notices = mech::wait_mail(&gw.state().join("maildir/alice"), 1, "the notice").await;
    assert!(notices[0].contains("Thunderbird/128.0"), "{}", notices[0]);
    assert!(!notices[0].contains("ALICE-LAPTOP"), "{}", notices[0]);
    gw.stop().await;
}

/// Issue 4: the admin digest is sent on its timer (`[notices] digest_interval`) into the
/// mailbox of `digest_to`, with the legacy users and mechanisms of the period.
#[tokio::test(flavor = "multi_thread")]
async fn admin_digest_is_delivered_on_its_timer() {
    let gw = start_with(
        "",
        &[
            ("notices", "digest_to", r#""postmaster""#),
            ("notices", "digest_interval", r#""1s""#),
        ],
    )
    .await;
    let maildir = gw.state().join("maildir").join("postmaster");
    // The digest covers the last interval only: keep logging in until one lands.
    let deadline = tokio::time::Instant::now() + mech::DEADLINE;
    let digests = loop {
        let (mut c, _) = mech::smtp(host(19), gw.addr("submission"), false, "c").await;
        assert_eq!(mech::smtp_cram(&mut c, "alice", PASSWORD).await.code, 235);
        c.cmd("QUIT", 221).await;
        let got = common::mailbox_files(&maildir);
        if !got.is_empty() {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no digest within {:?}",
            mech::DEADLINE
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let d = &digests[0];
    for want in [
        "To: <postmaster>",
        "Subject: Legacy authentication digest: 1 users",
        "Auto-Submitted: auto-generated",
        "alice",
        "CRAM-MD5",
    ] {
        assert!(d.contains(want), "{want} missing in {d}");
    }
    // Nobody else gets it.
    assert!(gw.mailbox("alice").is_empty());
    gw.stop().await;
}

/// A config for the built binary on `ports`, with `policy` appended.
fn binary_config(ports: &mech::Ports, policy: &str) -> String {
    ports.apply(&common::config_text(policy))
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policy_for_new_sessions_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let ports = mech::Ports::free();
    let path = dir.path().join("mailgate.toml");
    std::fs::write(&path, binary_config(&ports, "")).expect("config");
    let gw = extra::Binary::start(crate::MAILGATE, &path);
    let submissions = ports.addr("submissions");
    extra::wait_listening(submissions).await;

    // Before the reload: PLAIN works.
    let (mut before, _) = mech::smtp(LOCAL, submissions, true, "c").await;
    assert_eq!(
        mech::smtp_plain(&mut before, "alice", PASSWORD).await.code,
        235
    );
    // A session opened (not yet authenticated) before the reload.
    let (mut open, _) = mech::smtp(LOCAL, submissions, true, "c").await;

    let policy = "\n[[policy]]\nname = \"reloaded-deny\"\nmechanisms = [\"PLAIN\"]\n\
                  action = \"deny\"\nmessage = \"PLAIN is now refused\"\n";
    std::fs::write(&path, binary_config(&ports, policy)).expect("config");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(gw.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
    extra::eventually("the reload", mech::DEADLINE, || async {
        gw.log_text().contains("policy reloaded")
    })
    .await;
    assert!(
        !gw.log_text().contains("next restart"),
        "only the policy changed:\n{}",
        gw.log_text()
    );

    // A new session gets the new policy.
    let (mut after, _) = mech::smtp(LOCAL, submissions, true, "c").await;
    let x = mech::smtp_plain(&mut after, "alice", PASSWORD).await;
    assert_eq!(x.code, 534, "{:?}", x.lines);
    assert!(x.lines[0].contains("PLAIN is now refused"), "{:?}", x.lines);
    after.cmd("QUIT", 221).await;

    // Sessions from before keep theirs: the authenticated one sends mail, the open one logs in.
    mech::send_mail(&mut before, "alice@example.test", "bob@example.test", "").await;
    before.cmd("QUIT", 221).await;
    assert_eq!(
        mech::smtp_plain(&mut open, "alice", PASSWORD).await.code,
        235
    );
    open.cmd("QUIT", 221).await;

    // A broken config is refused and the running policy kept.
    std::fs::write(
        &path,
        binary_config(&ports, "\n[[policy]]\naction = \"explode\"\n"),
    )
    .expect("config");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(gw.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    extra::eventually("the refused reload", mech::DEADLINE, || async {
        gw.log_text().contains("not reloaded")
    })
    .await;
    let (mut c, _) = mech::smtp(LOCAL, submissions, true, "c").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 534);
    c.cmd("QUIT", 221).await;

    let mut gw = gw;
    gw.terminate();
    assert!(
        gw.wait_exit(Duration::from_secs(15)).await.is_some(),
        "gateway did not exit"
    );
    let maildir = dir.path().join("state/maildir/bob");
    mech::wait_mail(&maildir, 1, "the message from the pre-reload session").await;
}

/// Issue 4: check-config shows what each rule covers today: a rule not yet in force does not
/// hide the one in force, a network-restricted rule covers only its share, plaintext is
/// assessed with and without TLS, and trusted-network relays have no user.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_shows_what_each_rule_covers() {
    let dir = tempfile::tempdir().expect("temp dir");
    // dave has only a one-way hash: listed under the cleartext methods, never under CRAM-MD5.
    let users = format!(
        "{}dave:{{SHA512-CRYPT}}$6$tOPjcOQzFYiZsdsp$U5/FegAHUXaDAyuCXXkj/6CMFV6dG/F66mBcvgUxnA.\
         7Qj5MkWFv/oThwBb3sYzC/YlSDRh5bLoqh0hmbCqD81\n",
        common::USERS
    );
    std::fs::write(dir.path().join("users"), users).expect("users file");
    let text = common::config_text(
        r#"
[[policy]]
name = "exempt-bob"
users = ["bob"]
action = "allow"

[[policy]]
name = "office-cram"
mechanisms = ["CRAM-MD5"]
networks = ["10.0.0.0/8"]
action = "allow"

[[policy]]
name = "cram-later"
mechanisms = ["CRAM-MD5"]
action = "deny"
from = "2999-01-01"

[[policy]]
name = "cram-warn"
mechanisms = ["CRAM-MD5"]
action = "warn"

[[policy]]
name = "cleartext"
classes = ["insecure"]
action = "warn"

[[policy]]
name = "rehearse-apop"
mechanisms = ["APOP"]
action = "deny"
dry_run = true
until = "2001-01-01"
"#,
    )
    .replace(
        "local_domains = [\"example.test\"]",
        "local_domains = [\"example.test\"]\ntrusted_networks = [\"192.0.2.0/24\"]",
    );
    let path = dir.path().join("mailgate.toml");
    std::fs::write(&path, text).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let after = |header: &str| -> Vec<&str> {
        let start = lines
            .iter()
            .position(|l| *l == header)
            .unwrap_or_else(|| panic!("{header:?} missing in:\n{stdout}"));
        lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.trim())
            .collect()
    };
    let bob = after("policy \"exempt-bob\": allow, in force today");
    for want in [
        "CRAM-MD5 (weak): bob",
        "PLAIN (basic, with TLS): bob",
        "PLAIN (insecure, without TLS): bob",
        "pop-before-smtp (insecure): bob",
    ] {
        assert!(bob.contains(&want), "{want} missing in {bob:?}");
    }
    assert!(
        !bob.iter().any(|l| l.starts_with("trusted-network")),
        "a user rule cannot match a relay without user: {bob:?}"
    );
    let office = after("policy \"office-cram\": allow, in force today");
    assert_eq!(
        office,
        ["CRAM-MD5 (weak): alice, postmaster (from 10.0.0.0/8 only)"],
        "{stdout}"
    );
    let later = after("policy \"cram-later\": deny, not yet in force (from 2999-01-01T00:00:00Z)");
    assert_eq!(
        later,
        ["from then: CRAM-MD5 (weak): alice, postmaster (except from 10.0.0.0/8)"],
        "{stdout}"
    );
    // The rule in force today is not hidden by the one that starts later, nor wholly by the
    // network-restricted allow.
    let warn = after("policy \"cram-warn\": warn, in force today");
    assert_eq!(
        warn,
        ["CRAM-MD5 (weak): alice, postmaster (except from 10.0.0.0/8)"],
        "{stdout}"
    );
    let clear = after("policy \"cleartext\": warn, in force today");
    assert_eq!(
        clear,
        [
            "PLAIN (insecure, without TLS): alice, dave, postmaster",
            "LOGIN (insecure, without TLS): alice, dave, postmaster",
            "USER (insecure, without TLS): alice, dave, postmaster",
            "pop-before-smtp (insecure): alice, dave, postmaster",
            "trusted-network (insecure): any relay (no user)",
        ],
        "{stdout}"
    );
    let apop = after("policy \"rehearse-apop\": deny (dry run), expired");
    assert_eq!(apop, ["nothing (expired)"], "{stdout}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with("OK (4 users)")),
        "{stdout}"
    );
}
