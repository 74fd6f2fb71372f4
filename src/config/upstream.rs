//! The validated `[auth.upstream]`: the old mail server mailgate stands in front of while
//! users move across, and how passwords are checked against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::UpstreamTls;

/// The protocol spoken to the old server to check a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldProtocol {
    /// POP3: USER/PASS, or AUTH PLAIN (RFC 5034) when USER is not offered.
    Pop3,
    /// IMAP: AUTHENTICATE PLAIN when offered, else LOGIN.
    Imap,
    /// SMTP submission: AUTH PLAIN, else AUTH LOGIN.
    Smtp,
}

impl OldProtocol {
    /// The name as the configuration writes it.
    pub fn name(self) -> &'static str {
        match self {
            OldProtocol::Pop3 => "pop3",
            OldProtocol::Imap => "imap",
            OldProtocol::Smtp => "smtp",
        }
    }
}

/// Where the old server is and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct OldServer {
    /// Its address.
    pub address: SocketAddr,
    /// The name its certificate must carry (and the SNI sent); default its IP.
    pub server_name: String,
    /// The protocol spoken.
    pub protocol: OldProtocol,
    /// Transport security: none, STARTTLS (STLS for POP3), or implicit TLS.
    pub tls: UpstreamTls,
    /// CA certificates (PEM) its certificate must chain to instead of the system's. Absolute.
    pub ca_file: Option<PathBuf>,
    /// How long one exchange with it may take, from connect to the end of the login.
    pub timeout: Duration,
}

/// Which users' passwords are checked against the old server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamUsers {
    /// Only users the users file does not hold.
    Unknown,
    /// Every cleartext login: the old server stays the authority for passwords.
    All,
}

/// What judges the passwords: the old server by a login, or its directory by a bind.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSource {
    /// `[auth.upstream]`: a login to the old server.
    Server(OldServer),
    /// `[auth.ldap]`: search-then-bind in a directory.
    Ldap(LdapDirectory),
}

/// `[auth.ldap]`'s directory.
#[derive(Debug, Clone, PartialEq)]
pub struct LdapDirectory {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// StartTLS on an `ldap://` URL.
    pub starttls: bool,
    /// CA certificates (PEM) the directory's certificate must chain to. Absolute.
    pub ca_file: Option<PathBuf>,
    /// The DN to search as (none: anonymous search).
    pub bind_dn: Option<String>,
    /// The file holding its password. Absolute.
    pub bind_password_file: Option<PathBuf>,
    /// The search base.
    pub base: String,
    /// The search filter; `%u` stands for the user name, escaped per RFC 4515.
    pub filter: String,
    /// How long one check may take.
    pub timeout: Duration,
}

/// `[auth.upstream]` or `[auth.ldap]`: the source and the rules of checks made there.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthUpstream {
    /// What judges the passwords.
    pub source: CheckSource,
    /// Whose passwords it checks.
    pub users: UpstreamUsers,
    /// How long a successful check is remembered (as a salted slow hash); zero: not at all.
    pub cache_ttl: Duration,
    /// How long a refused password is remembered; zero: not at all.
    pub negative_cache_ttl: Duration,
    /// Checks in flight at once.
    pub max_concurrent: usize,
    /// After a successful check, store the forms the enabled mechanisms need.
    pub capture: bool,
}

impl AuthUpstream {
    /// The old server, when passwords are checked by logging in to it.
    pub fn server(&self) -> Option<&OldServer> {
        match &self.source {
            CheckSource::Server(s) => Some(s),
            CheckSource::Ldap(_) => None,
        }
    }

    /// How long one check may take.
    pub fn timeout(&self) -> Duration {
        match &self.source {
            CheckSource::Server(s) => s.timeout,
            CheckSource::Ldap(d) => d.timeout,
        }
    }

    /// What is asked, for logs: the server's address or the directory's URL.
    pub fn describe(&self) -> String {
        match &self.source {
            CheckSource::Server(s) => format!("{} ({})", s.address, s.protocol.name()),
            CheckSource::Ldap(d) => d.url.clone(),
        }
    }
}

/// How the gateway logs in to the old server for a user whose login carried no password
/// (APOP, CRAM-MD5, SCRAM, NTLM, a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterLogin {
    /// Dovecot's master-user login: `user*master` with the master password.
    DovecotStar,
    /// SASL PLAIN with the user as authorization identity and the master's credentials.
    Authzid,
}

/// `[pop3.proxy]`: mailboxes not moved yet are served from the old server.
#[derive(Debug, Clone, PartialEq)]
pub struct Pop3Proxy {
    /// The old server's POP3.
    pub server: OldServer,
    /// A master user and the file of its password, if configured. Absolute.
    pub master: Option<(String, PathBuf)>,
    /// How the master user logs in.
    pub master_login: MasterLogin,
}
