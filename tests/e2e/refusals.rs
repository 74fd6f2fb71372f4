//! Every refusal explained (issue: run it like Postfix): a refused relay, an unknown
//! recipient, a refused sender and a message over the size limit each leave one log line
//! naming the listener, the client's HELO, sender, recipient, the reply and the reason, and
//! count in `mailgate_smtp_rejects_total{listener,reason}`, whose series exist at zero from
//! the start. "Why didn't the printer's mail go out?" is answered by the log. POP3's lines
//! carry the same field names (`listener`, `mechanism`).

use std::time::Duration;

use mailgate_testkit::{self as common, extra, host, mech};

#[tokio::test(flavor = "multi_thread")]
async fn refused_commands_are_logged_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let ports = mech::Ports::free();
    let admin_port = extra::free_port();
    let text = extra::set_all(
        &ports.apply(&common::config_text("")),
        &[
            ("listeners", "admin", &format!("\"127.0.0.1:{admin_port}\"")),
            ("limits", "max_message_size", "1000"),
        ],
    );
    let config = dir.path().join("mailgate.toml");
    std::fs::write(&config, &text).expect("config");
    let gw = extra::Binary::start_with_log(crate::MAILGATE, &config, "info");
    extra::wait_listening(ports.addr("smtp")).await;
    let admin = extra::local(admin_port);
    extra::wait_listening(admin).await;

    // Every reason is a series at zero before anything was refused.
    let before = crate::admin::http(admin, "GET", "/metrics", None, None)
        .await
        .body;
    for reason in ["relay-denied", "unknown-recipient", "size", "tls-required"] {
        let series =
            format!("mailgate_smtp_rejects_total{{listener=\"smtp\",reason=\"{reason}\"}} 0");
        assert!(before.contains(&series), "{series} missing:\n{before}");
    }

    let (mut c, _) = mech::smtp(host(23), ports.addr("smtp"), false, "printer.office.test").await;
    c.cmd("MAIL FROM:<printer@office.test>", 250).await;
    c.cmd("RCPT TO:<someone@elsewhere.test>", 554).await;
    c.cmd("RCPT TO:<nobody@example.test>", 550).await;
    c.cmd("RSET", 250).await;
    c.cmd("MAIL FROM:<big@office.test> SIZE=5000", 552).await;
    c.cmd("QUIT", 221).await;

    extra::eventually("the refusals logged", Duration::from_secs(10), || {
        let log = gw.log_text();
        async move {
            log.lines().any(|l| {
                l.contains("refused")
                    && l.contains("relay-denied")
                    && l.contains("printer.office.test")
                    && l.contains("printer@office.test")
                    && l.contains("someone@elsewhere.test")
                    && l.contains("554")
                    && l.contains("smtp")
            }) && log.lines().any(|l| {
                l.contains("unknown-recipient")
                    && l.contains("nobody@example.test")
                    && l.contains("550")
            }) && log
                .lines()
                .any(|l| l.contains("reason") && l.contains("size") && l.contains("552"))
        }
    })
    .await;
    let after = crate::admin::http(admin, "GET", "/metrics", None, None)
        .await
        .body;
    for (reason, n) in [("relay-denied", 1), ("unknown-recipient", 1), ("size", 1)] {
        let series =
            format!("mailgate_smtp_rejects_total{{listener=\"smtp\",reason=\"{reason}\"}} {n}");
        assert!(after.contains(&series), "{series} missing:\n{after}");
    }
    // POP3 lines name the listener and the mechanism as SMTP's do.
    let (mut p, _, _) = mech::pop3(host(23), ports.addr("pop3s"), true).await;
    assert_eq!(
        mech::pop_user_pass(&mut p, "alice", "secret-pw").await.code,
        1
    );
    p.pop_cmd("QUIT", true).await;
    extra::eventually("the POP3 login logged", Duration::from_secs(10), || {
        let log = gw.log_text();
        async move {
            log.lines().any(|l| {
                l.contains("logged in")
                    && l.contains("listener=\"pop3s\"")
                    && l.contains("mechanism=USER")
            })
        }
    })
    .await;
    gw.terminate();
}
