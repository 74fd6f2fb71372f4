//! The validated configuration the rest of the crate sees.
//!
//! `file.rs` mirrors the TOML text (serde, unknown keys rejected); this module turns it into
//! typed values (durations, socket addresses, networks, absolute paths) and reports every
//! problem at once, each with the file, line, key and what to write instead.
//!
//! SKELETON: the types below are the fixed interface.

pub mod file;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (absolute), if any.
    pub source: Option<PathBuf>,
    /// Our host name: greetings, Received headers, self-signed certificate.
    pub hostname: String,
    /// Where the gateway writes its state (spool, allowlist snapshot, ...). Absolute.
    pub state_dir: PathBuf,
    /// TLS material.
    pub tls: TlsConfig,
    /// Listening addresses per role.
    pub listeners: Listeners,
    /// Authentication settings.
    pub auth: AuthConfig,
    /// POP-before-SMTP.
    pub pop_before_smtp: PopBeforeSmtp,
    /// Relay policy.
    pub relay: RelayConfig,
    /// Local and upstream delivery.
    pub delivery: DeliveryConfig,
    /// Resource limits and timeouts.
    pub limits: Limits,
}

/// `[tls]`: PEM certificate chain and key; both absent means "self-signed at start".
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
}

/// The SMTP listener roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmtpRole {
    /// Port 25: inbound for local domains, relay only for authorized clients, STARTTLS.
    Smtp,
    /// Port 587: STARTTLS, authorization required before MAIL (RFC 6409).
    Submission,
    /// Port 465: implicit TLS (RFC 8314), authorization required before MAIL.
    Submissions,
}

impl SmtpRole {
    /// The config name of the role.
    pub fn name(self) -> &'static str {
        match self {
            SmtpRole::Smtp => "smtp",
            SmtpRole::Submission => "submission",
            SmtpRole::Submissions => "submissions",
        }
    }
}

/// `[listeners]`: addresses per role.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// POP3, STLS offered.
    pub pop3: Vec<SocketAddr>,
    /// POP3 over implicit TLS.
    pub pop3s: Vec<SocketAddr>,
    /// SMTP (port-25 role).
    pub smtp: Vec<SocketAddr>,
    /// Submission (port-587 role).
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (port-465 role).
    pub submissions: Vec<SocketAddr>,
    /// Control socket address for `mailgate allowlist` (loopback only).
    pub control: Option<SocketAddr>,
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The Dovecot-style passwd-file. Absolute.
    pub users_file: PathBuf,
    /// SASL mechanisms offered, in order (upper-case IANA names, each known to `sasl::find`).
    pub mechanisms: Vec<String>,
    /// Client networks allowed to use PLAIN, LOGIN and USER/PASS without TLS.
    pub insecure_plaintext_networks: Vec<IpNet>,
    /// Whether POP3 APOP is offered (timestamp in the greeting).
    pub apop: bool,
    /// Fixed delay before answering a failed authentication.
    pub failure_delay: Duration,
    /// Failed authentications in one session before the server disconnects.
    pub max_failures: u32,
    /// Per-address/per-user throttling of failed logins.
    pub throttle: Throttle,
}

/// Growing delay for failed logins, per client address and per user name.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// Failures allowed without added delay.
    pub free_failures: u32,
    /// First added delay; doubles with each further failure.
    pub base_delay: Duration,
    /// Upper bound on the added delay.
    pub max_delay: Duration,
    /// How long a failure is remembered.
    pub window: Duration,
    /// IPv6 clients are throttled by this prefix length.
    pub ipv6_prefix: u8,
}

/// `[pop_before_smtp]`.
#[derive(Debug, Clone)]
pub struct PopBeforeSmtp {
    /// Whether POP3 logins open the relay.
    pub enabled: bool,
    /// How long a login keeps the address allowed.
    pub ttl: Duration,
    /// IPv6 clients are recorded by this prefix length.
    pub ipv6_prefix: u8,
    /// SMTP roles that honour the allowlist.
    pub listeners: Vec<SmtpRole>,
    /// Bound on the number of entries.
    pub max_entries: usize,
    /// Only allow MAIL FROM addresses of the user who logged in.
    pub restrict_sender: bool,
    /// Warn when this many distinct users allowlist one address within one TTL.
    pub shared_address_warn_users: usize,
    /// Snapshot file. Absolute.
    pub snapshot: PathBuf,
}

/// `[relay]`.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Domains delivered locally (lower case).
    pub local_domains: Vec<String>,
    /// Client networks that may relay without authentication.
    pub trusted_networks: Vec<IpNet>,
}

/// `[delivery]`.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Maildir root; a user's mail is in `<maildir>/<user>/`. Absolute.
    pub maildir: PathBuf,
    /// Spool directory. Absolute.
    pub spool: PathBuf,
    /// Where undeliverable messages go when no bounce can be sent. Absolute.
    pub dead_letter: PathBuf,
    /// The smarthost, if remote mail is relayed.
    pub upstream: Option<Upstream>,
}

/// How the upstream connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain SMTP.
    None,
    /// STARTTLS required.
    Starttls,
    /// Implicit TLS.
    Tls,
}

/// `[delivery.upstream]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Smarthost address.
    pub address: SocketAddr,
    /// Name to verify the certificate against and to use as SNI (defaults to the IP).
    pub server_name: String,
    /// Transport security.
    pub tls: UpstreamTls,
    /// Accept any certificate (test setups only).
    pub danger_accept_invalid_certs: bool,
    /// AUTH user name.
    pub username: Option<String>,
    /// AUTH password.
    pub password: Option<String>,
    /// Delays between attempts; after the last, the message bounces.
    pub retry: Vec<Duration>,
    /// Timeout for each upstream command.
    pub command_timeout: Duration,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections per client address.
    pub max_connections_per_ip: usize,
    /// SMTP idle timeout (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub smtp_idle_timeout: Duration,
    /// POP3 idle timeout (RFC 1939 §3: at least 10 minutes autologout).
    pub pop3_idle_timeout: Duration,
    /// Idle timeout before authentication.
    pub preauth_idle_timeout: Duration,
    /// TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
    /// Time allowed for a whole DATA transfer.
    pub data_timeout: Duration,
    /// Largest message accepted (SIZE).
    pub max_message_size: u64,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Longest command line (RFC 5321 §4.5.3.1.4: 512 octets; larger for AUTH tokens).
    pub max_line_length: usize,
    /// Unknown or bad commands before disconnect.
    pub max_errors: u32,
    /// Time sessions get to finish on shutdown.
    pub shutdown_grace: Duration,
}

/// Whether `ip` falls in any of `nets`.
pub fn in_networks(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = crate::canonical_ip(ip);
    nets.iter().any(|n| n.contains(&ip))
}
