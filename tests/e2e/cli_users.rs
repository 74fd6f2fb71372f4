//! The users file from the command line: `mailgate passwd` through a real pseudo-terminal and
//! through a pipe, its password rules, the file's owner and mode kept; `mailgate user list`
//! and `user delete`; `mailgate auth test`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A folder with the test kit's users file and a config naming it.
fn site() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), mailgate_testkit::USERS).expect("users");
    let config = dir.path().join("mailgate.toml");
    std::fs::write(&config, mailgate_testkit::config_text("")).expect("config");
    (dir, config)
}

/// Runs `mailgate ARGS --config CONFIG` with `stdin` on a pipe.
fn mailgate(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(crate::MAILGATE)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("MAILGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailgate");
    let mut pipe = child.stdin.take().expect("stdin");
    // The command may stop reading (and close its end) before everything is written.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().expect("wait for mailgate")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn passwd_from_a_pipe_stores_exactly_one_line() {
    let (dir, config) = site();
    // Typed twice into a pipe: the first line is the password, not both lines.
    let out = mailgate(&config, &["passwd", "carol"], "Twice-123\nTwice-123\n");
    assert!(out.status.success(), "{}", said(&out));
    let out = mailgate(&config, &["auth", "test", "carol"], "Twice-123\n");
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("verifies"), "{}", said(&out));
    let out = mailgate(&config, &["auth", "test", "carol"], "Twice-123\nTwice-123");
    assert!(
        out.status.success(),
        "only the first line is read: {}",
        said(&out)
    );
    let out = mailgate(&config, &["auth", "test", "carol"], "Twice-124\n");
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("does NOT verify"), "{}", said(&out));
    drop(dir);
}

#[test]
fn passwd_refuses_short_and_empty_passwords_unless_told() {
    let (dir, config) = site();
    let users = dir.path().join("users");
    let before = std::fs::read(&users).expect("users");
    for (input, why) in [("x\n", "shorter than 8"), ("\n", "empty"), ("", "empty")] {
        let out = mailgate(&config, &["passwd", "alice"], input);
        assert_eq!(out.status.code(), Some(1), "{input:?}: {}", said(&out));
        assert!(said(&out).contains(why), "{input:?}: {}", said(&out));
    }
    assert_eq!(std::fs::read(&users).expect("users"), before, "unchanged");
    let out = mailgate(&config, &["passwd", "--allow-short", "alice"], "x\n");
    assert!(out.status.success(), "{}", said(&out));
    let out = mailgate(&config, &["auth", "test", "alice"], "x\n");
    assert!(out.status.success(), "{}", said(&out));
}

#[test]
fn passwd_keeps_the_users_files_owner_group_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (dir, config) = site();
    let users = dir.path().join("users");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    // As root (CI), give the file to another owner and the mail group, as an installed
    // system would: the service must keep read access after root rewrites it.
    let given = std::os::unix::fs::chown(&users, Some(1), Some(8)).is_ok();
    let out = mailgate(&config, &["passwd", "alice"], "Longer-pw-1\n");
    assert!(out.status.success(), "{}", said(&out));
    let meta = std::fs::metadata(&users).expect("users");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    if given {
        assert_eq!((meta.uid(), meta.gid()), (1, 8));
    } else {
        eprintln!("not root: the owner could not be changed, only the mode is checked");
    }
}

/// Drives `mailgate passwd` on a real pseudo-terminal (Python's pty module): the prompts
/// appear, the typed password is not echoed, and a mismatch changes nothing.
#[test]
fn passwd_on_a_terminal_prompts_twice_without_echo() {
    if !mailgate_testkit::have("python3") {
        return;
    }
    let (dir, config) = site();
    let script = r#"
import os, pty, sys, select, termios, time
binary, config, user, first, second = sys.argv[1:6]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary, "passwd", "--config", config, user])
seen = b""
def read_until(word, limit=10.0):
    # Until `word` is seen, or (word None) until the program closes the terminal.
    global seen
    while word is None or word not in seen:
        ready, _, _ = select.select([fd], [], [], limit)
        if not ready:
            sys.stdout.write("TIMEOUT waiting for %r; saw %r\n" % (word, seen)); sys.exit(3)
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
def type_when_echo_is_off(text, limit=10.0):
    # A person types after the prompt; a script could type before the program has turned
    # echo off, and the terminal would echo it. Wait for echo off, as a person would.
    deadline = time.time() + limit
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > deadline:
            sys.stdout.write("TIMEOUT waiting for echo off; saw %r\n" % seen); sys.exit(3)
        time.sleep(0.01)
    os.write(fd, text.encode() + b"\n")
read_until(b"New password")
type_when_echo_is_off(first)
read_until(b"Retype")
type_when_echo_is_off(second)
read_until(None)
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let run = |first: &str, second: &str| {
        Command::new("python3")
            .args(["-c", script, crate::MAILGATE])
            .arg(&config)
            .args(["dave", first, second])
            .output()
            .expect("python3")
    };
    let out = run("Terminal-pw-1", "Terminal-pw-2");
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("do not match"), "{}", said(&out));
    let users = std::fs::read_to_string(dir.path().join("users")).expect("users");
    assert!(
        !users.contains("dave"),
        "a mismatch stores nothing: {users}"
    );

    let out = run("Terminal-pw-1", "Terminal-pw-1");
    assert!(out.status.success(), "{}", said(&out));
    let transcript = said(&out);
    assert!(transcript.contains("Retype"), "{transcript}");
    assert!(
        !transcript.contains("Terminal-pw-1"),
        "the password is not echoed: {transcript}"
    );
    let out = mailgate(&config, &["auth", "test", "dave"], "Terminal-pw-1\n");
    assert!(out.status.success(), "{}", said(&out));
}

#[test]
fn user_list_and_delete() {
    let (dir, config) = site();
    let out = mailgate(&config, &["user", "list", "--json"], "");
    assert!(out.status.success(), "{}", said(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let alice = list
        .as_array()
        .expect("an array")
        .iter()
        .find(|u| u["user"] == "alice")
        .expect("alice listed");
    assert_eq!(alice["schemes"], serde_json::json!(["PLAIN"]));
    let mechanisms = alice["mechanisms"].as_array().expect("mechanisms");
    assert!(mechanisms.contains(&serde_json::json!("PLAIN")), "{alice}");
    assert!(
        mechanisms.contains(&serde_json::json!("CRAM-MD5")),
        "{alice}"
    );

    let out = mailgate(&config, &["user", "list"], "");
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("3 user(s)"), "{}", said(&out));

    let out = mailgate(&config, &["user", "delete", "Bob"], "");
    assert!(out.status.success(), "{}", said(&out));
    let users = std::fs::read_to_string(dir.path().join("users")).expect("users");
    assert!(!users.contains("bob:"), "{users}");
    assert!(users.contains("alice:"), "{users}");
    let out = mailgate(&config, &["user", "delete", "bob"], "");
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("no user bob"), "{}", said(&out));
}

#[test]
fn auth_test_names_the_stored_form_per_mechanism() {
    let (dir, config) = site();
    let out = mailgate(
        &config,
        &["auth", "test", "alice", "--mechanism", "cram-md5"],
        "secret-pw\n",
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("{PLAIN}"), "{}", said(&out));
    let out = mailgate(&config, &["auth", "test", "nobody"], "secret-pw\n");
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("no such user"), "{}", said(&out));
    // A user with only a one-way hash cannot use CRAM-MD5: said, exit 1.
    std::fs::write(
        dir.path().join("users"),
        "erin:{SHA512-CRYPT}$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.\n",
    )
    .expect("users");
    let out = mailgate(
        &config,
        &["auth", "test", "erin", "--mechanism", "CRAM-MD5"],
        "password\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("CRAM-MD5 needs"), "{}", said(&out));
    let out = mailgate(
        &config,
        &["auth", "test", "erin", "--mechanism", "XOAUTH2"],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("bearer token"), "{}", said(&out));
}
