//! AUTH NTLM end to end: the ntlmclient crate, curl and swaks (with Authen::NTLM) against the
//! real gateway, on SMTP submission (plain, STARTTLS, implicit TLS) and POP3; NTLMv1 refused by
//! default and accepted with `[auth] ntlm_v1 = true`; malformed messages answered 501 / 535 while
//! the server keeps serving.
//!
//! swaks speaks only SMTP, so NTLM over POP3 is driven by curl (`pop3://` with
//! `--login-options AUTH=NTLM`) and by the ntlmclient crate (NTLMv2, and the NTLMv1 responses
//! computed in `v1_response`).
//!
//! Tests driving an external client skip with a notice when it is missing; CI sets
//! `MAILGATE_REQUIRE_CLIENTS=1`, which turns a skip into a failure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ntlmclient::{ChallengeResponse, Credentials};

use common::client::Client;
use common::{Gateway, PASSWORD, have, run};
use mailgate_testkit::{self as common, sasl};

/// The base test config with NTLM enabled (and v1 as asked) in its `[auth]` table.
fn config(ntlm_v1: bool) -> String {
    let auth = format!(
        "[auth]\nmechanisms = [\"PLAIN\", \"LOGIN\", \"NTLM\"]\nntlm_domain = \"EXAMPLE\"\n\
         ntlm_v1 = {ntlm_v1}\n"
    );
    let base = common::config_text("");
    assert!(
        base.contains("[auth]\n"),
        "the base config has an [auth] table"
    );
    base.replacen("[auth]\n", &auth, 1)
}

async fn start(ntlm_v1: bool) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    Gateway::start_in(dir, &config(ntlm_v1)).await
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Which response the Rust client computes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    V2,
    V1,
    V1NoLm,
    V1Extended,
}

fn creds(user: &str, domain: &str, password: &str) -> Credentials {
    sasl::ntlm_credentials(user, domain, password)
}

fn negotiate_b64() -> String {
    sasl::ntlm_negotiate_b64()
}

/// The AUTHENTICATE message (base64) answering the base64 `challenge`.
fn authenticate_b64(challenge: &str, creds: &Credentials, kind: Kind) -> String {
    let answer = match kind {
        Kind::V2 => sasl::ntlm_authenticate_b64(challenge, creds),
        Kind::V1 | Kind::V1NoLm | Kind::V1Extended => {
            sasl::ntlm_authenticate_b64_with(challenge, creds, |server_challenge, _| {
                v1_response(server_challenge, creds, kind)
            })
        }
    };
    answer.unwrap_or_else(|e| panic!("{e}"))
}

/// An NTLMv1 response (MS-NLMP §3.3.1), computed here: the client crate's NTLMv1 functions
/// cannot build their DES keys. `V1` sends a fixed stand-in in the LM field (the server never
/// looks at LM responses), `V1NoLm` repeats the NT response there, and `V1Extended` sends the
/// client challenge and the NTLM2 session response.
fn v1_response(server_challenge: [u8; 8], creds: &Credentials, kind: Kind) -> ChallengeResponse {
    use md5::{Digest, Md5};
    let nt_hash = ntlmclient::ntlm_v1_password_func(&creds.password);
    let client_challenge = [0x5a; 8];
    let (lm, data) = match kind {
        Kind::V1Extended => {
            let digest = Md5::new()
                .chain_update(server_challenge)
                .chain_update(client_challenge)
                .finalize();
            let mut data = [0u8; 8];
            data.copy_from_slice(&digest[..8]);
            ([&client_challenge[..], &[0; 16]].concat(), data)
        }
        _ => (vec![0x11; 24], server_challenge),
    };
    let nt = desl(&nt_hash, &data);
    ChallengeResponse {
        lm_response: if matches!(kind, Kind::V1NoLm) {
            nt.clone()
        } else {
            lm
        },
        ntlm_response: nt,
        session_key: Vec::new(),
    }
}

/// DESL (MS-NLMP §6): DES of `data` under the three 7-byte thirds of the zero-padded key, each
/// spread over the high seven bits of eight key bytes.
fn desl(key: &[u8; 16], data: &[u8; 8]) -> Vec<u8> {
    use des::cipher::{BlockCipherEncrypt, KeyInit};
    let mut padded = [0u8; 21];
    padded[..16].copy_from_slice(key);
    let mut out = Vec::new();
    for third in padded.chunks(7) {
        let mut des_key = [0u8; 8];
        for bit in 0..56 {
            if third[bit / 8] & (0x80 >> (bit % 8)) != 0 {
                des_key[bit / 7] |= 0x80 >> (bit % 7);
            }
        }
        let mut block = (*data).into();
        des::Des::new(&des_key.into()).encrypt_block(&mut block);
        let block: [u8; 8] = block.into();
        out.extend_from_slice(&block);
    }
    out
}

/// The text after an SMTP `334 ` reply.
fn smtp_challenge(lines: &[String]) -> String {
    lines[0].get(4..).unwrap_or_default().to_owned()
}

/// Runs AUTH NTLM on an SMTP session after EHLO; returns the final reply code.
async fn smtp_ntlm(c: &mut Client, creds: &Credentials, kind: Kind, initial: bool) -> u16 {
    let lines = if initial {
        c.cmd(&format!("AUTH NTLM {}", negotiate_b64()), 334).await
    } else {
        let empty = c.cmd("AUTH NTLM", 334).await;
        assert_eq!(
            smtp_challenge(&empty).trim(),
            "",
            "first challenge is empty"
        );
        c.cmd(&negotiate_b64(), 334).await
    };
    c.send(&authenticate_b64(&smtp_challenge(&lines), creds, kind))
        .await;
    c.reply().await.0
}

async fn ehlo(c: &mut Client) -> Vec<String> {
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_client_ntlmv2_on_smtp_and_pop3() {
    let gw = start(false).await;
    // Plain submission: NTLM is not a plaintext mechanism, so it is offered without TLS.
    let mut c = Client::connect(gw.addr("submission")).await;
    let caps = ehlo(&mut c).await;
    assert!(
        caps.iter()
            .any(|l| l.contains("AUTH") && l.contains("NTLM")),
        "{caps:?}"
    );
    let alice = creds("alice", "", PASSWORD);
    // A wrong password first: 535, and the session goes on.
    let wrong = creds("alice", "", "wrong");
    assert_eq!(smtp_ntlm(&mut c, &wrong, Kind::V2, false).await, 535);
    assert_eq!(smtp_ntlm(&mut c, &alice, Kind::V2, false).await, 235);
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<bob@example.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send("Subject: via NTLM\r\n\r\nhello\r\n.").await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(mail[0].contains("Subject: via NTLM"));

    // The initial-response form, and the name forms DOMAIN\user and user@domain, over TLS.
    for (user, domain, initial) in [
        ("alice", "", true),
        ("alice", "EXAMPLE", false),
        ("Alice", "mail.example.test", true),
        ("alice@example.test", "", false),
    ] {
        let mut c = Client::connect_tls(gw.addr("submissions")).await;
        ehlo(&mut c).await;
        let code = smtp_ntlm(&mut c, &creds(user, domain, PASSWORD), Kind::V2, initial).await;
        assert_eq!(code, 235, "{domain}\\{user} (initial response {initial})");
    }
    // A domain that is not ours.
    let mut c = Client::connect(gw.addr("submission")).await;
    ehlo(&mut c).await;
    let other = creds("alice", "OTHERDOM", PASSWORD);
    assert_eq!(smtp_ntlm(&mut c, &other, Kind::V2, true).await, 535);

    // POP3: AUTH NTLM, `+ ` with an empty challenge, NEGOTIATE, CHALLENGE, AUTHENTICATE.
    let mut p = Client::connect(gw.addr("pop3")).await;
    p.pop(true).await;
    p.send("AUTH NTLM").await;
    assert_eq!(p.line().await.as_deref().map(str::trim_end), Some("+"));
    p.send(&negotiate_b64()).await;
    let challenge = p.line().await.expect("challenge");
    let challenge = challenge.strip_prefix("+ ").expect("POP3 continuation");
    p.send(&authenticate_b64(
        challenge,
        &creds("bob", "EXAMPLE", PASSWORD),
        Kind::V2,
    ))
    .await;
    p.pop(true).await;
    let stat = p.pop_cmd("STAT", true).await;
    assert!(stat.starts_with("+OK 1 "), "{stat}");
    p.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ntlmv1_refused_by_default_and_accepted_when_enabled() {
    let alice = creds("alice", "EXAMPLE", PASSWORD);
    let kinds = [Kind::V1, Kind::V1NoLm, Kind::V1Extended];
    let off = start(false).await;
    for kind in kinds {
        let mut c = Client::connect(off.addr("submission")).await;
        ehlo(&mut c).await;
        assert_eq!(smtp_ntlm(&mut c, &alice, kind, true).await, 535, "{kind:?}");
        // The same session still takes NTLMv2.
        assert_eq!(smtp_ntlm(&mut c, &alice, Kind::V2, false).await, 235);
    }
    let dir = off.stop().await;
    // The refusals are audited as what the clients sent: the weakest legacy class.
    let audit =
        std::fs::read_to_string(dir.path().join("state").join("audit.log")).expect("audit log");
    let refused: Vec<(String, String)> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "auth" && e["result"] == "failure")
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("mechanism"), text("class"))
        })
        .collect();
    let insecure = |m: &str| (m.to_string(), "insecure".to_string());
    assert_eq!(
        refused,
        [
            insecure("NTLMv1"),
            insecure("NTLMv1"),
            insecure("NTLMv1-ESS")
        ],
        "{audit}"
    );
    let on = start(true).await;
    for kind in kinds {
        let mut c = Client::connect(on.addr("submission")).await;
        ehlo(&mut c).await;
        let wrong = creds("alice", "", "wrong");
        assert_eq!(smtp_ntlm(&mut c, &wrong, kind, true).await, 535, "{kind:?}");
        assert_eq!(
            smtp_ntlm(&mut c, &alice, kind, false).await,
            235,
            "{kind:?}"
        );
    }
    on.stop().await;
}

/// POP3 AUTH NTLM without an initial response (`+`, NEGOTIATE, CHALLENGE, AUTHENTICATE);
/// whether the server answered `+OK`.
async fn pop_ntlm(p: &mut Client, creds: &Credentials, kind: Kind) -> bool {
    p.send("AUTH NTLM").await;
    assert_eq!(p.line().await.as_deref().map(str::trim_end), Some("+"));
    p.send(&negotiate_b64()).await;
    let challenge = p.line().await.expect("challenge");
    let challenge = challenge.strip_prefix("+ ").expect("POP3 continuation");
    p.send(&authenticate_b64(challenge, creds, kind)).await;
    let line = p.line().await.expect("AUTH result");
    assert!(
        line.starts_with("+OK") || line.starts_with("-ERR [AUTH]"),
        "{line}"
    );
    line.starts_with("+OK")
}

#[tokio::test(flavor = "multi_thread")]
async fn ntlmv1_over_pop3_refused_by_default_and_accepted_when_enabled() {
    let bob = creds("bob", "EXAMPLE", PASSWORD);
    let kinds = [Kind::V1, Kind::V1NoLm, Kind::V1Extended];
    for (ntlm_v1, accepted) in [(false, false), (true, true)] {
        let gw = start(ntlm_v1).await;
        for kind in kinds {
            let mut p = Client::connect(gw.addr("pop3")).await;
            p.pop(true).await;
            let wrong = creds("bob", "", "wrong");
            assert!(
                !pop_ntlm(&mut p, &wrong, kind).await,
                "{kind:?} wrong password"
            );
            let got = pop_ntlm(&mut p, &bob, kind).await;
            assert_eq!(got, accepted, "{kind:?} with ntlm_v1 = {ntlm_v1}");
            if !accepted {
                // The same session still takes NTLMv2.
                assert!(pop_ntlm(&mut p, &bob, Kind::V2).await, "{kind:?} then v2");
            }
            p.pop_cmd("STAT", true).await;
            p.pop_cmd("QUIT", true).await;
        }
        gw.stop().await;
    }
}

/// Sends `line` (already base64 or a command) and returns the reply code.
async fn code_after(c: &mut Client, line: &str) -> u16 {
    c.send(line).await;
    c.reply().await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_get_501_or_535_and_the_server_keeps_serving() {
    let gw = start(true).await;
    let b64 = |bytes: &[u8]| B64.encode(bytes);
    let negotiate = B64.decode(negotiate_b64()).expect("b64");
    // A well-formed AUTHENTICATE to cut up, made for a throwaway challenge.
    let sample = {
        let mut c = Client::connect(gw.addr("submission")).await;
        ehlo(&mut c).await;
        let lines = c.cmd(&format!("AUTH NTLM {}", b64(&negotiate)), 334).await;
        let alice = creds("alice", "", PASSWORD);
        B64.decode(authenticate_b64(&smtp_challenge(&lines), &alice, Kind::V2))
            .expect("b64")
    };
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut m = sample.clone();
        f(&mut m);
        b64(&m)
    };
    let field = |at: usize, len: u16, offset: u32| {
        with(&move |m: &mut Vec<u8>| {
            m[at..at + 2].copy_from_slice(&len.to_le_bytes());
            m[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
            m[at + 4..at + 8].copy_from_slice(&offset.to_le_bytes());
        })
    };
    let len = sample.len() as u32;
    // (initial response or NEGOTIATE, AUTHENTICATE or None, expected code)
    let cases: Vec<(String, Option<String>, u16)> = vec![
        // Wrong type, bad signature, truncated, not base64: at the NEGOTIATE step.
        (b64(&sample), None, 501),
        (b64(b"NTLMSSQ\0\x01\0\0\0\x07\x82\0\0"), None, 501),
        (b64(&negotiate[..10]), None, 501),
        ("%%%".into(), None, 501),
        // At the AUTHENTICATE step.
        (b64(&negotiate), Some(b64(&sample[..40])), 501),
        (b64(&negotiate), Some(b64(&sample[..sample.len() - 1])), 501),
        (b64(&negotiate), Some(b64(&negotiate)), 501),
        (b64(&negotiate), Some(field(36, 10, len - 4)), 501),
        (b64(&negotiate), Some(field(28, 4, u32::MAX - 1)), 501),
        (b64(&negotiate), Some(field(20, 16, 64)), 501),
        (b64(&negotiate), Some(field(12, 24, 8)), 501),
        // The client cancels (RFC 4954 §4: 501 too).
        (b64(&negotiate), Some("*".into()), 501),
        // Well-formed but for another challenge: bad credentials.
        (b64(&negotiate), Some(b64(&sample)), 535),
    ];
    for (i, (first, second, want)) in cases.into_iter().enumerate() {
        let mut c = Client::connect(gw.addr("submission")).await;
        ehlo(&mut c).await;
        let code = code_after(&mut c, &format!("AUTH NTLM {first}")).await;
        let code = match second {
            Some(auth) if code == 334 => code_after(&mut c, &auth).await,
            _ => code,
        };
        assert_eq!(code, want, "case {i}");
        // The session still works: a good NTLMv2 login.
        let alice = creds("alice", "", PASSWORD);
        assert_eq!(
            smtp_ntlm(&mut c, &alice, Kind::V2, true).await,
            235,
            "case {i}"
        );
    }
    // POP3 answers -ERR and goes on too.
    let mut p = Client::connect(gw.addr("pop3")).await;
    p.pop(true).await;
    p.pop_cmd(&format!("AUTH NTLM {}", b64(&sample)), false)
        .await;
    p.send(&format!("AUTH NTLM {}", b64(&negotiate))).await;
    assert!(p.line().await.expect("challenge").starts_with("+ "));
    p.pop_cmd(&b64(&sample[..60]), false).await;
    p.pop_cmd("CAPA", true).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_ntlm_on_smtp_and_pop3() {
    if !have("curl") {
        return;
    }
    let gw = start(false).await;
    let msg = gw.dir.path().join("msg.eml");
    std::fs::write(
        &msg,
        "Subject: via curl NTLM\r\nFrom: alice@example.test\r\n\r\nhello\r\n",
    )
    .expect("message file");
    let cases = [
        (format!("smtp://{}", gw.addr("submission")), "alice"),
        (
            format!("smtps://{}", gw.addr("submissions")),
            "EXAMPLE\\alice",
        ),
    ];
    for (url, user) in &cases {
        let out = run(
            "curl",
            s(&[
                "-sS",
                "--ssl-reqd",
                "-k",
                "--url",
                url,
                "--login-options",
                "AUTH=NTLM",
                "--user",
                &format!("{user}:{PASSWORD}"),
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
            "curl {url} as {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    gw.wait_for_mail("bob", 2).await;
    // A wrong password fails (curl exits 67: login denied).
    let out = run(
        "curl",
        s(&[
            "-sS",
            "--ssl-reqd",
            "-k",
            "--url",
            &format!("smtp://{}", gw.addr("submission")),
            "--login-options",
            "AUTH=NTLM",
            "--user",
            "alice:wrong",
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
    assert_eq!(
        out.status.code(),
        Some(67),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // POP3 with a wrong password: refused (curl exits 67: login denied).
    let out = run(
        "curl",
        s(&[
            "-sS",
            "--ssl-reqd",
            "-k",
            "--login-options",
            "AUTH=NTLM",
            "--user",
            "bob:wrong",
            &format!("pop3s://{}/", gw.addr("pop3s")),
        ]),
        None,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(67),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // POP3 over STLS and over implicit TLS: list bob's messages.
    for url in [
        format!("pop3://{}/", gw.addr("pop3")),
        format!("pop3s://{}/", gw.addr("pop3s")),
    ] {
        let out = run(
            "curl",
            s(&[
                "-sS",
                "--ssl-reqd",
                "-k",
                "--login-options",
                "AUTH=NTLM",
                "--user",
                &format!("bob:{PASSWORD}"),
                &url,
            ]),
            None,
        )
        .await;
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            2,
            "{url}"
        );
    }
    gw.stop().await;
}

/// A Perl module that switches Authen::NTLM to NTLMv2 (swaks uses the module's default, v1),
/// loaded into swaks through PERL5OPT.
const NTLMV2_SHIM: &str = "package NtlmV2Shim;\nuse Authen::NTLM;\nAuthen::NTLM::ntlmv2(1);\n1;\n";

async fn swaks(args: &[&str], ntlmv2: Option<&std::path::Path>) -> (bool, String) {
    let out = match ntlmv2 {
        Some(lib) => {
            let mut argv = vec![
                format!("PERL5LIB={}", lib.display()),
                "PERL5OPT=-MNtlmV2Shim".to_string(),
                "swaks".to_string(),
            ];
            argv.extend(s(args));
            run("env", argv, None).await
        }
        None => run("swaks", s(args), None).await,
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn swaks_args<'a>(server: &'a str, tls: &'a str, user: &'a str, subject: &'a str) -> Vec<&'a str> {
    vec![
        "--server",
        server,
        tls,
        "--auth",
        "NTLM",
        "--auth-user",
        user,
        "--auth-password",
        PASSWORD,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--header",
        subject,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_ntlm_v2_and_v1() {
    if !have("swaks") {
        return;
    }
    let gw = start(false).await;
    let lib = gw.dir.path().join("perl");
    std::fs::create_dir_all(&lib).expect("perl dir");
    std::fs::write(lib.join("NtlmV2Shim.pm"), NTLMV2_SHIM).expect("shim");
    let sub = gw.addr("submission").to_string();
    let subs = gw.addr("submissions").to_string();
    // NTLMv2 over STARTTLS and implicit TLS.
    for (server, tls) in [(&sub, "--tls"), (&subs, "--tls-on-connect")] {
        let args = swaks_args(server, tls, "alice", "Subject: swaks NTLMv2");
        let (ok, text) = swaks(&args, Some(&lib)).await;
        assert!(ok, "swaks NTLMv2 {tls} failed:\n{text}");
        assert!(text.contains("235 2.7.0"), "{text}");
    }
    // Plain swaks sends NTLMv1: refused by default.
    let args = swaks_args(&sub, "--tls", "alice", "Subject: swaks NTLMv1");
    let (ok, text) = swaks(&args, None).await;
    assert!(!ok && text.contains("535 5.7.8"), "{text}");
    gw.wait_for_mail("bob", 2).await;
    gw.stop().await;
    // ... and accepted with [auth] ntlm_v1 = true.
    let gw = start(true).await;
    let sub = gw.addr("submission").to_string();
    let args = swaks_args(&sub, "--tls", "alice", "Subject: swaks NTLMv1");
    let (ok, text) = swaks(&args, None).await;
    assert!(
        ok && text.contains("235 2.7.0"),
        "swaks NTLMv1 failed:\n{text}"
    );
    let mail = gw.wait_for_mail("bob", 1).await;
    assert!(mail[0].contains("Subject: swaks NTLMv1"));
    gw.stop().await;
}
