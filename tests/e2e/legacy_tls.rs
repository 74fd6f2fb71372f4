//! TLS 1.0 and 1.1 only for the networks that need them (`[tls] legacy_networks`, built with
//! the `legacy-tls` feature): a client from such a network completes a TLS 1.0 or 1.1
//! handshake (implicit TLS and STARTTLS/STLS), one from anywhere else cannot, and TLS 1.2/1.3
//! clients from both are unaffected. A login on a session below TLS 1.2 is audited as class
//! `insecure`, whatever the mechanism.

use mailgate_testkit::{self as common, Gateway, PASSWORD, extra, have, mech, run};

/// 127.0.0.1 (where the clients below connect from by default) is the legacy network;
/// 127.0.0.9 is not.
async fn start() -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let text = extra::set(
        &common::config_text("[tls]\nlegacy_networks = [\"127.0.0.1/32\"]\n"),
        "auth",
        "mechanisms",
        r#"["PLAIN", "SCRAM-SHA-256"]"#,
    );
    Gateway::start_in(dir, &text).await
}

/// A Python client: for each (source address, protocol, kind, port) tries a handshake with
/// only that TLS version allowed, prints one line `SOURCE VERSION KIND -> NEGOTIATED` or
/// `-> failed`.
const PROBE: &str = r#"
import socket, ssl, smtplib, poplib, sys
VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
            "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
def context(v):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Debian's OpenSSL refuses TLS 1.0/1.1 signatures above security level 0.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = VERSIONS[v]
    ctx.maximum_version = VERSIONS[v]
    return ctx
def implicit(src, v, port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    tls = context(v).wrap_socket(sock)
    line = tls.recv(200)
    assert line.startswith(b"220") or line.startswith(b"+OK"), line
    out = tls.version()
    tls.close()
    return out
def starttls(src, v, port):
    s = smtplib.SMTP("127.0.0.1", port, source_address=(src, 0), timeout=5)
    s.starttls(context=context(v))
    out = s.sock.version()
    s.login("alice", PASSWORD)
    s.quit()
    return out
for item in sys.argv[1:]:
    src, v, kind, port = item.split(",")
    try:
        got = (implicit if kind == "implicit" else starttls)(src, v, int(port))
    except Exception as e:
        got = "failed"
        print("failed: %s %s %s: %r" % (src, v, kind, e), file=sys.stderr)
    print(f"{src} {v} {kind} -> {got}")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn old_tls_only_for_the_legacy_networks() {
    if !have("python3") {
        return;
    }
    let gw = start().await;
    let subs = gw.addr("submissions").port();
    let sub = gw.addr("submission").port();
    let pop3s = gw.addr("pop3s").port();
    let mut cases = Vec::new();
    let mut want = Vec::new();
    for (src, legacy) in [("127.0.0.1", true), ("127.0.0.9", false)] {
        for v in ["1.0", "1.1", "1.2", "1.3"] {
            let ok = legacy || v == "1.2" || v == "1.3";
            let name = format!("TLSv{v}").replace("TLSv1.0", "TLSv1");
            for (kind, port) in [("implicit", subs), ("implicit", pop3s), ("starttls", sub)] {
                cases.push(format!("{src},{v},{kind},{port}"));
                let got = if ok { name.as_str() } else { "failed" };
                want.push(format!("{src} {v} {kind} -> {got}"));
            }
        }
    }
    let script = PROBE.replace("PASSWORD", &format!("{PASSWORD:?}"));
    let mut args = vec!["-c".to_string(), script];
    args.extend(cases);
    let out = run("python3", args, None).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<&str> = said.lines().collect();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&out.stderr));

    // Logins on the TLS 1.0 sessions above (STARTTLS from the legacy network) are insecure,
    // those on TLS 1.2 and 1.3 basic, as PLAIN over TLS always is.
    let log = gw.state().join("audit.log");
    // STARTTLS logins: four versions from the legacy network, two from the other.
    let events = mech::wait_events(&log, "logins over TLS", 6, |e| {
        e.kind == mailgate::audit::Kind::Auth
    })
    .await;
    for e in &events {
        let tls = e.tls.clone().unwrap_or_default();
        let want = if tls.starts_with("TLSv1.0") || tls.starts_with("TLSv1.1") {
            "insecure"
        } else {
            "basic"
        };
        assert_eq!(e.class.map(|c| c.as_str()), Some(want), "{tls}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.tls.as_deref().is_some_and(|t| t.starts_with("TLSv1.0 "))),
        "a TLS 1.0 session is recorded as such"
    );
    gw.stop().await;
}

/// The command-line client admins reach for: `openssl s_client -tls1` with STARTTLS.
#[tokio::test(flavor = "multi_thread")]
async fn openssl_s_client_speaks_tls_1_0_from_a_legacy_network() {
    if !have("openssl") {
        return;
    }
    let gw = start().await;
    let args = [
        "s_client",
        "-tls1",
        "-cipher",
        "DEFAULT:@SECLEVEL=0",
        "-starttls",
        "smtp",
        // Send QUIT as typed (not as s_client's own "Q" command) and wait for the answer.
        "-nocommands",
        "-ign_eof",
        "-connect",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(gw.addr("submission").to_string());
    let out = run("openssl", args, Some("QUIT\n".into())).await;
    let said = String::from_utf8_lossy(&out.stdout);
    // The handshake completed at TLS 1.0 and the session went on: QUIT was answered.
    assert!(said.contains("Protocol  : TLSv1\n"), "{said}");
    assert!(!said.contains("Cipher is (NONE)"), "{said}");
    assert!(said.contains("221 "), "{said}");
    gw.stop().await;
}
