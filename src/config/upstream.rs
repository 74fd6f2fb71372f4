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

/// `[auth.upstream]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthUpstream {
    /// The old server.
    pub server: OldServer,
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
