//! SASL EXTERNAL with TLS client certificates (RFC 4422 appendix A) against the real gateway:
//! certificates from a device CA made with rcgen, presented over implicit TLS and after
//! STARTTLS/STLS by the test kit's client and by curl. A certificate from another CA, an
//! expired one, a revoked one (in the CRL) and one naming no user are refused or never offered
//! EXTERNAL, and a session without a certificate sees the other mechanisms as before.
//!
//! (swaks can present a client certificate but has no EXTERNAL mechanism, so curl drives the
//! real-client case.) The curl and openssl tests skip with a notice when the program is
//! missing, unless `MAILGATE_REQUIRE_CLIENTS=1`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use common::client::Client;
use common::devices::{Device, DeviceCa};
use common::{Gateway, PASSWORD, USERS, config_text, have, mech, run};
use mailgate::audit::{Class, Event, Kind, Outcome};
use mailgate_testkit as common;

const REVOKED: u64 = 66;

/// A gateway whose `[auth.external]` trusts `ca` (with its CRL revoking [`REVOKED`]), with
/// `scanner-1` mapped to alice and the audit log on.
async fn gateway(ca: &DeviceCa) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), USERS).expect("users file");
    std::fs::write(dir.path().join("devices-ca.pem"), &ca.pem).expect("CA");
    std::fs::write(dir.path().join("devices.crl"), ca.crl(&[REVOKED])).expect("CRL");
    let extra = "[auth.external]\nca_file = \"devices-ca.pem\"\ncrl_file = \"devices.crl\"\n\
                 [auth.external.map]\n\"Scanner-1\" = \"alice\"\n\
                 [audit]\npath = \"audit.log\"\n";
    let text = config_text(extra).replace(
        "[auth]\n",
        "[auth]\nmechanisms = [\"PLAIN\", \"EXTERNAL\"]\n",
    );
    Gateway::start_in(dir, &text).await
}

fn audit(gw: &Gateway) -> std::path::PathBuf {
    gw.dir.path().join("audit.log")
}

/// The EHLO reply's AUTH line.
async fn ehlo_auth(c: &mut Client) -> String {
    let lines = c.cmd("EHLO device.example.test", 250).await;
    lines
        .into_iter()
        .find(|l| l[4..].starts_with("AUTH "))
        .unwrap_or_default()
}

/// Waits for the EXTERNAL auth event of `user` with `result`.
async fn external_event(path: &Path, what: &str, result: Outcome, reason: &str) -> Event {
    let hits = mech::wait_events(path, what, 1, |e| {
        e.kind == Kind::Auth
            && e.mechanism.as_deref() == Some("EXTERNAL")
            && e.result == result
            && e.reason.as_deref().unwrap_or_default().contains(reason)
    })
    .await;
    hits.into_iter().next().expect("one event")
}

fn fingerprint(device: &Device) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(device.der.as_ref()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_certificate_logs_in_and_relays_over_implicit_tls_and_starttls() {
    let ca = DeviceCa::new("devices CA");
    let gw = gateway(&ca).await;
    let scanner = ca.issue("scanner-1", 1, 2099);
    let mut c = Client::connect_tls_as(gw.addr("submissions"), &scanner).await;
    c.expect(220).await;
    let auth = ehlo_auth(&mut c).await;
    assert!(
        auth.contains("EXTERNAL") && auth.contains("PLAIN"),
        "{auth}"
    );
    c.cmd("AUTH EXTERNAL =", 235).await;
    mech::send_mail(&mut c, "alice@example.test", "bob@example.test", "").await;
    c.cmd("QUIT", 221).await;
    assert_eq!(gw.wait_for_mail("bob", 1).await.len(), 1);
    let e = external_event(&audit(&gw), "EXTERNAL success", Outcome::Success, "").await;
    assert_eq!(e.user.as_deref(), Some("alice"));
    assert_eq!(e.class, Some(Class::Modern));
    assert_eq!(e.listener.as_deref(), Some("submissions"));
    assert!(
        e.cert_subject
            .as_deref()
            .unwrap_or_default()
            .contains("CN=scanner-1"),
        "{e:?}"
    );
    assert_eq!(e.cert_sha256, Some(fingerprint(&scanner)));

    // STARTTLS: the certificate counts from the handshake on; an authorization identity must
    // be the certificate's own user.
    let bob = ca.issue("bob", 2, 2099);
    let mut c = Client::connect(gw.addr("submission")).await;
    c.expect(220).await;
    let before = ehlo_auth(&mut c).await;
    assert!(!before.contains("EXTERNAL"), "{before}");
    c.cmd("STARTTLS", 220).await;
    let mut c = c.starttls_as(&bob).await;
    assert!(ehlo_auth(&mut c).await.contains("EXTERNAL"));
    c.cmd(&format!("AUTH EXTERNAL {}", B64.encode("alice")), 535)
        .await;
    // No initial response: an empty challenge, then the (empty) authorization identity.
    let challenge = c.cmd("AUTH EXTERNAL", 334).await;
    assert_eq!(challenge, vec!["334 ".to_string()]);
    c.cmd("", 235).await;
    mech::send_mail(&mut c, "bob@example.test", "alice@example.test", "").await;
    assert_eq!(gw.wait_for_mail("alice", 1).await.len(), 1);
    let refused = external_event(
        &audit(&gw),
        "EXTERNAL with another user's authzid",
        Outcome::Failure,
        "authorization identity",
    )
    .await;
    assert_eq!(refused.cert_sha256, Some(fingerprint(&bob)));
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3_auth_external_after_stls_and_on_pop3s() {
    let ca = DeviceCa::new("devices CA");
    let gw = gateway(&ca).await;
    let bob = ca.issue("bob", 2, 2099);
    let mut c = Client::connect(gw.addr("pop3")).await;
    c.pop(true).await;
    c.pop_cmd("CAPA", true).await;
    let capa = c.multiline().await.join("\n");
    assert!(!capa.contains("EXTERNAL"), "{capa}");
    c.pop_cmd("STLS", true).await;
    let mut c = c.starttls_as(&bob).await;
    c.pop_cmd("CAPA", true).await;
    let capa = c.multiline().await;
    let sasl = capa.iter().find(|l| l.starts_with("SASL")).expect("SASL");
    assert!(sasl.contains("EXTERNAL"), "{sasl}");
    // No initial response: an empty challenge, answered with "=" as curl does.
    c.send("AUTH EXTERNAL").await;
    assert_eq!(c.line().await.as_deref(), Some("+ "));
    c.pop_cmd("=", true).await;
    let stat = c.pop_cmd("STAT", true).await;
    assert!(stat.starts_with("+OK 0 "), "{stat}");
    c.pop_cmd("QUIT", true).await;
    // Implicit TLS without a certificate: no EXTERNAL, and PLAIN as before.
    let mut c = Client::connect_tls(gw.addr("pop3s")).await;
    c.pop(true).await;
    c.pop_cmd("CAPA", true).await;
    let capa = c.multiline().await.join("\n");
    assert!(
        !capa.contains("EXTERNAL") && capa.contains("PLAIN"),
        "{capa}"
    );
    c.pop_cmd("AUTH EXTERNAL =", false).await;
    let plain = B64.encode(format!("\0alice\0{PASSWORD}"));
    c.pop_cmd(&format!("AUTH PLAIN {plain}"), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_cas_expired_revoked_and_unknown_certificates_are_refused() {
    let ca = DeviceCa::new("devices CA");
    let gw = gateway(&ca).await;
    let submissions = gw.addr("submissions");
    // Another CA: the handshake succeeds, EXTERNAL is neither offered nor accepted, PLAIN is.
    let stranger = DeviceCa::new("someone else's CA").issue("alice", 1, 2099);
    let mut c = Client::connect_tls_as(submissions, &stranger).await;
    c.expect(220).await;
    let auth = ehlo_auth(&mut c).await;
    assert!(
        !auth.contains("EXTERNAL") && auth.contains("PLAIN"),
        "{auth}"
    );
    c.cmd("AUTH EXTERNAL =", 504).await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    // No certificate at all: as before.
    let mut c = Client::connect_tls(submissions).await;
    c.expect(220).await;
    assert!(!ehlo_auth(&mut c).await.contains("EXTERNAL"));
    assert_eq!(mech::smtp_plain(&mut c, "bob", PASSWORD).await.code, 235);
    // From the CA but unusable: offered, then refused with the reason in the audit log.
    let cases = [
        (ca.issue("bob", 3, 2021), "client certificate expired"),
        (ca.issue("bob", REVOKED, 2099), "client certificate revoked"),
        (ca.issue("mallory", 4, 2099), mailgate::sasl::NO_SUCH_USER),
    ];
    for (device, reason) in cases {
        let mut c = Client::connect_tls_as(submissions, &device).await;
        c.expect(220).await;
        assert!(ehlo_auth(&mut c).await.contains("EXTERNAL"), "{reason}");
        c.cmd("AUTH EXTERNAL =", 535).await;
        let e = external_event(&audit(&gw), reason, Outcome::Failure, reason).await;
        assert_eq!(e.cert_sha256, Some(fingerprint(&device)), "{reason}");
        assert_eq!(e.user, None, "{reason}");
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_sends_and_reads_mail_with_a_client_certificate() {
    if !have("curl") {
        return;
    }
    let ca = DeviceCa::new("devices CA");
    let gw = gateway(&ca).await;
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = ca.issue("bob", 2, 2099).write(files.path(), "bob");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let message = files.path().join("message.txt");
    std::fs::write(
        &message,
        "From: bob@example.test\r\nTo: bob@example.test\r\nSubject: scan\r\n\r\npage 1\r\n",
    )
    .expect("message");
    let smtps = format!("smtps://{}", gw.addr("submissions"));
    let out = run(
        "curl",
        args(&[
            "--silent",
            "--show-error",
            "--insecure",
            "--max-time",
            "20",
            "--url",
            &smtps,
            "--cert",
            &cert,
            "--key",
            &key,
            "--login-options",
            "AUTH=EXTERNAL",
            "--mail-from",
            "bob@example.test",
            "--mail-rcpt",
            "bob@example.test",
            "--upload-file",
            &message.display().to_string(),
        ]),
        None,
    )
    .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl smtps EXTERNAL failed: {said}");
    assert_eq!(gw.wait_for_mail("bob", 1).await.len(), 1);
    let pop3s = format!("pop3s://{}/1", gw.addr("pop3s"));
    let out = run(
        "curl",
        args(&[
            "--silent",
            "--show-error",
            "--insecure",
            "--max-time",
            "20",
            "--url",
            &pop3s,
            "--cert",
            &cert,
            "--key",
            &key,
            "--login-options",
            "AUTH=EXTERNAL",
        ]),
        None,
    )
    .await;
    let body = String::from_utf8_lossy(&out.stdout);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl pop3s EXTERNAL failed: {said}");
    assert!(
        body.contains("Subject: scan") && body.contains("page 1"),
        "{body}"
    );
    // Without the certificate curl finds no EXTERNAL to use.
    let out = run(
        "curl",
        args(&[
            "--silent",
            "--insecure",
            "--max-time",
            "20",
            "--url",
            &pop3s,
            "--login-options",
            "AUTH=EXTERNAL",
        ]),
        None,
    )
    .await;
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_requested_only_with_auth_external() {
    if !have("openssl") {
        return;
    }
    let ca = DeviceCa::new("devices CA");
    let with = gateway(&ca).await;
    let without = Gateway::start("").await;
    for (gw, asked) in [(&with, true), (&without, false)] {
        let connect = gw.addr("submissions").to_string();
        let out = run(
            "openssl",
            args(&[
                "s_client",
                "-connect",
                &connect,
                "-quiet",
                "-no_ign_eof",
                "-msg",
            ]),
            Some("QUIT\n".into()),
        )
        .await;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Both sides' Finished: the handshake completes with or without a request (openssl
        // has no certificate to give).
        assert!(said.matches("Finished").count() >= 2, "{said}");
        assert_eq!(said.contains("CertificateRequest"), asked, "{asked} {said}");
    }
}
