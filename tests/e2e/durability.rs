//! The built binary, killed with SIGKILL in the middle of a stream of messages and started
//! again: every message that got a 250 after DATA arrives. Also a smoke test of the CLI.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::client::Client;
use mailgate_testkit as common;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn write_config(dir: &std::path::Path, smtp: u16, pop3: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("users"), common::USERS).unwrap();
    let text = format!(
        r#"hostname = "mail.example.test"
state_dir = "state"
[listeners]
smtp = ["127.0.0.1:{smtp}"]
pop3 = ["127.0.0.1:{pop3}"]
[auth]
users_file = "users"
[relay]
local_domains = ["example.test"]
"#
    );
    let path = dir.join("mailgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("MAILGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mailgate")
}

async fn wait_listening(port: u16) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not start listening on {port}");
}

/// Sends messages numbered from `start` until the connection fails; returns those accepted.
async fn stream_messages(port: u16, start: usize, accepted: &mut Vec<usize>) {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut n = start;
    'outer: loop {
        let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
        else {
            return;
        };
        let mut c = Client::over(Box::new(tcp));
        if c.reply_opt().await != Some(220) {
            return;
        }
        for line in [
            "EHLO loader",
            "MAIL FROM:<load@remote.example>",
            "RCPT TO:<alice@example.test>",
        ] {
            c.send(line).await;
            if !matches!(c.reply_opt().await, Some(250)) {
                return;
            }
        }
        c.send("DATA").await;
        if c.reply_opt().await != Some(354) {
            return;
        }
        let body = format!(
            "Subject: msg-{n}\r\nX-Seq: {n}\r\n\r\n{}\r\n.\r\n",
            "x".repeat(2000)
        );
        if c.try_send_raw(body.as_bytes()).await.is_err() {
            return;
        }
        match c.reply_opt().await {
            Some(250) => accepted.push(n),
            _ => break 'outer,
        }
        n += 1;
        c.send("QUIT").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_no_accepted_message() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, pop3) = (free_port(), free_port());
    let config = write_config(dir.path(), smtp, pop3);
    let mut child = start(&config);
    wait_listening(smtp).await;

    let mut accepted = Vec::new();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // SIGKILL: no chance to flush or clean up anything.
        child.kill().expect("kill");
        child.wait().expect("wait");
    });
    stream_messages(smtp, 0, &mut accepted).await;
    killer.await.unwrap();
    assert!(
        accepted.len() >= 3,
        "too few messages before the kill: {}",
        accepted.len()
    );

    let mut child = start(&config);
    wait_listening(smtp).await;
    let maildir = dir.path().join("state/maildir/alice");
    let mut missing = accepted.clone();
    for _ in 0..400 {
        let got = common::mailbox_files(&maildir);
        missing.retain(|n| !got.iter().any(|m| m.contains(&format!("X-Seq: {n}\r\n"))));
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        missing.is_empty(),
        "accepted but lost after SIGKILL: {missing:?} of {}",
        accepted.len()
    );
}

#[test]
fn check_config_accepts_the_shipped_config_and_reports_bad_ones() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        // Beside a demo gateway a developer may be running: its ports are taken.
        .args(["check-config", "--no-bind", "--config"])
        .arg(format!("{root}/config/mailgate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "hostname = \"h\"\nbogus_key = 1\n[limits]\nsmtp_idle_timeout = \"five minutes\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:"), "{err}");
}

#[test]
fn passwd_writes_hashed_forms_not_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, 2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["passwd", "carol", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"carols-password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("within 2 s"), "{stdout}");
    // `[auth] apop` is on by default, and passwd never writes the {PLAIN} form APOP needs.
    assert!(
        stdout.contains("warning: carol cannot log in with APOP: APOP needs a {PLAIN}"),
        "{stdout}"
    );
    let users = std::fs::read_to_string(dir.path().join("users")).unwrap();
    assert!(users.contains("carol:{ARGON2ID}"), "{users}");
    assert!(
        !users.contains("carols-password"),
        "plaintext stored: {users}"
    );
    assert!(
        users.contains("alice:{PLAIN}secret-pw"),
        "other users kept: {users}"
    );
}

/// `mailgate check-config | head`: a reader that has gone must not make the report commands
/// panic; they exit with the SIGPIPE status, as shell tools do.
#[test]
fn report_commands_survive_a_closed_stdout() {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = format!("{root}/config/mailgate.toml");
    let cases: [&[&str]; 2] = [
        &["check-config", "--config", &config],
        &["passwd", "--scheme"],
    ];
    for args in cases {
        // The read end is closed before the command starts, so its first write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_mailgate"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}

/// One SMTP transaction from `source` to a remote recipient; the RCPT reply code.
async fn relay_reply(source: &str, smtp: u16) -> u16 {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{smtp}").parse().unwrap();
    let mut c = Client::connect_from(source.parse().unwrap(), addr).await;
    c.expect(220).await;
    c.cmd("EHLO device", 250).await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.send("RCPT TO:<someone@elsewhere.example>").await;
    let code = c.reply_opt().await.expect("RCPT reply");
    c.send("QUIT").await;
    code
}

async fn mailgate_cli(words: &[&str], config: &std::path::Path) -> (bool, String) {
    let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    args.extend(["--config".to_string(), config.display().to_string()]);
    let out = common::run(env!("CARGO_BIN_EXE_mailgate"), args, None).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Issue: an allowlist change acknowledged just before a SIGKILL was lost (an added entry,
/// failing closed) or undone (a removed entry came back from the snapshot, failing open).
#[tokio::test(flavor = "multi_thread")]
async fn allowlist_changes_acknowledged_before_sigkill_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, pop3, control) = (free_port(), free_port(), free_port());
    let config = write_config(dir.path(), smtp, pop3);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "[listeners]\n",
            &format!("[listeners]\ncontrol = \"127.0.0.1:{control}\"\n"),
        )
        .replace(
            "[auth]\n",
            "[auth]\ninsecure_plaintext_networks = [\"127.0.0.0/8\"]\n",
        );
    std::fs::write(&config, text).unwrap();
    let (device, other) = ("127.0.0.71", "127.0.0.72");
    let pop3_addr: std::net::SocketAddr = format!("127.0.0.1:{pop3}").parse().unwrap();

    // A POP3 login, then SIGKILL as soon as its +OK is read.
    let mut child = start(&config);
    wait_listening(smtp).await;
    wait_listening(pop3).await;
    assert_eq!(relay_reply(device, smtp).await, 554);
    let mut c = Client::connect_from(device.parse().unwrap(), pop3_addr).await;
    c.pop(true).await;
    c.pop_cmd("USER alice", true).await;
    c.pop_cmd("PASS secret-pw", true).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = start(&config);
    wait_listening(smtp).await;
    assert_eq!(
        relay_reply(device, smtp).await,
        250,
        "the login was forgotten"
    );
    assert_eq!(relay_reply(other, smtp).await, 554);

    // Stopped cleanly, the entry is in the snapshot; removed after the restart, then
    // SIGKILL as soon as the command has answered: it must not come back.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    assert!(
        std::fs::read_to_string(dir.path().join("state/allowlist.json"))
            .unwrap()
            .contains(device),
        "not in the snapshot"
    );
    let mut child = start(&config);
    wait_listening(smtp).await;
    wait_listening(control).await;
    let (ok, out) = mailgate_cli(&["allowlist", "remove", device], &config).await;
    assert!(ok && out.contains("removed"), "{out}");
    child.kill().unwrap();
    child.wait().unwrap();

    let mut child = start(&config);
    wait_listening(smtp).await;
    assert_eq!(
        relay_reply(device, smtp).await,
        554,
        "the removed entry came back"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue: files that deliveries cut short by kills left in Maildir `tmp/` were never removed.
#[tokio::test(flavor = "multi_thread")]
async fn stale_maildir_tmp_files_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), common::USERS).unwrap();
    let tmp = dir.path().join("state/maildir/alice/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let now = mailgate::clock::Clock::now(&mailgate::clock::SystemClock);
    let old = now - Duration::from_secs(37 * 3600);
    let stale = std::fs::File::create(tmp.join("1700000000.M1P9.host,S=10")).unwrap();
    stale.set_modified(old).unwrap();
    drop(stale);
    std::fs::write(tmp.join("fresh"), b"x").unwrap();
    let gw = common::Gateway::start_in(dir, &common::config_text("")).await;
    let tmp = gw.state().join("maildir/alice/tmp");
    let stale = tmp.join("1700000000.M1P9.host,S=10");
    common::extra::eventually("the stale file removed", Duration::from_secs(10), || {
        let gone = !stale.exists();
        async move { gone }
    })
    .await;
    assert!(tmp.join("fresh").exists(), "a fresh file was removed");
    gw.stop().await;
}
