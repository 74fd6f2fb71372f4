//! Real clients against the real gateway: swaks, curl and Python's smtplib/poplib.
//!
//! Each test skips with a notice when its client is missing; CI sets
//! `MAILGATE_REQUIRE_CLIENTS=1`, which turns a skip into a failure.

use common::{Gateway, PASSWORD, have, run};
use mailgate_testkit::{self as common, mech};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

async fn swaks(args: &[&str]) -> (bool, String) {
    mailgate_testkit::run_text("swaks", s(args), None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_auth_mechanisms_over_starttls_and_implicit_tls() {
    if !have("swaks") {
        return;
    }
    let gw = Gateway::start("").await;
    let sub = gw.addr("submission").to_string();
    let subs = gw.addr("submissions").to_string();
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        let (ok, text) = swaks(&[
            "--server",
            &sub,
            "--tls",
            "--auth",
            mech,
            "--auth-user",
            "alice",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@example.test",
            "--to",
            "bob@example.test",
            "--header",
            &format!("Subject: via swaks {mech}"),
        ])
        .await;
        assert!(ok, "swaks STARTTLS {mech} failed:\n{text}");
        assert!(text.contains("235 2.7.0"), "{text}");
        let (ok, text) = swaks(&[
            "--server",
            &subs,
            "--tls-on-connect",
            "--auth",
            mech,
            "--auth-user",
            "alice",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@example.test",
            "--to",
            "friend@remote.example",
        ])
        .await;
        assert!(ok, "swaks implicit TLS {mech} failed:\n{text}");
    }
    // Wrong password: 535, and swaks reports failure.
    let (ok, text) = swaks(&[
        "--server",
        &sub,
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "nope",
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
    ])
    .await;
    assert!(!ok && text.contains("535 5.7.8"), "{text}");
    // Plaintext AUTH without TLS from a network not allowed: refused before credentials are sent.
    let (ok, text) = swaks(&[
        "--server",
        &sub,
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
    ])
    .await;
    // PLAIN is not even advertised without TLS, so swaks gives up before sending credentials.
    assert!(!ok, "plaintext AUTH without TLS must fail:\n{text}");
    assert!(
        text.contains("250 AUTH CRAM-MD5") && text.contains("Auth not attempted"),
        "{text}"
    );
    assert!(
        !text.contains(" -> AUTH"),
        "credentials sent without TLS:\n{text}"
    );
    let mail = gw.wait_for_mail("bob", 3).await;
    assert!(mail.iter().any(|m| m.contains("via swaks CRAM-MD5")));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_unauthorized_relay_refused() {
    if !have("swaks") {
        return;
    }
    let gw = Gateway::start("").await;
    let (ok, text) = swaks(&[
        "--server",
        &gw.addr("smtp").to_string(),
        "--from",
        "x@remote.example",
        "--to",
        "victim@elsewhere.example",
    ])
    .await;
    assert!(!ok && text.contains("554 5.7.1"), "{text}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_smtp_and_pop3() {
    if !have("curl") {
        return;
    }
    let gw = Gateway::start("").await;
    let msg = gw.dir.path().join("msg.eml");
    std::fs::write(
        &msg,
        "Subject: via curl\r\nFrom: alice@example.test\r\n\r\nhello from curl\r\n",
    )
    .unwrap();
    for mech in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        let out = run(
            "curl",
            s(&[
                "-sS",
                "--ssl-reqd",
                "-k",
                "--url",
                &format!("smtp://{}", gw.addr("submission")),
                "--login-options",
                &format!("AUTH={mech}"),
                "--user",
                &format!("alice:{PASSWORD}"),
                "--mail-from",
                "alice@example.test",
                "--mail-rcpt",
                "bob@example.test",
                "--upload-file",
                &msg.to_string_lossy(),
            ]),
            None,
        )
        .await;
        assert!(
            out.status.success(),
            "curl SMTP {mech}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    gw.wait_for_mail("bob", 3).await;
    // POP3 over STLS: list, retrieve, delete.
    let pop = |path: &str, extra: &[&str]| {
        let mut args = s(&[
            "-sS",
            "--ssl-reqd",
            "-k",
            "--user",
            &format!("bob:{PASSWORD}"),
        ]);
        args.extend(s(extra));
        args.push(format!("pop3://{}/{path}", gw.addr("pop3")));
        args
    };
    let out = run("curl", pop("", &[]), None).await;
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(list.lines().count(), 3, "{list}");
    let out = run("curl", pop("1", &[]), None).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from curl"));
    let out = run("curl", pop("1", &["-X", "DELE", "-I"]), None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(gw.mailbox("bob").len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_smtplib_and_poplib() {
    if !have("python3") {
        return;
    }
    let gw = Gateway::start("").await;
    let script = format!(
        r#"
import poplib, smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {sub})
s.starttls(context=ctx)
s.login("alice", "{pw}")
s.sendmail("alice@example.test", ["bob@example.test"], "Subject: via python\r\n\r\nhi\r\n")
s.quit()
import time
for _ in range(200):
    p = poplib.POP3_SSL("127.0.0.1", {pop3s}, context=ctx)
    p.user("bob"); p.pass_("{pw}")
    n, size = p.stat()
    if n:
        break
    p.quit(); time.sleep(0.025)
resp, lines, octets = p.retr(1)
assert b"Subject: via python" in lines, lines
p.dele(1)
p.quit()
p = poplib.POP3("127.0.0.1", {pop3})
p.stls(context=ctx)
p.user("bob"); p.pass_("{pw}")
assert p.stat()[0] == 0, p.stat()
p.quit()
print("python ok")
"#,
        sub = gw.addr("submission").port(),
        pop3s = gw.addr("pop3s").port(),
        pop3 = gw.addr("pop3").port(),
        pw = PASSWORD
    );
    let out = run("python3", s(&["-c", &script]), None).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop().await;
}

/// The POP3 audit events carry a client hint: the commands each client sent before logging
/// in. Python's poplib and curl log in differently, so their hints differ (docs/audit.md).
#[tokio::test(flavor = "multi_thread")]
async fn pop3_client_hints_tell_python_and_curl_apart() {
    if !have("python3") || !have("curl") {
        return;
    }
    let gw = Gateway::start("").await;
    let pop3 = gw.addr("pop3").port();
    let script = format!(
        r#"
import poplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3("127.0.0.1", {pop3})
p.stls(context=ctx)
p.user("alice"); p.pass_("{pw}")
p.stat()
p.quit()
"#,
        pw = PASSWORD
    );
    let out = run("python3", s(&["-c", &script]), None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        "curl",
        s(&[
            "-sS",
            "--ssl-reqd",
            "-k",
            "--user",
            &format!("bob:{PASSWORD}"),
            &format!("pop3://127.0.0.1:{pop3}/"),
        ]),
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = gw.state().join("audit.log");
    let hint = |user: &str| {
        let (user, log) = (user.to_string(), log.clone());
        async move {
            let found = mech::wait_events(&log, &format!("POP3 login of {user}"), 1, |e| {
                e.kind == mailgate::audit::Kind::Auth
                    && e.protocol == "pop3"
                    && e.user.as_deref() == Some(user.as_str())
            })
            .await;
            found[0].client_name.clone()
        }
    };
    // poplib checks CAPA before STLS, then logs in with USER/PASS.
    assert_eq!(hint("alice").await.as_deref(), Some("CAPA STLS USER PASS"));
    // curl asks CAPA again after TLS and picks the strongest SASL mechanism it knows.
    let curl = hint("bob").await;
    assert_eq!(curl.as_deref(), Some("CAPA STLS CAPA AUTH CRAM-MD5"));
    gw.stop().await;
}
