//! The validated configuration the rest of the crate sees.
//!
//! `file/` mirrors the TOML text (serde, unknown keys rejected); this module turns it into
//! typed values (durations, socket addresses, networks, absolute paths) and reports every
//! problem at once, each with the file, line, key and what to write instead. The checks
//! live in `validate/` (`mod.rs`: the passes and the value checks; `auth.rs`, `delivery.rs`,
//! `policy.rs`: one section each); `warnings.rs` names settings that are valid but risky.
//!
//! Relative paths in the file are relative to the file's own folder. Durations are written
//! `"10s"`, `"30m"`, `"1h30m"`, `"5d"`. See `docs/configuration.md` for every key.

pub mod file;
#[cfg(test)]
mod tests;
mod upstream;
mod validate;

pub use upstream::{
    AuthUpstream, CheckSource, LdapDirectory, MasterLogin, OldProtocol, OldServer, Pop3Proxy,
    UpstreamUsers,
};

/// Parses a duration in the configuration's syntax (`"90s"`, `"30m"`, `"1h30m"`, `"5d"`).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    validate::parse_duration(text).ok()
}
mod warnings;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
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
    /// The audit log, if enabled.
    pub audit: Option<AuditConfig>,
    /// The admin HTTP endpoint's bearer-token file, if any. Absolute.
    pub admin_token_file: Option<PathBuf>,
    /// The admin endpoint serves HTTPS (with the `[tls]` certificate).
    pub admin_tls: bool,
    /// The migration policy (`[[policy]]` rules in order).
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// Notices and the admin digest.
    pub notices: Notices,
    /// `[pop3.proxy]`: mailboxes served from the old server until they move.
    pub pop3_proxy: Option<Pop3Proxy>,
    /// `[log] format`: how the gateway's own log lines are written.
    pub log_format: LogFormat,
    /// `[cluster]`: state shared with other nodes in Redis; `None` keeps it in this process.
    pub cluster: Option<Cluster>,
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The Redis URL as written (it may hold a password: show it with
    /// [`Cluster::redis_display`]).
    pub redis: String,
    /// The file holding the Redis password. Absolute.
    pub password_file: Option<PathBuf>,
    /// The CA certificate(s) a `rediss://` server must chain to, instead of the system's.
    /// Absolute.
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key and of the change channel.
    pub key_prefix: String,
    /// The longest one Redis command may take.
    pub timeout: Duration,
    /// How long a mailbox lease lives without renewal.
    pub lease: Duration,
    /// How often the whole shared allowlist is read again.
    pub resync: Duration,
}

impl Cluster {
    /// The Redis URL without any password in it, for logs and `check-config`.
    pub fn redis_display(&self) -> String {
        match redis::parse_redis_url(&self.redis) {
            Some(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("*****"));
                }
                u.to_string()
            }
            None => "(not a URL)".into(),
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: the message, the level, and every field of the event and of
    /// its spans (`session`, `peer`, `listener`, `mechanism`, ...).
    Json,
}

impl LogFormat {
    /// The format named `name` ("text" or "json"), or `None`.
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// `[notices]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notices {
    /// At most one notice per user and mechanism within this interval.
    pub interval: Duration,
    /// Local user receiving the legacy-auth digest.
    pub digest_to: Option<String>,
    /// Digest period.
    pub digest_interval: Duration,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The current log file. Absolute.
    pub path: PathBuf,
    /// Rotation size in bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: usize,
}

/// `[tls]`: PEM certificate chain and key; both absent means "self-signed at start".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
    /// TLS 1.0 and 1.1 for the networks that need them (`None`: no network does).
    pub legacy: Option<LegacyTls>,
}

/// `[tls] legacy_networks` and their settings: handshakes from these networks go to an
/// OpenSSL acceptor that also allows TLS 1.0 (or 1.1); everyone else keeps rustls with TLS 1.2
/// and 1.3 only, on the same ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTls {
    /// The client networks.
    pub networks: Vec<IpNet>,
    /// The oldest version allowed: 10 for TLS 1.0, 11 for TLS 1.1.
    pub min_version: u8,
    /// The OpenSSL cipher string (TLS 1.2 and below).
    pub ciphers: String,
}

/// The default `[tls] legacy_ciphers`: the CBC-SHA suites with RSA or ECDHE key exchange
/// that Windows 7, old Java and printers speak, at OpenSSL security level 0 (TLS 1.0 and 1.1
/// sign with SHA-1, which higher levels refuse).
pub const DEFAULT_LEGACY_CIPHERS: &str = "HIGH:MEDIUM:!aNULL:!eNULL:!MD5:!RC4:@SECLEVEL=0";

/// Whether this binary was built with the `legacy-tls` feature (the OpenSSL acceptor).
pub const LEGACY_TLS_BUILT: bool = cfg!(feature = "legacy-tls");

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
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// Admin HTTP endpoint (metrics, report API, dashboard).
    pub admin: Option<SocketAddr>,
    /// Sources (load balancers) whose connections to the mail listeners open with a PROXY
    /// protocol header naming the client; empty means none.
    pub proxy_protocol_from: Vec<IpNet>,
    /// The whole PROXY header must arrive within this long.
    pub proxy_header_timeout: Duration,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq)]
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
    /// NetBIOS domain announced in NTLM challenges (upper case).
    pub ntlm_domain: String,
    /// Whether NTLMv1 (and NTLMv1 with extended session security) is accepted.
    pub ntlm_v1: bool,
    /// The realm of DIGEST-MD5 challenges (the `{DIGEST-MD5}` forms are made for it).
    pub digest_md5_realm: String,
    /// The host names a DIGEST-MD5 `digest-uri` may name (lower case): `hostname` first, then
    /// `digest_md5_hosts`.
    pub digest_md5_hosts: Vec<String>,
    /// Store stronger forms (SCRAM keys, ...) after a successful plaintext login.
    pub derive_on_login: bool,
    /// Bearer-token validation, if configured.
    pub oauth: Option<OAuthConfig>,
    /// Passwords checked against the old mail server, if configured.
    pub upstream: Option<AuthUpstream>,
    /// TLS client certificates for SASL EXTERNAL, if configured.
    pub external: Option<ExternalConfig>,
    /// Kerberos logins (GSSAPI), if configured (only in builds with the `gssapi` feature).
    pub gssapi: Option<GssapiConfig>,
}

/// `[auth.gssapi]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GssapiConfig {
    /// The keytab with the service principals `smtp/<hostname>` and `pop/<hostname>`.
    /// Absolute.
    pub keytab: PathBuf,
    /// Realms whose single-component principals log in as the user of that name.
    pub realms: Vec<String>,
    /// Exceptions: whole principal -> canonical user.
    pub user_map: std::collections::BTreeMap<String, String>,
}

/// `[auth.external]`: the CA whose client certificates SASL EXTERNAL accepts (RFC 4422
/// appendix A), and how a certificate names its user.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalConfig {
    /// PEM file of the issuing CA certificates. Absolute.
    pub ca_file: PathBuf,
    /// Which part of the leaf certificate names the user.
    pub identity: CertIdentity,
    /// Certificate identity (lower case) to user name, for the exceptions.
    pub map: std::collections::BTreeMap<String, String>,
    /// CRL file (PEM or DER). Absolute.
    pub crl_file: Option<PathBuf>,
}

/// The part of a client certificate that names its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentity {
    /// The subject's first commonName.
    Cn,
    /// The first rfc822Name of the subjectAltName extension.
    SanEmail,
    /// The first dNSName of the subjectAltName extension.
    SanDns,
}

impl CertIdentity {
    /// The configuration's name for it.
    pub fn name(self) -> &'static str {
        match self {
            CertIdentity::Cn => "cn",
            CertIdentity::SanEmail => "san-email",
            CertIdentity::SanDns => "san-dns",
        }
    }
}

/// `[auth.oauth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthConfig {
    /// JWKS file with public keys. Absolute.
    pub jwks_file: Option<PathBuf>,
    /// HS256 shared-secret file. Absolute.
    pub hs256_secret_file: Option<PathBuf>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Accepted audiences (non-empty).
    pub audience: Vec<String>,
    /// Accepted algorithms: "RS256", "ES256", "HS256".
    pub algorithms: Vec<String>,
    /// Allowed clock skew.
    pub clock_skew: Duration,
    /// The claim naming the user.
    pub user_claim: String,
    /// A scope the token must carry.
    pub required_scope: Option<String>,
    /// RFC 7662 introspection, if configured.
    pub introspection: Option<Introspection>,
}

/// RFC 7662 token introspection endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Introspection {
    /// Endpoint URL.
    pub url: String,
    /// Client id (HTTP Basic).
    pub client_id: Option<String>,
    /// Client secret file. Absolute.
    pub secret_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for the endpoint instead of the system's roots. Absolute.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (tests only).
    pub danger_accept_invalid_certs: bool,
}

/// Growing delay for failed logins, per client address and per user name.
#[derive(Debug, Clone, PartialEq)]
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
    /// How long after a user's last login from a network that network is spared the user's
    /// delay (0: never).
    pub known_address_window: Duration,
}

/// `[pop_before_smtp]`.
#[derive(Debug, Clone, PartialEq)]
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
    /// Snapshot file. Absolute. Its journal is [`allowlist_journal`] of it.
    pub snapshot: PathBuf,
}

/// The allowlist journal that goes with the snapshot file `snapshot`: the same name with the
/// extension `.journal` (`allowlist.json` → `allowlist.journal`), in the same folder.
pub fn allowlist_journal(snapshot: &std::path::Path) -> PathBuf {
    match snapshot.with_extension("journal") {
        // A snapshot that is itself named *.journal: add to the name instead.
        same if same == snapshot => {
            let mut name = snapshot.as_os_str().to_owned();
            name.push(".journal");
            PathBuf::from(name)
        }
        other => other,
    }
}

/// `[relay]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Domains delivered locally (lower case).
    pub local_domains: Vec<String>,
    /// Client networks that may relay without authentication.
    pub trusted_networks: Vec<IpNet>,
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Maildir root; a user's mail is in `<maildir>/<user>/`. Absolute.
    pub maildir: PathBuf,
    /// Spool directory. Absolute.
    pub spool: PathBuf,
    /// Where undeliverable messages go when no bounce can be sent. Absolute.
    pub dead_letter: PathBuf,
    /// How long a group commit waits, at most, for messages other sessions are still
    /// receiving (zero: never).
    pub commit_window: Duration,
    /// The smarthost, if remote mail is relayed.
    pub upstream: Option<Upstream>,
    /// The old server's SMTP, for mail to local users not moved yet (no Maildir here).
    pub route_unmigrated_to: Option<SocketAddr>,
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

/// `[delivery.upstream]`. Its `Debug` never shows the password.
#[derive(Clone, PartialEq)]
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
    /// How long a session with the smarthost is kept open, idle, for the next message
    /// (`Duration::ZERO`: a new session per message).
    pub keep_idle: Duration,
    /// Which AUTH mechanism to use upstream.
    pub auth: UpstreamAuth,
    /// Where the OAuth access token comes from (XOAUTH2/OAUTHBEARER).
    pub oauth: Option<UpstreamOAuth>,
}

/// The AUTH mechanism used with the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// PLAIN if offered, else LOGIN (when username/password are set).
    Auto,
    /// AUTH PLAIN.
    Plain,
    /// AUTH LOGIN.
    Login,
    /// AUTH XOAUTH2 with an access token.
    Xoauth2,
    /// AUTH OAUTHBEARER (RFC 7628) with an access token.
    Oauthbearer,
}

/// The OAuth 2.0 grant used to obtain upstream access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §6: refresh-token grant.
    RefreshToken,
    /// RFC 6749 §4.4: client-credentials grant.
    ClientCredentials,
}

/// `[delivery.upstream.oauth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamOAuth {
    /// Token endpoint.
    pub token_url: String,
    /// The grant.
    pub grant: Grant,
    /// Client id.
    pub client_id: String,
    /// Client secret file. Absolute.
    pub client_secret_file: Option<PathBuf>,
    /// Refresh token file. Absolute.
    pub refresh_token_file: Option<PathBuf>,
    /// Requested scope.
    pub scope: Option<String>,
    /// Refresh this long before expiry.
    pub refresh_margin: Duration,
    /// Accept any certificate (tests only).
    pub danger_accept_invalid_certs: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .field("tls", &self.tls)
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .field("command_timeout", &self.command_timeout)
            .field("keep_idle", &self.keep_idle)
            .field("auth", &self.auth)
            .field("oauth", &self.oauth)
            .finish()
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections per client address.
    pub max_connections_per_ip: usize,
    /// Connections per client network (IPv4 /24, IPv6 /48).
    pub max_connections_per_network: usize,
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
    /// Messages in the spool beyond which MAIL is answered 452 4.3.1.
    pub max_queue: usize,
    /// `/healthz` fails when the spool's or the Maildirs' file system has less free space than
    /// this share (0.0 to 1.0).
    pub min_free_disk: f64,
}

/// Whether `ip` falls in any of `nets`.
pub fn in_networks(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = crate::canonical_ip(ip);
    nets.iter().any(|n| n.contains(&ip))
}

impl Config {
    /// Reads, parses and validates the file at `path`. Relative paths inside it are resolved
    /// against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, path),
            Err(e) => Err(ConfigErrors {
                problems: vec![Problem {
                    file: path.to_path_buf(),
                    line: None,
                    key: String::new(),
                    message: format!("cannot read the configuration file: {e}"),
                    hint: "check the path and the file's permissions".to_string(),
                }],
            }),
        }
    }

    /// Parses and validates `text` as if read from `path` (which need not exist: it names the
    /// file in problems and anchors relative paths).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        validate::build(text, path)
    }

    /// A problem found after validation at `key`'s value in the file at `path` (its line, when
    /// the file names the key), e.g. a listener address already in use.
    pub fn problem_at(path: &Path, key: &str, message: String, hint: &str) -> Problem {
        let line = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| validate::key_line(&text, key));
        Problem {
            file: path.to_path_buf(),
            line,
            key: key.to_string(),
            message,
            hint: hint.to_string(),
        }
    }

    /// Settings that are valid but risky, one sentence each, for the log at start.
    pub fn warnings(&self) -> Vec<String> {
        warnings::warnings(self)
    }
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as it was named to [`Config::load`] or [`Config::from_toml`].
    pub file: PathBuf,
    /// 1-based line, when the problem is at a place in the text (not a missing key).
    pub line: Option<usize>,
    /// The dotted key, e.g. `limits.smtp_idle_timeout`; empty for file-level problems.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to write instead; may be empty.
    pub hint: String,
}

impl fmt::Display for Problem {
    /// `config/mailgate.toml:12: limits.smtp_idle_timeout: "5 minutes" is not a duration;
    /// write e.g. "5m"`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration file; the gateway refuses to start on any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_lines(.problems))]
pub struct ConfigErrors {
    /// In line order; problems without a line (a missing key) come last.
    pub problems: Vec<Problem>,
}

/// One problem per line.
fn display_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
