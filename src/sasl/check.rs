//! The credential checks a mechanism asks for ([`Check`]) and their answers ([`Answer`]): the
//! round trip that keeps mechanisms sans-IO. A check names what to verify and against whom;
//! the session driver decides where it runs (inline when cheap, on the blocking pool for a
//! slow password hash, asynchronously for a call to an identity provider) and feeds the answer
//! back through [`Mechanism::resume`](super::Mechanism::resume).
//!
//! Secrets travel in [`Secret`] (zeroed on drop, never printed), so the `Debug` of a check is
//! safe to log.
//!
//! [`answer`] answers a check from a credential store ([`Authenticator`]): the synchronous
//! half of the round trip (bearer tokens go to a token validator instead). Requested
//! authorization identities are held to the authenticated user there, once for every
//! mechanism: this gateway does no proxy authorization.

use crate::auth::{Authenticator, ScramCredentials, ScramHash, Secret, Verdict};

use super::TokenError;

/// A credential to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A cleartext password (PLAIN, LOGIN; POP3 USER/PASS). A non-empty `authzid` (PLAIN's
    /// authorization identity) must name the same user, or the check fails (no proxying).
    /// Answered with [`Answer::Verdict`].
    Password {
        /// The user name as the client gave it.
        user: String,
        /// The password as the client sent it (after SASLprep where the mechanism has one).
        password: Secret,
        /// The authorization identity, if the client asked for one.
        authzid: Option<String>,
    },
    /// A CRAM-MD5 response (RFC 2195 §2): `digest` is the hex HMAC-MD5 of `challenge` keyed
    /// with the password. Answered with [`Answer::Verdict`].
    CramMd5 {
        /// The user name as the client gave it.
        user: String,
        /// The challenge the server sent.
        challenge: Vec<u8>,
        /// The client's hex digest.
        digest: Vec<u8>,
    },
    /// A POP3 APOP digest (RFC 1939 §7): hex MD5 of `timestamp` followed by the password.
    /// Answered with [`Answer::Verdict`].
    Apop {
        /// The user name as the client gave it.
        user: String,
        /// The greeting's timestamp.
        timestamp: Vec<u8>,
        /// The client's hex digest.
        digest: Vec<u8>,
    },
    /// The DIGEST-MD5 secret MD5(user:realm:password) of `user` (exactly as the client spelled
    /// it) in `realm` (RFC 2831 §2.1.2.1), for the mechanism to check the response with, or a
    /// decoy when there is none, so that an unknown user costs what a known one does. A given
    /// `authzid` must name the same user. Answered with [`Answer::DigestMd5`].
    DigestMd5 {
        /// The user name as the client gave it.
        user: String,
        /// The realm of the exchange.
        realm: String,
        /// The authorization identity, if the client asked for one.
        authzid: Option<String>,
    },
    /// The stored NT hash of `user` (NTLM, MS-NLMP §3.3.1), for the mechanism to check the
    /// response with. When `user` is no known name, `fallback` (the local part of a
    /// `user@our-domain` name) is tried. Answered with [`Answer::NtHash`].
    NtHash {
        /// The name the client gave.
        user: String,
        /// The name to try when `user` is unknown.
        fallback: Option<String>,
    },
    /// The SCRAM keys of `user` for `hash` (RFC 5802 §3), or a decoy when there are none, so
    /// that the exchange goes on to the proof without revealing an unknown user. A given
    /// `authzid` must name the same user. Answered with [`Answer::Scram`].
    Scram {
        /// The user name (SASLprep'd).
        user: String,
        /// The SCRAM hash.
        hash: ScramHash,
        /// The authorization identity, if the client asked for one.
        authzid: Option<String>,
    },
    /// The user a verified TLS client certificate names (EXTERNAL): it must be a user of the
    /// users file, and a given `authzid` must name the same user. Answered with
    /// [`Answer::Verdict`]: [`Verdict::Unavailable`] for a name that is no user.
    Certificate {
        /// The user the certificate names (after `[auth.external] map`).
        user: String,
        /// The authorization identity, if the client asked for one.
        authzid: Option<String>,
    },
    /// An OAuth 2.0 bearer token (XOAUTH2, OAUTHBEARER). `claimed` is the user the client
    /// named, which must match the token's. Answered with [`Answer::Token`].
    Token {
        /// The bearer token.
        token: Secret,
        /// The user the client named, if any.
        claimed: Option<String>,
    },
    /// A GSSAPI context token (RFC 4752) for the service `service` (`smtp` or `pop`), to be
    /// fed to `context` (created with the service's acceptor credential on first use), and
    /// the client's principal mapped to a user once the context is established. Answered
    /// with [`Answer::Gssapi`].
    #[cfg(feature = "gssapi")]
    Gssapi {
        /// The GSSAPI service name.
        service: &'static str,
        /// The client's context token.
        token: Vec<u8>,
        /// The security context of the exchange.
        context: super::gssapi::GssContext,
    },
}

impl Check {
    /// A short name of the kind of check, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Password { .. } => "password",
            Check::CramMd5 { .. } => "cram-md5",
            Check::Apop { .. } => "apop",
            Check::DigestMd5 { .. } => "digest-md5",
            Check::NtHash { .. } => "nt-hash",
            Check::Scram { .. } => "scram",
            Check::Certificate { .. } => "certificate",
            Check::Token { .. } => "token",
            #[cfg(feature = "gssapi")]
            Check::Gssapi { .. } => "gssapi",
        }
    }
}

/// The answer to a [`Check`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// For [`Check::Password`], [`Check::CramMd5`] and [`Check::Apop`].
    Verdict(Verdict),
    /// For [`Check::DigestMd5`]: the secret to check the response with (a decoy's when
    /// `outcome` is an error), and the canonical user or the verdict the exchange ends with.
    DigestMd5 {
        /// MD5(user:realm:password), 16 bytes.
        secret: Secret,
        /// The canonical user, or the verdict the exchange must end with.
        outcome: Result<String, Verdict>,
    },
    /// For [`Check::NtHash`]: the canonical user and the stored NT hash, or why not.
    NtHash(Result<(String, Secret), Verdict>),
    /// For [`Check::Scram`]: the keys to run the exchange with (a decoy's when `outcome` is an
    /// error), and the canonical user or the verdict the exchange must end with.
    Scram {
        /// The keys (salt, iterations, StoredKey, ServerKey).
        credentials: ScramCredentials,
        /// The canonical user, or the verdict a mock exchange ends with.
        outcome: Result<String, Verdict>,
    },
    /// For [`Check::Token`]: the canonical user, or why the token was refused.
    Token(Result<String, TokenError>),
    /// For [`Check::Gssapi`]: the next token, the established context's user, or why not.
    #[cfg(feature = "gssapi")]
    Gssapi(super::gssapi::GssAnswer),
}

impl Answer {
    /// The verdict of an answer for a check that expects one; any other answer (a driver
    /// bug) fails closed.
    pub fn into_verdict(self) -> Verdict {
        match self {
            Answer::Verdict(v) => v,
            _ => Verdict::Unavailable("credential check answered with the wrong kind"),
        }
    }
}

/// Why a [`Check::Certificate`] failed for a certificate whose user is not in the users file.
pub const NO_SUCH_USER: &str = "the client certificate names no user of the users file";

/// Whether answering `check` from `auth` is slow enough to belong on the blocking pool: a
/// password against a costly hash, and SCRAM keys (PBKDF2 when they are derived from a
/// `{PLAIN}` form or for a decoy). Lookups and MD5-based digests are cheap.
pub fn runs_slow(auth: &dyn Authenticator, check: &Check) -> bool {
    match check {
        Check::Password { user, .. } => auth.password_check_is_slow(user),
        Check::Scram { .. } => true,
        Check::CramMd5 { .. }
        | Check::Apop { .. }
        | Check::DigestMd5 { .. }
        | Check::NtHash { .. } => false,
        Check::Certificate { .. } => false,
        Check::Token { .. } => false,
        // Not answered from the users file: the verification path steps the context itself.
        #[cfg(feature = "gssapi")]
        Check::Gssapi { .. } => false,
    }
}

/// Answers `check` from `auth`; blocking when [`runs_slow`] says so. A cleartext password
/// that verifies is passed on to [`Authenticator::plaintext_login`] (`derive_on_login`).
/// A [`Check::Token`] is answered as unavailable: tokens go to a token validator (and a
/// GSSAPI token to the Kerberos acceptor).
pub fn answer(auth: &dyn Authenticator, check: Check) -> Answer {
    match check {
        Check::Password {
            user,
            password,
            authzid,
        } => {
            let verdict = match auth.verify_password(&user, password.expose()) {
                Verdict::Ok(canonical) if !authorizes(auth, authzid.as_deref(), &canonical) => {
                    Verdict::BadCredentials
                }
                Verdict::Ok(canonical) => {
                    auth.plaintext_login(&canonical, password.expose());
                    Verdict::Ok(canonical)
                }
                other => other,
            };
            Answer::Verdict(verdict)
        }
        Check::CramMd5 {
            user,
            challenge,
            digest,
        } => Answer::Verdict(auth.verify_cram_md5(&user, &challenge, &digest)),
        Check::Apop {
            user,
            timestamp,
            digest,
        } => Answer::Verdict(auth.verify_apop(&user, &timestamp, &digest)),
        Check::DigestMd5 {
            user,
            realm,
            authzid,
        } => match auth.digest_md5_secret(&user, &realm) {
            Ok((canonical, secret)) => Answer::DigestMd5 {
                secret,
                outcome: if authorizes(auth, authzid.as_deref(), &canonical) {
                    Ok(canonical)
                } else {
                    Err(Verdict::BadCredentials)
                },
            },
            Err(verdict) => Answer::DigestMd5 {
                secret: digest_md5_decoy(&user, &realm),
                outcome: Err(verdict),
            },
        },
        Check::NtHash { user, fallback } => {
            Answer::NtHash(auth.ntlm_hash(nt_name(auth, &user, fallback.as_deref())))
        }
        Check::Scram {
            user,
            hash,
            authzid,
        } => match auth.scram_credentials(&user, hash) {
            Ok((canonical, credentials)) => Answer::Scram {
                credentials,
                // The keys are real either way, so the exchange runs to the proof as usual.
                outcome: if authorizes(auth, authzid.as_deref(), &canonical) {
                    Ok(canonical)
                } else {
                    Err(Verdict::BadCredentials)
                },
            },
            Err(verdict) => Answer::Scram {
                credentials: auth.scram_decoy(&user, hash),
                outcome: Err(verdict),
            },
        },
        Check::Certificate { user, authzid } => Answer::Verdict(match auth.lookup(&user) {
            None => Verdict::Unavailable(NO_SUCH_USER),
            Some(canonical) if authorizes(auth, authzid.as_deref(), &canonical) => {
                Verdict::Ok(canonical)
            }
            Some(_) => Verdict::BadCredentials,
        }),
        Check::Token { .. } => Answer::Token(Err(TokenError::Unavailable(
            "no bearer-token validator configured".into(),
        ))),
        #[cfg(feature = "gssapi")]
        Check::Gssapi { .. } => Answer::Gssapi(super::gssapi::GssAnswer::Failed(
            super::Failure::Temporary("temporary failure: no Kerberos acceptor configured"),
        )),
    }
}

/// A DIGEST-MD5 secret for a user who has none: made the way a `{PLAIN}` user's is, so it
/// costs the same; the exchange it is used in fails whatever the response.
pub fn digest_md5_decoy(user: &str, realm: &str) -> Secret {
    Secret::new(crate::auth::digest_md5::secret(user, realm, b"decoy password").to_vec())
}

/// The name an NT-hash check is made as: `user` when it is a known name, else `fallback`
/// (the local part of `user@our-domain`) when there is one.
pub fn nt_name<'a>(auth: &dyn Authenticator, user: &'a str, fallback: Option<&'a str>) -> &'a str {
    match fallback {
        Some(local) if auth.lookup(user).is_none() => local,
        _ => user,
    }
}

/// Whether `authzid` (if any) names the authenticated (canonical) `user`.
fn authorizes(auth: &dyn Authenticator, authzid: Option<&str>, user: &str) -> bool {
    authzid.is_none_or(|a| a == user || auth.lookup(a).as_deref() == Some(user))
}
