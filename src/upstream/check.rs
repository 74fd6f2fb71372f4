//! [`Checker`]: a cleartext password checked by logging in to the old server with it.
//!
//! The throttle has admitted the attempt before it gets here (the session driver's
//! verification path asks it first), so the gateway cannot be used to hammer the old server.
//! Then, in order: a remembered success answers at once; a pair refused moments ago is
//! refused again without asking; otherwise one of `max_concurrent` slots is taken (waiting at
//! most `timeout` for one) and the old server is asked. Anything but a clear yes or no from
//! it is a temporary failure (SMTP 454 4.7.0, POP3 `-ERR [SYS/TEMP]`): the client keeps its
//! password and retries. Temporary failures are counted and logged once a minute.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;

use super::cache::{self, Cache};
use super::conn::{self, Connection};
use super::{Login, Outcome};
use crate::auth::{Secret, Verdict};
use crate::clock::Clock;
use crate::config::{AuthUpstream, UpstreamUsers};
use crate::metrics::Metrics;

/// Why a login failed temporarily when the old server could not judge it (for the log line
/// of the login; the checker logs the details once a minute).
pub const UPSTREAM_UNAVAILABLE: &str =
    "temporary failure: the old server could not check the password";

/// Who judges: the old server (with its TLS settings and our greeting name) or a directory.
enum Source {
    Server {
        server: crate::config::OldServer,
        tls: tokio_rustls::TlsConnector,
        helo: String,
    },
    Ldap(super::ldap::Directory),
}

/// How often a run of temporary failures is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Checks passwords against the old server.
pub struct Checker {
    config: AuthUpstream,
    source: Source,
    slots: Arc<Semaphore>,
    cache: Arc<Cache>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// When a temporary failure was last logged, and how many followed unlogged.
    last_logged: Mutex<(Option<SystemTime>, u64)>,
}

impl Checker {
    /// A checker for `config`, greeting SMTP servers as `helo`. Fails if the TLS settings
    /// cannot be loaded (a bad `ca_file`).
    pub fn new(
        config: &AuthUpstream,
        helo: &str,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Checker, String> {
        let source = match &config.source {
            crate::config::CheckSource::Server(server) => Source::Server {
                tls: conn::tls_connector(server)?,
                server: server.clone(),
                helo: helo.to_owned(),
            },
            crate::config::CheckSource::Ldap(dir) => {
                Source::Ldap(super::ldap::Directory::new(dir)?)
            }
        };
        Ok(Checker {
            source,
            config: config.clone(),
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            cache: Arc::new(Cache::new(config.cache_ttl, config.negative_cache_ttl)),
            clock,
            metrics,
            last_logged: Mutex::new((None, 0)),
        })
    }

    /// Whether a password for a user the users file does (`known`) or does not hold goes to
    /// the old server.
    pub fn applies(&self, known: bool) -> bool {
        self.config.users == UpstreamUsers::All || !known
    }

    /// Whether successful checks store the user's forms locally.
    pub fn captures(&self) -> bool {
        self.config.capture
    }

    /// Checks `user`'s `password` against the old server; `Ok` carries the user name as the
    /// users file would hold it.
    pub async fn check(&self, user: &str, password: &Secret) -> Verdict {
        // The name becomes a mailbox name: it must be one the users file could hold.
        let Some(name) = crate::auth::user_name(user) else {
            self.metrics.upstream_check("invalid");
            return Verdict::BadCredentials;
        };
        let login = Login {
            user: user.to_owned(),
            password: password.clone(),
            authzid: None,
        };
        if !login.sendable() {
            self.metrics.upstream_check("invalid");
            return Verdict::BadCredentials;
        }
        let now = self.clock.now();
        if let Some(hash) = self.cache.success(&name, now) {
            let pw = password.clone();
            let hit = tokio::task::spawn_blocking(move || cache::matches(&hash, pw.expose()))
                .await
                .unwrap_or(false);
            if hit {
                self.metrics.upstream_check("cached");
                return Verdict::Ok(name);
            }
        }
        if self.cache.refused(&name, password.expose(), now) {
            self.metrics.upstream_check("refused-cached");
            return Verdict::BadCredentials;
        }
        let timeout = self.config.timeout();
        let Ok(Ok(_slot)) = tokio::time::timeout(timeout, self.slots.acquire()).await else {
            return self.temporary(format!(
                "all {} checks in flight for {timeout:?}",
                self.config.max_concurrent
            ));
        };
        let outcome = match &self.source {
            Source::Server { server, tls, helo } => {
                let dialogue = super::dialogue(server, login, helo);
                let (conn, outcome) = Connection::login(server, tls, dialogue).await;
                if let Some(conn) = conn {
                    tokio::spawn(conn.logout(Duration::from_secs(2)));
                }
                outcome
            }
            Source::Ldap(dir) => dir.check(&login).await,
        };
        match outcome {
            Outcome::LoggedIn => {
                self.metrics.upstream_check("ok");
                let (cache, pw, clock, user) = (
                    self.cache.clone(),
                    password.clone(),
                    self.clock.clone(),
                    name.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    let hash = cache::remember(pw.expose());
                    cache.add_success(&user, hash, clock.now());
                });
                Verdict::Ok(name)
            }
            Outcome::Refused(text) => {
                self.metrics.upstream_check("refused");
                tracing::debug!(user = %name, reply = %text, "old server refused the password");
                self.cache.forget_success(&name);
                self.cache.add_refused(&name, password.expose(), now);
                Verdict::BadCredentials
            }
            Outcome::Temporary(why) => self.temporary(why),
        }
    }

    /// Counts a temporary failure and logs it, once a minute at most.
    fn temporary(&self, why: String) -> Verdict {
        self.metrics.upstream_check("temporary");
        let now = self.clock.now();
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        let due = last
            .0
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= LOG_EVERY);
        if due {
            let suppressed = last.1;
            tracing::warn!(
                source = %self.config.describe(),
                suppressed,
                "old server cannot check passwords: {why} (logins answered with a temporary \
                 failure; logged once a minute)"
            );
            *last = (Some(now), 0);
        } else {
            last.1 += 1;
        }
        Verdict::Temporary(UPSTREAM_UNAVAILABLE)
    }
}
