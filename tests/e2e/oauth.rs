//! XOAUTH2 and OAUTHBEARER end to end: a gateway with `[auth.oauth]` (a JWKS file written by
//! the test), tokens signed with the fixture keys, over implicit TLS (submissions, POP3S) and
//! STARTTLS, and with Python's smtplib when it is installed; malformed messages on SMTP and
//! POP3, each followed by a good login; no token in the log or the audit log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use common::client::Client;
use common::{Gateway, have, run};
use mailgate_testkit::jwt::Minter;
use mailgate_testkit::sasl::xoauth2_b64 as xoauth2;
use mailgate_testkit::{self as common, sasl};

const ISSUER: &str = "https://idp.example.test";

/// Fixture key 1 is in the gateway's JWKS; key 2 is not (see tests/fixtures/oauth-keys.md).
/// Both name themselves `key-1`.
fn rsa_key(n: usize) -> Minter {
    let pem = [
        include_str!("../fixtures/oauth-rsa-1.pem"),
        include_str!("../fixtures/oauth-rsa-2.pem"),
    ][n - 1];
    Minter::rs256_pem(pem).with_kid("key-1")
}

fn now() -> u64 {
    #[allow(clippy::disallowed_methods)] // the gateway runs on the system clock here
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A token for `email`, signed with key `n`, with `changes` applied to good claims.
fn token(n: usize, email: &str, changes: Value) -> String {
    let mut claims = json!({
        "iss": ISSUER, "aud": "mailgate", "email": email, "scope": "openid mail",
        "iat": now(), "exp": now() + 600,
    });
    if let (Some(map), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            map.insert(k.clone(), v.clone());
        }
    }
    rsa_key(n).mint(&claims)
}

async fn start() -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users");
    std::fs::write(dir.path().join("jwks.json"), rsa_key(1).jwks()).expect("jwks");
    let text = common::config_text(&format!(
        r#"
[auth.oauth]
jwks_file = "jwks.json"
issuer = "{ISSUER}"
audience = ["mailgate"]
algorithms = ["RS256"]
clock_skew = "30s"
user_claim = "email"
required_scope = "mail"
"#
    ))
    .replace(
        "[auth]\n",
        "[auth]\nmechanisms = [\"PLAIN\", \"XOAUTH2\", \"OAUTHBEARER\"]\n",
    );
    Gateway::start_in(dir, &text).await
}

fn oauthbearer(user: &str, token: &str) -> String {
    sasl::oauthbearer_b64(user, Some(("mail.example.test", 465)), token)
}

/// The bad tokens every refusal test runs: expired, signed with a key not in the JWKS, for
/// another audience, and lacking the required scope.
fn bad_tokens() -> Vec<(&'static str, String)> {
    vec![
        (
            "expired",
            token(1, "alice@example.test", json!({"exp": now() - 120})),
        ),
        ("wrongly signed", token(2, "alice@example.test", json!({}))),
        (
            "wrong audience",
            token(1, "alice@example.test", json!({"aud": "calendar"})),
        ),
        (
            "no scope",
            token(1, "alice@example.test", json!({"scope": "openid"})),
        ),
    ]
}

/// Decodes a `334 <base64>` / `+ <base64>` challenge into JSON.
fn challenge_json(line: &str) -> Value {
    let b64 = line.rsplit(' ').next().unwrap_or_default();
    let bytes = B64.decode(b64).unwrap_or_else(|e| panic!("{line}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_submissions_good_tokens_authenticate_and_relay() {
    let gw = start().await;
    let good = token(1, "alice@example.test", json!({}));
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    let ehlo = c.cmd("EHLO client.example", 250).await.join("\n");
    assert!(
        ehlo.contains("XOAUTH2") && ehlo.contains("OAUTHBEARER"),
        "{ehlo}"
    );
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &good)), 235)
        .await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@remote.example>", 250).await;
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(b"Subject: via xoauth2\r\n\r\nhi\r\n.\r\n").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(mail[0].contains("Subject: via xoauth2"), "{}", mail[0]);

    // OAUTHBEARER, with and without an initial response; the token's email maps to "alice".
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    let ir = oauthbearer("alice@example.test", &good);
    c.cmd(&format!("AUTH OAUTHBEARER {ir}"), 235).await;
    c.cmd("QUIT", 221).await;
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    c.cmd("AUTH OAUTHBEARER", 334).await;
    c.cmd(&ir, 235).await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@remote.example>", 250).await;
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_refused_tokens_get_the_json_error_then_535() {
    let gw = start().await;
    for (what, bad) in bad_tokens() {
        let mut c = Client::connect_tls(gw.addr("submissions")).await;
        c.expect(220).await;
        c.cmd("EHLO client.example", 250).await;
        let lines = c
            .cmd(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &bad)), 334)
            .await;
        let status = challenge_json(&lines[0])["status"].clone();
        let want = if what == "no scope" { "403" } else { "401" };
        assert_eq!(status, json!(want), "{what}");
        c.cmd("", 535).await;
        let lines = c
            .cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer("", &bad)), 334)
            .await;
        let err = challenge_json(&lines[0]);
        let want = if what == "no scope" {
            "insufficient_scope"
        } else {
            "invalid_token"
        };
        assert_eq!(err["status"], json!(want), "{what}: {err}");
        c.cmd("AQ==", 535).await;
        // Not authenticated: relaying stays closed.
        c.cmd("MAIL FROM:<alice@example.test>", 530).await;
        c.cmd("QUIT", 221).await;
    }
    // A token for alice does not log in as bob.
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    let good = token(1, "alice@example.test", json!({}));
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2("bob", &good)), 334)
        .await;
    c.cmd("", 535).await;
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &good)), 235)
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_mechanisms_need_tls() {
    let gw = start().await;
    let good = token(1, "alice@example.test", json!({}));
    let mut c = Client::connect(gw.addr("submission")).await;
    c.expect(220).await;
    let ehlo = c.cmd("EHLO client.example", 250).await.join("\n");
    assert!(
        !ehlo.contains("XOAUTH2") && !ehlo.contains("OAUTHBEARER"),
        "{ehlo}"
    );
    let (code, _) = {
        c.send(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &good)))
            .await;
        c.reply().await
    };
    assert!(code == 530 || code == 538, "{code}");
    c.cmd("STARTTLS", 220).await;
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO client.example", 250).await.join("\n");
    assert!(ehlo.contains("XOAUTH2"), "{ehlo}");
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &good)), 235)
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pop3s_good_and_refused_tokens() {
    let gw = start().await;
    let good = token(1, "bob@example.test", json!({}));
    for (what, bad) in bad_tokens() {
        // A fresh session each: three failures end a session.
        let mut c = Client::connect_tls(gw.addr("pop3s")).await;
        c.pop(true).await;
        c.send(&format!("AUTH OAUTHBEARER {}", oauthbearer("bob", &bad)))
            .await;
        let line = c.line().await.unwrap_or_default();
        assert!(line.starts_with("+ "), "{what}: {line}");
        assert!(
            challenge_json(&line)["status"].is_string(),
            "{what}: {line}"
        );
        c.pop_cmd("AQ==", false).await;
        c.pop_cmd("STAT", false).await;
    }
    let mut c = Client::connect_tls(gw.addr("pop3s")).await;
    c.pop(true).await;
    c.send("CAPA").await;
    c.pop(true).await;
    let capa = c.multiline().await.join("\n");
    assert!(
        capa.contains("XOAUTH2") && capa.contains("OAUTHBEARER"),
        "{capa}"
    );
    c.send(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2("bob", &bad_tokens()[0].1)
    ))
    .await;
    let line = c.line().await.unwrap_or_default();
    assert_eq!(
        challenge_json(&line),
        json!({"status": "401", "schemes": "bearer"})
    );
    c.pop_cmd("", false).await;
    c.pop_cmd(&format!("AUTH XOAUTH2 {}", xoauth2("bob", &good)), true)
        .await;
    c.pop_cmd("STAT", true).await;
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_smtplib_xoauth2() {
    if !have("python3") {
        return;
    }
    let gw = start().await;
    let good = token(1, "alice@example.test", json!({}));
    let expired = token(1, "alice@example.test", json!({"exp": now() - 120}));
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def xoauth2(tok):
    msg = "user=alice\x01auth=Bearer " + tok + "\x01\x01"
    # First call: the initial response; after an error challenge: the empty reply.
    return lambda challenge=None: msg if challenge is None else ""
s = smtplib.SMTP_SSL("127.0.0.1", {port}, context=ctx)
s.ehlo("python.example")
try:
    s.auth("XOAUTH2", xoauth2("{expired}"))
    raise SystemExit("expired token accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
code, _ = s.auth("XOAUTH2", xoauth2("{good}"))
assert code == 235, code
s.sendmail("alice@example.test", ["bob@example.test"], "Subject: via python xoauth2\r\n\r\nhi\r\n")
s.quit()
print("python ok")
"#,
        port = gw.addr("submissions").port(),
    );
    let out = run("python3", vec!["-c".into(), script], None).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(
        mail[0].contains("Subject: via python xoauth2"),
        "{}",
        mail[0]
    );
    gw.stop().await;
}

/// Collects every log line of this test binary (all levels).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_reach_the_log() {
    let log = LogBuffer::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    let gw = start().await;
    let good = token(1, "alice@example.test", json!({}));
    let mut tokens = vec![good.clone()];
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    for (_, bad) in bad_tokens().into_iter().take(2) {
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &bad)), 334)
            .await;
        c.cmd("", 535).await;
        tokens.push(bad);
    }
    c.cmd(
        &format!("AUTH OAUTHBEARER {}", oauthbearer("alice", &good)),
        235,
    )
    .await;
    c.cmd("QUIT", 221).await;
    let mut p = Client::connect_tls(gw.addr("pop3s")).await;
    p.pop(true).await;
    p.pop_cmd(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &good)), true)
        .await;
    p.pop_cmd("QUIT", true).await;
    let audit_path = gw.state().join("audit.log");
    // Stopping flushes the audit writer; the folder lives until `_dir` drops.
    let _dir = gw.stop().await;
    let audit = std::fs::read_to_string(&audit_path)
        .unwrap_or_else(|e| panic!("{}: {e}", audit_path.display()));
    assert!(
        audit.contains("XOAUTH2"),
        "no bearer events audited:\n{audit}"
    );
    let text =
        String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        text.contains("bearer token refused"),
        "nothing logged?\n{text}"
    );
    assert!(text.contains("authenticated"), "{text}");
    for t in &tokens {
        // Neither the token, nor its signature, nor the base64 client messages.
        let signature = t.rsplit('.').next().unwrap_or_default();
        for secret in [
            t.clone(),
            signature.to_string(),
            xoauth2("alice", t),
            oauthbearer("alice", t),
        ] {
            assert!(
                !text.contains(&secret),
                "token material in the log:\n{text}"
            );
            assert!(
                !audit.contains(&secret),
                "token material in the audit log:\n{audit}"
            );
        }
    }
}

/// What the server answered last in a malformed-input case: the SMTP code, or for POP3 535 for
/// `-ERR [AUTH]`, 501 for another `-ERR`, 334 for a `+ ` challenge and 235 for `+OK`.
async fn code(c: &mut Client, pop3: bool) -> (u16, String) {
    if !pop3 {
        let (code, lines) = c.reply().await;
        return (code, lines.join("\n"));
    }
    let line = c.line().await.unwrap_or_default();
    let code = if line.starts_with("+OK") {
        235
    } else if line.starts_with("+ ") {
        334
    } else if line.starts_with("-ERR [AUTH]") {
        535
    } else {
        assert!(line.starts_with("-ERR"), "{line}");
        501
    };
    (code, line)
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bearer_messages_on_smtp_and_pop3_then_a_good_login() {
    let gw = start().await;
    let good = token(1, "alice@example.test", json!({}));
    let bad = token(1, "alice@example.test", json!({"aud": "calendar"}));
    let b64 = |s: &str| B64.encode(s);
    // (case, AUTH command, the line answering the error challenge (if any), the last code)
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        (
            "XOAUTH2 without auth=",
            format!("AUTH XOAUTH2 {}", b64("user=alice\x01\x01")),
            None,
            501,
        ),
        (
            "OAUTHBEARER without auth=",
            format!(
                "AUTH OAUTHBEARER {}",
                b64("n,a=alice,\x01host=mail.example.test\x01\x01")
            ),
            None,
            501,
        ),
        (
            "OAUTHBEARER without a gs2 header",
            format!("AUTH OAUTHBEARER {}", b64("auth=Bearer x\x01\x01")),
            None,
            501,
        ),
        (
            "XOAUTH2 bad base64",
            "AUTH XOAUTH2 %%%not-base64%%%".into(),
            None,
            501,
        ),
        (
            "OAUTHBEARER bad base64",
            "AUTH OAUTHBEARER %%%not-base64%%%".into(),
            None,
            501,
        ),
        (
            "XOAUTH2 bad base64 after the error challenge",
            format!("AUTH XOAUTH2 {}", xoauth2("alice", &bad)),
            Some("%%%"),
            501,
        ),
        (
            "OAUTHBEARER bad base64 after the error challenge",
            format!("AUTH OAUTHBEARER {}", oauthbearer("alice", &bad)),
            Some("%%%"),
            501,
        ),
        (
            "OAUTHBEARER * after the error challenge",
            format!("AUTH OAUTHBEARER {}", oauthbearer("alice", &bad)),
            Some("*"),
            501,
        ),
        // Any other answer to the error challenge ends the exchange as the refusal it is.
        (
            "OAUTHBEARER a token again instead of ^A",
            format!("AUTH OAUTHBEARER {}", oauthbearer("alice", &bad)),
            Some("again"),
            535,
        ),
    ];
    for pop3 in [false, true] {
        for (case, auth, then, want) in &cases {
            let mut c = if pop3 {
                let mut c = Client::connect_tls(gw.addr("pop3s")).await;
                c.pop(true).await;
                c
            } else {
                let mut c = Client::connect_tls(gw.addr("submissions")).await;
                c.expect(220).await;
                c.cmd("EHLO client.example", 250).await;
                c
            };
            c.send(auth).await;
            let (mut got, mut text) = code(&mut c, pop3).await;
            if let Some(next) = then {
                assert_eq!(got, 334, "pop3={pop3} {case}: {text}");
                let line = match *next {
                    "again" => oauthbearer("alice", &good),
                    other => other.to_owned(),
                };
                c.send(&line).await;
                (got, text) = code(&mut c, pop3).await;
            }
            assert_eq!(got, *want, "pop3={pop3} {case}: {text}");
            // The session goes on: a good token logs in right after.
            c.send(&format!("AUTH XOAUTH2 {}", xoauth2("alice", &good)))
                .await;
            let (got, text) = code(&mut c, pop3).await;
            assert_eq!(got, 235, "pop3={pop3} {case}, then a good login: {text}");
            // QUIT frees alice's maildrop before it is answered; a dropped connection would
            // free it only once the server sees the close, racing the next case's login.
            if pop3 {
                c.pop_cmd("QUIT", true).await;
            } else {
                c.cmd("QUIT", 221).await;
            }
        }
    }
    gw.stop().await;
}
