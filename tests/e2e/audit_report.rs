//! `mailgate audit` end to end: the built binary reads audit logs this test writes (a current
//! file, a rotation with a corrupt line, a config naming them) and prints each format.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use mailgate::audit::{Event, Kind, Outcome, classify, rotated};

fn ev(time: SystemTime, user: &str, mech: &str, tls: bool, result: Outcome) -> Event {
    let mut e = Event::new(
        Kind::Auth,
        "smtp",
        mailgate::audit::event::rfc3339(time),
        result,
    );
    e.user = Some(user.into());
    e.user_given = Some(user.into());
    e.mechanism = Some(mech.into());
    e.class = Some(classify(mech, tls));
    if tls {
        e.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
    }
    e.client_ip = Some("192.0.2.10".parse().expect("ip"));
    e.client_name = Some("laptop.example".into());
    e
}

fn lines(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).expect("event") + "\n")
        .collect()
}

// Events are dated relative to the real clock, as `--since 7d` is.
#[allow(clippy::disallowed_methods)]
fn ago(hours: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(hours * 3600)
}

/// Writes `audit.log.1` (older, with a corrupt line 2) and `audit.log` into `dir`.
fn write_logs(dir: &Path) -> PathBuf {
    let path = dir.join("audit.log");
    let mut old = lines(&[
        ev(ago(400), "alice", "CRAM-MD5", false, Outcome::Success),
        ev(ago(300), "bob", "PLAIN", false, Outcome::Failure),
    ]);
    // A torn write in the middle of line 2.
    old.insert_str(
        old.find('\n').expect("line") + 1,
        "{\"v\":1,\"time\":\"20\n",
    );
    std::fs::write(rotated(&path, 1), old).expect("write");
    let mut accept = ev(ago(2), "alice", "LOGIN", true, Outcome::Success);
    accept.kind = Kind::Accept;
    accept.client_software = Some("Outlook 16.0".into());
    let mut allow = ev(ago(1), "carol", "USER", false, Outcome::Success);
    allow.kind = Kind::Allowlist;
    let current = lines(&[
        ev(ago(5), "alice", "APOP", false, Outcome::Denied),
        accept,
        ev(ago(3), "bob", "SCRAM-SHA-256", true, Outcome::Success),
        ev(ago(4), "bob", "LOGIN", true, Outcome::Warned),
        allow,
    ]);
    std::fs::write(&path, current).expect("write");
    path
}

fn audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .arg("audit")
        .args(args)
        .output()
        .expect("run mailgate")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

#[test]
fn json_reports_legacy_users_across_rotations_and_warns_of_corrupt_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write_logs(dir.path());
    let out = audit(&["--file", log.to_str().expect("path"), "--format", "json"]);
    let groups: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let groups = groups.as_array().expect("array");
    let keys: Vec<&str> = groups
        .iter()
        .map(|g| g["key"].as_str().unwrap_or(""))
        .collect();
    // Most recently seen first; SCRAM (modern) and the allowlist event are not counted.
    assert_eq!(keys, ["alice", "bob"]);
    let alice = &groups[0];
    assert_eq!(alice["events"], 2);
    assert_eq!(alice["messages"], 1);
    assert_eq!(alice["successes"], 1);
    assert_eq!(alice["failures"], 1);
    assert!(rfc3339(&alice["first_seen"]) < rfc3339(&alice["last_seen"]));
    assert_eq!(
        alice["mechanisms"]["values"],
        serde_json::json!(["APOP", "CRAM-MD5", "LOGIN"])
    );
    assert_eq!(alice["classes"], serde_json::json!(["weak", "basic"]));
    assert_eq!(
        alice["client_software"]["values"],
        serde_json::json!(["Outlook 16.0"])
    );
    assert_eq!(
        alice["client_ips"]["values"],
        serde_json::json!(["192.0.2.10"])
    );
    assert_eq!(
        alice["client_names"]["values"],
        serde_json::json!(["laptop.example"])
    );
    let bob = &groups[1];
    assert_eq!(
        (bob["events"].as_u64(), bob["failures"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(bob["classes"], serde_json::json!(["insecure", "basic"]));

    let stderr = String::from_utf8_lossy(&out.stderr);
    let rotated_name = format!("{}:2", rotated(&log, 1).display());
    assert!(stderr.contains("skipped 1 corrupt"), "{stderr}");
    assert!(stderr.contains(&rotated_name), "{stderr}");
}

/// The text of `v`, after checking it has the writer's RFC 3339 form.
fn rfc3339(v: &serde_json::Value) -> &str {
    let s = v.as_str().expect("string");
    assert_eq!(s.len(), "2026-11-28T21:05:05.123Z".len(), "{s}");
    assert!(s.ends_with('Z'));
    s
}

#[test]
fn csv_groups_by_client_with_a_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write_logs(dir.path());
    let path = log.to_str().expect("path");
    let out = stdout(&audit(&[
        "--file",
        path,
        "--format",
        "csv",
        "--group-by",
        "client",
    ]));
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows[0],
        "key,events,successes,failures,first_seen,last_seen,classes,mechanisms,users,\
         client_ips,client_software,client_names,denied,warned,brownout,would_deny,rules,messages"
    );
    assert_eq!(rows.len(), 3, "{out}");
    let outlook: Vec<&str> = rows[1].split(',').collect();
    // The software comes from an accepted message: a message, not an authentication.
    assert_eq!(outlook[..4], ["Outlook 16.0", "0", "0", "0"]);
    assert_eq!(outlook.last(), Some(&"1"), "messages");
    assert_eq!(outlook[6..9], ["basic", "LOGIN", "alice"]);
    let unknown: Vec<&str> = rows[2].split(',').collect();
    assert_eq!(unknown[..4], ["unknown", "4", "2", "2"]);
    assert_eq!(unknown[7..9], ["APOP;CRAM-MD5;LOGIN;PLAIN", "alice;bob"]);
}

#[test]
fn table_filters_by_time_class_and_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write_logs(dir.path());
    let path = log.to_str().expect("path");
    let out = stdout(&audit(&["--file", path, "--since", "7d"]));
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with("USER   EVENTS  OK  FAIL  MSGS  DENIED  WARNED  BROWNOUT  WOULD DENY"),
        "{out}"
    );
    // Alice's accepted message is a message, not a second authentication.
    assert!(
        rows[1].starts_with("alice       1   0     1     1       1       0         0           0"),
        "{out}"
    );
    assert!(
        rows[2].starts_with("bob         1   1     0     0       0       1         0           0"),
        "{out}"
    );
    assert_eq!(
        rows.last(),
        Some(&"2 events in 2 groups; 1 corrupt line(s) skipped")
    );

    let out = stdout(&audit(&[
        "--file",
        path,
        "--class",
        "all",
        "--user",
        "BOB",
        "--group-by",
        "mechanism",
    ]));
    let keys: Vec<&str> = out
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["MECHANISM", "SCRAM-SHA-256", "LOGIN", "PLAIN", "3"]);
    let out = stdout(&audit(&["--file", path, "--until", "2000-01-01"]));
    assert_eq!(
        out.lines().last(),
        Some("0 events in 0 groups; 1 corrupt line(s) skipped")
    );
}

#[test]
fn the_log_is_found_through_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("logs")).expect("mkdir");
    write_logs(&dir.path().join("logs"));
    std::fs::write(dir.path().join("users"), "").expect("users");
    let config = dir.path().join("mailgate.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[listeners]\npop3 = [\"127.0.0.1:1110\"]\n[auth]\n\
         users_file = \"users\"\n[audit]\npath = \"logs/audit.log\"\nkeep = 2\n",
    )
    .expect("config");
    let config = config.to_str().expect("path");
    let out = stdout(&audit(&[
        "--config", config, "--format", "json", "--kind", "all",
    ]));
    let groups: serde_json::Value = serde_json::from_str(&out).expect("json");
    let keys: Vec<&str> = groups
        .as_array()
        .expect("array")
        .iter()
        .map(|g| g["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["carol", "alice", "bob"]);
}

#[test]
fn bad_arguments_and_missing_logs_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = write_logs(dir.path());
    let path = log.to_str().expect("path");
    for (args, says) in [
        (vec!["--since", "soon"], "since"),
        (vec!["--class", "strong"], "class"),
        (vec!["--group-by", "host"], "group_by"),
        (vec!["--format", "xml"], "format"),
    ] {
        let mut all = vec!["--file", path];
        all.extend(args);
        let out = audit(&all);
        assert!(!out.status.success(), "{all:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{all:?}: {stderr}");
    }
    let missing = dir.path().join("nothing.log");
    let out = audit(&["--file", missing.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no log"));
}

/// Checking a dry run (docs/migration.md): `--result` and `--rule` select what a rule decided,
/// and every format carries the per-group policy counts and rules.
#[test]
fn dry_run_is_checked_with_result_and_rule_filters_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let decided = |hours, user: &str, result, rule: Option<&str>| {
        let mut e = ev(ago(hours), user, "CRAM-MD5", false, result);
        e.rule = rule.map(str::to_string);
        e
    };
    std::fs::write(
        &path,
        lines(&[
            decided(6, "alice", Outcome::WouldDeny, Some("no-cram")),
            decided(5, "alice", Outcome::WouldDeny, Some("no-cram")),
            decided(4, "bob", Outcome::Warned, Some("cram-warn")),
            decided(3, "bob", Outcome::Denied, Some("no-cram")),
            decided(2, "carol", Outcome::Success, None),
        ]),
    )
    .expect("write");
    let path = path.to_str().expect("path");

    // Who the dry run would refuse.
    let out = stdout(&audit(&[
        "--file",
        path,
        "--result",
        "would_deny",
        "--format",
        "json",
    ]));
    let groups: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(groups.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(groups[0]["key"], "alice");
    assert_eq!(groups[0]["would_deny"], 2);
    assert_eq!(groups[0]["rules"]["values"], serde_json::json!(["no-cram"]));

    // What one rule decided, by outcome, as CSV.
    let out = stdout(&audit(&[
        "--file", path, "--rule", "no-cram", "--format", "csv",
    ]));
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let tail = |r: &Vec<&str>| r[r.len() - 6..].join(",");
    assert_eq!(
        (rows[1][0], tail(&rows[1])),
        ("bob", "1,0,0,0,no-cram,0".into())
    );
    assert_eq!(
        (rows[2][0], tail(&rows[2])),
        ("alice", "0,0,0,2,no-cram,0".into())
    );

    // The table shows the policy columns.
    let out = stdout(&audit(&["--file", path]));
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with(
            "USER   EVENTS  OK  FAIL  MSGS  DENIED  WARNED  BROWNOUT  WOULD DENY  RULES"
        ),
        "{out}"
    );
    assert!(
        rows[2].starts_with("bob         2   1     1     0       1       1"),
        "{out}"
    );
    assert!(rows[2].contains("cram-warn, no-cram"), "{out}");

    let out = audit(&["--file", path, "--result", "perhaps"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("result"));
}
