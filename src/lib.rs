//! mailgate: a legacy-compatibility mail authentication gateway.
//!
//! # Layout
//! - `config/`: the TOML file mirror and the validated [`config::Config`].
//! - `sasl/`: the SASL engine shared by SMTP and POP3, one mechanism per file.
//! - `auth`: users file and the [`auth::Authenticator`] seam.
//! - `maildir`: local mailbox storage.
//! - `clock`: time as an input.

#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod maildir;
pub mod relay;
pub mod sasl;
pub mod spool;

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
