//! mailgate: a legacy-compatibility mail authentication gateway.
//!
//! # Layout
//! - `config/`: the TOML file mirror and the validated [`config::Config`].
//! - `sasl/`: the SASL engine shared by SMTP and POP3, one mechanism per file.
//! - `allowlist`: the POP-before-SMTP allowlist; `control`: its admin channel.
//! - `throttle`: growing delays for failed logins.
//! - `auth`: users file and the [`auth::Authenticator`] seam.
//! - `maildir`: local mailbox storage.
//! - `clock`: time as an input.
//! - `smtp/`: SMTP command, address, reply and DATA parsers (sans-IO).

#![forbid(unsafe_code)]

pub mod allowlist;
pub mod auth;
pub mod clock;
pub mod io;
pub mod config;
pub mod control;
pub mod maildir;
pub mod pop3;
pub mod sasl;
pub mod tls;
pub mod throttle;
pub mod smtp;

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
