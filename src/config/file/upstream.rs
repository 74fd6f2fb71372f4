//! `[auth.upstream]`: the old mail server that credentials are checked against while users
//! move across (its validated form is `config::AuthUpstream`).

use std::path::PathBuf;

use serde::Deserialize;

/// `[auth.upstream]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthUpstreamFile {
    /// `"IP:port"` of the old server. Required.
    pub address: String,
    /// `"pop3"`, `"imap"` or `"smtp"`. Default `"pop3"`.
    pub protocol: String,
    /// `"none"`, `"starttls"` or `"implicit"`. Default `"starttls"`.
    pub tls: String,
    /// The name its certificate is checked against (and sent as SNI). Default: its IP.
    pub server_name: Option<String>,
    /// PEM file of the CA certificates its certificate must chain to, instead of the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// How long one check may take, connect to logout. Default `"10s"`.
    pub timeout: String,
    /// `"unknown"` (users not in the users file, the default) or `"all"`.
    pub users: String,
    /// How long a successful check is remembered. Default `"5m"`; `"0s"` remembers nothing.
    pub cache_ttl: String,
    /// How long a refused password is remembered. Default `"30s"`; `"0s"` remembers nothing.
    pub negative_cache_ttl: String,
    /// Checks in flight at once. Default 32.
    pub max_concurrent: usize,
    /// Store the forms the enabled mechanisms need after a successful check. Default false.
    pub capture: bool,
}

impl Default for AuthUpstreamFile {
    fn default() -> Self {
        AuthUpstreamFile {
            address: String::new(),
            protocol: "pop3".into(),
            tls: "starttls".into(),
            server_name: None,
            ca_file: None,
            timeout: "10s".into(),
            users: "unknown".into(),
            cache_ttl: "5m".into(),
            negative_cache_ttl: "30s".into(),
            max_concurrent: 32,
            capture: false,
        }
    }
}
