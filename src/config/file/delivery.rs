//! The delivery tables of the mirror: `[relay]`, `[delivery]`, `[delivery.upstream]` and its
//! `oauth` table, each with its default functions.

use std::path::PathBuf;

use serde::Deserialize;

/// `[relay]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayFile {
    /// Domains delivered locally.
    pub local_domains: Vec<String>,
    /// CIDR networks that may relay without authentication.
    pub trusted_networks: Vec<String>,
}

/// `[delivery]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryFile {
    /// Default `<state_dir>/maildir`.
    pub maildir: Option<PathBuf>,
    /// Default `<state_dir>/spool`.
    pub spool: Option<PathBuf>,
    /// Default `<state_dir>/dead-letter`.
    pub dead_letter: Option<PathBuf>,
    /// How long a group commit waits for messages still being received. Default "500us".
    pub commit_window: Option<String>,
    /// `[delivery.upstream]`; absent means remote mail bounces.
    pub upstream: Option<UpstreamFile>,
    /// `"IP:port"` of the old server's SMTP: mail for local users who have not moved yet
    /// (no Maildir here) goes there.
    pub route_unmigrated_to: Option<String>,
}

/// `[delivery.upstream]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamFile {
    /// `"IP:port"` of the smarthost (required).
    pub address: String,
    /// Certificate name and SNI; default the IP.
    pub server_name: Option<String>,
    /// `"none"`, `"starttls"` or `"tls"`. Default "starttls".
    pub tls: String,
    /// Accept any certificate. Default false.
    pub danger_accept_invalid_certs: bool,
    /// AUTH user.
    pub username: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
    /// Delays between attempts. Default [`default_retry`].
    pub retry: Vec<String>,
    /// Per-command timeout. Default [`default_command_timeout`].
    pub command_timeout: String,
    /// How long an idle smarthost session is kept for the next message. Default "5s".
    pub keep_idle: String,
    /// AUTH mechanism: "auto", "plain", "login", "xoauth2" or "oauthbearer". Default "auto".
    pub auth: String,
    /// `[delivery.upstream.oauth]`: where the access token for XOAUTH2/OAUTHBEARER comes from.
    pub oauth: Option<UpstreamOAuthFile>,
}

/// `[delivery.upstream.oauth]`: the OAuth 2.0 token endpoint (RFC 6749) for the smarthost.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamOAuthFile {
    /// Token endpoint URL (HTTPS; HTTP only on loopback).
    pub token_url: String,
    /// "refresh_token" or "client_credentials". Default "refresh_token".
    pub grant: String,
    /// OAuth client id.
    pub client_id: String,
    /// File with the client secret (never the secret itself in this file).
    pub client_secret_file: Option<PathBuf>,
    /// File with the refresh token (refresh_token grant).
    pub refresh_token_file: Option<PathBuf>,
    /// Requested scope.
    pub scope: Option<String>,
    /// Refresh this long before the token expires. Default "60s".
    pub refresh_margin: String,
    /// Accept any certificate from the token endpoint (tests only). Default false.
    pub danger_accept_invalid_certs: bool,
}

impl Default for UpstreamOAuthFile {
    fn default() -> Self {
        UpstreamOAuthFile {
            token_url: String::new(),
            grant: "refresh_token".into(),
            client_id: String::new(),
            client_secret_file: None,
            refresh_token_file: None,
            scope: None,
            refresh_margin: "60s".into(),
            danger_accept_invalid_certs: false,
        }
    }
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            address: String::new(),
            server_name: None,
            tls: "starttls".to_string(),
            danger_accept_invalid_certs: false,
            username: None,
            password: None,
            retry: default_retry(),
            command_timeout: default_command_timeout(),
            keep_idle: "5s".into(),
            auth: "auto".into(),
            oauth: None,
        }
    }
}

/// About 32 hours of retries in all; RFC 5321 §4.5.4.1 asks for at least 4-5 days before
/// giving up on a relay of our own, but a smarthost that is down this long needs a person.
pub fn default_retry() -> Vec<String> {
    ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "16h"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Five minutes: RFC 5321 §4.5.3.2.2 and §4.5.3.2.3 (the client's MAIL and RCPT timeouts).
pub fn default_command_timeout() -> String {
    "5m".to_string()
}
