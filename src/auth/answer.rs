//! Answers a credential [`Check`] from an [`Authenticator`]: the synchronous half of the
//! verification round trip (the session driver chooses where it runs; bearer tokens are
//! validated elsewhere, asynchronously). Requested authorization identities are held to the
//! authenticated user here, once for every mechanism: this gateway does no proxy
//! authorization.

use crate::sasl::{Answer, Check, TokenError};

use super::{Authenticator, Verdict};

/// Whether answering `check` from `auth` is slow enough to belong on the blocking pool: a
/// password against a costly hash, and SCRAM keys (PBKDF2 when they are derived from a
/// `{PLAIN}` form or for a decoy). Lookups and MD5-based digests are cheap.
pub fn runs_slow(auth: &dyn Authenticator, check: &Check) -> bool {
    match check {
        Check::Password { user, .. } => auth.password_check_is_slow(user),
        Check::Scram { .. } => true,
        Check::CramMd5 { .. } | Check::Apop { .. } | Check::NtHash { .. } => false,
        Check::Token { .. } => false,
    }
}

/// Answers `check` from `auth`; blocking when [`runs_slow`] says so. A cleartext password
/// that verifies is passed on to [`Authenticator::plaintext_login`] (`derive_on_login`).
/// A [`Check::Token`] is answered as unavailable: tokens go to a token validator.
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
        Check::NtHash { user, fallback } => {
            let name = match fallback {
                Some(local) if auth.lookup(&user).is_none() => local,
                _ => user,
            };
            Answer::NtHash(auth.ntlm_hash(&name))
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
        Check::Token { .. } => Answer::Token(Err(TokenError::Unavailable(
            "no bearer-token validator configured".into(),
        ))),
    }
}

/// Whether `authzid` (if any) names the authenticated (canonical) `user`.
fn authorizes(auth: &dyn Authenticator, authzid: Option<&str>, user: &str) -> bool {
    authzid.is_none_or(|a| a == user || auth.lookup(a).as_deref() == Some(user))
}
