//! The admin endpoint end to end: the real gateway with `[listeners] admin` on loopback, driven
//! by real logins, and read over HTTP/1.1 by a small raw client. `/metrics` is parsed line by
//! line as the Prometheus text format and its counts checked against the logins made; the
//! report and timeline JSON are checked against the same logins; the allowlist API's entries
//! are shown to authorize relaying (and their removal to end it); the dashboard page is served
//! self-contained; and a configured bearer token is required. The metrics parser is
//! `admin_metrics.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Gateway, PASSWORD, host};
use mailgate_testkit::{self as common, extra, mech};

use crate::admin_metrics::{Exposition, auths, parse_metrics, relays};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The base test config with the admin endpoint on an ephemeral loopback port, plus `edits`.
pub(crate) async fn start(edits: &[(&str, &str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    std::fs::write(dir.path().join("admin-token"), "tok-3f9a1c\n").expect("token file");
    let mut all = vec![("listeners", "admin", r#""127.0.0.1:0""#)];
    all.extend_from_slice(edits);
    let text = extra::set_all(&common::config_text(""), &all);
    Gateway::start_in(dir, &text).await
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: HashMap<String, String>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let req = request(addr, method, path, token, body);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    exchange(tcp, req).await
}

/// A GET over HTTPS (any certificate accepted), on a fresh connection.
async fn https_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let req = request(addr, "GET", path, token, None);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    exchange(common::client::tls(tcp).await, req).await
}

/// The request's bytes.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or_default());
    req
}

/// Sends `req` on `stream` and reads the reply to the end of the stream.
async fn exchange<S>(mut stream: S, req: String) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let exchange = async {
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .expect("admin endpoint answers in time")
        .expect("admin request");
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("end of headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        dechunk(rest)
    } else {
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(rest.len());
        rest[..len].to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

async fn scrape(gw: &Gateway, token: Option<&str>) -> Exposition {
    let r = http(gw.admin(), "GET", "/metrics", token, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{r:?}"
    );
    parse_metrics(&r.body)
}

/// Polls `GET path` until `done` holds for its JSON (the audit writer flushes every 200 ms).
pub(crate) async fn poll_json(gw: &Gateway, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + mech::DEADLINE;
    loop {
        let r = http(gw.admin(), "GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never reached the expected state: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v["values"]
        .as_array()
        .expect("a values list")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// Logins of each class over SMTP and POP3, mail under SMTP AUTH and under POP-before-SMTP.
async fn drive_logins(gw: &Gateway) {
    // Two PLAIN logins over TLS (basic), one of them sending a message; one wrong password.
    let (mut c, _) = mech::smtp(LOCAL, gw.addr("submissions"), true, "desk").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    mech::send_mail(&mut c, "alice@example.test", "bob@example.test", "").await;
    c.cmd("QUIT", 221).await;
    let (mut c, _) = mech::smtp(LOCAL, gw.addr("submissions"), true, "desk").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", "wrong").await.code, 535);
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    c.cmd("QUIT", 221).await;
    // CRAM-MD5 (weak).
    let (mut c, _) = mech::smtp(LOCAL, gw.addr("submissions"), true, "desk").await;
    assert_eq!(mech::smtp_cram(&mut c, "alice", PASSWORD).await.code, 235);
    c.cmd("QUIT", 221).await;
    // POP3 USER/PASS over TLS from 127.0.0.7 (basic), then relaying from there by address.
    let (mut p, _, _) = mech::pop3(host(7), gw.addr("pop3s"), true).await;
    assert_eq!(mech::pop_user_pass(&mut p, "alice", PASSWORD).await.code, 1);
    p.pop_cmd("QUIT", true).await;
    let (mut c, _) = mech::smtp(host(7), gw.addr("smtp"), false, "laptop").await;
    mech::send_mail(&mut c, "alice@example.test", "friend@elsewhere.test", "").await;
    c.cmd("QUIT", 221).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_allowlist_and_dashboard() {
    let gw = start(&[]).await;
    let admin = gw.admin();

    let r = http(admin, "GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

    // Before any login: the gauges and the audit counters are there; the counters fed by
    // events have no series yet (and an empty family is left out).
    let x = scrape(&gw, None).await;
    let declared = [
        ("mailgate_allowlist_entries", "gauge"),
        ("mailgate_connections", "gauge"),
        ("mailgate_queue_depth", "gauge"),
        ("mailgate_audit_events_written_total", "counter"),
        ("mailgate_audit_events_dropped_total", "counter"),
        ("mailgate_audit_write_errors_total", "counter"),
    ];
    for (name, t) in declared {
        assert_eq!(x.types.get(name).map(String::as_str), Some(t), "{name}");
    }
    assert_eq!(auths(&x, "smtp", "PLAIN", "basic", "success"), 0.0);
    assert_eq!(x.value("mailgate_allowlist_entries", &[]), Some(0.0));

    drive_logins(&gw).await;

    // The counters follow the audit events as they are recorded.
    let x = scrape(&gw, None).await;
    for name in ["mailgate_authentications_total", "mailgate_relays_total"] {
        assert_eq!(
            x.types.get(name).map(String::as_str),
            Some("counter"),
            "{name}"
        );
    }
    assert_eq!(auths(&x, "smtp", "PLAIN", "basic", "success"), 2.0);
    assert_eq!(auths(&x, "smtp", "PLAIN", "basic", "failure"), 1.0);
    assert_eq!(auths(&x, "smtp", "CRAM-MD5", "weak", "success"), 1.0);
    assert_eq!(auths(&x, "pop3", "USER", "basic", "success"), 1.0);
    let total: f64 = x
        .samples
        .iter()
        .filter(|((n, _), _)| n == "mailgate_authentications_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 5.0, "{:?}", x.samples);
    assert_eq!(relays(&x, "sasl", "success"), 1.0);
    assert_eq!(relays(&x, "pop-before-smtp", "success"), 1.0);
    assert_eq!(x.value("mailgate_allowlist_entries", &[]), Some(1.0));
    assert_eq!(x.value("mailgate_audit_write_errors_total", &[]), Some(0.0));
    assert_eq!(
        x.value("mailgate_audit_events_dropped_total", &[]),
        Some(0.0)
    );
    assert!(
        x.value("mailgate_queue_depth", &[])
            .is_some_and(|v| v >= 0.0)
    );

    // An open session is an open connection.
    let (held, _) = mech::smtp(LOCAL, gw.addr("smtp"), false, "held").await;
    let x = scrape(&gw, None).await;
    let open = x.value("mailgate_connections", &[("listener", "smtp")]);
    assert!(open.is_some_and(|v| v >= 1.0), "{open:?}");
    drop(held);

    // The report: six legacy authentications and relays, all alice's, plus the message she
    // sent under SASL, which counts as a message, not as another authentication.
    let report = poll_json(&gw, "/api/report?since=7d&group_by=user", |v| {
        v["events"] == 6 && v["groups"][0]["messages"] == 1
    })
    .await;
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{report:#}");
    let alice = &groups[0];
    assert_eq!(alice["key"], "alice");
    assert_eq!(
        (alice["successes"].as_u64(), alice["failures"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(
        alice["classes"],
        serde_json::json!(["insecure", "weak", "basic"])
    );
    assert_eq!(
        strings(&alice["mechanisms"]),
        ["CRAM-MD5", "PLAIN", "USER", "pop-before-smtp"]
    );
    assert_eq!(strings(&alice["client_ips"]), ["127.0.0.1", "127.0.0.7"]);
    // Filters as in `mailgate audit`: authentication events per mechanism.
    let r = http(
        admin,
        "GET",
        "/api/report?kind=auth&group_by=mechanism",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let by_mech: HashMap<String, (u64, u64)> = r.json()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let n = |k: &str| g[k].as_u64().unwrap_or(u64::MAX);
            (
                g["key"].as_str().unwrap_or("").to_string(),
                (n("successes"), n("failures")),
            )
        })
        .collect();
    let want: HashMap<String, (u64, u64)> =
        [("PLAIN", (2, 1)), ("CRAM-MD5", (1, 0)), ("USER", (1, 0))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(by_mech, want);
    // The result filter (as `mailgate audit --result`): the one failure.
    let r = http(admin, "GET", "/api/report?result=failure", None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let failed = r.json();
    assert_eq!(failed["events"], 1, "{failed:#}");
    assert_eq!(failed["groups"][0]["failures"], 1, "{failed:#}");
    assert_eq!(failed["groups"][0]["denied"], 0, "{failed:#}");
    for bad in [
        "/api/report?group_by=weekday",
        "/api/report?sinse=7d",
        "/api/report?class=x",
        "/api/report?result=maybe",
    ] {
        let r = http(admin, "GET", bad, None, None).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{r:?}"
        );
    }

    // The dashboard: one self-contained page that reads the timeline and the report.
    let page = http(admin, "GET", "/", None, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-type"].starts_with("text/html"),
        "{page:?}"
    );
    let csp = &page.headers["content-security-policy"];
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    check_self_contained(&page.body);
    for call in [
        r#"api("api/timeline?since=" + encodeURIComponent(w.since) + "&bucket=" + w.bucket)"#,
        r#"api("api/report?since=" + period + "&group_by=user")"#,
        r#"api("api/refusals")"#,
        r#"fetch("metrics", "#,
    ] {
        assert!(page.body.contains(call), "{call}");
    }
    // The chart's window follows the data: from the first event, in short buckets, when all
    // of it is recent (here: a few seconds old).
    let first = alice["first_seen"].as_str().expect("first_seen");
    let path = format!("/api/timeline?since={first}&bucket=5m");
    let recent = poll_json(&gw, &path, |v| v.as_array().is_some_and(|b| !b.is_empty())).await;
    let recent = recent.as_array().expect("buckets");
    assert!((1..=2).contains(&recent.len()), "{recent:?}");
    let events: u64 = recent
        .iter()
        .map(|b| b["events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(events, 6, "{recent:?}");
    // Its data as the page asks for it by default (7 days in 3-hour buckets): the chart's
    // classes add up to the table's events (authentications and relays, not messages).
    let timeline = poll_json(&gw, "/api/timeline?since=7d&bucket=3h", |v| {
        v.as_array().is_some_and(|b| {
            b.iter()
                .map(|b| b["events"].as_u64().unwrap_or(0))
                .sum::<u64>()
                == 6
        })
    })
    .await;
    let buckets = timeline.as_array().expect("buckets");
    assert!(
        (56..=57).contains(&buckets.len()),
        "{} buckets",
        buckets.len()
    );
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut mechanisms: BTreeMap<String, u64> = BTreeMap::new();
    for b in buckets {
        assert!(
            b["start"].as_str().is_some_and(|s| s.ends_with(":00:00Z")),
            "{b}"
        );
        for (map, field) in [(&mut classes, "classes"), (&mut mechanisms, "mechanisms")] {
            for (k, v) in b[field].as_object().expect("counts") {
                *map.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(
        classes,
        counts(&[("basic", 4), ("insecure", 1), ("weak", 1)])
    );
    assert_eq!(
        mechanisms,
        counts(&[
            ("CRAM-MD5", 1),
            ("PLAIN", 3),
            ("USER", 1),
            ("pop-before-smtp", 1)
        ])
    );
    let r = http(admin, "GET", "/api/timeline?bucket=0s", None, None).await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = http(admin, "GET", "/api/nothing", None, None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("no such route"))
    );

    // Without a token, loopback may read but not change the allowlist (every local user can
    // reach loopback), and a Host that does not name loopback (DNS rebinding) is refused.
    let body = r#"{"ip": "127.0.0.9", "ttl": 600, "user": "carol"}"#;
    let r = http(admin, "POST", "/api/allowlist", None, Some(body)).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("token_file")),
        "{r:?}"
    );
    let r = http(admin, "DELETE", "/api/allowlist/127.0.0.7", None, None).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(gw.shared.allowlist.len().await.unwrap(), 1);
    let rebound = format!(
        "GET /api/report HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        admin.port()
    );
    let tcp = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let r = exchange(tcp, rebound).await;
    assert_eq!(r.status, 403, "{r:?}");
    let _ = gw.stop().await;
}

/// Entries added through the API authorize relaying from their address until removed.
async fn allowlist_round_trip(gw: &Gateway, token: Option<&str>) {
    let admin = gw.admin();
    let body = r#"{"ip": "127.0.0.9", "ttl": 600, "user": "carol"}"#;
    let r = http(admin, "POST", "/api/allowlist", token, Some(body)).await;
    assert_eq!(r.status, 201, "{r:?}");
    let added = r.json();
    assert_eq!(
        (added["net"].as_str(), added["user"].as_str()),
        (Some("127.0.0.9/32"), Some("carol"))
    );
    let ttl =
        added["expires_at"].as_u64().unwrap_or(0) - added["inserted_at"].as_u64().unwrap_or(0);
    assert_eq!(ttl, 600);

    let listed = http(admin, "GET", "/api/allowlist", token, None).await;
    assert_eq!(listed.status, 200);
    let nets: Vec<String> = listed
        .json()
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["net"].as_str().unwrap_or(""),
                e["user"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(nets, ["127.0.0.9/32 carol"]);
    let x = scrape(gw, token).await;
    assert_eq!(x.value("mailgate_allowlist_entries", &[]), Some(1.0));

    // 127.0.0.9 may now relay without logging in.
    let (mut c, _) = mech::smtp(host(9), gw.addr("smtp"), false, "printer").await;
    c.cmd("MAIL FROM:<scanner@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@elsewhere.test>", 250).await;
    c.cmd("QUIT", 221).await;

    for (bad, why) in [
        (
            r#"{"ip": "nowhere", "ttl": 60, "user": "x"}"#,
            "bad address",
        ),
        (r#"{"ip": "127.0.0.10", "ttl": 0, "user": "x"}"#, "bad ttl"),
        (
            r#"{"ip": "127.0.0.10", "ttl": "2h", "user": "x\u0007"}"#,
            "bad user",
        ),
        (r#"{"ip": "127.0.0.10", "user": "x", "extra": 1}"#, "extra"),
    ] {
        let r = http(admin, "POST", "/api/allowlist", token, Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        let e = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }

    let r = http(admin, "DELETE", "/api/allowlist/127.0.0.9", token, None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = http(admin, "DELETE", "/api/allowlist/127.0.0.9", token, None).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = http(admin, "DELETE", "/api/allowlist/not-an-ip", token, None).await;
    assert_eq!(r.status, 400, "{r:?}");
    let (mut c, _) = mech::smtp(host(9), gw.addr("smtp"), false, "printer").await;
    c.cmd("MAIL FROM:<scanner@example.test>", 250).await;
    c.cmd("RCPT TO:<someone@elsewhere.test>", 554).await;
    c.cmd("QUIT", 221).await;

    // Both changes are audited.
    let log = gw.state().join("audit.log");
    let events = mech::wait_events(&log, "admin allowlist changes", 2, |e| {
        e.kind == mailgate::audit::Kind::Allowlist && e.listener.as_deref() == Some("admin")
    })
    .await;
    let what: Vec<_> = events
        .iter()
        .map(|e| e.reason.clone().unwrap_or_default())
        .collect();
    assert_eq!(what, ["added", "removed"]);
    assert_eq!(events[0].client_ip, Some(host(9)));
    assert_eq!(events[0].user.as_deref(), Some("carol"));
}

/// Every `src=`/`href=` is relative or `data:`, and nothing names another site.
fn check_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href="] {
        for (i, _) in lower.match_indices(attr) {
            let value = lower[i + attr.len()..].trim_start_matches(['"', '\'']);
            let scheme = value.split(['/', '"', '\'', ' ', '>']).next().unwrap_or("");
            assert!(
                !value.starts_with("//") && (!scheme.contains(':') || scheme.starts_with("data:")),
                "external reference: {}",
                &html[i..(i + 60).min(html.len())]
            );
        }
    }
    for external in [
        "http://",
        "https://",
        "@import",
        "url(",
        "<link",
        "<script src",
        "<iframe",
    ] {
        assert!(!lower.contains(external), "the page refers to {external:?}");
    }
    assert!(
        lower.contains("<script>") && lower.contains("<style>"),
        "inline script and style"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_token_is_required() {
    let gw = start(&[("admin", "token_file", r#""admin-token""#)]).await;
    let admin = gw.admin();
    for path in [
        "/metrics",
        "/api/report",
        "/api/timeline?since=1h",
        "/api/allowlist",
    ] {
        let r = http(admin, "GET", path, None, None).await;
        assert_eq!(r.status, 401, "{path} without a token: {r:?}");
        assert!(r.headers["www-authenticate"].starts_with("Bearer"), "{r:?}");
        let r = http(admin, "GET", path, Some("tok-3f9a1"), None).await;
        assert_eq!(r.status, 401, "{path} with a wrong token: {r:?}");
        let r = http(admin, "GET", path, Some("tok-3f9a1c"), None).await;
        assert_eq!(r.status, 200, "{path} with the token: {r:?}");
    }
    let body = r#"{"ip": "127.0.0.11", "ttl": 60, "user": "dave"}"#;
    let r = http(admin, "POST", "/api/allowlist", None, Some(body)).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(gw.shared.allowlist.len().await.unwrap(), 0);
    let r = http(admin, "DELETE", "/api/allowlist/127.0.0.7", None, None).await;
    assert_eq!(r.status, 401, "{r:?}");
    // The scrape with the token parses, and the page and the health check need none.
    scrape(&gw, Some("tok-3f9a1c")).await;
    assert_eq!(http(admin, "GET", "/healthz", None, None).await.status, 200);
    let page = http(admin, "GET", "/", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("sessionStorage"));
    // With the token the allowlist can be changed.
    allowlist_round_trip(&gw, Some("tok-3f9a1c")).await;
    let _ = gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_the_gateway_certificate() {
    let gw = start(&[
        ("admin", "token_file", r#""admin-token""#),
        ("admin", "tls", "true"),
    ])
    .await;
    let admin = gw.admin();
    assert_eq!(https_get(admin, "/healthz", None).await.status, 200);
    let r = https_get(admin, "/api/allowlist", Some("tok-3f9a1c")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(https_get(admin, "/metrics", None).await.status, 401);
    // Plain HTTP gets no answer: the connection fails its handshake and is closed.
    let plain = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let mut plain = plain;
    let _ = plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"), "{raw:?}");
    // A real client: curl over HTTPS with the bearer token.
    if common::have("curl") {
        let url = format!("https://{admin}/api/allowlist");
        let out = common::run(
            "curl",
            vec![
                "-sk".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
                "-H".into(),
                "Authorization: Bearer tok-3f9a1c".into(),
                url,
            ],
            None,
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    }
    let _ = gw.stop().await;
}
