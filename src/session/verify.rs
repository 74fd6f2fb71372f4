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
//! Before any check of a user's credential, the throttle is asked whether that user may be
//! checked now from that client ([`Throttle::admit`]: a network the user logged in from lately
//! always may); a refused check fails like a wrong credential without being run (the client
//! learns nothing about the password) and the log says why.
//!
//! - A cleartext password of a user the old server still vouches for (`[auth.upstream]`:
//!   users missing from the users file, or every user) goes to the [`upstream::Checker`],
//!   which logs in to the old server asynchronously, within its own timeout and concurrency
//!   limit. With `capture` on, a password it accepted is handed to the derivation thread to
//!   be stored. With `users = "all"`, a user the users file also holds is checked here when
//!   the old server cannot answer.
//!
//! - A GSSAPI context token (builds with the `gssapi` feature) is fed to the Kerberos
//!   acceptor on the blocking pool, holding a slow slot, within the acceptor's own timeout
//!   (`session::gssapi`); like a bearer token it names its user only once it is accepted, so
//!   only the client's address is throttled before it.
//!
//! More sources go behind [`Verifier::verify`]; the protocol cores do not change.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::{Authenticator, Verdict};
use crate::clock::Clock;
use crate::sasl::{Answer, Check, TokenError, TokenValidator};
use crate::throttle::{Throttle, USER_THROTTLED};
use crate::upstream;

/// Answers credential checks for the sessions.
pub struct Verifier {
    users: Arc<dyn Authenticator>,
    tokens: Option<Arc<dyn TokenValidator>>,
    throttle: Arc<Throttle>,
    clock: Arc<dyn Clock>,
    slow_slots: Arc<Semaphore>,
    upstream: Option<Arc<upstream::Checker>>,
    #[cfg(feature = "gssapi")]
    gssapi: Option<Arc<super::gssapi::Acceptor>>,
}

impl Verifier {
    /// A verifier over `users` and, if configured, a bearer-token validator, admitting users
    /// through `throttle`; at most `slow_slots` slow hashes run at once.
    pub fn new(
        users: Arc<dyn Authenticator>,
        tokens: Option<Arc<dyn TokenValidator>>,
        throttle: Arc<Throttle>,
        clock: Arc<dyn Clock>,
        slow_slots: usize,
    ) -> Verifier {
        Verifier {
            users,
            tokens,
            throttle,
            clock,
            slow_slots: Arc::new(Semaphore::new(slow_slots.max(1))),
            upstream: None,
            #[cfg(feature = "gssapi")]
            gssapi: None,
        }
    }

    /// Accepts GSSAPI logins with `acceptor`'s credentials.
    #[cfg(feature = "gssapi")]
    pub fn with_gssapi(mut self, acceptor: Arc<super::gssapi::Acceptor>) -> Verifier {
        self.gssapi = Some(acceptor);
        self
    }

    /// Whether GSSAPI logins can be accepted (the keytab's credentials are loaded).
    pub fn has_gssapi(&self) -> bool {
        #[cfg(feature = "gssapi")]
        return self.gssapi.is_some();
        #[cfg(not(feature = "gssapi"))]
        false
    }

    /// Checks the passwords of the users `checker` applies to against the old server.
    pub fn with_upstream(mut self, checker: Arc<upstream::Checker>) -> Verifier {
        self.upstream = Some(checker);
        self
    }

    /// Whether bearer tokens can be validated (XOAUTH2 and OAUTHBEARER may be offered).
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// The users the checks run against.
    pub fn users(&self) -> &Arc<dyn Authenticator> {
        &self.users
    }

    /// Answers `check` from a client at `peer`; see the module docs for where each kind
    /// runs.
    pub async fn verify(&self, check: Check, peer: IpAddr) -> Answer {
        if let Some(user) = self.throttled_name(&check)
            && !self
                .throttle
                .admit(&user, crate::canonical_ip(peer), self.clock.now())
                .await
        {
            return unavailable(&*self.users, &check, USER_THROTTLED);
        }
        match check {
            Check::Token { token, claimed } => Answer::Token(match &self.tokens {
                Some(validator) => validator.validate(token.expose(), claimed.as_deref()).await,
                None => Err(TokenError::Unavailable(
                    "no bearer-token validator configured".into(),
                )),
            }),
            Check::Password {
                user,
                password,
                authzid,
            } if self.upstream_for(&user).is_some() => {
                self.verify_upstream(user, password, authzid).await
            }
            #[cfg(feature = "gssapi")]
            Check::Gssapi {
                service,
                token,
                context,
            } => self.verify_gssapi(service, token, context).await,
            check if crate::sasl::runs_slow(&*self.users, &check) => self.verify_slow(check).await,
            check => crate::sasl::answer(&*self.users, check),
        }
    }

    /// The user name a check is throttled by: the name it will be checked as (for NTLM the
    /// local part of `user@our-domain` when the whole name is no user). Tokens are not
    /// throttled by user: a token names its user only once it is validated.
    fn throttled_name(&self, check: &Check) -> Option<String> {
        match check {
            Check::Password { user, .. }
            | Check::CramMd5 { user, .. }
            | Check::Apop { user, .. }
            | Check::DigestMd5 { user, .. }
            | Check::Scram { user, .. }
            | Check::Certificate { user, .. } => Some(user.clone()),
            Check::NtHash { user, fallback } => {
                Some(crate::sasl::nt_name(&*self.users, user, fallback.as_deref()).to_owned())
            }
            Check::Token { .. } => None,
            #[cfg(feature = "gssapi")]
            Check::Gssapi { .. } => None,
        }
    }

    /// Steps a GSSAPI context on the acceptor, holding one of the slow slots.
    #[cfg(feature = "gssapi")]
    async fn verify_gssapi(
        &self,
        service: &'static str,
        token: Vec<u8>,
        context: crate::sasl::gssapi::GssContext,
    ) -> Answer {
        use crate::sasl::gssapi::GssAnswer;
        let Some(acceptor) = &self.gssapi else {
            return Answer::Gssapi(GssAnswer::Failed(crate::sasl::Failure::Temporary(
                "temporary failure: no Kerberos acceptor configured",
            )));
        };
        let _slot = self.slow_slots.clone().acquire_owned().await.ok();
        Answer::Gssapi(
            acceptor
                .step(self.users.clone(), service, token, context)
                .await,
        )
    }

    /// The old server's checker, if `user`'s password goes there.
    fn upstream_for(&self, user: &str) -> Option<&Arc<upstream::Checker>> {
        self.upstream
            .as_ref()
            .filter(|u| u.applies(self.users.lookup(user).is_some()))
    }

    /// Checks a cleartext password against the old server (see the module docs).
    async fn verify_upstream(
        &self,
        user: String,
        password: crate::auth::Secret,
        authzid: Option<String>,
    ) -> Answer {
        let Some(up) = self.upstream_for(&user) else {
            return Answer::Verdict(Verdict::BadCredentials);
        };
        match up.check(&user, &password).await {
            Verdict::Ok(name) => {
                // No proxy authorization here either: an authzid must name the same user.
                if authzid.is_some_and(|a| a.to_lowercase() != name) {
                    return Answer::Verdict(Verdict::BadCredentials);
                }
                if up.captures() {
                    // Queued for the derivation thread: the login does not wait for it.
                    self.users.capture(&name, password.expose());
                }
                Answer::Verdict(Verdict::Ok(name))
            }
            Verdict::Temporary(why) if self.users.lookup(&user).is_some() => {
                tracing::debug!(user = %user, "{why}: checked against the users file instead");
                let check = Check::Password {
                    user,
                    password,
                    authzid,
                };
                if crate::sasl::runs_slow(&*self.users, &check) {
                    self.verify_slow(check).await
                } else {
                    crate::sasl::answer(&*self.users, check)
                }
            }
            other => Answer::Verdict(other),
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
                unavailable(&*self.users, &copy, "credential check failed to run")
            }
        }
    }
}

/// The answer that fails `check` as unavailable, for `why` (the check itself did not run).
fn unavailable(users: &dyn Authenticator, check: &Check, why: &'static str) -> Answer {
    match check {
        Check::Password { .. }
        | Check::CramMd5 { .. }
        | Check::Apop { .. }
        | Check::Certificate { .. } => Answer::Verdict(Verdict::Unavailable(why)),
        Check::NtHash { .. } => Answer::NtHash(Err(Verdict::Unavailable(why))),
        Check::DigestMd5 { user, realm, .. } => Answer::DigestMd5 {
            secret: crate::sasl::digest_md5_decoy(user, realm),
            outcome: Err(Verdict::Unavailable(why)),
        },
        Check::Scram { user, hash, .. } => Answer::Scram {
            credentials: users.scram_decoy(user, *hash),
            outcome: Err(Verdict::Unavailable(why)),
        },
        Check::Token { .. } => Answer::Token(Err(TokenError::Unavailable(why.into()))),
        #[cfg(feature = "gssapi")]
        Check::Gssapi { .. } => Answer::Gssapi(crate::sasl::gssapi::GssAnswer::Failed(
            crate::sasl::Failure::Unavailable(why),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::auth::{Secret, UserStore};
    use crate::clock::ManualClock;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn password(user: &str, pw: &str) -> Check {
        Check::Password {
            user: user.into(),
            password: Secret::new(pw.as_bytes().to_vec()),
            authzid: None,
        }
    }

    fn verdict(answer: Answer) -> Verdict {
        answer.into_verdict()
    }

    /// A user under a throttle delay is refused without the credential being checked, for
    /// every kind of check, and admitted again once the delay has passed.
    #[tokio::test]
    async fn a_throttled_user_is_refused_without_checking() {
        let users = "alice:{PLAIN}secret\nslow:{ARGON2ID}$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$\
                     nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4\n";
        let store: Arc<dyn Authenticator> = Arc::new(UserStore::parse(users, "t").unwrap());
        let cfg = crate::config::Throttle {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(900),
            ipv6_prefix: 64,
            known_address_window: Duration::from_secs(30 * 86_400),
        };
        let throttle = Arc::new(Throttle::new(&cfg, vec![]));
        let (desk, elsewhere): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "203.0.113.9".parse().unwrap());
        let clock = Arc::new(ManualClock::new(t(0)));
        let v = Verifier::new(store, None, throttle.clone(), clock.clone(), 2);
        assert_eq!(
            verdict(v.verify(password("alice", "secret"), elsewhere).await),
            Verdict::Ok("alice".into())
        );
        // Alice has logged in from her desk before.
        throttle.record_success(desk, "alice", t(0)).await;
        let ip = "198.51.100.1".parse().unwrap();
        for i in 0..3 {
            throttle.record_failure(ip, Some("Alice"), t(i)).await;
        }
        clock.advance(Duration::from_secs(3));
        // The right password is not even checked while the delay runs...
        assert_eq!(
            verdict(v.verify(password("alice", "secret"), elsewhere).await),
            Verdict::Unavailable(USER_THROTTLED)
        );
        // ... except from a network she logged in from lately.
        assert_eq!(
            verdict(v.verify(password("alice", "secret"), desk).await),
            Verdict::Ok("alice".into())
        );
        let nt = Check::NtHash {
            user: "alice@mail.example".into(),
            fallback: Some("alice".into()),
        };
        assert!(matches!(
            v.verify(nt, elsewhere).await,
            Answer::NtHash(Err(Verdict::Unavailable(USER_THROTTLED)))
        ));
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            verdict(v.verify(password("alice", "secret"), elsewhere).await),
            Verdict::Ok("alice".into())
        );
        // A slow hash is checked on the blocking pool, with the same answers.
        assert_eq!(
            verdict(v.verify(password("slow", "password"), elsewhere).await),
            Verdict::Ok("slow".into())
        );
        assert_eq!(
            verdict(v.verify(password("slow", "wrong"), elsewhere).await),
            Verdict::BadCredentials
        );
        // Without a validator a token cannot be checked: a temporary failure.
        let token = Check::Token {
            token: Secret::new(b"t".to_vec()),
            claimed: None,
        };
        assert!(matches!(
            v.verify(token, elsewhere).await,
            Answer::Token(Err(TokenError::Unavailable(_)))
        ));
    }
}
