//! End-to-end SCRAM tests against the real gateway: SCRAM-SHA-256-PLUS with `tls-exporter`
//! (RFC 9266) from a rustls client, and Python's `scramp` driving SMTP AUTH SCRAM-SHA-256 over
//! implicit TLS (also `-PLUS` with `tls-server-end-point`, RFC 5929 §4, and the downgrade
//! case) and POP3 AUTH SCRAM-SHA-1 (RFC 5034). Users are served from `{PLAIN}` (alice) and from
//! stored `{SCRAM-SHA-*}` keys written by `stored_forms` (carol). Malformed exchanges on SMTP
//! and POP3 (garbage, bad base64, `*`, a wrong nonce), each followed by a good login.
//!
//! The Python tests are skipped with a notice when `scramp` is missing, unless
//! `MAILGATE_REQUIRE_CLIENTS=1` (CI), which turns the skip into a failure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use common::client::Client;
use common::{Gateway, PASSWORD, USERS, config_text, have, run};
use mailgate_testkit as common;
use mailgate_testkit::sasl::{self, ScramHash};

const MECHANISMS: &str = r#"mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"]"#;
const CAROL_PASSWORD: &str = "carol's pw";

/// A gateway offering the SCRAM mechanisms; carol is stored as `{ARGON2ID}` plus SCRAM keys.
async fn gateway() -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("users");
    std::fs::write(&users, USERS).expect("users file");
    let mechanisms: Vec<String> = ["SCRAM-SHA-256", "SCRAM-SHA-1"].map(String::from).to_vec();
    let forms = mailgate::auth::stored_forms("carol", CAROL_PASSWORD.as_bytes(), &mechanisms, None);
    mailgate::auth::set_user(&users, "carol", &forms).expect("set carol");
    let text = config_text("").replace("[auth]\n", &format!("[auth]\n{MECHANISMS}\n"));
    Gateway::start_in(dir, &text).await
}

/// The SCRAM-SHA-256 client-final message and the server-final message it expects.
fn client_final(password: &str, bare: &str, server_first: &str, cbind: &[u8]) -> (String, String) {
    let last = sasl::scram_client_final(ScramHash::Sha256, password, bare, server_first, cbind)
        .expect("server-first message");
    (last.message, last.server_final)
}

/// Sends `AUTH mech` with the client-first message and the client-final message; returns the
/// SMTP code after the client-final message (334 on success, checked against the expected
/// server signature, which is then acknowledged with an empty line and must get 235).
async fn smtp_scram(c: &mut Client, gs2: &str, user: &str, password: &str, cbind: &[u8]) -> u16 {
    let mech = ScramHash::Sha256.mechanism(gs2.starts_with('p'));
    let (first, bare) = sasl::scram_client_first(gs2, user, "rOprNGfwEbeRWgbNEkqO");
    let first = B64.encode(first);
    c.send(&format!("AUTH {mech} {first}")).await;
    let (code, lines) = c.reply().await;
    if code != 334 {
        return code;
    }
    let server_first = String::from_utf8(B64.decode(&lines[0][4..]).expect("b64")).expect("utf8");
    assert!(
        server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"),
        "{server_first}"
    );
    let (last, want) = client_final(password, &bare, &server_first, cbind);
    c.send(&B64.encode(last)).await;
    let (code, lines) = c.reply().await;
    if code != 334 {
        return code;
    }
    let server_final = B64.decode(&lines[0][4..]).expect("b64");
    assert_eq!(
        String::from_utf8_lossy(&server_final),
        want,
        "server signature"
    );
    c.cmd("", 235).await;
    334
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_sha256_plus_with_tls_exporter_from_rustls() {
    let gw = gateway().await;
    let addr = gw.addr("submissions");
    let exporter_gs2 = "p=tls-exporter,,";
    let cases: [(&str, &str, &str, bool, u16); 6] = [
        ("alice", PASSWORD, exporter_gs2, true, 334),
        ("carol", CAROL_PASSWORD, exporter_gs2, true, 334),
        ("alice", "wrong", exporter_gs2, true, 535),
        // Binding data from another session: a man in the middle.
        // Well-formed but wrong: an authentication failure, not a syntax error.
        ("alice", PASSWORD, exporter_gs2, false, 535),
        // The client could bind but thinks the server cannot, while -PLUS is offered.
        ("alice", PASSWORD, "y,,", true, 535),
        ("alice", PASSWORD, "n,,", true, 334),
    ];
    for (user, password, gs2, same_session, want) in cases {
        let (mut c, exporter) = Client::connect_tls_exporter(addr).await;
        c.expect(220).await;
        let ehlo = c.cmd("EHLO client.example", 250).await;
        assert!(
            ehlo.iter().any(|l| l.contains("SCRAM-SHA-256-PLUS")),
            "{ehlo:?}"
        );
        let mut data = exporter.clone();
        if !same_session {
            data[0] ^= 1;
        }
        let cbind = if gs2.starts_with('p') {
            [gs2.as_bytes(), &data].concat()
        } else {
            gs2.as_bytes().to_vec()
        };
        let got = smtp_scram(&mut c, gs2, user, password, &cbind).await;
        assert_eq!(got, want, "{user} {gs2} same session: {same_session}");
        c.send("QUIT").await;
    }
    // Without TLS, -PLUS is neither offered nor accepted.
    let mut c = Client::connect(gw.addr("smtp")).await;
    c.expect(220).await;
    let ehlo = c.cmd("EHLO client.example", 250).await;
    assert!(!ehlo.iter().any(|l| l.contains("-PLUS")), "{ehlo:?}");
    assert!(ehlo.iter().any(|l| l.contains("SCRAM-SHA-256")), "{ehlo:?}");
    let first = B64.encode("p=tls-exporter,,n=alice,r=abc");
    c.cmd(&format!("AUTH SCRAM-SHA-256-PLUS {first}"), 504)
        .await;
    gw.stop().await;
}

/// Whether Python's `scramp` is importable; skips (or fails under MAILGATE_REQUIRE_CLIENTS=1).
fn have_scramp() -> bool {
    if !have("python3") {
        return false;
    }
    let found = std::process::Command::new("python3")
        .args(["-c", "import scramp"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("MAILGATE_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("python3 scramp is required (MAILGATE_REQUIRE_CLIENTS=1): pip install scramp");
        }
        eprintln!("SKIPPED: python3 scramp not installed (pip install scramp)");
    }
    found
}

/// A scramp client: `smtp PORT MECH USER PASSWORD CB EXPECT` or the same with `pop3`. CB is
/// `none`, `end-point` (tls-server-end-point: SHA-256 of the server certificate) or `y` (binding
/// data given to a mechanism without -PLUS, so scramp says `y`). EXPECT is `ok`, `535`, `501`.
const SCRAMP_CLIENT: &str = r#"
import base64, hashlib, socket, ssl, sys
from scramp import ScramClient

proto, port, mech, user, password, cb, expect = sys.argv[1:]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
sock = ctx.wrap_socket(raw, server_hostname="mail.example.test") if proto == "smtp" else raw
f = sock.makefile("rb")
b64 = lambda s: base64.b64encode(s.encode()).decode()
unb64 = lambda s: base64.b64decode(s).decode()

def send(line):
    sock.sendall(line.encode() + b"\r\n")

def smtp_reply():
    lines = []
    while True:
        line = f.readline().decode().rstrip("\r\n")
        lines.append(line)
        if line[3:4] != "-":
            return int(line[:3]), lines

def pop_reply():
    return f.readline().decode().rstrip("\r\n")

binding = None
if cb in ("end-point", "y"):
    der = sock.getpeercert(binary_form=True)
    binding = ("tls-server-end-point", hashlib.sha256(der).digest())
client = ScramClient([mech], user, password, channel_binding=binding)
first = client.get_client_first()
assert first.startswith("y,," if cb == "y" else ("p=" if mech.endswith("PLUS") else "n,,")), first

if proto == "smtp":
    assert smtp_reply()[0] == 220
    send("EHLO client.example")
    code, lines = smtp_reply()
    offered = [l.split() for l in lines if l[4:].startswith("AUTH ")]
    assert code == 250 and any(mech in words for words in offered), lines
    send("AUTH " + mech + " " + b64(first))
    code, lines = smtp_reply()
    if code != 334 and expect != "ok":
        assert code == int(expect), lines
        print("refused as expected")
        sys.exit(0)
    assert code == 334, lines
    client.set_server_first(unb64(lines[0][4:]))
    send(b64(client.get_client_final()))
    code, lines = smtp_reply()
    if expect != "ok":
        assert code == int(expect), lines
        print("refused as expected")
        sys.exit(0)
    assert code == 334, lines
    client.set_server_final(unb64(lines[0][4:]))
    send("")
    code, lines = smtp_reply()
    assert code == 235, lines
    send("QUIT")
    assert smtp_reply()[0] == 221
else:
    assert pop_reply().startswith("+OK")
    send("AUTH " + mech + " " + b64(first))
    line = pop_reply()
    assert line.startswith("+ "), line
    client.set_server_first(unb64(line[2:]))
    send(b64(client.get_client_final()))
    line = pop_reply()
    if expect != "ok":
        assert line.startswith("-ERR [AUTH]"), line
        print("refused as expected")
        sys.exit(0)
    assert line.startswith("+ "), line
    client.set_server_final(unb64(line[2:]))
    send("")
    line = pop_reply()
    assert line.startswith("+OK"), line
    send("STAT")
    assert pop_reply().startswith("+OK")
    send("QUIT")
    assert pop_reply().startswith("+OK")
print("scramp ok")
"#;

async fn scramp(args: &[&str]) {
    let mut argv = vec!["-c".to_string(), SCRAMP_CLIENT.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = run("python3", argv, None).await;
    assert!(
        out.status.success(),
        "scramp {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scramp_smtp_scram_sha256_over_implicit_tls() {
    if !have_scramp() {
        return;
    }
    let gw = gateway().await;
    let port = gw.addr("submissions").port().to_string();
    let cases = [
        ("SCRAM-SHA-256", "alice", PASSWORD, "none", "ok"),
        ("SCRAM-SHA-256", "carol", CAROL_PASSWORD, "none", "ok"),
        ("SCRAM-SHA-256", "carol", "wrong", "none", "535"),
        ("SCRAM-SHA-256", "nobody", PASSWORD, "none", "535"),
        ("SCRAM-SHA-256-PLUS", "alice", PASSWORD, "end-point", "ok"),
        (
            "SCRAM-SHA-256-PLUS",
            "carol",
            CAROL_PASSWORD,
            "end-point",
            "ok",
        ),
        (
            "SCRAM-SHA-1-PLUS",
            "carol",
            CAROL_PASSWORD,
            "end-point",
            "ok",
        ),
        // Downgrade: scramp could bind, is told SCRAM-SHA-256 only, and says `y`: 535.
        ("SCRAM-SHA-256", "alice", PASSWORD, "y", "535"),
    ];
    for (mech, user, password, cb, expect) in cases {
        scramp(&["smtp", &port, mech, user, password, cb, expect]).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scramp_pop3_scram_sha1() {
    if !have_scramp() {
        return;
    }
    let gw = gateway().await;
    let port = gw.addr("pop3").port().to_string();
    let cases = [
        ("alice", PASSWORD, "ok"),
        ("carol", CAROL_PASSWORD, "ok"),
        ("alice", "wrong", "err"),
    ];
    for (user, password, expect) in cases {
        scramp(&["pop3", &port, "SCRAM-SHA-1", user, password, "none", expect]).await;
    }
    gw.stop().await;
}

/// Which protocol a malformed-input case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Smtp,
    Pop3,
}

/// What the server answered to one line of an exchange.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A challenge (SMTP 334, POP3 `+ `), decoded.
    Challenge(Vec<u8>),
    /// Success (SMTP 235, POP3 `+OK`).
    Ok,
    /// A failure: the SMTP code, or for POP3 501 for a plain `-ERR` and 535 for `-ERR [AUTH]`.
    Err(u16),
}

async fn answer(c: &mut Client, proto: Proto) -> Answer {
    match proto {
        Proto::Smtp => match c.reply().await {
            (334, lines) => Answer::Challenge(B64.decode(lines[0][4..].trim()).expect("b64")),
            (235, _) => Answer::Ok,
            (code, _) => Answer::Err(code),
        },
        Proto::Pop3 => {
            let line = c.line().await.expect("POP3 reply");
            if let Some(rest) = line.strip_prefix("+ ") {
                Answer::Challenge(B64.decode(rest.trim()).expect("b64"))
            } else if line == "+" {
                Answer::Challenge(Vec::new())
            } else if line.starts_with("+OK") {
                Answer::Ok
            } else if line.starts_with("-ERR [AUTH]") {
                Answer::Err(535)
            } else {
                assert!(line.starts_with("-ERR"), "{line}");
                Answer::Err(501)
            }
        }
    }
}

/// Opens a session on `proto` (SMTP submission after EHLO, or POP3) that offers SCRAM.
async fn session(gw: &Gateway, proto: Proto) -> Client {
    match proto {
        Proto::Smtp => {
            let mut c = Client::connect(gw.addr("submission")).await;
            c.expect(220).await;
            c.cmd("EHLO client.example", 250).await;
            c
        }
        Proto::Pop3 => {
            let mut c = Client::connect(gw.addr("pop3")).await;
            assert!(c.line().await.expect("greeting").starts_with("+OK"));
            c
        }
    }
}

/// The client-first message and the client-final message for the server-first `challenge`,
/// with the final nonce changed by `tamper`.
fn scram_final(challenge: &[u8], bare: &str, tamper: impl Fn(&str) -> String) -> String {
    let server_first = String::from_utf8(challenge.to_vec()).expect("server-first is UTF-8");
    let nonce = server_first
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .expect("nonce");
    let tampered = server_first.replacen(nonce, &tamper(nonce), 1);
    let (last, _) = client_final(PASSWORD, bare, &tampered, b"n,,");
    B64.encode(last)
}

/// A complete good SCRAM-SHA-256 login for alice.
async fn good_scram(c: &mut Client, proto: Proto) {
    let bare = "n=alice,r=goodclientnonce";
    c.send(&format!(
        "AUTH SCRAM-SHA-256 {}",
        B64.encode(format!("n,,{bare}"))
    ))
    .await;
    let Answer::Challenge(first) = answer(c, proto).await else {
        panic!("{proto:?}: no server-first");
    };
    c.send(&scram_final(&first, bare, str::to_owned)).await;
    let Answer::Challenge(last) = answer(c, proto).await else {
        panic!("{proto:?}: no server-final");
    };
    assert!(
        last.starts_with(b"v="),
        "{}",
        String::from_utf8_lossy(&last)
    );
    c.send("").await;
    assert_eq!(answer(c, proto).await, Answer::Ok, "{proto:?}: good login");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_scram_on_smtp_and_pop3_then_a_good_login() {
    let gw = gateway().await;
    let bare = "n=alice,r=clientnonce";
    let first = B64.encode(format!("n,,{bare}"));
    for proto in [Proto::Smtp, Proto::Pop3] {
        // (case, the lines after the server-first message or None to send only `start`, the
        // answer expected last)
        let cases: [(&str, String, Option<&str>, Answer); 7] = [
            (
                "garbage client-first",
                format!("AUTH SCRAM-SHA-256 {}", B64.encode("garbage")),
                None,
                Answer::Err(501),
            ),
            (
                "bad base64 initial response",
                "AUTH SCRAM-SHA-256 %%%not-base64%%%".into(),
                None,
                Answer::Err(501),
            ),
            (
                "* instead of client-first",
                "AUTH SCRAM-SHA-256".into(),
                Some("*"),
                Answer::Err(501),
            ),
            (
                "* instead of client-final",
                format!("AUTH SCRAM-SHA-256 {first}"),
                Some("*"),
                Answer::Err(501),
            ),
            (
                "bad base64 client-final",
                format!("AUTH SCRAM-SHA-256 {first}"),
                Some("%%%"),
                Answer::Err(501),
            ),
            (
                "garbage client-final",
                format!("AUTH SCRAM-SHA-256 {first}"),
                Some("garbage"),
                Answer::Err(501),
            ),
            (
                "wrong nonce",
                format!("AUTH SCRAM-SHA-256 {first}"),
                Some("wrong-nonce"),
                Answer::Err(535),
            ),
        ];
        for (case, start, then, want) in cases {
            let mut c = session(&gw, proto).await;
            c.send(&start).await;
            let got = match then {
                None => answer(&mut c, proto).await,
                Some(next) => {
                    let Answer::Challenge(challenge) = answer(&mut c, proto).await else {
                        panic!("{proto:?} {case}: no challenge");
                    };
                    let line = match next {
                        "wrong-nonce" => scram_final(&challenge, bare, |n| format!("{n}x")),
                        "garbage" => B64.encode("garbage"),
                        other => other.to_owned(),
                    };
                    c.send(&line).await;
                    answer(&mut c, proto).await
                }
            };
            assert_eq!(got, want, "{proto:?}: {case}");
            // The session goes on: a good login right after.
            good_scram(&mut c, proto).await;
            // QUIT frees alice's maildrop before it is answered, so the next case's POP3
            // login does not race the release of a dropped connection.
            c.send("QUIT").await;
            match proto {
                Proto::Smtp => assert_eq!(c.reply().await.0, 221),
                Proto::Pop3 => assert_eq!(answer(&mut c, proto).await, Answer::Ok),
            }
        }
    }
    gw.stop().await;
}

/// `derive_on_login`: dave is stored only as `{ARGON2ID}`, so SCRAM cannot serve him; after
/// one PLAIN login (answered at once, the derivation runs after it) his SCRAM-SHA-256 keys are
/// in the users file and SCRAM works, without a password reset.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_login_derives_scram_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("users");
    std::fs::write(&users, USERS).expect("users file");
    let forms = mailgate::auth::stored_forms("dave", b"dave's pw", &[], None);
    mailgate::auth::set_user(&users, "dave", &forms).expect("set dave");
    let text = config_text("").replace(
        "[auth]\n",
        &format!("[auth]\n{MECHANISMS}\nderive_on_login = true\n"),
    );
    let gw = Gateway::start_in(dir, &text).await;
    let addr = gw.addr("submissions");
    let session = || async {
        let mut c = Client::connect_tls(addr).await;
        c.expect(220).await;
        c.cmd("EHLO c", 250).await;
        c
    };
    let mut c = session().await;
    assert_eq!(
        smtp_scram(&mut c, "n,,", "dave", "dave's pw", b"n,,").await,
        535
    );
    c.cmd(
        &format!("AUTH PLAIN {}", sasl::plain_b64("dave", "dave's pw")),
        235,
    )
    .await;
    c.cmd("QUIT", 221).await;
    // The keys land in memory once they are in the file.
    let scram = ["SCRAM-SHA-256".to_owned()];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !gw
        .shared
        .user_store
        .unserved("dave", &scram, false)
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SCRAM keys derived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(gw.dir.path().join("users")).expect("users file");
    assert!(
        text.lines().any(|l| l.starts_with("dave:{SCRAM-SHA-256}")),
        "{text}"
    );
    let mut c = session().await;
    assert_eq!(
        smtp_scram(&mut c, "n,,", "dave", "dave's pw", b"n,,").await,
        334
    );
    c.cmd("QUIT", 221).await;
    gw.stop().await;
}
