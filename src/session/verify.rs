//! The verification path of the session driver: where a credential [`Check`] that a protocol
//! core asked for is answered, without ever blocking a runtime worker.
//!
//! - A password against a deliberately slow hash (Argon2, bcrypt, SHA-crypt, ...) and SCRAM
//!   key derivation run on tokio's blocking pool, a few at a time ([`Verifier::new`]'s
//!   `slow_slots`), so that a burst of them neither stalls other sessions nor exhausts memory.
//!   A session whose check is cheap never waits behind them.
//! - Cheap checks (a `{PLAIN}` or MD5-based form, an NT hash or CRAM-MD5 lookup) run inline:
//!   microseconds, cheaper than a thread hop.
//! - Bearer tokens go to the [`TokenValidator`], which is asynchronous (an RFC 7662
//!   introspection request is awaited with its own timeout while every other session runs).
//!
//! The same path will carry checks against an upstream server, LDAP or Kerberos: each is one
//! more source behind [`Verifier::verify`], and the protocol cores do not change.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::{Authenticator, Verdict};
use crate::sasl::{Answer, Check, TokenError, TokenValidator};

/// Answers credential checks for the sessions.
pub struct Verifier {
    users: Arc<dyn Authenticator>,
    tokens: Option<Arc<dyn TokenValidator>>,
    slow_slots: Arc<Semaphore>,
}

impl Verifier {
    /// A verifier over `users` and, if configured, a bearer-token validator; at most
    /// `slow_slots` slow hashes run at once.
    pub fn new(
        users: Arc<dyn Authenticator>,
        tokens: Option<Arc<dyn TokenValidator>>,
        slow_slots: usize,
    ) -> Verifier {
        Verifier {
            users,
            tokens,
            slow_slots: Arc::new(Semaphore::new(slow_slots.max(1))),
        }
    }

    /// Whether bearer tokens can be validated (XOAUTH2 and OAUTHBEARER may be offered).
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// The users the checks run against.
    pub fn users(&self) -> &Arc<dyn Authenticator> {
        &self.users
    }

    /// Answers `check`; see the module docs for where each kind runs.
    pub async fn verify(&self, check: Check) -> Answer {
        match check {
            Check::Token { token, claimed } => Answer::Token(match &self.tokens {
                Some(validator) => validator.validate(token.expose(), claimed.as_deref()).await,
                None => Err(TokenError::Unavailable(
                    "no bearer-token validator configured".into(),
                )),
            }),
            check if crate::sasl::runs_slow(&*self.users, &check) => self.verify_slow(check).await,
            check => crate::sasl::answer(&*self.users, check),
        }
    }

    /// Runs a slow check on the blocking pool, holding one of the slow slots meanwhile.
    async fn verify_slow(&self, check: Check) -> Answer {
        // The semaphore is never closed; should that change, run the check unbounded rather
        // than refuse the login.
        let _slot = self.slow_slots.clone().acquire_owned().await.ok();
        // Kept to fail the login closed should the check panic (a slow path already: the
        // copy costs nothing next to the hash).
        let copy = check.clone();
        let users = self.users.clone();
        match tokio::task::spawn_blocking(move || crate::sasl::answer(&*users, check)).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!("credential check failed: {e}");
                unavailable(&*self.users, &copy)
            }
        }
    }
}

/// The answer that fails `check` as unavailable (the check itself could not run).
fn unavailable(users: &dyn Authenticator, check: &Check) -> Answer {
    const WHY: &str = "credential check failed to run";
    match check {
        Check::Password { .. } | Check::CramMd5 { .. } | Check::Apop { .. } => {
            Answer::Verdict(Verdict::Unavailable(WHY))
        }
        Check::NtHash { .. } => Answer::NtHash(Err(Verdict::Unavailable(WHY))),
        Check::Scram { user, hash, .. } => Answer::Scram {
            credentials: users.scram_decoy(user, *hash),
            outcome: Err(Verdict::Unavailable(WHY)),
        },
        Check::Token { .. } => Answer::Token(Err(TokenError::Unavailable(WHY.into()))),
    }
}
