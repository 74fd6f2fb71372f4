//! The state sessions use, in one place: [`Gateway`] holds the users and the session
//! verifier, the migration policy, the networks that decide what a client may do, TLS, the
//! throttle, the POP-before-SMTP allowlist, the spool, the mailbox locks, the audit log and
//! the metrics. The session driver, the admin endpoint and the background tasks use it; it
//! uses none of them (arrows point one way: listener -> driver -> protocol core; driver and
//! admin -> gateway).
//!
//! `networks.rs` holds the per-address settings; `reload.rs` the typed SIGHUP reload, which
//! says which sections changed and which of those need a restart.

mod networks;
pub mod refusals;
mod reload;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::allowlist::Allowlist;
use crate::auth::{Authenticator, UserStore};
use crate::clock::Clock;
use crate::config::Config;
use crate::relay::Notifier;
use crate::sasl::Descriptor;
use crate::spool::Spool;
use crate::store::MailboxLocks;
use crate::store::memory::{MemoryAllowlist, MemoryMailboxLocks};
use crate::throttle::Throttle;

pub use networks::Networks;
pub use reload::{Reloaded, Section};

/// A session's finished TLS handshake, as the protocol cores see it.
pub type TlsPhase<'a> = &'a crate::tls::TlsInfo;

/// Errors that stop the gateway's state from opening.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The users file could not be loaded.
    #[error("users file: {0}")]
    Users(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    /// `[auth.oauth]` could not be set up.
    #[error("[auth.oauth]: {0}")]
    OAuth(#[from] crate::oauth::Error),
    /// The spool could not be opened.
    #[error("spool: {0}")]
    Spool(String),
    /// The allowlist journal could not be opened or read.
    #[error("allowlist journal {0}")]
    Journal(String),
    /// The old server's settings could not be loaded (its CA file).
    #[error("{0}")]
    Upstream(String),
    /// The Kerberos acceptor credentials could not be acquired from the keytab.
    #[error("{0}")]
    Gssapi(String),
    /// `[cluster]` could not be set up (a bad URL, an unreadable password file).
    #[error("{0}")]
    Cluster(String),
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The state every session uses: users and the verifier, the policy, networks, TLS, the
/// throttle, the allowlist, the spool, the mailbox locks, the audit log and the metrics.
pub struct Gateway {
    /// The configuration.
    pub config: Config,
    /// Credentials.
    pub users: Arc<dyn Authenticator>,
    /// The same users file, for reloading it (see [`Gateway::reload_users`]).
    pub user_store: Arc<UserStore>,
    /// Enabled SASL mechanisms, in the configured order.
    pub mechanisms: Vec<&'static Descriptor>,
    /// The networks and domains that decide what a client may do; replaced on SIGHUP, read
    /// once per connection (see [`Gateway::networks`]).
    networks: std::sync::RwLock<Arc<Networks>>,
    /// The POP-before-SMTP allowlist service (every change goes through it).
    pub allowlist: Arc<Allowlist>,
    /// Failed-login throttling.
    pub throttle: Arc<Throttle>,
    /// The durable spool.
    pub spool: Arc<Spool>,
    /// Wakes the relay worker after a commit.
    pub notifier: Notifier,
    /// TLS for implicit-TLS listeners and STARTTLS/STLS, with the `tls-server-end-point`
    /// channel-binding data of its certificate; replaced on SIGHUP (see [`Gateway::reload`]).
    tls: std::sync::RwLock<Arc<crate::tls::ServerTls>>,
    /// SASL mechanism settings.
    pub sasl_options: Arc<crate::sasl::Options>,
    /// Answers the credential checks of every session (slow hashes on the blocking pool,
    /// bearer tokens asynchronously).
    pub verifier: crate::session::Verifier,
    /// The audit log.
    pub audit: crate::audit::Auditor,
    /// `[pop3.proxy]`: the old server that serves the mailboxes not moved yet.
    pub pop3_proxy: Option<Arc<crate::upstream::proxy::Pop3Proxy>>,
    /// Admin endpoint: counters fed by the audit events (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Admin endpoint: the last SMTP refusals (`GET /api/refusals`).
    pub refusals: refusals::Recent,
    /// Notices to users under warn/brownout rules.
    pub notices: Arc<crate::notices::Notices>,
    /// The migration policy; replaced on SIGHUP, read once per connection phase.
    policy: std::sync::RwLock<Arc<crate::policy::Policy>>,
    /// `[notices]` as last loaded (SIGHUP changes it); the digest task reads it.
    notices_config: std::sync::RwLock<crate::config::Notices>,
    /// Wakes the digest task after a reload changed `[notices]`.
    pub(crate) notices_changed: tokio::sync::Notify,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Maildrop locks: one POP3 session per mailbox (RFC 1939 §8: exclusive access).
    pub mailboxes: Arc<dyn MailboxLocks>,
    /// `[cluster]`: the Redis connection shared with other nodes, if configured.
    pub cluster: Option<Arc<crate::store::cluster::Cluster>>,
    /// What POP3 sessions know of each maildrop between sessions (`maildir::cache`).
    pub mailbox_cache: crate::maildir::Cache,
    next_session: AtomicU64,
    started: u64,
    pub(crate) per_ip: DashMap<IpAddr, usize>,
    /// When each user under attack was last logged as such.
    under_attack: crate::throttle::AttackLog,
    /// Open client connections per client network (`[limits] max_connections_per_network`).
    pub(crate) per_network: DashMap<ipnet::IpNet, usize>,
}

/// What [`Gateway::open`] started besides the state: the relay worker and the audit writer,
/// stopped in that order at shutdown, and the users file's stamp for its watcher.
pub struct Started {
    /// The relay worker.
    pub relay_task: tokio::task::JoinHandle<()>,
    /// Stops the relay worker.
    pub relay_shutdown: CancellationToken,
    /// Stops the cluster watcher (`[cluster]`), if there is one.
    pub cluster_shutdown: CancellationToken,
    /// The audit writer, if the audit log is on.
    pub audit_task: Option<tokio::task::JoinHandle<()>>,
    /// Stops the audit writer (after everything else, so it drains what they recorded).
    pub audit_shutdown: CancellationToken,
    /// The users file as it was just before it was loaded, so that an edit made while the
    /// gateway was starting is seen by the watcher.
    pub users_stamp: Option<crate::auth::UsersStamp>,
}

impl Gateway {
    /// Opens the state the sessions use: creates the state folder, loads the users file, the
    /// TLS certificate and the allowlist snapshot, opens the spool, and starts the audit
    /// writer and the relay worker (stopped through the returned [`Started`]). Binds nothing.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<(Arc<Gateway>, Started), Error> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| Error::StateDir {
            path: config.state_dir.display().to_string(),
            source,
        })?;
        // Stamped before it is read: a change made while it loads is reloaded by the watcher.
        let users_stamp = crate::auth::users_file_stamp(&config.auth.users_file);
        let users =
            UserStore::load(&config.auth.users_file).map_err(|e| Error::Users(e.to_string()))?;
        tracing::info!(users = users.len(), file = %config.auth.users_file.display(), "users loaded");
        log_skipped_lines(&config.auth.users_file, &users);
        // derive_on_login: a successful plaintext login stores the forms stronger mechanisms
        // need (SCRAM keys, ...), so users can move to them without a password reset.
        let users = users.with_digest_realm(&config.auth.digest_md5_realm);
        let users = if config.auth.derive_on_login {
            users.with_derivation(&config.auth.users_file, &config.auth.mechanisms)
        } else {
            users
        };
        // [auth.upstream] capture: a password the old server accepted is stored here.
        let users = match &config.auth.upstream {
            Some(up) if up.capture => {
                users.with_capture(&config.auth.users_file, &config.auth.mechanisms)
            }
            _ => users,
        };
        let tls = crate::tls::server(&config.tls, &config.hostname, config.auth.external.as_ref())?;
        if tls.origin == crate::tls::Origin::SelfSigned {
            tracing::warn!(
                hostname = %config.hostname,
                "no [tls] cert/key configured: using a self-signed certificate made at start"
            );
        }
        let mechanisms = config
            .auth
            .mechanisms
            .iter()
            .filter_map(|m| crate::sasl::find(m))
            .collect();
        let pbs = &config.pop_before_smtp;
        let mut allowlist_store =
            MemoryAllowlist::new(pbs.ttl, pbs.max_entries, pbs.shared_address_warn_users);
        if pbs.enabled {
            allowlist_store = allowlist_store.with_snapshot(pbs.snapshot.clone());
            match allowlist_store.load(&pbs.snapshot, clock.now()) {
                Ok(n) if n > 0 => tracing::info!(entries = n, "allowlist restored"),
                Ok(_) => {}
                Err(e) => tracing::warn!("allowlist snapshot unreadable, starting empty: {e}"),
            }
            // Without its journal the list would forget acknowledged changes in a crash:
            // refuse to start rather than run that way.
            let journal = crate::config::allowlist_journal(&pbs.snapshot);
            match allowlist_store.open_journal(&journal, clock.now()) {
                Ok(n) if n > 0 => tracing::info!(changes = n, "allowlist journal replayed"),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Journal(format!("{}: {e}", journal.display())));
                }
            }
        }
        let spool =
            Arc::new(Spool::open(&config.delivery.spool).map_err(|e| Error::Spool(e.to_string()))?);
        spool.set_commit_window(config.delivery.commit_window);
        spool.set_max_queue(config.limits.max_queue);
        let audit_shutdown = CancellationToken::new();
        let (audit, audit_task) = match &config.audit {
            Some(a) => {
                let settings = crate::audit::Settings {
                    path: a.path.clone(),
                    max_size: a.max_size,
                    keep: a.keep,
                };
                let (auditor, task) =
                    crate::audit::Auditor::start(settings, audit_shutdown.clone());
                (auditor, Some(task))
            }
            None => (crate::audit::Auditor::disabled(), None),
        };
        // Admin endpoint: every audit event also feeds the metrics (before the relay's clone).
        let metrics = crate::metrics::Metrics::new();
        let audit = audit.with_observer(metrics.observer());
        // [cluster]: the shared backends, each over this node's own (its view while Redis
        // is down); the watcher connects, follows changes and writes back after an outage.
        let cluster = match &config.cluster {
            Some(c) => Some(Arc::new(
                crate::store::cluster::Cluster::new(c, &config.hostname, clock.clone())
                    .map_err(Error::Cluster)?,
            )),
            None => None,
        };
        let cluster_shutdown = CancellationToken::new();
        let allowlist_store: Arc<dyn crate::store::AllowlistStore> = match &cluster {
            Some(c) => {
                let shared = Arc::new(crate::store::cluster::RedisAllowlist::new(
                    c.clone(),
                    allowlist_store,
                ));
                tracing::info!(redis = %c.display(), prefix = %c.prefix(), "cluster: state shared through Redis");
                tokio::spawn(c.clone().watch(shared.clone(), cluster_shutdown.clone()));
                shared
            }
            None => Arc::new(allowlist_store),
        };
        let allowlist = Arc::new(Allowlist::new(
            allowlist_store,
            crate::allowlist::Settings::from_config(pbs),
            audit.clone(),
        ));
        let relay_shutdown = CancellationToken::new();
        let mut relay_settings =
            crate::relay::Settings::from_config(&config.hostname, &config.delivery);
        relay_settings.audit = audit.clone();
        relay_settings.metrics = metrics.clone();
        let (relay_task, notifier) = crate::relay::spawn(
            relay_settings,
            spool.clone(),
            clock.clone(),
            relay_shutdown.clone(),
        );
        let user_store = Arc::new(users);
        let tokens = match &config.auth.oauth {
            Some(o) => Some(Arc::new(crate::oauth::Validator::from_config(
                o,
                user_store.clone(),
                clock.clone(),
            )?) as Arc<dyn crate::sasl::TokenValidator>),
            None => None,
        };
        let known = crate::store::known::MemoryKnownAddresses::new(
            config.auth.throttle.known_address_window,
            crate::throttle::MAX_KEYS,
        )
        .with_snapshot(known_networks_file(&config));
        match known.load(&known_networks_file(&config), clock.now()) {
            Ok(n) if n > 0 => tracing::info!(users = n, "known client networks restored"),
            Ok(_) => {}
            Err(e) => tracing::warn!("known client networks unreadable, starting empty: {e}"),
        }
        let throttle = match &cluster {
            Some(c) => Throttle::with_counters(
                &config.auth.throttle,
                config.relay.trusted_networks.clone(),
                Arc::new(crate::store::cluster::RedisCounters::new(
                    c.clone(),
                    crate::store::memory::MemoryCounters::new(crate::throttle::MAX_KEYS),
                )),
            ),
            None => Throttle::new(&config.auth.throttle, config.relay.trusted_networks.clone()),
        };
        let throttle = Arc::new(throttle.with_known(Arc::new(known)));
        let users: Arc<dyn Authenticator> =
            Arc::new(crate::auth::DeferredDerivation::new(user_store.clone()));
        let started = crate::clock::unix_secs(clock.now());

        let sasl_options = crate::sasl::Options {
            ntlm_domain: config.auth.ntlm_domain.clone(),
            ntlm_v1: config.auth.ntlm_v1,
            channel_binding_offered: config.auth.mechanisms.iter().any(|m| m.ends_with("-PLUS")),
            digest_md5_realm: config.auth.digest_md5_realm.clone(),
            digest_md5_hosts: config.auth.digest_md5_hosts.clone(),
        };
        let notices = Arc::new(crate::notices::Notices::new(
            config.notices.interval,
            config.delivery.maildir.clone(),
            config.hostname.clone(),
        ));
        let path = notices_file(&config);
        match notices.load(&path, clock.now()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(notices = n, "notices sent before the restart remembered"),
            Err(e) => {
                tracing::warn!(file = %path.display(), "notices file unreadable, ignored: {e}")
            }
        }
        // Password hashes are CPU- and memory-bound: a few per core at a time.
        let mut verifier = crate::session::Verifier::new(
            users.clone(),
            tokens,
            throttle.clone(),
            clock.clone(),
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        );
        if let Some(up) = &config.auth.upstream {
            let checker =
                crate::upstream::Checker::new(up, &config.hostname, clock.clone(), metrics.clone())
                    .map_err(|e| Error::Upstream(format!("[auth.upstream] {e}")))?;
            tracing::info!(
                source = %up.describe(),
                capture = up.capture,
                "passwords of users not moved yet are checked against the old server"
            );
            verifier = verifier.with_upstream(Arc::new(checker));
        }
        #[cfg(feature = "gssapi")]
        if let Some(g) = &config.auth.gssapi {
            let acceptor = crate::session::gssapi::Acceptor::new(g, &config.hostname)
                .map_err(|e| Error::Gssapi(format!("[auth.gssapi] {e}")))?;
            tracing::info!(
                keytab = %g.keytab.display(),
                realms = ?g.realms,
                "GSSAPI logins accepted for smtp/{0} and pop/{0}",
                config.hostname
            );
            verifier = verifier.with_gssapi(Arc::new(acceptor));
        }
        let pop3_proxy = match &config.pop3_proxy {
            Some(p) => {
                let proxy = crate::upstream::proxy::Pop3Proxy::new(p).map_err(Error::Upstream)?;
                tracing::info!(server = %p.server.address, "mailboxes not moved yet are served from the old server");
                Some(Arc::new(proxy))
            }
            None => None,
        };
        let gateway = Arc::new(Gateway {
            pop3_proxy,
            user_store,
            networks: std::sync::RwLock::new(Arc::new(Networks::from_config(&config))),
            users,
            mechanisms,
            allowlist,
            throttle,
            spool,
            notifier,
            tls: std::sync::RwLock::new(Arc::new(tls)),
            sasl_options: Arc::new(sasl_options),
            verifier,
            audit,
            metrics,
            refusals: refusals::Recent::default(),
            policy: std::sync::RwLock::new(config.policy.clone()),
            notices_config: std::sync::RwLock::new(config.notices.clone()),
            notices_changed: tokio::sync::Notify::new(),
            notices,
            clock,
            mailboxes: match &cluster {
                Some(c) => Arc::new(crate::store::cluster::RedisLocks::new(c.clone())),
                None => Arc::new(MemoryMailboxLocks::new()),
            },
            cluster,
            mailbox_cache: crate::maildir::Cache::new(),
            next_session: AtomicU64::new(1),
            started,
            per_ip: DashMap::new(),
            under_attack: Default::default(),
            per_network: DashMap::new(),
            config,
        });
        Ok((
            gateway,
            Started {
                relay_task,
                relay_shutdown,
                cluster_shutdown,
                audit_task,
                audit_shutdown,
                users_stamp,
            },
        ))
    }

    /// A fresh session id: unique for this process run, short enough for every log line.
    pub fn next_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        // Start time plus a counter: unique across restarts, sortable, short.
        format!("{:08x}{n:06x}", self.started & 0xffff_ffff)
    }

    /// The SASL environment for one connection phase of the protocol whose GSSAPI service name
    /// is `service` (`smtp`, `pop`; DIGEST-MD5's `digest-uri` names it too); `tls` is the TLS
    /// session, if any, with the setup it was made with: the `tls-server-end-point` hash of
    /// its certificate, and the `[auth.external]` CA its client certificate (if any) is judged
    /// by, by the gateway's clock.
    pub fn sasl_environment(
        &self,
        service: &'static str,
        session: &str,
        tls: Option<TlsPhase<'_>>,
    ) -> crate::sasl::Environment {
        crate::sasl::Environment {
            auth: self.users.clone(),
            bearer_tokens: self.verifier.has_tokens(),
            gssapi: self.verifier.has_gssapi(),
            service,
            options: self.sasl_options.clone(),
            hostname: self.config.hostname.clone(),
            session: session.to_string(),
            seed: rand::random(),
            now: self.clock.now(),
            channel_binding: tls.map(|t| Arc::new(t.channel_binding.clone())),
            client_cert: tls.and_then(|t| t.client_cert.clone()),
        }
    }

    /// Records a failed login (`note` says why) and returns how long to wait before answering
    /// it: the fixed `failure_delay`. (The throttle's growing delay is waited before the next
    /// check, in [`Gateway::credential_slot`], where concurrent attempts queue for it.) A login
    /// the per-user limit refused without a check counts against its address only: it does
    /// not push the user's delay further out.
    pub async fn auth_failure_delay(&self, ip: IpAddr, user: Option<&str>, note: &str) -> Duration {
        // Nothing was judged wrong (the old server could not check it): no failure, no delay.
        if crate::sasl::temporary_note(note) {
            return Duration::ZERO;
        }
        if crate::throttle::refused_unchecked(note) {
            self.metrics.login_refused_unchecked();
            if let Some(u) = user {
                self.under_attack.note(u, ip, self.clock.now());
            }
        }
        let user = user.filter(|_| !crate::throttle::refused_unchecked(note));
        self.throttle
            .record_failure(crate::canonical_ip(ip), user, self.clock.now())
            .await;
        self.config.auth.failure_delay
    }

    /// Drops a notice into `user`'s mailbox if one is due for this mechanism (a `notify`
    /// policy rule matched); the write happens off the async workers.
    pub fn notify_user(
        &self,
        user: &str,
        record: &crate::audit::Record,
        event: &crate::audit::Event,
    ) {
        let now = self.clock.now();
        if !self.notices.due(user, &record.mechanism, now) {
            return;
        }
        let notice = crate::notices::Notice {
            user: user.to_string(),
            mechanism: record.mechanism.clone(),
            client: event.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            // At AUTH time no header has been seen yet in this session: name the software this
            // user's mail last carried, else what the client called itself (EHLO name or
            // POP3 client hint).
            software: event
                .client_software
                .clone()
                .or_else(|| self.notices.software(user))
                .or_else(|| event.client_name.clone()),
            refuse_from: record.refuse_from.clone(),
            message: record.reason.clone(),
        };
        let notices = self.notices.clone();
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            // In a cluster, the first node to claim the (user, mechanism) pair for the
            // interval sends the notice.
            if let Some(c) = cluster {
                let what = format!("notice:{}:{}", notice.user, notice.mechanism);
                if !c.claim(&what, notices.interval()).await {
                    return;
                }
            }
            let delivered = tokio::task::spawn_blocking(move || {
                let result = notices.deliver(&notice, now);
                (notice, result)
            })
            .await;
            match delivered {
                Ok((notice, Ok(_))) => {
                    tracing::info!(user = %notice.user, mechanism = %notice.mechanism, "legacy-auth notice delivered")
                }
                Ok((notice, Err(e))) => {
                    tracing::warn!(user = %notice.user, "cannot deliver legacy-auth notice: {e}")
                }
                Err(e) => tracing::warn!("legacy-auth notice: {e}"),
            }
        });
    }

    /// Runs the server side of a TLS handshake on `tcp` within `limits.tls_handshake_timeout`,
    /// with the certificate in force; returns the stream and what the session knows of the
    /// handshake (fixed then: a SIGHUP reload later does not change what this session's
    /// channel binding refers to), or `None` (with a log line naming `what`) if it fails or
    /// times out. A client `peer` in `[tls] legacy_networks` gets the OpenSSL acceptor, which
    /// also allows TLS 1.0 and 1.1; everyone else (and `None`: the admin endpoint) rustls.
    pub async fn accept_tls<S>(
        &self,
        tcp: S,
        what: &str,
        peer: Option<IpAddr>,
    ) -> Option<(crate::tls::ServerStream<S>, crate::tls::TlsInfo)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let limit = self.config.limits.tls_handshake_timeout;
        let server_tls = self.tls();
        #[cfg(feature = "legacy-tls")]
        if let Some(legacy) = server_tls
            .legacy
            .as_ref()
            .filter(|l| peer.is_some_and(|ip| l.covers(crate::canonical_ip(ip))))
        {
            return match tokio::time::timeout(limit, legacy.accept(tcp)).await {
                Ok(Ok((tls, info))) => Some((crate::tls::ServerStream::OpenSsl(tls), info)),
                Ok(Err(e)) => {
                    tracing::info!("{what} handshake (legacy network) failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::info!("{what} handshake (legacy network) timed out");
                    None
                }
            };
        }
        #[cfg(not(feature = "legacy-tls"))]
        let _ = peer;
        match tokio::time::timeout(limit, server_tls.acceptor.clone().accept(tcp)).await {
            Ok(Ok(tls)) => {
                let now = self.clock.now();
                let info = crate::tls::TlsInfo::of(tls.get_ref().1, &server_tls, now);
                Some((crate::tls::ServerStream::Rustls(tls), info))
            }
            Ok(Err(e)) => {
                tracing::info!("{what} handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::info!("{what} handshake timed out");
                None
            }
        }
    }

    /// The networks and local domains in force (cheap: an `Arc` clone).
    pub fn networks(&self) -> Arc<Networks> {
        self.networks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The TLS setup in force (cheap: an `Arc` clone).
    pub fn tls(&self) -> Arc<crate::tls::ServerTls> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current migration policy.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            // A writer panicked mid-swap; the Arc inside is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `[notices]` as in force now.
    pub fn notices_config(&self) -> crate::config::Notices {
        match self.notices_config.read() {
            Ok(n) => n.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The delay implied by the failures remembered for `ip` (and `user`, if given), for
    /// inspection and tests; see [`Throttle::delay`].
    pub async fn auth_throttle(&self, ip: IpAddr, user: Option<&str>) -> Duration {
        self.throttle
            .delay(crate::canonical_ip(ip), user, self.clock.now())
            .await
    }

    /// Takes, before a line that checks a credential (PASS, APOP, PLAIN's response, LOGIN's
    /// password, NTLM's AUTHENTICATE, SCRAM's client-final message, a bearer token; `reserve`
    /// says whether this line is one), the client address's next throttle slot and returns how
    /// long the session must wait for it. Concurrent attempts from one address queue, a success
    /// is no faster to learn than a failure, and a multi-step exchange costs one slot, taken
    /// where the check happens (opening exchanges early gains nothing). The session driver
    /// waits, watching the client: one that leaves gives the slot back
    /// ([`Gateway::release_credential_slot`]). The check itself then runs through
    /// [`Gateway::verifier`], which applies the per-user limit once the mechanism has named
    /// the user.
    pub async fn credential_slot(&self, ip: IpAddr, reserve: bool) -> Duration {
        if !reserve {
            return Duration::ZERO;
        }
        self.throttle
            .reserve_addr(crate::canonical_ip(ip), self.clock.now())
            .await
    }

    /// Gives back the slot [`Gateway::credential_slot`] took for a client that left before it.
    pub async fn release_credential_slot(&self, ip: IpAddr) {
        self.throttle
            .release_addr(crate::canonical_ip(ip), self.clock.now())
            .await;
    }

    /// Records a successful login (resets the throttle).
    pub async fn auth_succeeded(&self, ip: IpAddr, user: &str) {
        self.throttle
            .record_success(crate::canonical_ip(ip), user, self.clock.now())
            .await;
    }
}

/// Where the throttle's known client networks are saved across restarts.
pub(crate) fn known_networks_file(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("known_networks.json")
}

/// Where the notices' rate limit is saved across restarts.
pub(crate) fn notices_file(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("notices.json")
}

/// Logs each users-file line skipped for a password scheme not supported here, as
/// `FILE:LINE: ...`, so that the admin sees which users cannot log in and why.
pub(crate) fn log_skipped_lines(path: &std::path::Path, users: &UserStore) {
    for w in users.warnings() {
        tracing::warn!("{}:{}: {}; {}", path.display(), w.line, w.message, w.hint);
    }
}
