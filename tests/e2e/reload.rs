//! Reloading without a restart: a renewed TLS certificate is served after SIGHUP's reload
//! (`Shared::reload`), and a broken one leaves the certificate in force; the systemd unit that
//! sends that SIGHUP verifies.

use common::client::Client;
use common::{Gateway, host};
use mailgate::config::Config;
use mailgate_testkit::{self as common, extra, sasl};
/// Writes a fresh self-signed certificate for `name` and its key as `cert.pem` / `key.pem` in
/// `dir`; returns the certificate (DER).
fn write_cert(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("key.pem");
    made.cert.der().to_vec()
}

/// The certificate the gateway presents on its POP3S listener now.
async fn served_cert(gw: &Gateway) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(gw.addr("pop3s"))
        .await
        .expect("connect");
    let stream = common::client::tls(tcp).await;
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().expect("a certificate")[0].to_vec()
}

/// Reads the config file again and applies it, as the SIGHUP handler does; returns the
/// sections that need a restart.
async fn sighup(gw: &Gateway) -> Vec<&'static str> {
    let config = Config::load(&gw.dir.path().join("mailgate.toml")).expect("config");
    let shared = gw.shared.clone();
    let reloaded = tokio::task::spawn_blocking(move || shared.reload(&config))
        .await
        .expect("reload");
    reloaded.restart.iter().map(|s| s.name()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_served_after_a_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let first = write_cert(dir.path(), "mail.example.test");
    let text = common::config_text("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    let gw = Gateway::start_in(dir, &text).await;
    assert_eq!(served_cert(&gw).await, first);

    // Renewed in place, as certbot's deploy hook leaves it.
    let renewed = write_cert(gw.dir.path(), "mail.example.test");
    assert_ne!(renewed, first);
    assert!(
        !sighup(&gw).await.contains(&"tls"),
        "no restart needed for a renewed certificate"
    );
    assert_eq!(served_cert(&gw).await, renewed);

    // A key that does not load: the certificate in force stays.
    std::fs::write(gw.dir.path().join("key.pem"), "not a key").expect("key.pem");
    sighup(&gw).await;
    assert_eq!(served_cert(&gw).await, renewed);
    gw.stop().await;
}

/// The reply code to RCPT TO `rcpt` in a fresh SMTP session from `source`.
async fn rcpt_code(gw: &Gateway, source: std::net::IpAddr, rcpt: &str) -> u16 {
    let mut c = Client::connect_from(source, gw.addr("smtp")).await;
    c.expect(220).await;
    c.cmd("EHLO device", 250).await;
    c.cmd("MAIL FROM:<printer@example.test>", 250).await;
    c.send(&format!("RCPT TO:<{rcpt}>")).await;
    let code = c.reply().await.0;
    c.send("QUIT").await;
    code
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_networks_and_local_domains_follow_a_reload() {
    let gw = Gateway::start("").await;
    let printer = host(5);
    assert_eq!(rcpt_code(&gw, printer, "someone@remote.example").await, 554);
    assert_eq!(rcpt_code(&gw, printer, "alice@branch.example").await, 554);
    // The admin lets the printer relay and adds a domain, then reloads.
    let path = gw.dir.path().join("mailgate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = extra::set_all(
        &text,
        &[
            ("relay", "trusted_networks", r#"["127.0.0.5/32"]"#),
            (
                "relay",
                "local_domains",
                r#"["example.test", "branch.example"]"#,
            ),
        ],
    );
    std::fs::write(&path, text).expect("config");
    let restart = sighup(&gw).await;
    assert!(restart.is_empty(), "nothing needs a restart: {restart:?}");
    assert_eq!(rcpt_code(&gw, printer, "someone@remote.example").await, 250);
    assert_eq!(rcpt_code(&gw, host(6), "someone@remote.example").await, 554);
    assert_eq!(rcpt_code(&gw, host(6), "alice@branch.example").await, 250);
    gw.stop().await;
}

/// The systemd unit in `contrib/` passes `systemd-analyze verify` (with the built binary in
/// place of `/usr/local/bin/mailgate`), and reloads with SIGHUP, which the gateway handles.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/systemd/mailgate.service"
    ))
    .expect("unit file");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    if !common::have("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mailgate.service");
    let unit = unit.replace("/usr/local/bin/mailgate", env!("CARGO_BIN_EXE_mailgate"));
    std::fs::write(&path, unit).expect("unit copy");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// Issue 4: `[notices]` is reloaded like the policy: the notice interval at once, and a digest
/// recipient and period set by the reload start the digest with no restart.
#[tokio::test(flavor = "multi_thread")]
async fn notices_and_the_digest_are_reloaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let gw = Gateway::start_in(dir, &common::config_text("")).await;
    let path = gw.dir.path().join("mailgate.toml");
    let text = extra::set_all(
        &common::config_text(""),
        &[
            ("notices", "interval", r#""2h""#),
            ("notices", "digest_to", r#""postmaster""#),
            ("notices", "digest_interval", r#""1s""#),
        ],
    );
    std::fs::write(&path, text).expect("config");
    let restart = sighup(&gw).await;
    assert!(restart.is_empty(), "needs no restart: {restart:?}");
    assert_eq!(
        gw.shared.notices.interval(),
        std::time::Duration::from_secs(7200)
    );
    // Legacy logins until a digest lands in postmaster's mailbox.
    let maildir = gw.state().join("maildir").join("postmaster");
    for _ in 0..75 {
        let mut c = Client::connect_tls_from(host(1), gw.addr("submissions")).await;
        c.expect(220).await;
        c.cmd("EHLO c", 250).await;
        let blob = sasl::plain_b64("alice", common::PASSWORD);
        c.cmd(&format!("AUTH PLAIN {blob}"), 235).await;
        c.cmd("QUIT", 221).await;
        if !common::mailbox_files(&maildir).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let digests = common::mailbox_files(&maildir);
    assert!(
        digests
            .first()
            .is_some_and(|d| d.contains("Legacy authentication digest")),
        "{digests:?}"
    );
    gw.stop().await;
}
