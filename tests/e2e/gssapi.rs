//! GSSAPI (RFC 4752) with Kerberos against a private MIT KDC (`mailgate_testkit::kdc`): the
//! gateway runs as a process pointed at the test realm, GNU SASL's `gsasl` and curl log in
//! over SMTP AUTH and POP3 AUTH with tickets from `kinit`, and tickets that must not work
//! (for another service, under a replaced service key, for a principal with no user) are
//! refused with 535 / `-ERR [AUTH]` and a reason in the log. Only in builds with the
//! `gssapi` feature.

use std::path::{Path, PathBuf};
use std::process::Output;

use mailgate_testkit::extra::{self, Binary};
use mailgate_testkit::kdc::{self, Kdc, REALM};

const HOST: &str = "mail.example.test";

/// The gateway and the realm it serves.
struct Site {
    kdc: Kdc,
    gw: Binary,
    dir: tempfile::TempDir,
    smtp: u16,
    pop3: u16,
}

/// Starts a realm with alice, carol (no user of the gateway) and alice/admin, and a gateway
/// offering GSSAPI with it; `None` (skipped) when the Kerberos tools or clients are missing.
async fn site() -> Option<Site> {
    if !kdc::available() || !mailgate_testkit::have("gsasl") || !mailgate_testkit::have("curl") {
        return None;
    }
    let kdc = Kdc::start(
        HOST,
        &[
            ("alice", "alice-krb-pw"),
            ("carol", "carol-krb-pw"),
            ("alice/admin", "admin-krb-pw"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), mailgate_testkit::USERS).expect("users file");
    let (smtp, pop3) = (extra::free_port(), extra::free_port());
    let text = extra::set_all(
        &mailgate_testkit::config_text(""),
        &[
            ("listeners", "smtp", &format!("[\"127.0.0.1:{smtp}\"]")),
            ("listeners", "pop3", &format!("[\"127.0.0.1:{pop3}\"]")),
            ("auth", "mechanisms", r#"["PLAIN", "GSSAPI"]"#),
        ],
    );
    let text = format!(
        "{text}\n[auth.gssapi]\nkeytab = \"{}\"\nrealms = [\"{REALM}\"]\n",
        kdc.keytab.display()
    );
    let config = dir.path().join("mailgate.toml");
    std::fs::write(&config, text).expect("config");
    let gw = Binary::start_with_env(crate::MAILGATE, &config, "info", &kdc.env());
    extra::wait_listening(extra::local(smtp)).await;
    extra::wait_listening(extra::local(pop3)).await;
    Some(Site {
        kdc,
        gw,
        dir,
        smtp,
        pop3,
    })
}

impl Site {
    /// `gsasl` logging in over SMTP with the tickets in `cache`, for `service` (normally
    /// `smtp`).
    async fn gsasl_smtp(&self, cache: &Path, service: &str) -> String {
        let connect = format!("--connect=127.0.0.1:{}", self.smtp);
        let service = format!("--service={service}");
        let args = [
            "--smtp",
            connect.as_str(),
            "--hostname=mail.example.test",
            service.as_str(),
            "--mechanism=GSSAPI",
            "--no-starttls",
        ];
        let out = self
            .kdc
            .run("gsasl", &args, Some(cache), Some(String::new()))
            .await;
        kdc::text(&out)
    }

    /// curl with the tickets in `cache`, to `scheme://HOST:port/` (connected to loopback),
    /// AUTH=GSSAPI; `more` are further arguments. Verbose: the dialogue is in the output.
    async fn curl(&self, cache: &Path, scheme: &str, port: u16, more: &[&str]) -> Output {
        let connect = format!("{HOST}:{port}:127.0.0.1:{port}");
        let url = format!("{scheme}://{HOST}:{port}/");
        let mut args = vec![
            "-sS",
            "-v",
            "--max-time",
            "20",
            "--connect-to",
            connect.as_str(),
            url.as_str(),
            "-u",
            ":",
            "--login-options",
            "AUTH=GSSAPI",
        ];
        args.extend_from_slice(more);
        self.kdc.run("curl", &args, Some(cache), None).await
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let path: PathBuf = self.dir.path().join("state/audit.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The GSSAPI login events with `result`, once there are `n` of them (the audit writer runs
    /// behind the sessions), or what there is after 10 s.
    async fn gssapi_events(&self, result: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events: Vec<_> = self
                .audit()
                .into_iter()
                .filter(|e| {
                    e["kind"] == "auth" && e["mechanism"] == "GSSAPI" && e["result"] == result
                })
                .collect();
            if events.len() >= n || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// gsasl over SMTP, curl over SMTP (a message to bob) and POP3 (alice's maildrop) log in
/// with alice's tickets; each login is a `modern` audit event naming the principal.
#[tokio::test(flavor = "multi_thread")]
async fn gsasl_and_curl_log_in_over_smtp_and_pop3() {
    let Some(site) = site().await else { return };
    let cache = site.kdc.kinit("alice", "alice-krb-pw", &[]).await;

    let dialogue = site.gsasl_smtp(&cache, "smtp").await;
    assert!(dialogue.contains("235 2.7.0"), "{dialogue}");

    let out = site
        .curl(
            &cache,
            "smtp",
            site.smtp,
            &[
                "--mail-from",
                "alice@example.test",
                "--mail-rcpt",
                "bob@example.test",
                "-T",
                "-",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", kdc::text(&out));
    let out = site.curl(&cache, "pop3", site.pop3, &[]).await;
    assert!(out.status.success(), "{}", kdc::text(&out));
    assert!(
        kdc::text(&out).contains("+OK maildrop"),
        "{}",
        kdc::text(&out)
    );

    let logins = site.gssapi_events("success", 3).await;
    let protocols: Vec<&str> = logins
        .iter()
        .filter_map(|e| e["protocol"].as_str())
        .collect();
    assert_eq!(protocols, ["smtp", "smtp", "pop3"], "{logins:?}");
    for e in &logins {
        assert_eq!(e["user"], "alice", "{e}");
        assert_eq!(e["principal"], format!("alice@{REALM}"), "{e}");
        assert_eq!(e["class"], "modern", "{e}");
    }
}

/// A ticket for another service (pop/ on the SMTP port), a ticket under a service key the
/// keytab does not hold, a principal with no user and a principal with an instance are all
/// refused: 535 5.7.8 over SMTP, `-ERR [AUTH]` over POP3, each with its reason in the log.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_tickets_are_refused() {
    let Some(site) = site().await else { return };
    let alice = site.kdc.kinit("alice", "alice-krb-pw", &[]).await;

    let dialogue = site.gsasl_smtp(&alice, "pop").await;
    assert!(dialogue.contains("535 5.7.8"), "{dialogue}");

    let carol = site.kdc.kinit("carol", "carol-krb-pw", &[]).await;
    let out = site.curl(&carol, "pop3", site.pop3, &[]).await;
    assert!(!out.status.success(), "{}", kdc::text(&out));
    assert!(
        kdc::text(&out).contains("-ERR [AUTH]"),
        "{}",
        kdc::text(&out)
    );

    let admin = site.kdc.kinit("alice/admin", "admin-krb-pw", &[]).await;
    let out = site.curl(&admin, "pop3", site.pop3, &[]).await;
    assert!(
        kdc::text(&out).contains("-ERR [AUTH]"),
        "{}",
        kdc::text(&out)
    );

    // The KDC gets a new key for smtp/; the gateway's keytab still has the old one.
    site.kdc.kadmin(&format!("cpw -randkey smtp/{HOST}")).await;
    let fresh = site.kdc.kinit("alice", "alice-krb-pw", &[]).await;
    let dialogue = site.gsasl_smtp(&fresh, "smtp").await;
    assert!(dialogue.contains("535 5.7.8"), "{dialogue}");
    // POP3 kept its key: the same user still logs in there.
    let out = site.curl(&fresh, "pop3", site.pop3, &[]).await;
    assert!(out.status.success(), "{}", kdc::text(&out));

    let log = site.gw.log_text();
    for reason in [
        "Kerberos ticket refused",
        "the principal's user is not in the users file",
        "a principal with several components needs a user_map entry",
    ] {
        assert!(log.contains(reason), "no {reason:?} in the log:\n{log}");
    }
    let failures = site.gssapi_events("failure", 4).await;
    assert_eq!(failures.len(), 4, "{failures:?}");
}
