//! The serde mirror of `mailgate.toml`: one struct per table, unknown keys rejected, every
//! default in a named function next to the field it fills.
//!
//! Nothing here is validated: addresses, networks and durations stay text so that
//! `validate/` can report each bad value with its line and a hint. Defaults that come from
//! an RFC cite the section. Each table is deserialized on its own ([`File::from_table`]) so
//! that a mistake in `[limits]` does not hide another in `[auth]`.
//!
//! This file holds the top level, the small tables and the per-table deserializer; the
//! `[auth]` tables are in `auth.rs`, the `[relay]` and `[delivery]` tables in `delivery.rs`.

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

mod auth;
mod delivery;
mod upstream;

pub use auth::{
    AuthFile, ExternalFile, GssapiFile, OAuthFile, PopBeforeSmtpFile, ThrottleFile,
    default_failure_delay, default_max_failures, default_mechanisms, default_users_file,
};
pub use delivery::{
    DeliveryFile, RelayFile, UpstreamFile, UpstreamOAuthFile, default_command_timeout,
    default_retry,
};
pub use upstream::{AuthLdapFile, AuthUpstreamFile, OldServerFile, Pop3File, Pop3ProxyFile};

/// The top-level keys of the file, in the order [`File`] declares them.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "hostname",
    "state_dir",
    "tls",
    "listeners",
    "auth",
    "pop_before_smtp",
    "relay",
    "delivery",
    "limits",
    "audit",
    "admin",
    "policy",
    "notices",
    "pop3",
    "log",
    "cluster",
];

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    /// Our host name. Default [`default_hostname`].
    pub hostname: String,
    /// State folder, relative to the config file's folder. Default [`default_state_dir`].
    pub state_dir: PathBuf,
    /// `[tls]`.
    pub tls: TlsFile,
    /// `[listeners]`.
    pub listeners: ListenersFile,
    /// `[auth]`.
    pub auth: AuthFile,
    /// `[pop_before_smtp]`.
    pub pop_before_smtp: PopBeforeSmtpFile,
    /// `[relay]`.
    pub relay: RelayFile,
    /// `[delivery]`.
    pub delivery: DeliveryFile,
    /// `[limits]`.
    pub limits: LimitsFile,
    /// `[audit]`.
    pub audit: AuditFile,
    /// `[admin]`.
    pub admin: AdminFile,
    /// `[[policy]]` rules, in order.
    pub policy: Vec<PolicyFile>,
    /// `[notices]`.
    pub notices: NoticesFile,
    /// `[pop3]`.
    pub pop3: Pop3File,
    /// `[log]`.
    pub log: LogFile,
    /// `[cluster]`: state shared with other gateway nodes; absent, everything stays in this
    /// process.
    pub cluster: Option<ClusterFile>,
}

/// One `[[policy]]` rule. Empty criteria match everything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFile {
    /// Name shown in the audit log. Default `policy[<index>]`.
    pub name: Option<String>,
    /// Mechanisms ("PLAIN", "CRAM-MD5", "NTLM", "NTLMv1", "USER", "APOP",
    /// "pop-before-smtp", "trusted-network", ...).
    pub mechanisms: Vec<String>,
    /// Classes ("insecure", "weak", "basic", "modern").
    pub classes: Vec<String>,
    /// Users.
    pub users: Vec<String>,
    /// Client networks (CIDR).
    pub networks: Vec<String>,
    /// Listener roles.
    pub listeners: Vec<String>,
    /// Start date ("2027-01-01" or RFC 3339), inclusive.
    pub from: Option<String>,
    /// End date, exclusive.
    pub until: Option<String>,
    /// "allow", "warn", "brownout", "transition" or "deny" (required).
    pub action: String,
    /// Brownout share of attempts refused, 0.0 to 1.0.
    pub share: Option<f64>,
    /// Audit "would_deny" instead of refusing. Default false.
    pub dry_run: bool,
    /// Message shown to the client.
    pub message: Option<String>,
    /// URL shown with the message.
    pub url: Option<String>,
    /// Header line added to relayed messages under a warn rule, e.g. "X-Auth-Warning: ...".
    pub header: Option<String>,
    /// Drop a notice into the user's mailbox (warn, brownout). Default false.
    pub notify: bool,
    /// The date from which the mechanism will be refused, named in notices.
    pub refuse_from: Option<String>,
}

/// `[notices]`: notices to users under warn/brownout rules, and the admin digest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoticesFile {
    /// At most one notice per user and mechanism within this interval. Default "7d".
    pub interval: String,
    /// Local user who receives the periodic legacy-auth digest. Default: none.
    pub digest_to: Option<String>,
    /// How often the digest is sent. Default "1d".
    pub digest_interval: String,
}

impl Default for NoticesFile {
    fn default() -> Self {
        NoticesFile {
            interval: "7d".into(),
            digest_to: None,
            digest_interval: "1d".into(),
        }
    }
}

/// `[audit]`: the authentication audit log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFile {
    /// Write the audit log. Default true.
    pub enabled: bool,
    /// The log file. Default `<state_dir>/audit.log`.
    pub path: Option<PathBuf>,
    /// Rotate when the file reaches this many bytes. Default 64 MiB.
    pub max_size: u64,
    /// Rotated files kept. Default 10.
    pub keep: usize,
}

impl Default for AuditFile {
    fn default() -> Self {
        AuditFile {
            enabled: true,
            path: None,
            max_size: 64 * 1024 * 1024,
            keep: 10,
        }
    }
}

/// `[admin]`: the admin HTTP endpoint (`listeners.admin`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminFile {
    /// File holding a bearer token the admin endpoint requires. Default: none (loopback
    /// listeners only).
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with the gateway's `[tls]` certificate. Default false.
    pub tls: bool,
}

/// `[log]`: the gateway's own log on standard error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFile {
    /// "text" (one readable line per event) or "json" (one JSON object per line). Default
    /// "text"; `MAILGATE_LOG_FORMAT` overrides it.
    pub format: String,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            format: "text".into(),
        }
    }
}

/// `[cluster]`: the allowlist, the failed-login counters, the POP3 mailbox locks and the
/// notices' rate limit kept in Redis, shared by every node that names the same server and
/// prefix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterFile {
    /// `redis://host:port/db` or `rediss://` (TLS). Required.
    pub redis: Option<String>,
    /// A file holding the Redis password (one line), relative to the config file. Optional.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) a `rediss://` server's certificate must chain to, instead of the
    /// system's store. Optional.
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key and of the change channel. Default `"mailgate:"`.
    pub key_prefix: String,
    /// How long one Redis command may take before the node treats Redis as down. Default
    /// `"500ms"`.
    pub timeout: String,
    /// How long a POP3 mailbox lease lives without renewal. Default `"30s"`.
    pub lease: String,
    /// How often each node re-reads the whole shared allowlist, beside the change messages.
    /// Default `"60s"`.
    pub resync: String,
}

impl Default for ClusterFile {
    fn default() -> Self {
        ClusterFile {
            redis: None,
            password_file: None,
            ca_file: None,
            key_prefix: "mailgate:".into(),
            timeout: "500ms".into(),
            lease: "30s".into(),
            resync: "60s".into(),
        }
    }
}

/// A problem met while mirroring the file, before any validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionError {
    /// A top-level key that [`File`] does not have.
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where the key is in the text.
        span: Range<usize>,
    },
    /// Serde rejected a table or value (unknown key, wrong type, out-of-range integer).
    Invalid {
        /// The top-level key whose value was rejected.
        section: &'static str,
        /// The deserializer's error; its span points into the text.
        error: toml::de::Error,
    },
}

impl File {
    /// Builds the mirror from a parsed document, one top-level key at a time, so that every
    /// table with a mistake is reported, not only the first. A rejected table falls back to
    /// its defaults (the caller refuses to start anyway).
    pub fn from_table(root: &DeTable<'_>) -> (File, Vec<SectionError>) {
        let mut errors = Vec::new();
        for (key, _) in root.iter() {
            if !TOP_LEVEL_KEYS.contains(&key.get_ref().as_ref()) {
                errors.push(SectionError::UnknownKey {
                    key: key.get_ref().to_string(),
                    span: key.span(),
                });
            }
        }
        let file = File {
            hostname: section(root, "hostname", &mut errors).unwrap_or_else(default_hostname),
            state_dir: section(root, "state_dir", &mut errors).unwrap_or_else(default_state_dir),
            tls: section(root, "tls", &mut errors).unwrap_or_default(),
            listeners: section(root, "listeners", &mut errors).unwrap_or_default(),
            auth: section(root, "auth", &mut errors).unwrap_or_default(),
            pop_before_smtp: section(root, "pop_before_smtp", &mut errors).unwrap_or_default(),
            relay: section(root, "relay", &mut errors).unwrap_or_default(),
            delivery: section(root, "delivery", &mut errors).unwrap_or_default(),
            limits: section(root, "limits", &mut errors).unwrap_or_default(),
            audit: section(root, "audit", &mut errors).unwrap_or_default(),
            admin: section(root, "admin", &mut errors).unwrap_or_default(),
            policy: section(root, "policy", &mut errors).unwrap_or_default(),
            notices: section(root, "notices", &mut errors).unwrap_or_default(),
            pop3: section(root, "pop3", &mut errors).unwrap_or_default(),
            log: section(root, "log", &mut errors).unwrap_or_default(),
            cluster: section(root, "cluster", &mut errors),
        };
        (file, errors)
    }
}

/// Deserializes the value of one top-level key; `None` if absent or not a table at all.
///
/// After each error the offending entry is dropped and the table tried again, so every
/// unknown key and wrong type in it is reported; the dropped keys take their defaults.
fn section<T: DeserializeOwned>(
    root: &DeTable<'_>,
    name: &'static str,
    errors: &mut Vec<SectionError>,
) -> Option<T> {
    let value: &Spanned<DeValue<'_>> = root.get(name)?;
    let mut owned = value.clone();
    owned.get_mut().make_owned();
    loop {
        match T::deserialize(ValueDeserializer::from(owned.clone())) {
            Ok(v) => return Some(v),
            Err(error) => {
                let pruned = error
                    .span()
                    .is_some_and(|s| remove_entry_at(owned.get_mut(), s.start));
                errors.push(SectionError::Invalid {
                    section: name,
                    error,
                });
                // Each round removes one entry, so this ends.
                if !pruned {
                    return None;
                }
            }
        }
    }
}

/// Removes the innermost table entry whose key or value holds byte `offset`.
fn remove_entry_at(value: &mut DeValue<'_>, offset: usize) -> bool {
    let DeValue::Table(table) = value else {
        return false;
    };
    let mut hit = None;
    for (k, v) in table.iter_mut() {
        if remove_entry_at(v.get_mut(), offset) {
            return true;
        }
        if k.span().contains(&offset) || v.span().contains(&offset) {
            hit = Some(k.get_ref().to_string());
        }
    }
    hit.is_some_and(|k| table.remove(k.as_str()).is_some())
}

impl Default for File {
    fn default() -> Self {
        File {
            hostname: default_hostname(),
            state_dir: default_state_dir(),
            tls: TlsFile::default(),
            listeners: ListenersFile::default(),
            auth: AuthFile::default(),
            pop_before_smtp: PopBeforeSmtpFile::default(),
            relay: RelayFile::default(),
            delivery: DeliveryFile::default(),
            limits: LimitsFile::default(),
            audit: AuditFile::default(),
            admin: AdminFile::default(),
            policy: Vec::new(),
            notices: NoticesFile::default(),
            pop3: Pop3File::default(),
            log: LogFile::default(),
            cluster: None,
        }
    }
}

/// `"localhost"`: the machine's host name is deliberately not read, so that a config means
/// the same on every machine.
pub fn default_hostname() -> String {
    "localhost".to_string()
}

/// `"state"`, next to the config file.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// `[tls]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain. Both absent: a self-signed certificate is made at start.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Client networks whose handshakes may use TLS 1.0 or 1.1 (an OpenSSL acceptor).
    pub legacy_networks: Vec<String>,
    /// The oldest version those networks may use: "1.0" (default) or "1.1".
    pub legacy_min_version: Option<String>,
    /// The OpenSSL cipher string for those networks' handshakes below TLS 1.3.
    pub legacy_ciphers: Option<String>,
}

/// `[listeners]`: `"IP:port"` strings, IPv6 in brackets.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenersFile {
    /// POP3 with STLS.
    pub pop3: Vec<String>,
    /// POP3 over implicit TLS.
    pub pop3s: Vec<String>,
    /// SMTP (port-25 role).
    pub smtp: Vec<String>,
    /// Submission (port-587 role).
    pub submission: Vec<String>,
    /// Submission over implicit TLS (port-465 role).
    pub submissions: Vec<String>,
    /// Control socket (loopback only); absent means no control socket.
    pub control: Option<String>,
    /// Admin HTTP endpoint (metrics, report, dashboard); absent means none.
    pub admin: Option<String>,
    /// Networks (CIDR) of load balancers that open every connection with a PROXY protocol
    /// header; empty by default.
    pub proxy_protocol_from: Vec<String>,
    /// How long a balancer's connection may take to send its whole PROXY header. Default
    /// `"5s"`.
    pub proxy_header_timeout: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsFile {
    /// Default 1024.
    pub max_connections: usize,
    /// Default 32.
    pub max_connections_per_ip: usize,
    /// Default 256.
    pub max_connections_per_network: usize,
    /// Default "5m".
    pub smtp_idle_timeout: String,
    /// Default "10m".
    pub pop3_idle_timeout: String,
    /// Default "60s".
    pub preauth_idle_timeout: String,
    /// Default "10s".
    pub tls_handshake_timeout: String,
    /// Default "10m".
    pub data_timeout: String,
    /// Bytes. Default 26214400 (25 MiB).
    pub max_message_size: u64,
    /// Default 100.
    pub max_recipients: usize,
    /// Octets. Default 4096.
    pub max_line_length: usize,
    /// Default 10.
    pub max_errors: u32,
    /// Default "10s".
    pub shutdown_grace: String,
    /// Messages in the spool. Default 100000.
    pub max_queue: usize,
    /// Free disk below which `/healthz` fails, in percent. Default "1%".
    pub min_free_disk: String,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            max_connections: 1024,
            max_connections_per_ip: 32,
            // Eight addresses' worth: one /24 (or /48) cannot fill a listener on its own.
            max_connections_per_network: 256,
            // RFC 5321 §4.5.3.2.7: the server timeout SHOULD be at least 5 minutes.
            smtp_idle_timeout: "5m".to_string(),
            // RFC 1939 §3: an autologout timer MUST be at least 10 minutes.
            pop3_idle_timeout: "10m".to_string(),
            // Before login nothing is worth keeping a slot for; one minute is enough for a
            // person typing at telnet.
            preauth_idle_timeout: "60s".to_string(),
            tls_handshake_timeout: "10s".to_string(),
            // RFC 5321 §4.5.3.2.6: the client waits 10 minutes for the reply to the final
            // dot; we allow as long for the whole transfer.
            data_timeout: "10m".to_string(),
            max_message_size: 25 * 1024 * 1024,
            // RFC 5321 §4.5.3.1.8: at least 100 recipients MUST be buffered.
            max_recipients: 100,
            // RFC 5321 §4.5.3.1.4 gives 512 octets for a command line; AUTH initial
            // responses (RFC 4954 §4) need more.
            max_line_length: 4096,
            max_errors: 10,
            shutdown_grace: "10s".to_string(),
            // About 60 MB of index at the most (0.6 KB per queued message).
            max_queue: 100_000,
            min_free_disk: "1%".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(text: &str) -> (File, Vec<SectionError>) {
        let root = DeTable::parse(text).expect("test input is valid TOML");
        File::from_table(root.get_ref())
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let (file, errors) = mirror("");
        assert!(errors.is_empty());
        assert_eq!(file, File::default());
        assert_eq!(toml::from_str::<File>("").ok(), Some(File::default()));
    }

    #[test]
    fn sectioned_mirror_agrees_with_whole_file_serde() {
        let text = r#"
            hostname = "mx.example.test"
            [listeners]
            smtp = ["127.0.0.1:25"]
            [auth]
            mechanisms = ["PLAIN"]
            [auth.throttle]
            window = "1h"
            [delivery.upstream]
            address = "192.0.2.1:587"
            [limits]
            max_errors = 3
        "#;
        let (file, errors) = mirror(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(toml::from_str::<File>(text).ok(), Some(file.clone()));
        assert_eq!(file.auth.throttle.window, "1h");
        assert_eq!(file.auth.throttle.max_delay, "60s");
        assert_eq!(file.limits.max_errors, 3);
        assert_eq!(file.limits.max_recipients, 100);
        let upstream = file
            .delivery
            .upstream
            .as_ref()
            .map(|u| (u.tls.as_str(), u.retry.len()));
        assert_eq!(upstream, Some(("starttls", 9)));
    }

    #[test]
    fn top_level_keys_match_the_struct() {
        for key in TOP_LEVEL_KEYS {
            let value = if key.ends_with("name") || *key == "state_dir" {
                "\"x\""
            } else if *key == "policy" {
                "[]"
            } else {
                "{}"
            };
            let text = format!("{key} = {value}\n");
            assert!(toml::from_str::<File>(&text).is_ok(), "{key}");
            assert!(mirror(&text).1.is_empty(), "{key}");
        }
        assert!(toml::from_str::<File>("nope = 1").is_err());
    }

    #[test]
    fn every_bad_table_is_reported() {
        let text = "bogus = 1\n[tls]\ncrt = \"a\"\n[limits]\nmax_errors = -1\n[relay]\n";
        let (file, errors) = mirror(text);
        let kinds: Vec<String> = errors
            .iter()
            .map(|e| match e {
                SectionError::UnknownKey { key, .. } => format!("unknown {key}"),
                SectionError::Invalid { section, .. } => format!("invalid {section}"),
            })
            .collect();
        assert_eq!(kinds, ["unknown bogus", "invalid tls", "invalid limits"]);
        assert_eq!(file.limits, LimitsFile::default());
        assert_eq!(file.tls, TlsFile::default());
    }

    #[test]
    fn every_bad_key_in_a_table_is_reported() {
        let text = "[limits]\nmax_errors = \"x\"\nbogus = 1\nmax_recipients = 7\n\
                    [limits.deeper]\n[auth.throttle]\nwindw = 1\n";
        let (file, errors) = mirror(text);
        let spans: Vec<usize> = errors
            .iter()
            .filter_map(|e| match e {
                SectionError::Invalid { error, .. } => error.span().map(|s| s.start),
                SectionError::UnknownKey { .. } => None,
            })
            .collect();
        let mut lines: Vec<usize> = spans
            .iter()
            .map(|&s| text[..s].matches('\n').count() + 1)
            .collect();
        lines.sort();
        assert_eq!(lines, [2, 3, 5, 7], "{errors:?}");
        // What was right is kept; what was wrong takes its default.
        assert_eq!(file.limits.max_recipients, 7);
        assert_eq!(file.limits.max_errors, 10);
    }
}
