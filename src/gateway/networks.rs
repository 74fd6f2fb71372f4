//! The settings that decide, per client address, what a connection may do
//! (`insecure_plaintext_networks`, `trusted_networks`) and which domains are local: reloaded
//! on SIGHUP, taken once per connection.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;

/// The settings that decide, per client address, what a connection may do, and which domains
/// are local; reloaded on SIGHUP, taken once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Networks {
    /// `[auth] insecure_plaintext_networks`.
    pub insecure_plaintext: Vec<ipnet::IpNet>,
    /// `[relay] trusted_networks`.
    pub trusted: Vec<ipnet::IpNet>,
    /// `[relay] local_domains` (lower case).
    pub local_domains: Arc<Vec<String>>,
}

impl Networks {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Networks {
        Networks {
            insecure_plaintext: config.auth.insecure_plaintext_networks.clone(),
            trusted: config.relay.trusted_networks.clone(),
            local_domains: Arc::new(config.relay.local_domains.clone()),
        }
    }

    /// Whether `ip` may send credentials without TLS.
    pub fn plaintext_allowed(&self, ip: IpAddr) -> bool {
        crate::config::in_networks(&self.insecure_plaintext, ip)
    }

    /// Whether `ip` may relay without logging in.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        crate::config::in_networks(&self.trusted, ip)
    }
}
