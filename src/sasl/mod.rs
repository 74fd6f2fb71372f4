//! The SASL engine shared by SMTP AUTH (RFC 4954) and POP3 AUTH (RFC 5034).
//!
//! A mechanism is a sans-IO state machine with a single [`Mechanism::step`]: decoded client
//! bytes in, a [`Step`] out. Base64 and the `334` / `+` framing belong to `smtp/` and `pop3/`.
//! A mechanism never checks a credential itself: when it needs one checked (a password, a
//! CRAM-MD5 digest, the DIGEST-MD5 secret, the stored NT hash or SCRAM keys, a bearer token)
//! it returns [`Step::Verify`] with a [`Check`], and whoever drives it (the session driver,
//! through the verification path that runs slow hashes off the async workers and calls
//! identity providers asynchronously) feeds the [`Answer`] back with [`Mechanism::resume`].
//! Which user exists and which password is right is decided behind that round trip, never here.
//!
//! # Contract for mechanisms
//! - `step` MUST be called first with the initial response (`Some`) if the client sent one,
//!   or `None` if it did not; afterwards always with `Some(bytes)`.
//! - After `Verify`, the driver MUST call `resume` with the answer to that check before
//!   anything else; `resume` returns the next step as `step` would.
//! - A mechanism MUST NOT panic on any input, and MUST bound what it buffers.
//! - A mechanism MUST compare secrets in constant time and MUST NOT log secrets.
//! - After `Success` or `Failure` the mechanism MUST NOT be stepped again.
//! - Client cancellation (`*`) is handled by the framing layer, not by mechanisms.

mod check;
pub mod cram_md5;
pub mod digest_md5;
pub mod external;
#[cfg(feature = "gssapi")]
pub mod gssapi;
pub mod login;
pub mod ntlm;
pub mod oauth_message;
pub mod oauthbearer;
mod one_message;
pub mod plain;
pub mod scram;
#[cfg(test)]
pub(crate) mod testing;
pub mod xoauth2;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

pub use check::{Answer, Check, NO_SUCH_USER, answer, digest_md5_decoy, nt_name, runs_slow};

use crate::auth::Authenticator;

/// Largest decoded SASL message a mechanism accepts (RFC 4954 §4 lets servers bound this).
pub const MAX_TOKEN_LEN: usize = 12 * 1024;

/// The outcome of one [`Mechanism::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (raw bytes; the framing layer base64-encodes it).
    Challenge(Vec<u8>),
    /// Have this credential checked and pass the answer to [`Mechanism::resume`]; nothing is
    /// sent to the client meanwhile.
    Verify(Check),
    /// Authentication succeeded as this identity.
    Success(Identity),
    /// Authentication failed.
    Failure(Failure),
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The canonical user name (the users-file key; also the mailbox name).
    pub user: String,
    /// The Kerberos principal that authenticated (GSSAPI), for the audit record.
    pub principal: Option<String>,
}

impl Identity {
    /// The identity of `user`, with no principal.
    pub fn new(user: impl Into<String>) -> Identity {
        Identity {
            user: user.into(),
            principal: None,
        }
    }
}

/// How a [`Failure::Temporary`] starts in the log note of a failed login, which is how the
/// session driver knows not to count it as a failure ([`temporary_note`]).
pub const TEMPORARY: &str = "temporary failure";

/// Whether the note of a failed login says it failed temporarily (nothing judged wrong).
pub fn temporary_note(note: &str) -> bool {
    note.starts_with(TEMPORARY)
}

/// Why a mechanism failed; the framing layer maps each to a wire reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The client message could not be parsed (SMTP 501 5.5.2).
    Malformed(&'static str),
    /// Wrong user or password (SMTP 535 5.7.8).
    BadCredentials,
    /// The user exists but nothing stored for them can serve this mechanism (SMTP 535 5.7.8,
    /// with a log line naming the reason).
    Unavailable(&'static str),
    /// A well-formed exchange that failed a check other than the password itself: a SCRAM
    /// channel-binding mismatch, downgrade or wrong nonce (SMTP 535 5.7.8, POP3 `-ERR [AUTH]`,
    /// with a log line naming the reason).
    Refused(&'static str),
    /// The credentials could not be judged now (the old server that checks them is down or
    /// slow): SMTP 454 4.7.0, POP3 `-ERR [SYS/TEMP]`; no failure is counted against the
    /// client, which keeps its password and retries. The text starts with [`TEMPORARY`].
    Temporary(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed(why) => write!(f, "malformed client message: {why}"),
            Failure::BadCredentials => f.write_str("invalid credentials"),
            Failure::Unavailable(why) => write!(f, "mechanism unavailable for user: {why}"),
            Failure::Refused(why) => write!(f, "authentication refused: {why}"),
            Failure::Temporary(why) => f.write_str(why),
        }
    }
}

/// A server-side SASL mechanism in progress.
pub trait Mechanism: Send + Sync {
    /// Feeds one decoded client message (or `None`: no initial response) and returns what to
    /// do next. See the module docs for the contract.
    fn step(&mut self, input: Option<&[u8]>) -> Step;

    /// Takes the answer to the [`Check`] of the last [`Step::Verify`] and returns the next
    /// step. A mechanism that never asks for a check keeps this default, which fails.
    fn resume(&mut self, answer: Answer) -> Step {
        let _ = answer;
        Step::Failure(Failure::Malformed("no credential check was pending"))
    }

    /// The user name the client claimed so far, if the mechanism has seen one: for logs and
    /// per-user throttling of failures. MUST NOT return password material.
    fn user(&self) -> Option<&str> {
        None
    }

    /// Whether the client's next message may be checked against stored credentials or a
    /// token: the throttle takes an address slot before such a message, and only before such
    /// a message, so an exchange costs one slot however many steps it has, and a check can
    /// never run without one. The default (yes) is the safe answer.
    fn verifies_next(&self) -> bool {
        true
    }

    /// Which variant of the mechanism the client used, for the log and the audit: after
    /// `Success` the one that verified, after a `Failure` the one the client attempted, if
    /// the mechanism got that far (NTLM says `NTLMv2`, `LMv2`, `NTLMv1` or `NTLMv1-ESS`; the
    /// last two are the weakest legacy class).
    fn detail(&self) -> Option<&'static str> {
        None
    }
}

/// What a mechanism may use besides the client's bytes, for one attempt; made by
/// [`Environment::context`].
#[derive(Clone)]
pub struct Context {
    /// Mechanism settings from the configuration.
    pub options: Arc<Options>,
    /// The server's host name, for challenges.
    pub hostname: String,
    /// The GSSAPI service name of the protocol: `smtp` or `pop` (RFC 4752 §3.1 with the
    /// names of RFC 4954 and RFC 5034), which DIGEST-MD5's `digest-uri` must name too.
    pub service: &'static str,
    /// A fresh unique token for this attempt, used in challenges such as CRAM-MD5's
    /// `<token@hostname>`.
    pub nonce: String,
    /// 32 fresh random bytes for this attempt (server challenges and nonces).
    pub random: [u8; 32],
    /// Wall-clock time when the connection phase started (e.g. the NTLM timestamp).
    pub now: SystemTime,
    /// Channel-binding data of the TLS session, if the connection runs over TLS.
    pub channel_binding: Option<Arc<ChannelBinding>>,
    /// The client certificate of the TLS session, if it chains to `[auth.external]`'s CA.
    pub client_cert: Option<Arc<ClientCertificate>>,
}

/// A TLS client certificate that chains to the `[auth.external]` CA, as the session driver
/// found it in the TLS session (never anything the client said in SASL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's distinguished name, for the log and the audit.
    pub subject: String,
    /// The SHA-256 fingerprint of the certificate (lower-case hex), for the log and the audit.
    pub sha256: String,
    /// The identity `[auth.external] identity` names, if the certificate has one.
    pub identity: Option<String>,
    /// The user the certificate stands for (its identity, or what `[auth.external] map` makes
    /// of it), or why it cannot be used (expired, revoked, no identity).
    pub user: Result<String, &'static str>,
}

/// Mechanism settings from the configuration (`[auth]`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The NTLM domain (NetBIOS form, upper case) announced in NTLM challenges.
    pub ntlm_domain: String,
    /// Whether NTLMv1 responses are accepted (weakest legacy class; off by default).
    pub ntlm_v1: bool,
    /// Whether a channel-binding (`-PLUS`) mechanism is configured, hence offered on every TLS
    /// connection: SCRAM then refuses a client that says it could bind but thinks the server
    /// cannot (RFC 5802 §6, downgrade protection).
    pub channel_binding_offered: bool,
    /// The realm announced in DIGEST-MD5 challenges (`[auth] digest_md5_realm`).
    pub digest_md5_realm: String,
    /// The host names (lower case) a DIGEST-MD5 `digest-uri` may name: `hostname` and
    /// `[auth] digest_md5_hosts`. Empty: the context's host name only.
    pub digest_md5_hosts: Vec<String>,
}

/// Channel-binding data (RFC 5929, RFC 9266) of a TLS session, for SCRAM-*-PLUS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    /// `tls-exporter` (RFC 9266): 32 bytes exported with the label
    /// "EXPORTER-Channel-Binding" and no context.
    pub tls_exporter: Option<Vec<u8>>,
    /// `tls-server-end-point` (RFC 5929 §4): the hash of our certificate.
    pub tls_server_end_point: Option<Vec<u8>>,
}

/// The future a [`TokenValidator`] returns.
pub type Validation<'a> = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send + 'a>>;

/// Validates an OAuth 2.0 bearer token (RFC 6750) for XOAUTH2 and OAUTHBEARER (RFC 7628).
///
/// Asynchronous because a validator may ask the identity provider (RFC 7662 introspection):
/// the session driver awaits it with the other sessions running, never on a blocked worker.
pub trait TokenValidator: Send + Sync + 'static {
    /// Returns the canonical user the token stands for. `claimed` is the user name the client
    /// named (XOAUTH2 `user=`, OAUTHBEARER `a=`), which must match the token's user if given.
    fn validate<'a>(&'a self, token: &'a [u8], claimed: Option<&'a str>) -> Validation<'a>;
}

/// Why a bearer token was refused; mapped to the RFC 7628 §3.2.2 error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Expired, badly signed, wrong issuer or audience, or unknown user: `invalid_token`.
    Invalid(String),
    /// The token lacks a required scope: `insufficient_scope`.
    InsufficientScope(String),
    /// The validator could not decide (e.g. introspection endpoint down): temporary failure.
    Unavailable(String),
}

/// The per-connection SASL environment the session machines hold; it makes one [`Context`]
/// per attempt.
#[derive(Clone)]
pub struct Environment {
    /// The users, for looking names up (audit records, recipients). Credentials are never
    /// checked through it here: mechanisms ask with [`Step::Verify`].
    pub auth: Arc<dyn Authenticator>,
    /// Whether a bearer-token validator is configured (XOAUTH2 and OAUTHBEARER can be
    /// offered).
    pub bearer_tokens: bool,
    /// Whether Kerberos acceptor credentials are loaded (GSSAPI can be offered).
    pub gssapi: bool,
    /// The GSSAPI service name of the protocol: `smtp` or `pop` (RFC 4752 §3.1 with the names
    /// of RFC 4954 and RFC 5034), which DIGEST-MD5's `digest-uri` must name too.
    pub service: &'static str,
    /// Mechanism settings.
    pub options: Arc<Options>,
    /// The server's host name.
    pub hostname: String,
    /// The session id, the stem of each attempt's nonce.
    pub session: String,
    /// 32 random bytes made at connection start; each attempt's randomness is derived from it.
    pub seed: [u8; 32],
    /// When the connection phase started.
    pub now: SystemTime,
    /// Channel-binding data when the connection runs over TLS.
    pub channel_binding: Option<Arc<ChannelBinding>>,
    /// The TLS client certificate, when one chaining to `[auth.external]`'s CA was presented.
    pub client_cert: Option<Arc<ClientCertificate>>,
}

impl Environment {
    /// An SMTP environment with no token validator, no Kerberos, default options and no TLS;
    /// `seed` must be fresh randomness for each connection.
    pub fn basic(
        auth: Arc<dyn Authenticator>,
        hostname: &str,
        session: &str,
        seed: [u8; 32],
    ) -> Self {
        Environment {
            auth,
            bearer_tokens: false,
            gssapi: false,
            service: "smtp",
            options: Arc::new(Options::default()),
            hostname: hostname.to_string(),
            session: session.to_string(),
            seed,
            now: SystemTime::UNIX_EPOCH,
            channel_binding: None,
            client_cert: None,
        }
    }

    /// The context for attempt number `attempt` (1-based) of this connection.
    pub fn context(&self, attempt: u32) -> Context {
        use sha2::{Digest, Sha256};
        // Derive distinct per-attempt randomness from the connection's random seed.
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(attempt.to_be_bytes());
        let random: [u8; 32] = h.finalize().into();
        Context {
            options: self.options.clone(),
            hostname: self.hostname.clone(),
            service: self.service,
            // Random as well as unique: a CRAM-MD5 challenge must never repeat, not even
            // across restarts, or a sniffed exchange could be replayed.
            nonce: format!(
                "{}.{attempt}.{:016x}",
                self.session,
                u64::from_be_bytes([
                    random[0], random[1], random[2], random[3], random[4], random[5], random[6],
                    random[7]
                ])
            ),
            random,
            now: self.now,
            channel_binding: self.channel_binding.clone(),
            client_cert: self.client_cert.clone(),
        }
    }

    /// A uniform draw in [0, 1) for a policy brownout: draw number `n` of `purpose` on this
    /// connection. Derived from the connection's seed under its own label, so it is
    /// independent of every attempt's random bytes (which a mechanism may send to the client,
    /// as SCRAM does with its nonce).
    pub fn policy_roll(&self, purpose: &str, n: u32) -> f64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"mailgate policy roll\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.seed);
        h.update(n.to_be_bytes());
        let d: [u8; 32] = h.finalize().into();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        roll(b)
    }

    /// Whether `desc` can be offered on this connection (apart from the plaintext rule, which
    /// the sessions apply): channel-binding mechanisms need TLS, token mechanisms a validator,
    /// EXTERNAL a client certificate from the `[auth.external]` CA, GSSAPI the keytab's
    /// credentials.
    pub fn can_offer(&self, desc: &Descriptor) -> bool {
        (!desc.channel_binding || self.channel_binding.is_some())
            && (!desc.bearer_token || self.bearer_tokens)
            && (!desc.client_certificate || self.client_cert.is_some())
            && (!desc.kerberos || self.gssapi)
    }
}

/// Turns 8 random bytes into a uniform draw in [0, 1) (a policy brownout's roll).
pub fn roll(bytes: [u8; 8]) -> f64 {
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A registry entry: one per mechanism.
pub struct Descriptor {
    /// The IANA name, upper case.
    pub name: &'static str,
    /// Whether the client sends the password in the clear (PLAIN, LOGIN): offered only over
    /// TLS or to `insecure_plaintext_networks`.
    pub plaintext: bool,
    /// Whether the mechanism needs TLS channel binding (the `-PLUS` variants).
    pub channel_binding: bool,
    /// Whether the mechanism carries an OAuth bearer token (needs a token validator). Tokens
    /// are bearer secrets: these mechanisms follow the plaintext rule too.
    pub bearer_token: bool,
    /// Whether the mechanism needs a TLS client certificate (EXTERNAL).
    pub client_certificate: bool,
    /// Whether an initial response is checked at once (PLAIN's credentials, a bearer token),
    /// rather than starting a longer exchange (LOGIN's user name, NTLM's NEGOTIATE, SCRAM's
    /// client-first message): the throttle takes its slot before such a line.
    pub initial_response_verifies: bool,
    /// Whether the mechanism needs Kerberos acceptor credentials (GSSAPI).
    pub kerberos: bool,
    /// Starts a new exchange.
    pub start: fn(&Context) -> Box<dyn Mechanism>,
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("name", &self.name)
            .field("plaintext", &self.plaintext)
            .field("channel_binding", &self.channel_binding)
            .field("bearer_token", &self.bearer_token)
            .field("client_certificate", &self.client_certificate)
            .field("kerberos", &self.kerberos)
            .finish()
    }
}

/// Every mechanism this build knows.
pub static MECHANISMS: &[Descriptor] = &[
    Descriptor {
        name: "PLAIN",
        plaintext: true,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: true,
        kerberos: false,
        start: plain::start,
    },
    Descriptor {
        name: "LOGIN",
        plaintext: true,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: login::start,
    },
    Descriptor {
        name: "CRAM-MD5",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: cram_md5::start,
    },
    Descriptor {
        name: "DIGEST-MD5",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: digest_md5::start,
    },
    Descriptor {
        name: "NTLM",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: ntlm::start,
    },
    Descriptor {
        name: "SCRAM-SHA-256",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: scram::start_sha256,
    },
    Descriptor {
        name: "SCRAM-SHA-256-PLUS",
        plaintext: false,
        channel_binding: true,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: scram::start_sha256_plus,
    },
    Descriptor {
        name: "SCRAM-SHA-1",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: scram::start_sha1,
    },
    Descriptor {
        name: "SCRAM-SHA-1-PLUS",
        plaintext: false,
        channel_binding: true,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: false,
        kerberos: false,
        start: scram::start_sha1_plus,
    },
    Descriptor {
        name: "XOAUTH2",
        plaintext: false,
        channel_binding: false,
        bearer_token: true,
        client_certificate: false,
        initial_response_verifies: true,
        kerberos: false,
        start: xoauth2::start,
    },
    Descriptor {
        name: "OAUTHBEARER",
        plaintext: false,
        channel_binding: false,
        bearer_token: true,
        client_certificate: false,
        initial_response_verifies: true,
        kerberos: false,
        start: oauthbearer::start,
    },
    Descriptor {
        name: "EXTERNAL",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: true,
        initial_response_verifies: true,
        kerberos: false,
        start: external::start,
    },
    // Only in builds with the `gssapi` feature (MIT Kerberos).
    #[cfg(feature = "gssapi")]
    Descriptor {
        name: "GSSAPI",
        plaintext: false,
        channel_binding: false,
        bearer_token: false,
        client_certificate: false,
        initial_response_verifies: true,
        kerberos: true,
        start: gssapi::start,
    },
];

/// Looks a mechanism up by name, case-insensitively.
pub fn find(name: &str) -> Option<&'static Descriptor> {
    MECHANISMS
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct NoUsers;

    impl Authenticator for NoUsers {
        fn verify_password(&self, _: &str, _: &[u8]) -> crate::auth::Verdict {
            crate::auth::Verdict::BadCredentials
        }

        fn verify_cram_md5(&self, _: &str, _: &[u8], _: &[u8]) -> crate::auth::Verdict {
            crate::auth::Verdict::BadCredentials
        }

        fn verify_apop(&self, _: &str, _: &[u8], _: &[u8]) -> crate::auth::Verdict {
            crate::auth::Verdict::BadCredentials
        }

        fn lookup(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// `auth::BEARER_MECHANISMS` names exactly the registry's bearer-token mechanisms.
    #[test]
    fn the_users_file_knows_the_bearer_mechanisms() {
        let registry: Vec<&str> = MECHANISMS
            .iter()
            .filter(|d| d.bearer_token)
            .map(|d| d.name)
            .collect();
        assert_eq!(registry, crate::auth::BEARER_MECHANISMS);
    }

    #[test]
    fn rolls_are_in_range() {
        assert_eq!(roll([0; 8]), 0.0);
        assert!(roll([0xff; 8]) < 1.0);
    }

    /// The brownout draw must not be readable from what a mechanism sends (SCRAM's nonce is
    /// the attempt's random bytes), and successive draws must differ.
    #[test]
    fn policy_rolls_are_independent_of_attempt_randomness() {
        let env = Environment::basic(Arc::new(NoUsers), "mx.example", "s1", [7; 32]);
        let mut seen = std::collections::HashSet::new();
        for n in 1..=200u32 {
            let r = env.policy_roll("auth", n);
            assert!((0.0..1.0).contains(&r));
            assert!(seen.insert(r.to_bits()), "draw {n} repeats");
            let random = env.context(n).random;
            for chunk in random.chunks(8) {
                let b: [u8; 8] = chunk.try_into().expect("8 bytes");
                assert_ne!(roll(b), r, "draw {n} reuses attempt bytes");
            }
        }
        assert_ne!(env.policy_roll("auth", 1), env.policy_roll("relay", 1));
        let below = (1..=1000u32)
            .filter(|n| env.policy_roll("relay", *n) < 0.5)
            .count();
        assert!((400..600).contains(&below), "{below}");
    }
}
