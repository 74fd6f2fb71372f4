//! The mail-flow metrics end to end: right after start every family is there with every label
//! value at zero; a message for a local user moves `received` and `delivered` and the local
//! latency histogram; one for a remote address, accepted by the scripted smarthost, moves
//! `relayed` and the relay histogram; one the smarthost answers 451 for moves `deferred`, stays
//! in the queue and ages the oldest-message gauge.

use std::net::IpAddr;
use std::time::Duration;

use common::{Gateway, PASSWORD};
use mailgate_testkit::smarthost::{Fault, Options, Smarthost, Stage};
use mailgate_testkit::{self as common, extra, mech};

use crate::admin::http;
use crate::admin_metrics::{Exposition, parse_metrics};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(15);

const STAGES: [&str; 5] = ["received", "delivered", "relayed", "deferred", "bounced"];
const LISTENERS: [&str; 5] = ["smtp", "submission", "submissions", "pop3", "pop3s"];
const REASONS: &[&str] = mailgate::smtp::machine::REFUSAL_REASONS;

async fn scrape(gw: &Gateway) -> Exposition {
    let r = http(gw.admin(), "GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    parse_metrics(&r.body)
}

fn stage(x: &Exposition, stage: &str) -> f64 {
    let v = x.value("mailgate_messages_total", &[("stage", stage)]);
    v.unwrap_or_else(|| panic!("no stage {stage}"))
}

fn delivered(x: &Exposition, route: &str) -> f64 {
    let v = x.value("mailgate_delivery_seconds_count", &[("route", route)]);
    v.unwrap_or_else(|| panic!("no route {route}"))
}

/// Polls `/metrics` until `done` holds.
async fn until(gw: &Gateway, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let x = scrape(gw).await;
        if done(&x) {
            return x;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            x.samples
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits one message from alice to `to` over the implicit-TLS submission port.
async fn submit(gw: &Gateway, to: &str) {
    let (mut c, _) = mech::smtp(LOCAL, gw.addr("submissions"), true, "desk").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", PASSWORD).await.code, 235);
    mech::send_mail(&mut c, "alice@example.test", to, "").await;
    c.cmd("QUIT", 221).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_move_through_the_stages_and_the_queue_ages() {
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Rcpt, 451).for_rcpt("later@elsewhere.test")],
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let address = format!("\"{}\"", smarthost.addr());
    let edits = [
        ("listeners", "admin", r#""127.0.0.1:0""#),
        ("delivery.upstream", "address", address.as_str()),
        ("delivery.upstream", "tls", r#""none""#),
        ("delivery.upstream", "retry", r#"["1h"]"#),
    ];
    let text = extra::set_all(&common::config_text(""), &edits);
    let gw = Gateway::start_in(dir, &text).await;

    // At start: every family, every label value, all at zero.
    let x = scrape(&gw).await;
    let types = [
        ("mailgate_messages_total", "counter"),
        ("mailgate_delivery_seconds", "histogram"),
        ("mailgate_connections", "gauge"),
        ("mailgate_queue_oldest_seconds", "gauge"),
        ("mailgate_queue_depth", "gauge"),
        ("mailgate_smtp_rejects_total", "counter"),
    ];
    for (name, t) in types {
        assert_eq!(x.types.get(name).map(String::as_str), Some(t), "{name}");
    }
    for s in STAGES {
        assert_eq!(stage(&x, s), 0.0, "{s}");
    }
    for route in ["local", "relay"] {
        assert_eq!(delivered(&x, route), 0.0, "{route}");
        let inf = [("route", route), ("le", "+Inf")];
        assert_eq!(x.value("mailgate_delivery_seconds_bucket", &inf), Some(0.0));
        let sum = x.value("mailgate_delivery_seconds_sum", &[("route", route)]);
        assert_eq!(sum, Some(0.0), "{route}");
    }
    for listener in LISTENERS {
        let open = x.value("mailgate_connections", &[("listener", listener)]);
        assert_eq!(open, Some(0.0), "{listener}");
    }
    for listener in ["smtp", "submission", "submissions"] {
        for reason in REASONS {
            let labels = [("listener", listener), ("reason", reason)];
            let v = x.value("mailgate_smtp_rejects_total", &labels);
            assert_eq!(v, Some(0.0), "{listener} {reason}");
        }
    }
    assert_eq!(x.value("mailgate_queue_oldest_seconds", &[]), Some(0.0));
    assert_eq!(x.value("mailgate_queue_depth", &[]), Some(0.0));

    // A local message: received, then delivered into bob's Maildir.
    submit(&gw, "bob@example.test").await;
    let x = until(&gw, "local delivery", |x| delivered(x, "local") == 1.0).await;
    assert_eq!(stage(&x, "received"), 1.0);
    assert_eq!(stage(&x, "delivered"), 1.0);
    assert_eq!(stage(&x, "relayed"), 0.0);
    let sum = x.value("mailgate_delivery_seconds_sum", &[("route", "local")]);
    assert!(sum.is_some_and(|s| (0.0..60.0).contains(&s)), "{sum:?}");

    // A remote one, accepted by the smarthost.
    submit(&gw, "friend@elsewhere.test").await;
    smarthost.wait_for(1, WAIT).await;
    let x = until(&gw, "relay", |x| stage(x, "relayed") == 1.0).await;
    assert_eq!(stage(&x, "received"), 2.0);
    assert_eq!(delivered(&x, "relay"), 1.0);
    assert_eq!(delivered(&x, "local"), 1.0);
    let inf = [("route", "relay"), ("le", "+Inf")];
    assert_eq!(x.value("mailgate_delivery_seconds_bucket", &inf), Some(1.0));

    // One the smarthost answers 451 for: deferred, queued for an hour, and ageing.
    submit(&gw, "later@elsewhere.test").await;
    let x = until(&gw, "defer", |x| stage(x, "deferred") == 1.0).await;
    assert_eq!(stage(&x, "received"), 3.0);
    assert_eq!(stage(&x, "relayed"), 1.0);
    assert_eq!(stage(&x, "bounced"), 0.0);
    assert_eq!(x.value("mailgate_queue_depth", &[]), Some(1.0));
    let x = until(&gw, "the queue's age", |x| {
        x.value("mailgate_queue_oldest_seconds", &[])
            .is_some_and(|s| s >= 1.0)
    })
    .await;
    let age = x.value("mailgate_queue_oldest_seconds", &[]);
    assert!(age.is_some_and(|s| s < 60.0), "{age:?}");
}
