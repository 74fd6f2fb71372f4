//! Unit tests of the report: time and parameter parsing, filters, grouping, list caps, corrupt
//! lines, block replay, threads versus one reader, the timeline and the three formats.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::scan::{self, Window};
use super::*;
use crate::audit::event::{Event, Outcome, classify};

fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).expect("test time")
}

fn now() -> SystemTime {
    at("2026-11-28T12:00:00Z")
}

/// An auth event at `time` for `user` with `mech` (TLS or not) and `result`.
fn ev(time: &str, user: &str, mech: &str, tls: bool, result: Outcome) -> Event {
    let mut e = Event::new(Kind::Auth, "smtp", time.into(), result);
    e.user = Some(user.into());
    e.mechanism = Some(mech.into());
    e.class = Some(classify(mech, tls));
    if tls {
        e.tls = Some("TLSv1.3 TLS13_AES_128_GCM_SHA256".into());
    }
    e.client_ip = Some("192.0.2.1".parse().expect("ip"));
    e
}

fn text(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).expect("event") + "\n")
        .collect()
}

fn run(input: &str, filter: &Filter, by: GroupBy) -> Report {
    report_from(Cursor::new(input), Path::new("log"), filter, by, now()).expect("report")
}

fn keys(r: &Report) -> Vec<&str> {
    r.groups.iter().map(|g| g.key.as_str()).collect()
}

fn sample() -> Vec<Event> {
    let mut accept = ev(
        "2026-11-27T10:00:00.000Z",
        "bob",
        "LOGIN",
        true,
        Outcome::Success,
    );
    accept.kind = Kind::Accept;
    accept.client_software = Some("Thunderbird 115".into());
    let mut relay = ev(
        "2026-11-26T09:00:00.000Z",
        "",
        "pop-before-smtp",
        false,
        Outcome::Success,
    );
    relay.kind = Kind::Relay;
    relay.user = None;
    relay.client_ip = Some("198.51.100.7".parse().expect("ip"));
    let mut allow = ev(
        "2026-11-28T11:00:00.000Z",
        "carol",
        "USER",
        false,
        Outcome::Success,
    );
    allow.kind = Kind::Allowlist;
    let mut failed = ev(
        "2026-11-20T08:00:00.000Z",
        "",
        "PLAIN",
        false,
        Outcome::Failure,
    );
    failed.user = None;
    failed.user_given = Some("Alice".into());
    vec![
        failed,
        ev(
            "2026-11-25T08:00:00.000Z",
            "alice",
            "CRAM-MD5",
            false,
            Outcome::Success,
        ),
        ev(
            "2026-11-25T09:00:00.000Z",
            "alice",
            "PLAIN",
            true,
            Outcome::Denied,
        ),
        ev(
            "2026-11-26T08:00:00.000Z",
            "alice",
            "SCRAM-SHA-256",
            true,
            Outcome::Success,
        ),
        relay,
        accept,
        ev(
            "2026-11-27T11:00:00.000Z",
            "bob",
            "NTLMv2",
            true,
            Outcome::Warned,
        ),
        allow,
    ]
}

#[test]
fn time_specs_parse() {
    let cases: [(&str, Option<TimeSpec>); 12] = [
        ("7d", Some(TimeSpec::Ago(Duration::from_secs(7 * 86_400)))),
        ("12h", Some(TimeSpec::Ago(Duration::from_secs(12 * 3600)))),
        (" 30m ", Some(TimeSpec::Ago(Duration::from_secs(1800)))),
        ("2026-11-01", Some(TimeSpec::At(at("2026-11-01T00:00:00Z")))),
        (
            "2026-11-01T08:00:00Z",
            Some(TimeSpec::At(at("2026-11-01T08:00:00Z"))),
        ),
        (
            "2026-11-01T08:00:00.250Z",
            Some(TimeSpec::At(at("2026-11-01T08:00:00.250Z"))),
        ),
        (
            "2026-11-01T09:30:00+01:30",
            Some(TimeSpec::At(at("2026-11-01T08:00:00Z"))),
        ),
        (
            "2026-11-01T03:00:00-05:00",
            Some(TimeSpec::At(at("2026-11-01T08:00:00Z"))),
        ),
        ("yesterday", None),
        ("2026-13-01", None),
        ("2026-11-01T25:00:00Z", None),
        ("", None),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<TimeSpec>().ok(), want, "{input:?}");
    }
    assert_eq!(
        TimeSpec::Ago(Duration::from_secs(3600)).resolve(now()),
        at("2026-11-28T11:00:00Z")
    );
}

#[test]
fn params_parse() {
    let f = Filter::from_params::<&str, &str>(&[]).expect("empty");
    assert_eq!(f, Filter::default());
    let f = Filter::from_params(&[
        ("class", "weak"),
        ("class", "Basic, insecure"),
        ("user", "alice,bob"),
        ("user", "carol"),
        ("kind", "all"),
        ("since", "7d"),
        ("until", "2026-11-28"),
        ("group_by", "ip"),
    ])
    .expect("params");
    assert_eq!(
        f.classes,
        Some(vec![Class::Weak, Class::Basic, Class::Insecure])
    );
    assert_eq!(f.users, ["alice", "bob", "carol"]);
    assert_eq!(f.kinds, None);
    assert_eq!(
        f.since,
        Some(TimeSpec::Ago(Duration::from_secs(7 * 86_400)))
    );
    assert_eq!(f.until, Some(TimeSpec::At(at("2026-11-28T00:00:00Z"))));
    let owned = vec![("class".to_string(), "all".to_string())];
    assert_eq!(Filter::from_params(&owned).expect("owned").classes, None);
    for (k, v) in [
        ("class", "strong"),
        ("kind", "login"),
        ("since", "soon"),
        ("until", "2026-02-30"),
    ] {
        match Filter::from_params(&[(k, v)]) {
            Err(Error::Param { key, .. }) => assert_eq!(key, k),
            other => panic!("{k}={v}: {other:?}"),
        }
    }
    assert_eq!("Client".parse::<GroupBy>().ok(), Some(GroupBy::Client));
    assert!("host".parse::<GroupBy>().is_err());
    assert_eq!("CSV".parse::<Format>().ok(), Some(Format::Csv));
    assert!("xml".parse::<Format>().is_err());
}

#[test]
fn default_report_groups_legacy_users_most_recent_first() {
    let r = run(&text(&sample()), &Filter::default(), GroupBy::User);
    // SCRAM (modern) and the allowlist event are left out; the relay has no user. Bob's
    // accepted message is not an authentication of its own: it counts as a message and
    // brings its client software.
    assert_eq!(keys(&r), ["bob", "unknown", "alice", "Alice"]);
    assert_eq!(r.events, 5);
    assert_eq!((r.skipped, r.skipped_at.len()), (0, 0));
    let bob = &r.groups[0];
    assert_eq!((bob.events, bob.successes, bob.failures), (1, 1, 0));
    assert_eq!(bob.messages, 1);
    assert_eq!(bob.first_seen, "2026-11-27T10:00:00.000Z");
    assert_eq!(bob.last_seen, "2026-11-27T11:00:00.000Z");
    assert_eq!(bob.classes, [Class::Weak, Class::Basic]);
    assert_eq!(bob.mechanisms.values, ["LOGIN", "NTLMv2"]);
    assert_eq!(bob.client_software.values, ["Thunderbird 115"]);
    assert_eq!(bob.users.values, ["bob"]);
    let alice = &r.groups[2];
    assert_eq!((alice.events, alice.successes, alice.failures), (2, 1, 1));
    assert_eq!(alice.classes, [Class::Weak, Class::Basic]);
    // A failed login with no canonical user groups under the name as given.
    assert_eq!((r.groups[3].events, r.groups[3].failures), (1, 1));
    assert_eq!(r.groups[1].mechanisms.values, ["pop-before-smtp"]);
}

#[test]
fn filters_select_events() {
    let input = text(&sample());
    let all = Filter {
        classes: None,
        kinds: None,
        ..Filter::default()
    };
    assert_eq!(run(&input, &all, GroupBy::User).events, 7);
    type Case<'a> = (&'a [(&'a str, &'a str)], GroupBy, &'a [&'a str], u64);
    let cases: [Case; 9] = [
        (&[("class", "modern")], GroupBy::User, &["alice"], 1),
        (&[("user", "ALICE")], GroupBy::User, &["alice", "Alice"], 3),
        (
            &[("user", "bob"), ("class", "weak")],
            GroupBy::Mechanism,
            &["NTLMv2"],
            1,
        ),
        (&[("since", "2d")], GroupBy::User, &["bob"], 1),
        (
            &[("since", "2026-11-26")],
            GroupBy::User,
            &["bob", "unknown"],
            2,
        ),
        (
            &[("until", "2026-11-26")],
            GroupBy::User,
            &["alice", "Alice"],
            3,
        ),
        (
            &[("kind", "allowlist"), ("class", "all")],
            GroupBy::User,
            &["carol"],
            1,
        ),
        (
            &[("class", "all")],
            GroupBy::Class,
            &["weak", "basic", "insecure", "modern"],
            6,
        ),
        // The software comes from accepted messages, which are not decisions.
        (&[], GroupBy::Client, &["unknown", "Thunderbird 115"], 5),
    ];
    for (params, by, want, events) in cases {
        let f = Filter::from_params(params).expect("params");
        let r = run(&input, &f, by);
        assert_eq!((keys(&r), r.events), (want.to_vec(), events), "{params:?}");
    }
}

#[test]
fn class_falls_back_to_the_mechanism_and_none_is_grouped() {
    let mut no_class = ev(
        "2026-11-28T01:00:00.000Z",
        "dan",
        "APOP",
        false,
        Outcome::Success,
    );
    no_class.class = None;
    let mut inbound = Event::new(
        Kind::Accept,
        "smtp",
        "2026-11-28T02:00:00.000Z".into(),
        Outcome::Success,
    );
    inbound.client_ip = Some("203.0.113.9".parse().expect("ip"));
    let input = text(&[no_class, inbound]);
    let r = run(&input, &Filter::default(), GroupBy::Class);
    assert_eq!(keys(&r), ["weak"]);
    let all = Filter::from_params(&[("class", "all")]).expect("all");
    let r = run(&input, &all, GroupBy::Class);
    assert_eq!(keys(&r), ["none", "weak"]);
}

#[test]
fn lists_are_capped_with_a_count_of_the_rest() {
    let mut events = Vec::new();
    for i in 0..25u8 {
        for _ in 0..3 {
            let mut e = ev(
                "2026-11-28T01:00:00.000Z",
                "eve",
                "LOGIN",
                true,
                Outcome::Success,
            );
            // Out of order on purpose: the kept values are the smallest, not the first.
            e.client_ip = Some(format!("10.0.0.{}", 100 - i).parse().expect("ip"));
            events.push(e);
        }
    }
    let r = run(&text(&events), &Filter::default(), GroupBy::User);
    let ips = &r.groups[0].client_ips;
    assert_eq!(ips.values.len(), LIST_CAP);
    assert_eq!(ips.more, 5);
    assert_eq!(ips.values[0], "10.0.0.100");
    let mut sorted = ips.values.clone();
    sorted.sort();
    assert_eq!(ips.values, sorted);
    assert_eq!(r.groups[0].events, 75);
}

/// A log with every kind of damage, and where each skipped line is.
fn damaged() -> (String, Vec<u64>, u64) {
    let good = text(&sample()[1..3]);
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let truncated = lines[0][..40].to_string();
    lines.insert(1, truncated); // line 2
    lines.insert(2, String::new()); // blank: ignored, not counted
    lines.insert(3, "not json at all".into()); // line 4
    lines.insert(4, r#"{"v":1,"kind":"auth","result":"success"}"#.into()); // 5: no time
    lines.insert(5, "x".repeat(400)); // line 6: too long for a 300-byte limit
    lines.push(r#"{"time":"yesterday","kind":"auth","result":"success"}"#.into()); // 8
    let mut s = lines.join("\n");
    s.push('\n');
    // The last line has no newline but is whole, so it counts.
    let last = ev(
        "2026-11-28T03:00:00.000Z",
        "alice",
        "APOP",
        false,
        Outcome::Success,
    );
    s.push_str(&serde_json::to_string(&last).expect("event"));
    (s, vec![2, 4, 5, 6, 8], 3)
}

#[test]
fn corrupt_lines_are_skipped_counted_and_located_at_any_block_size() {
    let (input, bad, events) = damaged();
    let window = Window::new(&Filter::default(), now());
    let mut block = 1;
    while block <= 1024 {
        let scan = scan::reader_with(
            Cursor::new(&input),
            Path::new("log"),
            &window,
            || Groups::new(GroupBy::User),
            block,
            300,
        )
        .expect("scan");
        let lines: Vec<u64> = scan.skipped_at.iter().map(|l| l.line).collect();
        assert_eq!(scan.skipped, bad.len() as u64, "block {block}");
        assert_eq!(lines, bad, "block {block}");
        assert_eq!(scan.events, events, "block {block}");
        block *= 2;
    }
}

#[test]
fn skipped_positions_keep_the_first_few() {
    let input = "garbage\n".repeat(12);
    let r = run(&input, &Filter::default(), GroupBy::User);
    assert_eq!(r.skipped, 12);
    let lines: Vec<u64> = r.skipped_at.iter().map(|l| l.line).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5]);
    assert_eq!(r.skipped_at[0].file, Path::new("log"));
}

#[test]
fn blocks_split_at_newlines_and_drop_overlong_lines() {
    let input = b"aa\nbbbbbbbbbbbbbbbbbbbb\ncc\nd";
    for block in [1, 2, 3, 5, 8, 64] {
        let mut got: Vec<(Vec<u8>, bool)> = Vec::new();
        scan::blocks(&input[..], block, 10, |b, over| {
            got.push((b, over));
            true
        })
        .expect("blocks");
        let text: Vec<u8> = got.iter().flat_map(|(b, _)| b.clone()).collect();
        let over = got.iter().filter(|(_, o)| *o).count();
        if block < 20 {
            // The long line never fits in a buffer with its newline.
            assert_eq!(
                (text.as_slice(), over),
                (&b"aa\ncc\nd"[..], 1),
                "block {block}"
            );
        } else {
            assert_eq!((text.as_slice(), over), (&input[..], 0), "block {block}");
        }
        // Every block but the last ends a line.
        let whole = &got[..got.len() - 1];
        assert!(
            whole.iter().all(|(b, o)| *o || b.ends_with(b"\n")),
            "block {block}"
        );
    }
}

#[test]
fn times_in_other_forms_are_normalized_and_windows_compare_as_time() {
    let line = |time: &str, result: &str, user: &str| {
        let rest = r#""kind":"auth","mechanism":"APOP""#;
        format!(r#"{{"time":"{time}",{rest},"result":"{result}","user":"{user}"}}"#)
    };
    let input = [
        line("2026-11-27T23:30:00Z", "success", "a"),
        line("2026-11-28T01:30:00+02:00", "failure", "b"),
        line("2026-11-28T00:00:00.000Z", "success", "c"),
    ]
    .join("\n");
    let f = Filter::from_params(&[("since", "2026-11-28")]).expect("since");
    let r = run(&input, &f, GroupBy::User);
    assert_eq!(keys(&r), ["c"]);
    let f = Filter::from_params(&[("until", "2026-11-28")]).expect("until");
    let r = run(&input, &f, GroupBy::User);
    assert_eq!(keys(&r), ["a", "b"]);
    assert_eq!(r.groups[1].last_seen, "2026-11-27T23:30:00.000Z");
}

#[test]
fn files_are_read_in_order_with_threads_and_match_one_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let mut all = String::new();
    for n in (0..3).rev() {
        let mut events = Vec::new();
        for i in 0..2000u32 {
            let t = format!(
                "2026-11-{:02}T{:02}:{:02}:00.000Z",
                20 + 2 - n,
                i / 60 % 24,
                i % 60
            );
            let mech = ["PLAIN", "APOP", "LOGIN", "SCRAM-SHA-1"][i as usize % 4];
            let mut e = ev(
                &t,
                &format!("u{}", i % 37),
                mech,
                i % 3 == 0,
                Outcome::Success,
            );
            e.client_ip = Some(format!("10.1.{}.{}", i % 7, i % 29).parse().expect("ip"));
            events.push(e);
        }
        let mut body = text(&events);
        if n == 1 {
            body.push_str("{\"truncated\n");
        }
        all.push_str(&body);
        std::fs::write(crate::audit::rotated(&path, n), body).expect("write");
    }
    let files = crate::audit::files(&path, 2);
    assert_eq!(files.len(), 3);
    let threaded = report(&files, &Filter::default(), GroupBy::User, now()).expect("report");
    let single = run(&all, &Filter::default(), GroupBy::User);
    assert_eq!(threaded.groups, single.groups);
    assert_eq!((threaded.events, threaded.skipped), (4500, 1));
    let at = &threaded.skipped_at[0];
    assert_eq!(
        (at.file.clone(), at.line),
        (crate::audit::rotated(&path, 1), 2001)
    );
    // A file that vanished between listing and reading (a rotation) is passed over.
    let mut listed = files.clone();
    listed.push(dir.path().join("audit.log.9"));
    assert!(report(&listed, &Filter::default(), GroupBy::User, now()).is_ok());
}

#[test]
fn timeline_counts_per_bucket_with_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    std::fs::write(&path, text(&sample())).expect("write");
    let all = Filter::from_params(&[("class", "all")]).expect("all");
    let day = Duration::from_secs(86_400);
    let logs = [path];
    let t = timeline(&logs, &all, day, now()).expect("timeline");
    let starts: Vec<&str> = t.iter().map(|b| b.start.as_str()).collect();
    assert_eq!(starts.first(), Some(&"2026-11-20T00:00:00Z"));
    assert_eq!(starts.last(), Some(&"2026-11-27T00:00:00Z"));
    assert_eq!(t.len(), 8, "empty days in between are kept");
    assert_eq!(t[1].events, 0);
    let nov25 = &t[5];
    assert_eq!((nov25.events, nov25.successes, nov25.failures), (2, 1, 1));
    assert_eq!(nov25.classes.get("weak"), Some(&1));
    assert_eq!(nov25.mechanisms.get("PLAIN"), Some(&1));
    // The accepted message is not charted: decisions only.
    let total: u64 = t.iter().map(|b| b.events).sum();
    assert_eq!(total, 6);
    let week =
        Filter::from_params(&[("since", "2d"), ("until", "2026-11-28T12:00:00Z")]).expect("window");
    let t = timeline(&logs, &week, Duration::from_secs(3600), now()).expect("hours");
    assert_eq!(t.len(), 48);
    assert!(matches!(
        timeline(&logs, &all, Duration::from_secs(1), now()),
        Err(Error::TooManyBuckets { .. })
    ));
    assert!(timeline(&logs, &all, Duration::ZERO, now()).is_err());
}

#[test]
fn formats_render_the_documented_fields() {
    let mut events = sample();
    events[5].client_software = Some("Mailer, \"Pro\"\x1b[31m".into());
    let r = run(&text(&events), &Filter::default(), GroupBy::User);
    let render_to = |f: Format| {
        let mut out = Vec::new();
        render(&r, GroupBy::User, f, now(), &mut out).expect("render");
        String::from_utf8(out).expect("utf-8")
    };
    let json: serde_json::Value = serde_json::from_str(&render_to(Format::Json)).expect("json");
    let first = &json[0];
    for field in render::CSV_HEADER {
        assert!(first.get(field).is_some(), "{field} missing");
    }
    assert_eq!(first["key"], "bob");
    assert_eq!(first["classes"], serde_json::json!(["weak", "basic"]));
    assert_eq!(
        first["mechanisms"]["values"],
        serde_json::json!(["LOGIN", "NTLMv2"])
    );
    assert_eq!(first["mechanisms"]["more"], 0);

    let csv = render_to(Format::Csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], render::CSV_HEADER.join(","));
    assert_eq!(
        lines[1],
        "bob,1,1,0,2026-11-27T10:00:00.000Z,2026-11-27T11:00:00.000Z,weak;basic,LOGIN;NTLMv2,\
         bob,192.0.2.1,\"Mailer, \"\"Pro\"\"\x1b[31m\",,0,1,0,0,,1"
    );
    assert_eq!(lines.len(), 5);

    let table = render_to(Format::Table);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with(
            "USER     EVENTS  OK  FAIL  MSGS  DENIED  WARNED  BROWNOUT  WOULD DENY  RULES  \
             LAST SEEN (UTC)"
        ),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].starts_with(
            "bob           1   1     0     1       0       1         0           0         \
             2026-11-27 11:00   1d"
        ),
        "{}",
        rows[1]
    );
    assert!(rows[1].contains("\\u{1b}[31m") && !table.contains('\x1b'));
    assert_eq!(rows.last(), Some(&"5 events in 4 groups"));
}

/// A dry run is checked in the report: `result` and `rule` filters, and per-group counts of
/// the policy outcomes with the rules that decided.
#[test]
fn result_and_rule_filters_and_policy_counts() {
    let decided = |time: &str, user: &str, result: Outcome, rule: Option<&str>| {
        let mut e = ev(time, user, "CRAM-MD5", false, result);
        e.rule = rule.map(str::to_string);
        e
    };
    let events = [
        decided(
            "2026-11-27T08:00:00.000Z",
            "alice",
            Outcome::WouldDeny,
            Some("no-cram"),
        ),
        decided(
            "2026-11-27T09:00:00.000Z",
            "alice",
            Outcome::WouldDeny,
            Some("no-cram"),
        ),
        decided(
            "2026-11-27T10:00:00.000Z",
            "alice",
            Outcome::Warned,
            Some("cram-warn"),
        ),
        decided(
            "2026-11-27T11:00:00.000Z",
            "bob",
            Outcome::Denied,
            Some("no-cram"),
        ),
        decided(
            "2026-11-27T12:00:00.000Z",
            "bob",
            Outcome::Brownout,
            Some("cram-brown"),
        ),
        decided("2026-11-27T13:00:00.000Z", "carol", Outcome::Success, None),
    ];
    let input = text(&events);
    let all = run(&input, &Filter::default(), GroupBy::User);
    let alice = all.groups.iter().find(|g| g.key == "alice").expect("alice");
    assert_eq!(
        (alice.would_deny, alice.warned, alice.denied, alice.brownout),
        (2, 1, 0, 0)
    );
    assert_eq!(alice.rules.values, ["cram-warn", "no-cram"]);
    let bob = all.groups.iter().find(|g| g.key == "bob").expect("bob");
    assert_eq!((bob.denied, bob.brownout), (1, 1));

    let would = Filter::from_params(&[("result", "would_deny")]).expect("filter");
    let r = run(&input, &would, GroupBy::User);
    assert_eq!((keys(&r), r.events), (vec!["alice"], 2));

    let refused = Filter::from_params(&[("result", "denied,brownout")]).expect("filter");
    assert_eq!(keys(&run(&input, &refused, GroupBy::User)), ["bob"]);

    let rule = Filter::from_params(&[("rule", "no-cram")]).expect("filter");
    let r = run(&input, &rule, GroupBy::Mechanism);
    assert_eq!(r.events, 3);
    assert_eq!(r.groups[0].users.values, ["alice", "bob"]);

    let both = Filter::from_params(&[("rule", "no-cram"), ("result", "denied")]).expect("f");
    assert_eq!(run(&input, &both, GroupBy::User).events, 1);
    let every = Filter::from_params(&[("result", "all")]).expect("filter");
    assert_eq!(run(&input, &every, GroupBy::User).events, 6);
    assert!(Filter::from_params(&[("result", "maybe")]).is_err());
}
