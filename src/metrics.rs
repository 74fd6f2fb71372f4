//! The gateway's metrics in the Prometheus text format (version 0.0.4), for `GET /metrics`.
//!
//! Counters that follow from audit events (authentications and relays) are counted where the
//! events are recorded: [`Metrics::observe`] sees every [`Event`] handed to the
//! [`Auditor`](crate::audit::Auditor), whether or not the audit log is enabled. Everything else
//! is read when scraped ([`Gauges`]): the allowlist size, open client connections, queue depth
//! and the audit writer's own counters. Label values come from the gateway (mechanism names,
//! classes, outcomes), never from free client text, and are bounded by [`label`] regardless.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::audit::{Event, Kind};

mod flow;

pub use flow::{DELIVERY_BUCKETS, LISTENERS, Open, Route, Stage};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Longest label value kept; longer (or oddly spelled) values are counted as "other".
pub const MAX_LABEL: usize = 40;

/// Labels of `mailgate_authentications_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    protocol: String,
    mechanism: String,
    class: String,
    result: String,
}

/// Labels of `mailgate_relays_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RelayLabels {
    kind: String,
    result: String,
}

/// Labels of `mailgate_connections_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    listener: String,
    cap: String,
}

/// Labels of `mailgate_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Labels of `mailgate_smtp_rejects_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    listener: String,
    reason: String,
}

/// The results of [`Metrics::upstream_check`].
const UPSTREAM_RESULTS: &[&str] = &[
    "ok",
    "refused",
    "temporary",
    "cached",
    "refused-cached",
    "invalid",
];

/// Labels of `mailgate_upstream_checks_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    result: String,
}

/// Counters fed by audit events (and the connection caps), the mail flow and the open
/// connections. Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Messages by stage, delivery latency, connections by listener (`flow.rs`).
    pub flow: flow::Flow,
    auths: Family<AuthLabels, Counter>,
    relays: Family<RelayLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    unchecked: Counter,
    upstream: Family<UpstreamLabels, Counter>,
    rejects: Family<RejectLabels, Counter>,
}

/// Values read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Allowlist entries (POP-before-SMTP).
    pub allowlist_entries: u64,
    /// Messages waiting in the spool.
    pub queue_depth: u64,
    /// Seconds since the oldest message in the spool arrived; 0 when it is empty.
    pub queue_oldest_seconds: u64,
    /// Audit events written.
    pub audit_written: u64,
    /// Audit events dropped because the writer fell behind.
    pub audit_dropped: u64,
    /// Failed audit writes or rotations.
    pub audit_write_errors: u64,
    /// Audit events lost because the write carrying them failed.
    pub audit_lost: u64,
    /// `[cluster]`: whether Redis is usable (`None`: no cluster, no series).
    pub cluster_up: Option<bool>,
}

impl Metrics {
    /// Empty counters. Every series whose label values are known in advance exists at zero
    /// from the start (refusals by listener and reason, refused connections by listener and
    /// cap, address-authorized relays by kind and result, upstream checks by result), so a
    /// dashboard or an alert sees each one before its first event. The authentication series
    /// appear with their first count: their labels (protocol, mechanism, class, result) are
    /// fixed by what clients do, and creating every combination would list hundreds of series
    /// no site ever sees.
    pub fn new() -> Metrics {
        let m = Metrics::default();
        for listener in ["smtp", "submission", "submissions"] {
            for reason in crate::smtp::machine::REFUSAL_REASONS {
                let _ = m.rejects.get_or_create(&RejectLabels {
                    listener: listener.into(),
                    reason: (*reason).into(),
                });
            }
        }
        for listener in ["smtp", "submission", "submissions", "pop3", "pop3s"] {
            for cap in ["listener", "address", "network"] {
                let _ = m.refused.get_or_create(&RefusedLabels {
                    listener: listener.into(),
                    cap: cap.into(),
                });
            }
        }
        for kind in ["pop-before-smtp", "trusted-network", "sasl"] {
            for result in crate::audit::Outcome::ALL {
                let _ = m.relays.get_or_create(&RelayLabels {
                    kind: kind.into(),
                    result: result.as_str().into(),
                });
            }
        }
        for result in UPSTREAM_RESULTS {
            let _ = m.upstream.get_or_create(&UpstreamLabels {
                result: (*result).into(),
            });
        }
        m
    }

    /// Counts a refused SMTP command on `listener` (a role name) for `reason`.
    pub fn smtp_reject(&self, listener: &str, reason: &str) {
        let labels = RejectLabels {
            listener: label(listener),
            reason: label(reason),
        };
        self.rejects.get_or_create(&labels).inc();
    }

    /// An observer for [`Auditor::with_observer`](crate::audit::Auditor::with_observer).
    pub fn observer(&self) -> Arc<dyn Fn(&Event) + Send + Sync> {
        let m = self.clone();
        Arc::new(move |e: &Event| m.observe(e))
    }

    /// Counts `e`: an `auth` event by protocol, mechanism, class and result; a `relay` event
    /// (authorized by address) by its kind (`pop-before-smtp`, `trusted-network`) and result;
    /// an `accept` event under SMTP AUTH as a relay of kind `sasl`.
    pub fn observe(&self, e: &Event) {
        let mechanism = e.mechanism.as_deref().unwrap_or("none");
        match e.kind {
            Kind::Auth => {
                let labels = AuthLabels {
                    protocol: label(&e.protocol),
                    mechanism: label(mechanism),
                    class: e.class.map_or("none", |c| c.as_str()).to_string(),
                    result: e.result.as_str().to_string(),
                };
                self.auths.get_or_create(&labels).inc();
            }
            Kind::Relay => {
                let labels = RelayLabels {
                    kind: label(mechanism),
                    result: e.result.as_str().to_string(),
                };
                self.relays.get_or_create(&labels).inc();
            }
            Kind::Accept if e.mechanism.is_some() => {
                let labels = RelayLabels {
                    kind: "sasl".to_string(),
                    result: e.result.as_str().to_string(),
                };
                self.relays.get_or_create(&labels).inc();
            }
            _ => {}
        }
    }

    /// Counts a connection refused on `listener` (a role name) because `cap` (`listener`,
    /// `address` or `network`) was reached, or for its PROXY protocol header (`proxy-header`,
    /// `proxy-unexpected`).
    pub fn connection_refused(&self, listener: &str, cap: &str) {
        let labels = RefusedLabels {
            listener: label(listener),
            cap: label(cap),
        };
        self.refused.get_or_create(&labels).inc();
    }

    /// Counts a login the per-user limit refused without checking it (a user under attack).
    pub fn login_refused_unchecked(&self) {
        self.unchecked.inc();
    }

    /// Counts a password check against the old server by its result: `ok`, `refused`,
    /// `temporary`, `cached` (a remembered success), `refused-cached`, `invalid` (a name or
    /// password that cannot be sent).
    pub fn upstream_check(&self, result: &str) {
        let labels = UpstreamLabels {
            result: label(result),
        };
        self.upstream.get_or_create(&labels).inc();
    }

    /// The exposition text: the counters, then `gauges`.
    pub fn encode(&self, gauges: &Gauges) -> String {
        let mut reg = Registry::with_prefix("mailgate");
        reg.register(
            "logins_refused_unchecked",
            "Logins refused without a credential check because their user's name is being \
             guessed (the per-user throttle limit); see the log for which user",
            self.unchecked.clone(),
        );
        reg.register(
            "smtp_rejects",
            "SMTP commands refused, by listener role and reason (relay-denied, \
             unknown-recipient, sender-not-allowed, too-many-recipients, size, queue-full, \
             tls-required, policy); each is also one log line",
            self.rejects.clone(),
        );
        reg.register(
            "upstream_checks",
            "Passwords checked against the old server ([auth.upstream]) by result: ok, refused, \
             temporary (it could not judge: down, slow, busy), cached, refused-cached, invalid",
            self.upstream.clone(),
        );
        reg.register(
            "connections_refused",
            "Connections refused at accept, by listener role and the cap reached (listener, \
             address, network) or the PROXY protocol header (proxy-header: missing or invalid \
             from a balancer; proxy-unexpected: sent by another source)",
            self.refused.clone(),
        );
        reg.register(
            "authentications",
            "Authentication decisions by protocol, mechanism, class and result",
            self.auths.clone(),
        );
        reg.register(
            "relays",
            "Messages relayed or refused, by authorization kind (pop-before-smtp, \
             trusted-network, sasl) and result",
            self.relays.clone(),
        );
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        let build = Family::<BuildLabels, ConstGauge>::new_with_constructor(|| ConstGauge::new(1));
        let _ = build.get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
        });
        reg.register(
            "build_info",
            "The running build: always 1, its version as a label",
            build,
        );
        reg.register(
            "allowlist_entries",
            "Addresses on the POP-before-SMTP allowlist",
            gauge(gauges.allowlist_entries),
        );
        reg.register(
            "queue_depth",
            "Messages waiting in the spool",
            gauge(gauges.queue_depth),
        );
        reg.register(
            "queue_oldest_seconds",
            "Seconds since the oldest message waiting in the spool arrived (0: empty)",
            gauge(gauges.queue_oldest_seconds),
        );
        if let Some(up) = gauges.cluster_up {
            reg.register(
                "cluster_up",
                "1 while the shared state in Redis ([cluster]) is usable; 0 while this node \
                 serves from its own view (see docs/scaling.md for what that loses)",
                gauge(u64::from(up)),
            );
        }
        self.flow.register(&mut reg);
        reg.register(
            "audit_events_written",
            "Audit events written to the log",
            ConstCounter::new(gauges.audit_written),
        );
        reg.register(
            "audit_events_dropped",
            "Audit events dropped because the writer fell behind",
            ConstCounter::new(gauges.audit_dropped),
        );
        reg.register(
            "audit_write_errors",
            "Failed audit log writes or rotations",
            ConstCounter::new(gauges.audit_write_errors),
        );
        reg.register(
            "audit_events_lost",
            "Audit events lost because the write carrying them failed",
            ConstCounter::new(gauges.audit_lost),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &reg);
        out
    }
}

/// `value` as a label value: names of at most [`MAX_LABEL`] ASCII letters, digits, `-`, `_`
/// and `.` pass; anything else becomes "other", so no input can grow the series count.
pub fn label(value: &str) -> String {
    let ok = !value.is_empty()
        && value.len() <= MAX_LABEL
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        value.to_string()
    } else {
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Class, Outcome};

    fn event(kind: Kind, protocol: &str, mechanism: Option<&str>, class: Option<Class>) -> Event {
        let mut e = Event::new(
            kind,
            protocol,
            "2026-11-28T00:00:00.000Z".into(),
            Outcome::Success,
        );
        e.mechanism = mechanism.map(str::to_string);
        e.class = class;
        e
    }

    #[test]
    fn labels_are_bounded() {
        let cases = [
            ("PLAIN", "PLAIN"),
            ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256-PLUS"),
            ("pop-before-smtp", "pop-before-smtp"),
            ("", "other"),
            ("has space", "other"),
            ("quote\"", "other"),
            ("Ünicode", "other"),
            (&"X".repeat(MAX_LABEL + 1), "other"),
        ];
        for (input, want) in cases {
            assert_eq!(label(input), want, "{input:?}");
        }
    }

    #[test]
    fn events_are_counted_by_their_labels() {
        let m = Metrics::new();
        let plain = event(Kind::Auth, "smtp", Some("PLAIN"), Some(Class::Basic));
        m.observe(&plain);
        m.observe(&plain);
        let mut failed = event(Kind::Auth, "pop3", Some("USER"), Some(Class::Insecure));
        failed.result = Outcome::Failure;
        m.observe(&failed);
        m.observe(&event(Kind::Relay, "smtp", Some("pop-before-smtp"), None));
        m.observe(&event(
            Kind::Accept,
            "smtp",
            Some("PLAIN"),
            Some(Class::Basic),
        ));
        // Inbound mail without authorization, and events that are not counted here.
        m.observe(&event(Kind::Accept, "smtp", None, None));
        m.observe(&event(Kind::Lockout, "smtp", Some("PLAIN"), None));
        m.observe(&event(
            Kind::Allowlist,
            "pop3",
            Some("pop-before-smtp"),
            None,
        ));
        let text = m.encode(&Gauges {
            allowlist_entries: 3,
            queue_depth: 1,
            queue_oldest_seconds: 90,
            audit_written: 7,
            audit_dropped: 0,
            audit_write_errors: 4,
            audit_lost: 9,
            cluster_up: Some(true),
        });
        let want = [
            "# TYPE mailgate_authentications_total counter",
            "mailgate_authentications_total{protocol=\"smtp\",mechanism=\"PLAIN\",\
             class=\"basic\",result=\"success\"} 2",
            "mailgate_authentications_total{protocol=\"pop3\",mechanism=\"USER\",\
             class=\"insecure\",result=\"failure\"} 1",
            "mailgate_relays_total{kind=\"pop-before-smtp\",result=\"success\"} 1",
            "mailgate_relays_total{kind=\"sasl\",result=\"success\"} 1",
            "# TYPE mailgate_allowlist_entries gauge",
            "mailgate_allowlist_entries 3",
            "mailgate_queue_depth 1",
            "mailgate_queue_oldest_seconds 90",
            "mailgate_audit_events_written_total 7",
            "mailgate_audit_events_dropped_total 0",
            "mailgate_audit_write_errors_total 4",
            "mailgate_audit_events_lost_total 9",
            "# TYPE mailgate_cluster_up gauge",
            "mailgate_cluster_up 1",
        ];
        let lines: Vec<&str> = text.lines().collect();
        for w in want {
            assert!(lines.contains(&w), "missing {w:?} in:\n{text}");
        }
        // Every kind and result is there, at zero until counted.
        let relays: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("mailgate_relays_total{"))
            .collect();
        assert_eq!(relays.len(), 3 * crate::audit::Outcome::ALL.len(), "{text}");
        assert!(
            lines.contains(&"mailgate_relays_total{kind=\"trusted-network\",result=\"denied\"} 0"),
            "{text}"
        );
        assert!(
            lines.contains(&"mailgate_upstream_checks_total{result=\"temporary\"} 0"),
            "{text}"
        );
        assert!(
            lines.contains(
                &"mailgate_connections_refused_total{listener=\"pop3s\",cap=\"network\"} 0"
            ),
            "{text}"
        );
    }
}
