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

/// `[auth.ldap]`: checking passwords against the old box's directory (search, then bind).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthLdapFile {
    /// `ldap://host:port` (StartTLS) or `ldaps://host:port`. Required.
    pub url: String,
    /// StartTLS on an `ldap://` URL. Default true.
    pub starttls: bool,
    /// PEM file of the CA certificates the directory's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// The DN to search as; none: an anonymous search.
    pub bind_dn: Option<String>,
    /// The file holding `bind_dn`'s password.
    pub bind_password_file: Option<PathBuf>,
    /// The search base. Required.
    pub base: String,
    /// The search filter; `%u` is the user name. Default `"(uid=%u)"`.
    pub filter: String,
    /// How long one check may take. Default `"10s"`.
    pub timeout: String,
    /// As in `[auth.upstream]`.
    pub users: String,
    /// As in `[auth.upstream]`.
    pub cache_ttl: String,
    /// As in `[auth.upstream]`.
    pub negative_cache_ttl: String,
    /// As in `[auth.upstream]`.
    pub max_concurrent: usize,
    /// As in `[auth.upstream]`.
    pub capture: bool,
}

impl Default for AuthLdapFile {
    fn default() -> Self {
        let u = AuthUpstreamFile::default();
        AuthLdapFile {
            url: String::new(),
            starttls: true,
            ca_file: None,
            bind_dn: None,
            bind_password_file: None,
            base: String::new(),
            filter: "(uid=%u)".into(),
            timeout: u.timeout,
            users: u.users,
            cache_ttl: u.cache_ttl,
            negative_cache_ttl: u.negative_cache_ttl,
            max_concurrent: u.max_concurrent,
            capture: u.capture,
        }
    }
}

/// `[pop3]`: POP3 settings beyond the listeners.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3File {
    /// `[pop3.proxy]`: mailboxes not moved yet, served from the old server.
    pub proxy: Option<Pop3ProxyFile>,
}

/// `[pop3.proxy]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3ProxyFile {
    /// `"IP:port"` of the old server's POP3. Required.
    pub address: String,
    /// `"none"`, `"starttls"` (STLS) or `"implicit"`. Default `"starttls"`.
    pub tls: String,
    /// The name its certificate is checked against (and sent as SNI). Default: its IP.
    pub server_name: Option<String>,
    /// PEM file of the CA certificates its certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Connect and login, and each reply while proxying. Default `"30s"`.
    pub timeout: String,
    /// A master user of the old server, for logins whose mechanism carried no password.
    pub master_user: Option<String>,
    /// The file holding the master user's password.
    pub master_password_file: Option<PathBuf>,
    /// `"dovecot-star"` (`user*master`) or `"authzid"` (SASL PLAIN with an authorization
    /// identity). Default `"dovecot-star"`.
    pub master_login: String,
}

impl Default for Pop3ProxyFile {
    fn default() -> Self {
        Pop3ProxyFile {
            address: String::new(),
            tls: "starttls".into(),
            server_name: None,
            ca_file: None,
            timeout: "30s".into(),
            master_user: None,
            master_password_file: None,
            master_login: "dovecot-star".into(),
        }
    }
}

/// The fields that say where an old server is, shared by the tables that reach one.
pub trait OldServerFile {
    /// `address`.
    fn address(&self) -> &str;
    /// `tls`.
    fn tls(&self) -> &str;
    /// `server_name`.
    fn server_name(&self) -> Option<&str>;
    /// `ca_file`.
    fn ca_file(&self) -> Option<&PathBuf>;
    /// `timeout`.
    fn timeout(&self) -> &str;
}

macro_rules! old_server_file {
    ($t:ty) => {
        impl OldServerFile for $t {
            fn address(&self) -> &str {
                &self.address
            }
            fn tls(&self) -> &str {
                &self.tls
            }
            fn server_name(&self) -> Option<&str> {
                self.server_name.as_deref()
            }
            fn ca_file(&self) -> Option<&PathBuf> {
                self.ca_file.as_ref()
            }
            fn timeout(&self) -> &str {
                &self.timeout
            }
        }
    };
}

old_server_file!(AuthUpstreamFile);
old_server_file!(Pop3ProxyFile);
