//! The gateway's own log as the built binary writes it: with `[log] format = "json"` every
//! line on stderr is one JSON object, and SMTP's and POP3's lines carry the same span fields
//! (`session`, `peer`, `listener`) and the same event fields (`mechanism` on a login); at `debug`
//! each connection has an opening line and a closing one with its duration and bytes.
//! `MAILGATE_LOG_FORMAT` overrides the file, and an unknown value stops the start plainly.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::PASSWORD;
use mailgate_testkit::{self as common, extra, mech};

const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Starts the binary on `config` at `debug`, with `MAILGATE_LOG_FORMAT` set to `format` (or
/// unset); its stderr goes to `gateway.log` beside the config.
fn start(config: &Path, format: Option<&str>) -> extra::Binary {
    let log = config.with_file_name("gateway.log");
    let err = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(crate::MAILGATE);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("MAILGATE_LOG", "debug")
        .env_remove("MAILGATE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    if let Some(f) = format {
        cmd.env("MAILGATE_LOG_FORMAT", f);
    }
    let child = cmd.spawn().expect("start mailgate");
    extra::Binary { child, log }
}

/// Stops the gateway and returns its log.
async fn stop(mut gw: extra::Binary) -> String {
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    gw.log_text()
}

/// The fields of span `name` in a JSON line, if the line is in such a span.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

/// The one line whose message is `message` in a span `name` with these fields (any span
/// `name` when `fields` is `None`).
fn find<'a>(lines: &'a [Value], name: &str, fields: Option<&Value>, message: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == message)
        .filter(|l| span(l, name).is_some_and(|s| fields.is_none_or(|f| s == f)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {message:?} in {lines:#?}");
    found[0]
}

/// A gateway process whose config asks for JSON logs (`MAILGATE_LOG_FORMAT` set to `format`
/// if given), listening on free ports: its folder, ports, config file and process. Ports found
/// free can be taken by another test before the gateway binds them: then it tries new ones.
async fn json_gateway(
    format: Option<&str>,
) -> (
    tempfile::TempDir,
    mech::Ports,
    std::path::PathBuf,
    extra::Binary,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let config = dir.path().join("mailgate.toml");
    let mut last_log = String::new();
    for _ in 0..3 {
        let ports = mech::Ports::free();
        let text = extra::set(
            &ports.apply(&common::config_text("")),
            "log",
            "format",
            r#""json""#,
        );
        std::fs::write(&config, text).expect("config");
        let mut gw = start(&config, format);
        if listening(&mut gw, &ports).await {
            return (dir, ports, config, gw);
        }
        last_log = gw.log_text();
        if !last_log.contains("in use") {
            break;
        }
    }
    panic!("the gateway did not start; its log:\n{last_log}");
}

/// Whether every listener of `gw` answers, within 10 s; false as soon as the process ends.
async fn listening(gw: &mut extra::Binary, ports: &mech::Ports) -> bool {
    for role in ["smtp", "submission", "submissions", "pop3", "pop3s"] {
        let addr = ports.addr(role);
        let mut up = false;
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                up = true;
                break;
            }
            if gw.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if !up {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_carry_the_same_fields_in_both_protocols() {
    let (_dir, ports, _config, gw) = json_gateway(None).await;
    let (mut c, _) = mech::smtp(LOCAL, ports.addr("submissions"), true, "desk").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    c.cmd("QUIT", 221).await;
    let (mut p, _, _) = mech::pop3(LOCAL, ports.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "alice", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    // The closing lines are written once the sessions have ended on the gateway's side.
    let log = gw.log.clone();
    extra::eventually("both closing lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.matches("connection closed").count() >= 2 }
    })
    .await;
    let text = stop(gw).await;

    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{lines:#?}"
    );
    for (name, role, login) in [
        ("smtp", "submissions", "authenticated"),
        ("pop3", "pop3s", "logged in"),
    ] {
        // The session that logged in (the start-up probe of the port is another).
        let login = find(&lines, name, None, login);
        let fields = span(login, name).expect("span");
        assert_eq!(fields["listener"], role, "{login}");
        assert!(fields["session"].is_string(), "{login}");
        let peer = fields["peer"].as_str();
        assert!(peer.is_some_and(|p| p.starts_with("127.0.0.1:")), "{login}");
        assert_eq!(login["user"], "alice", "{login}");
        let opened = find(&lines, name, Some(fields), "connection opened");
        assert_eq!(opened["level"], "DEBUG");
        let closed = find(&lines, name, Some(fields), "connection closed");
        for key in ["bytes_in", "bytes_out"] {
            let n = closed[key].as_u64();
            assert!(n.is_some_and(|n| n > 0), "{key}: {closed}");
        }
        assert!(closed["duration_ms"].is_u64(), "{closed}");
        assert!(login["mechanism"].is_string(), "{login}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_overrides_the_file() {
    let (_dir, _ports, config, gw) = json_gateway(Some("text")).await;
    let text = stop(gw).await;
    let first = text.lines().next().expect("a log line");
    assert!(serde_json::from_str::<Value>(first).is_err(), "{first}");
    assert!(
        first.contains(" WARN ") || first.contains(" INFO "),
        "{first}"
    );

    let mut gw = start(&config, Some("xml"));
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let said = gw.log_text();
    assert!(said.contains("MAILGATE_LOG_FORMAT=\"xml\""), "{said}");
}
