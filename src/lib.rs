//! mailgate: a legacy-compatibility mail authentication gateway.
//!
//! # Layout
//! - `config/`: the TOML file mirror and the validated [`config::Config`].
//! - `sasl/`: the SASL engine shared by SMTP and POP3, one mechanism per file.
//! - `allowlist`: the POP-before-SMTP allowlist service; `control`: its admin channel.
//! - `store/`: traits for shared state (allowlist, failure counters, mailbox locks) and their
//!   in-memory backends.
//! - `throttle`: growing delays for failed logins.
//! - `auth`: users file and the [`auth::Authenticator`] seam.
//! - `maildir`: local mailbox storage.
//! - `smtp/`, `pop3/`: sans-IO protocol cores and their connection loops.
//! - `server`: listeners, caps, shutdown; `tls`: certificates; `io`: bounded line reads.
//! - `spool/`: the durable queue; `relay/`: delivery to Maildir and the smarthost.
//! - `oauth/`: bearer-token validation (JWT, RFC 7662 introspection) for XOAUTH2/OAUTHBEARER.
//! - `audit/`: the audit log; `policy`: migration rules.
//! - `admin/`: the admin HTTP endpoint (metrics, report API, allowlist, dashboard).
//! - `clock`: time as an input.
//! - `smtp/`: SMTP command, address, reply and DATA parsers (sans-IO).

#![forbid(unsafe_code)]

pub mod admin;
pub mod allowlist;
pub mod audit;
pub mod auth;
pub mod background;
pub mod clock;
pub mod config;
pub mod control;
pub mod durable;
pub mod gateway;
pub mod io;
pub mod maildir;
pub mod metrics;
pub mod notices;
pub mod oauth;
pub mod policy;
pub mod pop3;
pub mod relay;
pub mod sasl;
pub mod server;
pub mod session;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod throttle;
pub mod tls;

use std::net::IpAddr;

/// Maps IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to plain IPv4, so that every lookup by
/// client address sees one form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}
