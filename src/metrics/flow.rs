//! Mail flow and connections: messages by stage, delivery latency by route, open connections by
//! listener role. Every series exists at zero from the start (a dashboard or an alert sees the
//! whole set before the first message), and the label values are fixed words, so counting
//! never allocates.
//!
//! Mail is counted per recipient: a message for two local users and one remote address is
//! three `received`, then two `delivered` and one `relayed`. Each recipient ends in exactly one
//! of `delivered`, `relayed` or `bounced`; `deferred` counts each attempt that left a recipient
//! waiting for a retry, so one recipient can be deferred many times.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the delivery latency buckets, in seconds: a local delivery takes
/// milliseconds, a relayed one a smarthost round trip, a retried one minutes to days.
pub const DELIVERY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 1800.0, 7200.0, 86400.0,
];

/// The listener roles, as in log spans and `[listeners]`.
pub const LISTENERS: [&str; 5] = ["smtp", "submission", "submissions", "pop3", "pop3s"];

/// Where a message (one recipient of it) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted: the 250 after DATA.
    Received,
    /// Written into a local Maildir.
    Delivered,
    /// Accepted by the smarthost (or by the old server, for a user not moved yet).
    Relayed,
    /// A temporary failure; it will be tried again.
    Deferred,
    /// Failed for good: reported to the sender in a bounce, or put in the dead-letter folder.
    Bounced,
}

impl Stage {
    /// Every stage, in the order a message passes them.
    pub const ALL: [Stage; 5] = [
        Stage::Received,
        Stage::Delivered,
        Stage::Relayed,
        Stage::Deferred,
        Stage::Bounced,
    ];

    /// The `stage` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Delivered => "delivered",
            Stage::Relayed => "relayed",
            Stage::Deferred => "deferred",
            Stage::Bounced => "bounced",
        }
    }
}

/// How a recipient was delivered, for the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Into a local Maildir.
    Local,
    /// To another SMTP server.
    Relay,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Relay => "relay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

fn delivery_histogram() -> Histogram {
    Histogram::new(DELIVERY_BUCKETS)
}

/// The mail-flow counters, the latency histogram and the connection gauges. Cloning shares
/// them.
#[derive(Debug, Clone)]
pub struct Flow {
    messages: Family<StageLabels, Counter>,
    delivery: Family<RouteLabels, Histogram, fn() -> Histogram>,
    connections: Family<ListenerLabels, Gauge>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow::new()
    }
}

impl Flow {
    /// Every series at zero.
    pub fn new() -> Flow {
        let flow = Flow {
            messages: Family::default(),
            delivery: Family::new_with_constructor(delivery_histogram),
            connections: Family::default(),
        };
        for stage in Stage::ALL {
            let _ = flow.messages.get_or_create(&StageLabels {
                stage: stage.as_str(),
            });
        }
        for route in [Route::Local, Route::Relay] {
            let _ = flow.delivery.get_or_create(&RouteLabels {
                route: route.as_str(),
            });
        }
        for listener in LISTENERS {
            let _ = flow.connections.get_or_create(&ListenerLabels { listener });
        }
        flow
    }

    /// Counts `recipients` recipients reaching `stage`.
    pub fn messages(&self, stage: Stage, recipients: u64) {
        self.messages
            .get_or_create(&StageLabels {
                stage: stage.as_str(),
            })
            .inc_by(recipients);
    }

    /// Records one recipient delivered by `route`, `seconds` after the message arrived.
    pub fn delivered_after(&self, route: Route, seconds: f64) {
        self.delivery
            .get_or_create(&RouteLabels {
                route: route.as_str(),
            })
            .observe(seconds.max(0.0));
    }

    /// Counts a connection open on `listener` (a role name) until the guard is dropped.
    pub fn connection(&self, listener: &'static str) -> Open {
        let gauge = self
            .connections
            .get_or_create(&ListenerLabels { listener })
            .clone();
        gauge.inc();
        Open(gauge)
    }

    /// Adds the families to `reg`.
    pub(super) fn register(&self, reg: &mut Registry) {
        reg.register(
            "messages",
            "Recipients by stage: received (250 after DATA), delivered (local Maildir), \
             relayed (accepted by the smarthost), deferred (each attempt that left one for a \
             retry), bounced (failed for good)",
            self.messages.clone(),
        );
        reg.register_with_unit(
            "delivery",
            "From arrival to delivery of each recipient, by route (local, relay)",
            prometheus_client::registry::Unit::Seconds,
            self.delivery.clone(),
        );
        reg.register(
            "connections",
            "Client connections open, by listener role",
            self.connections.clone(),
        );
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(flow: &Flow) -> String {
        let mut reg = Registry::with_prefix("mailgate");
        flow.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn every_series_is_there_at_zero() {
        let out = text(&Flow::new());
        for stage in Stage::ALL {
            let want = format!("mailgate_messages_total{{stage=\"{}\"}} 0", stage.as_str());
            assert!(out.lines().any(|l| l == want), "{want} in:\n{out}");
        }
        for listener in LISTENERS {
            let want = format!("mailgate_connections{{listener=\"{listener}\"}} 0");
            assert!(out.lines().any(|l| l == want), "{want} in:\n{out}");
        }
        for route in ["local", "relay"] {
            let want = format!("mailgate_delivery_seconds_count{{route=\"{route}\"}} 0");
            assert!(out.lines().any(|l| l == want), "{want} in:\n{out}");
        }
    }

    #[test]
    fn counts_latencies_and_open_connections() {
        let flow = Flow::new();
        flow.messages(Stage::Received, 3);
        flow.messages(Stage::Delivered, 2);
        flow.delivered_after(Route::Local, 0.02);
        flow.delivered_after(Route::Local, 40.0);
        let held = flow.connection("submission");
        let also = flow.connection("submission");
        drop(also);
        let out = text(&flow);
        let want = [
            "mailgate_messages_total{stage=\"received\"} 3",
            "mailgate_messages_total{stage=\"delivered\"} 2",
            "mailgate_messages_total{stage=\"relayed\"} 0",
            "mailgate_delivery_seconds_count{route=\"local\"} 2",
            "mailgate_delivery_seconds_bucket{le=\"0.01\",route=\"local\"} 0",
            "mailgate_delivery_seconds_bucket{le=\"0.025\",route=\"local\"} 1",
            "mailgate_delivery_seconds_bucket{le=\"30.0\",route=\"local\"} 1",
            "mailgate_delivery_seconds_bucket{le=\"300.0\",route=\"local\"} 2",
            "mailgate_connections{listener=\"submission\"} 1",
            "mailgate_connections{listener=\"smtp\"} 0",
        ];
        for w in want {
            assert!(out.lines().any(|l| l == w), "{w} in:\n{out}");
        }
        drop(held);
        assert!(text(&flow).contains("mailgate_connections{listener=\"submission\"} 0"));
    }
}
