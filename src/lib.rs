//! mailgate: a legacy-compatibility mail authentication gateway.
//!
//! # Layout
//! Arrows point one way: `server` -> `session` (the driver) -> the protocol cores (`smtp`,
//! `pop3`, `sasl`); the driver, `admin` and `background` -> `gateway` and the stores.
//! - `server`: binds the listeners, accepts, caps connections, shuts down.
//! - `session/`: the one session driver for SMTP and POP3, and the verification path that
//!   answers the credential checks the cores ask for.
//! - `smtp/`, `pop3/`: sans-IO protocol cores (parsers, replies, machines) and, in `conn`,
//!   what only that protocol does on the driver (DATA into the spool; the maildrop).
//! - `sasl/`: the SASL engine shared by SMTP and POP3, one mechanism per file.
//! - `gateway/`: the state sessions use, with the typed SIGHUP reload; `background`: the
//!   housekeeping, users-file watcher and digest tasks.
//! - `store/`: traits for shared state (allowlist, failure counters, mailbox locks) and their
//!   in-memory backends.
//! - `allowlist`: the POP-before-SMTP allowlist service; `control`: its admin channel.
//! - `throttle`: growing delays for failed logins.
//! - `auth/`: users file and the [`auth::Authenticator`] seam.
//! - `import`: `mailgate import pop3`, a mailbox moved from the old server keeping its UIDLs.
//! - `upstream/`: the old mail server in front of which the gateway stands during a
//!   migration: password checks by logging in to it.
//! - `oauth/`: bearer-token validation (JWT, RFC 7662 introspection) for XOAUTH2/OAUTHBEARER.
//! - `policy`: migration rules; `audit/`: the audit log; `notices`: notices to users and the
//!   admin digest; `metrics`: the Prometheus counters.
//! - `admin/`: the admin HTTP endpoint (metrics, report API, allowlist, dashboard).
//! - `spool/`: the durable queue; `relay/`: delivery to Maildir and the smarthost;
//!   `maildir`: local mailbox storage.
//! - `config/`: the TOML file mirror and the validated [`config::Config`].
//! - `proxy_protocol`: the PROXY protocol header a load balancer sends first (sans-IO).
//! - `tls`: certificates; `io`: bounded line reads; `clock`: time as an input; `durable`:
//!   small state files replaced atomically.

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
pub mod import;
pub mod io;
pub mod maildir;
pub mod metrics;
pub mod notices;
pub mod oauth;
pub mod policy;
pub mod pop3;
pub mod proxy_protocol;
pub mod relay;
pub mod sasl;
pub mod server;
pub mod session;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod upstream;

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
