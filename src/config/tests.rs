//! Tests for loading and validating configuration files: the shipped examples, line numbers,
//! several problems at once, durations, relative paths and warnings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::validate::parse_duration;
use super::{Config, ConfigErrors, LogFormat, Problem, SmtpRole, UpstreamTls};

const FILE: &str = "/etc/mailgate/mailgate.toml";

/// A minimal valid file; tests append to it.
const BASE: &str = "[listeners]\nsmtp = [\"127.0.0.1:2525\"]\n";

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, Path::new(FILE))
}

fn ok(text: &str) -> Config {
    match load(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match load(text) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => e.problems,
    }
}

/// `(line, key)` of each problem.
fn where_(text: &str) -> Vec<(Option<usize>, String)> {
    problems(text)
        .into_iter()
        .map(|p| (p.line, p.key))
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_config_loads() {
    let mut seen = 0;
    let dir = repo().join("config");
    let entries = std::fs::read_dir(&dir).expect("config/ exists");
    for entry in entries {
        let path = entry.expect("readable config/ entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            seen += 1;
            if let Err(e) = Config::load(&path) {
                panic!("{} does not load:\n{e}", path.display());
            }
        }
    }
    assert!(seen >= 2, "found {seen} files in {}", dir.display());
}

#[test]
fn demo_config_runs_on_loopback_with_its_users() {
    let c = Config::load(&repo().join("config/mailgate.toml")).expect("demo loads");
    assert_eq!(c.hostname, "mail.example.test");
    assert_eq!(c.state_dir, repo().join("config/../state"));
    assert_eq!(c.auth.users_file, repo().join("config/users"));
    assert_eq!(
        c.pop_before_smtp.snapshot,
        repo().join("config/../state/allowlist.json")
    );
    assert_eq!(c.delivery.spool, repo().join("config/../state/spool"));
    let l = &c.listeners;
    let all = [&l.pop3, &l.pop3s, &l.smtp, &l.submission, &l.submissions];
    assert!(all.iter().all(|v| v.len() == 1 && v[0].ip().is_loopback()));
    assert_eq!(
        l.control.map(|a| a.to_string()),
        Some("127.0.0.1:2526".into())
    );
    assert!(c.delivery.upstream.is_none());
    assert_eq!(c.relay.local_domains, ["example.test"]);
    assert_eq!(c.warnings(), Vec::<String>::new());
    let users = std::fs::read_to_string(&c.auth.users_file).expect("demo users file");
    let names: Vec<&str> = users
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "postmaster"]);
}

#[test]
fn minimal_file_gets_the_documented_defaults() {
    let c = ok(BASE);
    assert_eq!(c.hostname, "localhost");
    assert_eq!(c.state_dir, Path::new("/etc/mailgate/state"));
    assert_eq!(c.auth.mechanisms, ["PLAIN", "LOGIN", "CRAM-MD5"]);
    assert!(c.auth.insecure_plaintext_networks.is_empty());
    assert!(c.auth.apop);
    assert_eq!(c.auth.failure_delay, Duration::from_secs(1));
    assert_eq!(c.auth.max_failures, 3);
    assert_eq!(c.auth.throttle.base_delay, Duration::from_secs(2));
    assert_eq!(c.auth.throttle.window, Duration::from_secs(900));
    assert_eq!(c.auth.throttle.ipv6_prefix, 48);
    let p = &c.pop_before_smtp;
    assert!(p.enabled && !p.restrict_sender);
    assert_eq!(
        (p.ttl, p.ipv6_prefix, p.max_entries),
        (Duration::from_secs(1800), 64, 100_000)
    );
    assert_eq!(p.listeners, [SmtpRole::Smtp]);
    assert_eq!(c.limits.smtp_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.limits.pop3_idle_timeout, Duration::from_secs(600));
    assert_eq!(c.limits.max_message_size, 26_214_400);
    assert_eq!(c.limits.max_line_length, 4096);
    assert_eq!(c.listeners.control, None);
    assert_eq!(c.source.as_deref(), Some(Path::new(FILE)));
}

#[test]
fn relative_paths_are_relative_to_the_config_folder() {
    let text = "state_dir = \"/var/lib/mg\"\n[listeners]\nsmtp = [\"127.0.0.1:2525\"]\n\
                [auth]\nusers_file = \"../users\"\n[delivery]\nspool = \"q\"\n\
                [tls]\ncert = \"/tls/c.pem\"\nkey = \"tls/k.pem\"\n";
    let c = ok(text);
    assert_eq!(c.state_dir, Path::new("/var/lib/mg"));
    assert_eq!(c.auth.users_file, Path::new("/etc/mailgate/../users"));
    assert_eq!(c.delivery.spool, Path::new("/etc/mailgate/q"));
    assert_eq!(c.delivery.maildir, Path::new("/var/lib/mg/maildir"));
    assert_eq!(c.delivery.dead_letter, Path::new("/var/lib/mg/dead-letter"));
    assert_eq!(
        c.pop_before_smtp.snapshot,
        Path::new("/var/lib/mg/allowlist.json")
    );
    assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/tls/c.pem")));
    assert_eq!(
        c.tls.key.as_deref(),
        Some(Path::new("/etc/mailgate/tls/k.pem"))
    );

    // A relative config path is made absolute against the working folder.
    let c = Config::from_toml(BASE, Path::new("conf/x.toml")).expect("valid");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(c.state_dir, cwd.join("conf/state"));
    assert_eq!(c.source, Some(cwd.join("conf/x.toml")));
}

#[test]
fn durations() {
    let cases: &[(&str, Option<u64>)] = &[
        ("10s", Some(10)),
        ("30m", Some(1800)),
        ("1h30m", Some(5400)),
        ("5d", Some(432_000)),
        ("2w", Some(1_209_600)),
        ("1m30s", Some(90)),
        ("0s", Some(0)),
        ("", None),
        ("10", None),
        ("s", None),
        ("5 minutes", None),
        ("1h 30m", None),
        ("-1s", None),
        ("1.5h", None),
        ("10S", None),
        ("99999999999999999999s", None),
        ("4294967296s", None),
    ];
    for (text, secs) in cases {
        assert_eq!(
            parse_duration(text).ok(),
            secs.map(Duration::from_secs),
            "{text:?}"
        );
    }
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert!(
        parse_duration(&"1s".repeat(40)).is_err(),
        "overlong text is refused"
    );
}

#[test]
fn problem_display_names_file_line_key_and_fix() {
    let text = format!("{BASE}[limits]\nsmtp_idle_timeout = \"5 minutes\"\n");
    let errors = Config::from_toml(&text, Path::new("config/mailgate.toml")).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "config/mailgate.toml:4: limits.smtp_idle_timeout: \"5 minutes\" is not a duration; \
         write e.g. \"5m\""
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let text = format!("{BASE}\n[limits]\nmax_conections = 5\n");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (Some(5), "limits.max_conections")
    );
    assert!(
        p[0].message.contains("unknown field `max_conections`"),
        "{}",
        p[0].message
    );

    let text = format!("{BASE}[auth.throttle]\nwindw = \"1h\"\n");
    assert_eq!(
        where_(&text),
        [(Some(4), "auth.throttle.windw".to_string())]
    );

    let p = problems(&format!("hostnme = \"x\"\n{BASE}"));
    assert_eq!((p[0].line, p[0].key.as_str()), (Some(1), "hostnme"));
    assert!(p[0].hint.contains("state_dir"), "{}", p[0].hint);
}

#[test]
fn the_log_format_is_text_or_json() {
    assert_eq!(ok(BASE).log_format, LogFormat::Text);
    let json = ok(&format!("{BASE}[log]\nformat = \"json\"\n"));
    assert_eq!(json.log_format, LogFormat::Json);
    let p = problems(&format!("{BASE}[log]\nformat = \"xml\"\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].line, p[0].key.as_str()), (Some(4), "log.format"));
    assert!(p[0].message.contains("\"xml\""), "{}", p[0].message);
    assert!(p[0].hint.contains("json"), "{}", p[0].hint);
    assert_eq!(
        where_(&format!("{BASE}[log]\nlevel = \"debug\"\n")),
        [(Some(4), "log.level".to_string())]
    );
}

#[test]
fn several_problems_are_reported_at_once() {
    let text = "\
hostname = \"\"
bogus = true
[listeners]
smtp = [\"127.0.0.1\", \"127.0.0.1:25\"]
pop3 = [\"::1:110\"]
control = \"0.0.0.0:2526\"
[auth]
mechanisms = [\"PLAIN\", \"GSSAPI\"]
insecure_plaintext_networks = [\"10.0.0.1/8\", \"nonsense\"]
[auth.throttle]
ipv6_prefix = 129
[pop_before_smtp]
listeners = [\"smtp\", \"pop3\"]
ttl = \"0s\"
[relay]
local_domains = [\"Example.TEST\", \"bad_domain.test\"]
[tls]
cert = \"c.pem\"
[delivery.upstream]
address = \"smarthost:587\"
tls = \"ssl\"
username = \"u\"
[limits]
max_line_length = 100
max_recipients = \"many\"
smtp_idle_timeout = 300
[pop_before_smtp.x]
";
    let got = where_(text);
    let want: &[(usize, &str)] = &[
        (1, "hostname"),
        (2, "bogus"),
        (4, "listeners.smtp"),
        (5, "listeners.pop3"),
        (6, "listeners.control"),
        (8, "auth.mechanisms"),
        (9, "auth.insecure_plaintext_networks"),
        (9, "auth.insecure_plaintext_networks"),
        (11, "auth.throttle.ipv6_prefix"),
        (13, "pop_before_smtp.listeners"),
        (14, "pop_before_smtp.ttl"),
        (16, "relay.local_domains"),
        (18, "tls.cert"),
        (19, "delivery.upstream"),
        (20, "delivery.upstream.address"),
        (21, "delivery.upstream.tls"),
        (24, "limits.max_line_length"),
        (25, "limits.max_recipients"),
        (26, "limits.smtp_idle_timeout"),
        (27, "pop_before_smtp.x"),
    ];
    let want: Vec<(Option<usize>, String)> = want
        .iter()
        .map(|(l, k)| (Some(*l), k.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn value_problems_carry_useful_hints() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[listeners]\npop3 = [\"localhost:25\"]\n",
            "listeners.pop3",
            "host names",
        ),
        (
            "[listeners]\npop3 = [\"::1\"]\n",
            "listeners.pop3",
            "\"[::1]:25\"",
        ),
        (
            "[listeners]\npop3 = [\"10.1.2.3\"]\n",
            "listeners.pop3",
            "\"10.1.2.3:25\"",
        ),
        (
            "[auth]\nmechanisms = [\"KERBEROS_V4\"]\n",
            "auth.mechanisms",
            "known: PLAIN, LOGIN, CRAM-MD5",
        ),
        (
            "[listeners]\nproxy_protocol_from = [\"10.0.0.5\", \"lb.example\"]\n",
            "listeners.proxy_protocol_from",
            "CIDR",
        ),
        (
            "[relay]\ntrusted_networks = [\"10.1.2.3/8\"]\n",
            "relay.trusted_networks",
            "10.0.0.0/8",
        ),
        (
            "[limits]\ndata_timeout = \"2 hours\"\n",
            "limits.data_timeout",
            "\"2h\"",
        ),
        (
            "[limits]\ndata_timeout = \"soon\"\n",
            "limits.data_timeout",
            "\"1h30m\"",
        ),
        (
            "[limits]\ndata_timeout = 600\n",
            "limits.data_timeout",
            "quote the value",
        ),
        (
            "[limits]\nmax_line_length = 80\n",
            "limits.max_line_length",
            "at least 1000",
        ),
        (
            "[auth]\nmechanisms = \"PLAIN\"\n",
            "auth.mechanisms",
            "write a list",
        ),
        (
            "[delivery.upstream]\ntls = \"starttls\"\n",
            "delivery.upstream",
            "address =",
        ),
        ("[tls]\nkey = \"k.pem\"\n", "tls.key", "set both"),
        (
            "[auth]\nmechanisms = [\"plain\", \"PLAIN\"]\n",
            "auth.mechanisms",
            "once",
        ),
        (
            "[listeners]\npop3 = [\"127.0.0.1:2525\"]\n",
            "listeners.smtp",
            "port",
        ),
    ];
    for (tail, key, hint) in cases {
        let text = merge_tables(&format!("{BASE}{tail}"));
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{text}\n{p:?}");
        assert_eq!(p[0].key, *key, "{text}");
        assert!(p[0].hint.contains(hint), "{text}\nhint: {}", p[0].hint);
        assert!(p[0].line.is_some(), "{text}");
    }
}

#[test]
fn proxy_sources_are_networks_and_none_by_default() {
    assert!(ok(BASE).listeners.proxy_protocol_from.is_empty());
    let text = format!("{BASE}proxy_protocol_from = [\"10.0.0.5\", \"fd00::/8\"]\n");
    let nets: Vec<String> = ok(&text)
        .listeners
        .proxy_protocol_from
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.5/32", "fd00::/8"]);
    let text = format!("{BASE}proxy_protocol_from = [\"10.0.0.5/8\"]\n");
    assert_eq!(
        where_(&text),
        [(Some(3), "listeners.proxy_protocol_from".to_string())]
    );
}

#[test]
fn listener_and_hostname_rules() {
    let p = problems("hostname = \"mx.example.test\"\n");
    assert_eq!((p[0].key.as_str(), p[0].line), ("listeners", None));
    assert!(p[0].message.contains("no listener"));

    // Port 0 may repeat (the system picks the port); control alone is not a listener.
    let c = ok("[listeners]\nsmtp = [\"127.0.0.1:0\"]\npop3 = [\"127.0.0.1:0\"]\n");
    assert_eq!(c.listeners.pop3[0].port(), 0);
    assert!(load("[listeners]\ncontrol = \"127.0.0.1:2526\"\n").is_err());

    let c = ok(&format!("hostname = \"MX.Example.Test.\"\n{BASE}"));
    assert_eq!(c.hostname, "mx.example.test");
    for bad in ["", "mail example", "-x.test", "a..b", "x_y.test"] {
        let text = format!("hostname = \"{bad}\"\n{BASE}");
        assert_eq!(
            where_(&text),
            [(Some(1), "hostname".to_string())],
            "{bad:?}"
        );
    }
}

#[test]
fn values_are_normalized() {
    let text = "[listeners]\nsmtp = [\"127.0.0.1:2525\"]\nsubmission = [\"[::1]:2587\"]\n\
                [auth]\nmechanisms = [\"cram-md5\", \"plain\"]\n\
                insecure_plaintext_networks = [\"::1\", \"192.168.1.7\"]\n\
                [relay]\nlocal_domains = [\"Example.TEST\", \"example.test\", \"b.test\"]\n\
                [pop_before_smtp]\nlisteners = [\"submission\", \"smtp\", \"smtp\"]\n";
    let c = ok(text);
    assert_eq!(c.auth.mechanisms, ["CRAM-MD5", "PLAIN"]);
    let nets: Vec<String> = c
        .auth
        .insecure_plaintext_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["::1/128", "192.168.1.7/32"]);
    assert_eq!(c.relay.local_domains, ["example.test", "b.test"]);
    assert_eq!(
        c.pop_before_smtp.listeners,
        [SmtpRole::Submission, SmtpRole::Smtp]
    );
    assert_eq!(c.listeners.submission[0].to_string(), "[::1]:2587");
}

#[test]
fn delays_may_be_zero_but_timeouts_may_not() {
    let text = format!(
        "{BASE}[auth]\nfailure_delay = \"0s\"\n[auth.throttle]\nbase_delay = \"0s\"\n\
         max_delay = \"0s\"\n"
    );
    let c = ok(&text);
    assert!(c.auth.failure_delay.is_zero() && c.auth.throttle.max_delay.is_zero());
    for key in ["window = \"0s\"", "base_delay = \"2 s\""] {
        let text = format!("{BASE}[auth.throttle]\n{key}\n");
        assert_eq!(where_(&text).len(), 1, "{key}");
    }
    let text = format!("{BASE}[limits]\nshutdown_grace = \"0ms\"\n");
    assert_eq!(
        where_(&text),
        [(Some(4), "limits.shutdown_grace".to_string())]
    );
}

#[test]
fn upstream_is_typed() {
    let text = format!(
        "{BASE}[delivery.upstream]\naddress = \"192.0.2.25:465\"\ntls = \"tls\"\n\
         retry = [\"30s\", \"2m\"]\ncommand_timeout = \"1m\"\n"
    );
    let u = ok(&text).delivery.upstream.expect("upstream set");
    assert_eq!(u.address.to_string(), "192.0.2.25:465");
    assert_eq!(u.server_name, "192.0.2.25");
    assert_eq!(u.tls, UpstreamTls::Tls);
    assert_eq!(u.retry, [Duration::from_secs(30), Duration::from_secs(120)]);
    assert_eq!(u.command_timeout, Duration::from_secs(60));
    assert!(!u.danger_accept_invalid_certs && u.username.is_none());

    let text = format!("{BASE}[delivery.upstream]\naddress = \"192.0.2.25:587\"\n");
    let u = ok(&text).delivery.upstream.expect("upstream set");
    assert_eq!((u.tls, u.retry.len()), (UpstreamTls::Starttls, 9));
    assert_eq!(u.command_timeout, Duration::from_secs(300));
    assert_eq!(u.keep_idle, Duration::from_secs(5));

    for (value, want) in [("0s", Duration::ZERO), ("30s", Duration::from_secs(30))] {
        let text = format!(
            "{BASE}[delivery.upstream]\naddress = \"192.0.2.25:587\"\nkeep_idle = \"{value}\"\n"
        );
        let u = ok(&text).delivery.upstream.expect("upstream set");
        assert_eq!(u.keep_idle, want);
    }
    assert_eq!(ok(BASE).delivery.commit_window, Duration::from_micros(500));
    for (value, want) in [
        ("0s", Duration::ZERO),
        ("250us", Duration::from_micros(250)),
        ("2ms", Duration::from_millis(2)),
    ] {
        let text = format!("{BASE}[delivery]\ncommit_window = \"{value}\"\n");
        assert_eq!(ok(&text).delivery.commit_window, want);
    }
    for value in ["1s", "soon"] {
        let text = format!("{BASE}[delivery]\ncommit_window = \"{value}\"\n");
        assert_eq!(
            where_(&text),
            [(Some(4), "delivery.commit_window".to_string())],
            "{value}"
        );
    }
    let text =
        format!("{BASE}[delivery.upstream]\naddress = \"192.0.2.25:587\"\nkeep_idle = \"1h\"\n");
    assert_eq!(
        where_(&text),
        [(Some(5), "delivery.upstream.keep_idle".to_string())]
    );

    let text = format!(
        "{BASE}[delivery.upstream]\naddress = \"192.0.2.25:587\"\nretry = [\"1m\", \"x\"]\n"
    );
    assert_eq!(
        where_(&text),
        [(Some(5), "delivery.upstream.retry".to_string())]
    );
}

#[test]
fn syntax_errors_carry_lines() {
    let p = problems("[listeners]\nsmtp = [\"127.0.0.1:25\"\n[auth]\n");
    assert!(!p.is_empty());
    assert!(p[0].line.is_some_and(|l| l >= 2), "{p:?}");
    assert!(p[0].hint.contains("TOML"));
}

#[test]
fn missing_file_is_one_problem() {
    let path = Path::new("/nonexistent/mailgate.toml");
    let e = Config::load(path).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/mailgate.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn warnings_name_risky_settings() {
    let cases: &[(&str, &str)] = &[
        (
            "[auth]\ninsecure_plaintext_networks = [\"0.0.0.0/0\"]\n",
            "not a private",
        ),
        (
            "[auth]\ninsecure_plaintext_networks = [\"100.64.0.0/10\"]\n",
            "not a private",
        ),
        (
            "[relay]\ntrusted_networks = [\"0.0.0.0/1\"]\n",
            "wider than a /8",
        ),
        (
            "[listeners]\nproxy_protocol_from = [\"10.0.0.0/16\"]\n",
            "any client",
        ),
        (
            "[relay]\ntrusted_networks = [\"2000::/3\"]\n",
            "wider than a /8",
        ),
        ("[listeners]\npop3 = [\"0.0.0.0:110\"]\n", "self-signed"),
        ("[pop_before_smtp]\nttl = \"1d\"\n", "NAT"),
        ("[pop_before_smtp]\nlisteners = []\n", "no effect"),
        ("[limits]\npop3_idle_timeout = \"1m\"\n", "RFC 1939"),
        ("[limits]\nsmtp_idle_timeout = \"1m\"\n", "RFC 5321"),
        ("[limits]\nmax_recipients = 10\n", "4.5.3.1.8"),
        (
            "[delivery.upstream]\naddress = \"192.0.2.1:25\"\ndanger_accept_invalid_certs = true\n",
            "not checked",
        ),
        (
            "[delivery.upstream]\naddress = \"192.0.2.1:25\"\ntls = \"none\"\n\
             username = \"u\"\npassword = \"p\"\n",
            "in the clear",
        ),
        (
            "[listeners]\nadmin = \"192.0.2.9:2580\"\n[admin]\ntoken_file = \"t\"\n",
            "[admin] tls",
        ),
    ];
    for (tail, needle) in cases {
        let text = format!("{BASE}[relay]\nlocal_domains = [\"x.test\"]\n{tail}");
        // Merge a repeated [relay] or [listeners] table into the first one.
        let text = merge_tables(&text);
        let w = ok(&text).warnings();
        assert_eq!(w.len(), 1, "{text}\n{w:?}");
        assert!(w[0].contains(needle), "{text}\n{w:?}");
    }
    let quiet = format!("{BASE}[relay]\nlocal_domains = [\"x.test\"]\n");
    assert_eq!(ok(&quiet).warnings(), Vec::<String>::new());
    let c = ok(BASE);
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("local_domains is empty"))
    );
}

/// Joins the bodies of tables that appear twice (TOML forbids redefining a table).
fn merge_tables(text: &str) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut bodies: Vec<Vec<String>> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            current = line.to_string();
        }
        let i = match order.iter().position(|h| *h == current) {
            Some(i) => i,
            None => {
                order.push(current.clone());
                bodies.push(Vec::new());
                order.len() - 1
            }
        };
        if !line.starts_with('[') {
            bodies[i].push(line.to_string());
        }
    }
    let mut out = String::new();
    for (h, body) in order.iter().zip(bodies) {
        if !h.is_empty() {
            out.push_str(h);
            out.push('\n');
        }
        for l in body {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// Issue 4: a misspelled mechanism in a rule would never match, and `notify` only works under
/// `warn` and `brownout`: both are errors that name the key, with a fix.
#[test]
fn policy_rules_refuse_unknown_mechanisms_and_notify_without_effect() {
    let text = format!(
        "{BASE}\n[[policy]]\nmechanisms = [\"cram-md5\", \"CRAM_MD5\", \"pop-before-smtp\", \
         \"NTLMv1\", \"SMOKE-SIGNALS\"]\naction = \"warn\"\n\n[[policy]]\nmechanisms = \
         [\"PLAIN\"]\naction = \"deny\"\nnotify = true\n"
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "policy[0].mechanisms",
            "policy[0].mechanisms",
            "policy[1].notify"
        ],
        "{found:?}"
    );
    assert!(found[0].message.contains("\"CRAM_MD5\""), "{:?}", found[0]);
    assert!(found[0].hint.contains("\"CRAM-MD5\""), "{:?}", found[0]);
    assert!(found[1].message.contains("SMOKE-SIGNALS"), "{:?}", found[1]);
    assert!(found[1].hint.contains("trusted-network"), "{:?}", found[1]);
    // The same rule under warn, and a brownout, may notify.
    ok(&format!(
        "{BASE}\n[[policy]]\nmechanisms = [\"PLAIN\"]\naction = \"warn\"\nnotify = true\n\n\
         [[policy]]\naction = \"brownout\"\nshare = 0.1\nnotify = true\n"
    ));
}

/// The shipped config's comment and docs/configuration.md name every mechanism this build
/// knows, so that neither goes stale when one is added.
#[test]
fn docs_list_every_known_mechanism() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| {
        std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let shipped = read("config/mailgate.toml");
    let comment: String = shipped
        .lines()
        .skip_while(|l| !l.contains("Known: "))
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let docs = read("docs/configuration.md");
    let row = docs
        .lines()
        .find(|l| l.starts_with("| `mechanisms` |"))
        .expect("the mechanisms row");
    for d in crate::sasl::MECHANISMS {
        let name = d.name;
        let listed = |text: &str, quote: &str| {
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|w| w == name)
                && (quote.is_empty() || text.contains(&format!("{quote}{name}{quote}")))
        };
        assert!(
            listed(&comment, ""),
            "config/mailgate.toml comment lacks {name}"
        );
        assert!(listed(row, "`"), "docs/configuration.md lacks {name}");
    }
}

#[test]
fn introspection_ca_file_is_resolved_next_to_the_config() {
    let text = format!(
        "{BASE}[auth.oauth]\naudience = [\"mailgate\"]\njwks_file = \"jwks.json\"\n\
         introspection_url = \"https://idp.example.test/introspect\"\n\
         introspection_ca_file = \"idp-ca.pem\"\n"
    );
    let config = ok(&text);
    let oauth = config.auth.oauth.expect("[auth.oauth]");
    let introspection = oauth.introspection.expect("introspection");
    assert_eq!(
        introspection.ca_file.as_deref(),
        Some(Path::new("/etc/mailgate/idp-ca.pem"))
    );
}

#[test]
fn old_server_tables_load_with_their_defaults() {
    let c = ok(&format!(
        "{BASE}[auth.upstream]\naddress = \"192.0.2.10:110\"\n\
         [pop3.proxy]\naddress = \"192.0.2.10:995\"\ntls = \"implicit\"\n\
         master_user = \"m\"\nmaster_password_file = \"master\"\n"
    ));
    let up = c.auth.upstream.expect("[auth.upstream]");
    let server = up.server().expect("a server").clone();
    assert_eq!(server.protocol, super::OldProtocol::Pop3);
    assert_eq!(server.tls, UpstreamTls::Starttls);
    assert_eq!(server.server_name, "192.0.2.10");
    assert_eq!(server.timeout, Duration::from_secs(10));
    assert_eq!(up.users, super::UpstreamUsers::Unknown);
    assert_eq!(up.cache_ttl, Duration::from_secs(300));
    assert_eq!(up.negative_cache_ttl, Duration::from_secs(30));
    assert_eq!((up.max_concurrent, up.capture), (32, false));
    let proxy = c.pop3_proxy.expect("[pop3.proxy]");
    assert_eq!(proxy.server.tls, UpstreamTls::Tls);
    assert_eq!(proxy.master_login, super::MasterLogin::DovecotStar);
    assert_eq!(
        proxy.master,
        Some(("m".into(), PathBuf::from("/etc/mailgate/master")))
    );
}

#[test]
fn old_server_mistakes_are_named() {
    let keys: Vec<String> = where_(&format!(
        "{BASE}[auth.upstream]\nprotocol = \"ldap\"\ntls = \"maybe\"\nusers = \"some\"\n\
         max_concurrent = 0\ncache_ttl = \"soon\"\n\
         [pop3.proxy]\naddress = \"old.example:110\"\nmaster_user = \"m\"\nmaster_login = \"x\"\n"
    ))
    .into_iter()
    .map(|(_, k)| k)
    .collect();
    for key in [
        "auth.upstream",
        "auth.upstream.protocol",
        "auth.upstream.tls",
        "auth.upstream.users",
        "auth.upstream.max_concurrent",
        "auth.upstream.cache_ttl",
        "pop3.proxy.address",
        "pop3.proxy",
        "pop3.proxy.master_login",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not named in {keys:?}");
    }
}

#[test]
fn challenge_mechanisms_in_front_of_an_old_server_are_warned_about() {
    let c = ok(&format!(
        "{BASE}[auth]\nmechanisms = [\"PLAIN\", \"CRAM-MD5\"]\n\
         [auth.upstream]\naddress = \"192.0.2.10:110\"\ntls = \"none\"\n"
    ));
    let w = c.warnings().join("\n");
    assert!(w.contains("CRAM-MD5, APOP never carry the password"), "{w}");
    assert!(w.contains("capture = true"), "{w}");
    assert!(w.contains("in the clear"), "{w}");
}

#[test]
fn digest_md5_realm_and_hosts() {
    let c = ok(&format!("hostname = \"Mx.Example.org\"\n{BASE}"));
    assert_eq!(c.auth.digest_md5_realm, "Mx.Example.org");
    assert_eq!(c.auth.digest_md5_hosts, ["mx.example.org"]);
    let c = ok(&format!(
        "hostname = \"mx.example.org\"\n{BASE}[auth]\ndigest_md5_realm = \"example.org\"\n\
         digest_md5_hosts = [\"Mail.Example.org\", \"192.0.2.25\", \"mx.example.org\"]\n"
    ));
    assert_eq!(c.auth.digest_md5_realm, "example.org");
    assert_eq!(
        c.auth.digest_md5_hosts,
        ["mx.example.org", "mail.example.org", "192.0.2.25"]
    );
    let keys: Vec<String> = problems(&format!(
        "{BASE}[auth]\ndigest_md5_realm = \"a \\\"b\\\"\"\ndigest_md5_hosts = [\"a/b\", \"\"]\n"
    ))
    .into_iter()
    .map(|p| p.key)
    .collect();
    assert_eq!(
        keys,
        [
            "auth.digest_md5_realm",
            "auth.digest_md5_hosts",
            "auth.digest_md5_hosts"
        ]
    );
}
