//! The `[auth]` tables of the mirror: `[auth]` itself, `[auth.oauth]`, `[auth.external]`,
//! `[auth.throttle]`, `[auth.gssapi]`, and `[pop_before_smtp]`, each with its default
//! functions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFile {
    /// Users file. Default [`default_users_file`].
    pub users_file: PathBuf,
    /// SASL mechanisms in the order offered. Default [`default_mechanisms`].
    pub mechanisms: Vec<String>,
    /// CIDR networks allowed cleartext passwords without TLS. Default empty.
    pub insecure_plaintext_networks: Vec<String>,
    /// Offer POP3 APOP. Default true.
    pub apop: bool,
    /// Delay before a failure reply. Default [`default_failure_delay`].
    pub failure_delay: String,
    /// Failures per session before disconnect. Default [`default_max_failures`].
    pub max_failures: u32,
    /// `[auth.throttle]`.
    pub throttle: ThrottleFile,
    /// NetBIOS domain announced in NTLM challenges. Default: the first label of `hostname`,
    /// upper-cased.
    pub ntlm_domain: Option<String>,
    /// Accept NTLMv1 and NTLMv1 with extended session security. Default false.
    pub ntlm_v1: bool,
    /// The realm announced in DIGEST-MD5 challenges. Default: `hostname`.
    pub digest_md5_realm: Option<String>,
    /// Host names a DIGEST-MD5 `digest-uri` may name besides `hostname`. Default empty.
    pub digest_md5_hosts: Vec<String>,
    /// After a successful plaintext login, store the forms stronger mechanisms need.
    /// Default false.
    pub derive_on_login: bool,
    /// `[auth.oauth]`: bearer-token validation for XOAUTH2 and OAUTHBEARER.
    pub oauth: Option<OAuthFile>,
    /// `[auth.upstream]`: checking passwords against the old mail server.
    pub upstream: Option<super::AuthUpstreamFile>,
    /// `[auth.ldap]`: checking passwords against the old box's directory.
    pub ldap: Option<super::AuthLdapFile>,
    /// `[auth.external]`: TLS client certificates for SASL EXTERNAL.
    pub external: Option<ExternalFile>,
    /// `[auth.gssapi]`: Kerberos logins (GSSAPI). Parsed by every build; a build without the
    /// `gssapi` feature refuses it by name.
    pub gssapi: Option<GssapiFile>,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            users_file: default_users_file(),
            mechanisms: default_mechanisms(),
            insecure_plaintext_networks: Vec::new(),
            apop: true,
            failure_delay: default_failure_delay(),
            max_failures: default_max_failures(),
            throttle: ThrottleFile::default(),
            ntlm_domain: None,
            ntlm_v1: false,
            digest_md5_realm: None,
            digest_md5_hosts: Vec::new(),
            derive_on_login: false,
            oauth: None,
            upstream: None,
            ldap: None,
            external: None,
            gssapi: None,
        }
    }
}

/// `[auth.external]`: which client certificates SASL EXTERNAL accepts and whom they name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalFile {
    /// PEM file of the CA certificates that issue the devices' certificates. Required.
    pub ca_file: Option<PathBuf>,
    /// Which part of the leaf certificate names the user: "cn", "san-email" or "san-dns".
    /// Default "cn".
    pub identity: String,
    /// Certificate identity to user name, for the identities that are not user names.
    pub map: BTreeMap<String, String>,
    /// CRL file (PEM or DER) of the CA; revoked certificates are refused.
    pub crl_file: Option<PathBuf>,
}

impl Default for ExternalFile {
    fn default() -> Self {
        ExternalFile {
            ca_file: None,
            identity: "cn".to_string(),
            map: BTreeMap::new(),
            crl_file: None,
        }
    }
}

/// `[auth.gssapi]`: the acceptor's keytab and how principals map to users.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GssapiFile {
    /// The keytab holding `smtp/<hostname>` and `pop/<hostname>`. Required.
    pub keytab: Option<PathBuf>,
    /// Realms whose single-component principals log in as the user of that name.
    pub realms: Vec<String>,
    /// Exceptions: whole principal -> user.
    pub user_map: std::collections::BTreeMap<String, String>,
}

/// `[auth.oauth]`: how bearer tokens (RFC 6750) are validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthFile {
    /// JWKS file (RFC 7517) with the issuer's public keys (RS256, ES256).
    pub jwks_file: Option<PathBuf>,
    /// File holding the shared HS256 secret.
    pub hs256_secret_file: Option<PathBuf>,
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Accepted `aud` values (at least one must match).
    pub audience: Vec<String>,
    /// Accepted signature algorithms. Default ["RS256", "ES256"].
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`. Default "60s".
    pub clock_skew: String,
    /// The claim that names the user. Default "sub".
    pub user_claim: String,
    /// A scope the token must carry (space-separated `scope` claim).
    pub required_scope: Option<String>,
    /// RFC 7662 introspection endpoint (HTTPS; HTTP only on loopback).
    pub introspection_url: Option<String>,
    /// Client id for introspection (HTTP Basic).
    pub introspection_client_id: Option<String>,
    /// File with the client secret for introspection.
    pub introspection_secret_file: Option<PathBuf>,
    /// PEM file of the CA certificates that the introspection endpoint's certificate must
    /// chain to, instead of the system's roots (a private identity provider).
    pub introspection_ca_file: Option<PathBuf>,
    /// Accept any certificate from the introspection endpoint (tests only). Default false.
    pub danger_accept_invalid_certs: bool,
}

impl Default for OAuthFile {
    fn default() -> Self {
        OAuthFile {
            jwks_file: None,
            hs256_secret_file: None,
            issuer: None,
            audience: Vec::new(),
            algorithms: vec!["RS256".into(), "ES256".into()],
            clock_skew: "60s".into(),
            user_claim: "sub".into(),
            required_scope: None,
            introspection_url: None,
            introspection_client_id: None,
            introspection_secret_file: None,
            introspection_ca_file: None,
            danger_accept_invalid_certs: false,
        }
    }
}

/// `"users"`, next to the config file.
pub fn default_users_file() -> PathBuf {
    PathBuf::from("users")
}

/// PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195): what legacy clients know.
pub fn default_mechanisms() -> Vec<String> {
    ["PLAIN", "LOGIN", "CRAM-MD5"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// One second: slows guessing without making typos painful.
pub fn default_failure_delay() -> String {
    "1s".to_string()
}

/// Three failures per session, then disconnect.
pub fn default_max_failures() -> u32 {
    3
}

/// `[auth.throttle]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleFile {
    /// Failures without added delay. Default 3.
    pub free_failures: u32,
    /// First added delay, doubling. Default "2s".
    pub base_delay: String,
    /// Cap on the added delay. Default "60s".
    pub max_delay: String,
    /// How long failures are remembered. Default "15m".
    pub window: String,
    /// IPv6 prefix length clients are grouped by. Default 48.
    pub ipv6_prefix: u8,
    /// How long a network a user logged in from stays exempt from that user's delay.
    /// Default "30d".
    pub known_address_window: String,
}

impl Default for ThrottleFile {
    fn default() -> Self {
        ThrottleFile {
            free_failures: 3,
            base_delay: "2s".to_string(),
            max_delay: "60s".to_string(),
            window: "15m".to_string(),
            // A /48 is the usual site assignment (RFC 6177 §2), so one attacker's addresses
            // share one counter.
            ipv6_prefix: 48,
            known_address_window: "30d".to_string(),
        }
    }
}

/// `[pop_before_smtp]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopBeforeSmtpFile {
    /// Default true: the reason the gateway exists.
    pub enabled: bool,
    /// How long a POP3 login opens the relay. Default "30m".
    pub ttl: String,
    /// IPv6 prefix an address is recorded by. Default 64.
    pub ipv6_prefix: u8,
    /// SMTP roles honouring the allowlist. Default `["smtp"]`.
    pub listeners: Vec<String>,
    /// Bound on entries. Default 100000.
    pub max_entries: usize,
    /// Only the logged-in user's addresses in MAIL FROM. Default false.
    pub restrict_sender: bool,
    /// Distinct users per address per TTL before a warning. Default 5.
    pub shared_address_warn_users: usize,
    /// Snapshot file; default `<state_dir>/allowlist.json`.
    pub snapshot: Option<PathBuf>,
}

impl Default for PopBeforeSmtpFile {
    fn default() -> Self {
        PopBeforeSmtpFile {
            enabled: true,
            // 30 minutes: the traditional pop-before-smtp window (DRAC and poprelayd used
            // 30; shorter windows break clients that poll hourly and send in between).
            ttl: "30m".to_string(),
            // A /64 is one subnet (RFC 4291 §2.5.1); privacy addresses rotate within it
            // (RFC 8981), so the client that logged in keeps its permission.
            ipv6_prefix: 64,
            listeners: vec!["smtp".to_string()],
            max_entries: 100_000,
            restrict_sender: false,
            shared_address_warn_users: 5,
            snapshot: None,
        }
    }
}
