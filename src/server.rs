//! Listeners, the accept loop, connection caps and graceful shutdown.
//!
//! [`run`] binds every configured listener, starts the relay worker and the allowlist
//! housekeeping, and accepts connections until the shutdown token fires. Each connection runs
//! in its own task holding a permit from the global semaphore and a slot in the per-address
//! count; both are released when the task ends, however it ends. On shutdown the listeners stop
//! accepting, sessions get `shutdown_grace` to finish (each answers 421 / -ERR at its next
//! read), and the allowlist is saved.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::allowlist::Allowlist;
use crate::auth::{Authenticator, UserStore};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SmtpRole};
use crate::relay::Notifier;
use crate::sasl::Descriptor;
use crate::spool::Spool;
use crate::throttle::Throttle;

/// A TLS session and the `tls-server-end-point` hash of the certificate it was made with.
pub type TlsPhase<'a> = (&'a rustls::ServerConnection, &'a [u8]);

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({role}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The role.
        role: &'static str,
        /// Why.
        source: std::io::Error,
    },
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
    /// The admin endpoint could not be set up (its token file).
    #[error("admin endpoint: {0}")]
    Admin(#[from] crate::admin::Error),
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// POP3 with STLS.
    Pop3,
    /// POP3 over implicit TLS.
    Pop3s,
    /// One of the SMTP roles.
    Smtp(SmtpRole),
}

impl Role {
    /// The config name of the role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Pop3 => "pop3",
            Role::Pop3s => "pop3s",
            Role::Smtp(r) => r.name(),
        }
    }
}

/// The settings that decide, per client address, what a connection may do, and which domains
/// are local; reloaded on SIGHUP, taken once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Networks {
    /// `[auth] insecure_plaintext_networks`.
    pub insecure_plaintext: Vec<ipnet::IpNet>,
    /// `[relay] trusted_networks`.
    pub trusted: Vec<ipnet::IpNet>,
    /// `[relay] local_domains` (lower case).
    pub local_domains: Arc<Vec<String>>,
}

impl Networks {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Networks {
        Networks {
            insecure_plaintext: config.auth.insecure_plaintext_networks.clone(),
            trusted: config.relay.trusted_networks.clone(),
            local_domains: Arc::new(config.relay.local_domains.clone()),
        }
    }

    /// Whether `ip` may send credentials without TLS.
    pub fn plaintext_allowed(&self, ip: IpAddr) -> bool {
        crate::config::in_networks(&self.insecure_plaintext, ip)
    }

    /// Whether `ip` may relay without logging in.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        crate::config::in_networks(&self.trusted, ip)
    }
}

/// State shared by every session.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Credentials.
    pub users: Arc<dyn Authenticator>,
    /// The same users file, for reloading it (see [`Shared::reload_users`]).
    pub user_store: Arc<UserStore>,
    /// Enabled SASL mechanisms, in the configured order.
    pub mechanisms: Vec<&'static Descriptor>,
    /// The networks and domains that decide what a client may do; replaced on SIGHUP, read
    /// once per connection (see [`Shared::networks`]).
    networks: std::sync::RwLock<Arc<Networks>>,
    /// The POP-before-SMTP allowlist.
    pub allowlist: Arc<Allowlist>,
    /// Failed-login throttling.
    pub throttle: Arc<Throttle>,
    /// The durable spool.
    pub spool: Arc<Spool>,
    /// Wakes the relay worker after a commit.
    pub notifier: Notifier,
    /// TLS for implicit-TLS listeners and STARTTLS/STLS, with the `tls-server-end-point`
    /// channel-binding data of its certificate; replaced on SIGHUP (see [`Shared::reload`]).
    tls: std::sync::RwLock<Arc<crate::tls::ServerTls>>,
    /// SASL mechanism settings.
    pub sasl_options: Arc<crate::sasl::Options>,
    /// Answers the credential checks of every session (slow hashes on the blocking pool,
    /// bearer tokens asynchronously).
    pub verifier: crate::session::Verifier,
    /// The audit log.
    pub audit: crate::audit::Auditor,
    /// Admin endpoint: counters fed by the audit events (`GET /metrics`).
    pub metrics: crate::admin::metrics::Metrics,
    /// Notices to users under warn/brownout rules.
    pub notices: Arc<crate::notices::Notices>,
    /// The migration policy; replaced on SIGHUP, read once per connection phase.
    policy: std::sync::RwLock<Arc<crate::policy::Policy>>,
    /// `[notices]` as last loaded (SIGHUP changes it); the digest task reads it.
    notices_config: std::sync::RwLock<crate::config::Notices>,
    /// Wakes the digest task after a reload changed `[notices]`.
    notices_changed: tokio::sync::Notify,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Mailboxes with an open POP3 session (RFC 1939 §8: exclusive access).
    pub mailboxes_in_use: DashSet<String>,
    /// What POP3 sessions know of each maildrop between sessions (`maildir::cache`).
    pub mailbox_cache: crate::maildir::Cache,
    next_session: AtomicU64,
    started: u64,
    per_ip: DashMap<IpAddr, usize>,
}

impl Shared {
    /// A fresh session id: unique for this process run, short enough for every log line.
    pub fn next_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        // Start time plus a counter: unique across restarts, sortable, short.
        format!("{:08x}{n:06x}", self.started & 0xffff_ffff)
    }

    /// The SASL environment for one connection phase; `tls` is the TLS session, if any, with
    /// the `tls-server-end-point` hash of the certificate that session was made with.
    pub fn sasl_environment(
        &self,
        session: &str,
        tls: Option<TlsPhase<'_>>,
    ) -> crate::sasl::Environment {
        crate::sasl::Environment {
            auth: self.users.clone(),
            bearer_tokens: self.verifier.has_tokens(),
            options: self.sasl_options.clone(),
            hostname: self.config.hostname.clone(),
            session: session.to_string(),
            seed: rand::random(),
            now: self.clock.now(),
            channel_binding: tls
                .map(|(c, end_point)| Arc::new(crate::tls::channel_binding(c, end_point))),
        }
    }

    /// Records a failed login and returns how long to wait before answering it: the fixed
    /// `failure_delay`. (The throttle's growing delay is waited before the next check, in
    /// [`Shared::check_credentials`], where concurrent attempts queue for it.)
    pub fn auth_failure_delay(&self, ip: IpAddr, user: Option<&str>) -> Duration {
        let now = self.clock.now();
        self.throttle
            .record_failure(crate::canonical_ip(ip), user, now);
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
        tokio::task::spawn_blocking(move || match notices.deliver(&notice, now) {
            Ok(_) => {
                tracing::info!(user = %notice.user, mechanism = %notice.mechanism, "legacy-auth notice delivered")
            }
            Err(e) => tracing::warn!(user = %notice.user, "cannot deliver legacy-auth notice: {e}"),
        });
    }

    /// Reads the users file again (SIGHUP, or a change seen by the watcher): valid, it
    /// replaces the users served from now on; invalid, the users loaded before stay and the
    /// error says what is wrong, line by line. Blocking (file I/O).
    pub fn reload_users(&self) -> Result<usize, crate::auth::Error> {
        let path = &self.config.auth.users_file;
        match self.user_store.reload(path) {
            Ok(n) => {
                tracing::info!(users = n, file = %path.display(), "users reloaded");
                log_skipped_lines(path, &self.user_store);
                Ok(n)
            }
            Err(e) => {
                tracing::error!(
                    users = self.user_store.len(),
                    "users file not reloaded, the users loaded before stay: {e}"
                );
                Err(e)
            }
        }
    }

    /// Applies a reloaded configuration (SIGHUP): the users file is read again, the TLS
    /// certificate too, and the migration policy, the networks (`insecure_plaintext_networks`,
    /// `trusted_networks`) and the local domains take effect for what comes next; open
    /// sessions are untouched.
    /// Other changed sections are named in a warning: they take effect at the next restart.
    /// Returns the names of those sections. Blocking (reads the users file).
    pub fn reload(&self, new: &Config) -> Vec<&'static str> {
        let _ = self.reload_users();
        self.set_policy(new.policy.clone());
        let old = &self.config;
        let mut restart = Vec::new();
        let changed =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        if old.hostname != new.hostname || changed(&old.state_dir, &new.state_dir) {
            restart.push("hostname/state_dir");
        }
        if changed(&old.listeners, &new.listeners) {
            restart.push("listeners");
        }
        match self.reload_tls(&new.tls) {
            Ok(true) => {
                let cert = new.tls.cert.as_ref().map(|p| p.display().to_string());
                tracing::info!(cert = cert.unwrap_or_default(), "TLS certificate reloaded");
            }
            Ok(false) if changed(&old.tls, &new.tls) => restart.push("tls"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, the one loaded before stays: {e}");
            }
        }
        // The networks are reloaded; the rest of [auth] needs a restart.
        let mut auth = new.auth.clone();
        auth.insecure_plaintext_networks = old.auth.insecure_plaintext_networks.clone();
        if changed(&old.auth, &auth) {
            restart.push("auth");
        }
        self.reload_networks(Networks::from_config(new));
        if changed(&old.pop_before_smtp, &new.pop_before_smtp) {
            restart.push("pop_before_smtp");
        }
        if changed(&old.delivery, &new.delivery) {
            restart.push("delivery");
        }
        if changed(&old.limits, &new.limits) {
            restart.push("limits");
        }
        if changed(&old.audit, &new.audit) {
            restart.push("audit");
        }
        if changed(&self.notices_config(), &new.notices) {
            self.set_notices_config(&new.notices);
            tracing::info!("notices settings reloaded");
        }
        tracing::info!(rules = new.policy.rules.len(), "policy reloaded");
        if !restart.is_empty() {
            tracing::warn!(sections = ?restart, "these changes take effect at the next restart");
        }
        restart
    }

    /// Puts `nets` in force for the connections that come next (and the throttle's exemption
    /// of the trusted networks); connections already open keep what they started with.
    pub fn reload_networks(&self, nets: Networks) {
        if nets == *self.networks() {
            return;
        }
        tracing::info!(
            trusted = nets.trusted.len(),
            insecure_plaintext = nets.insecure_plaintext.len(),
            local_domains = nets.local_domains.len(),
            "networks and local domains reloaded"
        );
        self.throttle.set_exempt(nets.trusted.clone());
        *self.networks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(nets);
    }

    /// Runs the server side of a TLS handshake on `tcp` within `limits.tls_handshake_timeout`,
    /// with the certificate in force; returns the stream and that TLS setup (a SIGHUP reload
    /// later does not change what this session's channel binding refers to), or `None` (with a
    /// log line naming `what`) if it fails or times out.
    pub async fn accept_tls(
        &self,
        tcp: TcpStream,
        what: &str,
    ) -> Option<(
        tokio_rustls::server::TlsStream<TcpStream>,
        Arc<crate::tls::ServerTls>,
    )> {
        let limit = self.config.limits.tls_handshake_timeout;
        let server_tls = self.tls();
        match tokio::time::timeout(limit, server_tls.acceptor.clone().accept(tcp)).await {
            Ok(Ok(tls)) => Some((tls, server_tls)),
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

    /// Loads `[tls] cert` and `key` again, so that a renewed certificate is served without a
    /// restart; handshakes already done keep theirs. Without cert and key in `cfg` nothing
    /// changes (the self-signed certificate made at start stays). Blocking (file I/O).
    pub fn reload_tls(&self, cfg: &crate::config::TlsConfig) -> Result<bool, Error> {
        if cfg.cert.is_none() || cfg.key.is_none() {
            return Ok(false);
        }
        let fresh = crate::tls::server(cfg, &self.config.hostname)?;
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(true)
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

    /// Puts reloaded `[notices]` settings in force: the notice interval at once, the digest
    /// recipient and period from the next digest (its timer restarts).
    fn set_notices_config(&self, notices: &crate::config::Notices) {
        self.notices.set_interval(notices.interval);
        match self.notices_config.write() {
            Ok(mut n) => *n = notices.clone(),
            Err(poisoned) => *poisoned.into_inner() = notices.clone(),
        }
        self.notices_changed.notify_one();
    }

    /// Replaces the migration policy (SIGHUP reload); sessions pick it up at their next phase.
    pub fn set_policy(&self, policy: Arc<crate::policy::Policy>) {
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    /// The delay implied by the failures remembered for `ip` (and `user`, if given), for
    /// inspection and tests; see [`Throttle::delay`].
    pub fn auth_throttle(&self, ip: IpAddr, user: Option<&str>) -> Duration {
        self.throttle
            .delay(crate::canonical_ip(ip), user, self.clock.now())
    }

    /// Waits, before a line that checks a credential (PASS, APOP, PLAIN's response, LOGIN's
    /// password, NTLM's AUTHENTICATE, SCRAM's client-final message, a bearer token; `reserve`
    /// says whether this line is one), for the client address's next throttle slot, so that
    /// concurrent attempts from one address queue, a success is no faster to learn than a
    /// failure, and a multi-step exchange costs one slot, taken where the check happens
    /// (opening exchanges early gains nothing). The check itself then runs through
    /// [`Shared::verifier`]. The per-user limit is applied by the store itself
    /// ([`crate::throttle::ThrottledUsers`]), once the mechanism knows the user.
    pub async fn credential_slot(&self, ip: IpAddr, reserve: bool) {
        if !reserve {
            return;
        }
        let wait = self
            .throttle
            .reserve_addr(crate::canonical_ip(ip), self.clock.now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Client connections open on the mail listeners (admin endpoint: `GET /metrics`).
    pub fn open_connections(&self) -> usize {
        self.per_ip.iter().map(|n| *n.value()).sum()
    }

    /// Records a successful login (resets the throttle).
    pub fn auth_succeeded(&self, ip: IpAddr, user: &str) {
        self.throttle.record_success(crate::canonical_ip(ip), user);
    }
}

/// Holds a connection's place in the global and per-address caps; released on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Decrement and remove at zero in one step so the map never keeps idle addresses.
        self.shared.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// The bound listeners and shared state, ready to serve.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(Role, TcpListener)>,
    control: Option<(TcpListener, crate::control::Key)>,
    admin: Option<(TcpListener, crate::admin::Access)>,
    relay_task: tokio::task::JoinHandle<()>,
    relay_shutdown: CancellationToken,
    audit_task: Option<tokio::task::JoinHandle<()>>,
    audit_shutdown: CancellationToken,
    /// The users file as it was just before it was loaded, so that an edit made while the
    /// gateway was starting is seen by the watcher.
    users_stamp: Option<UsersStamp>,
}

impl Server {
    /// Loads credentials, opens the spool, binds every listener. Nothing is served until
    /// [`Server::run`].
    pub async fn bind(config: Config) -> Result<Server, Error> {
        Self::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Server::bind`], with a chosen clock (tests).
    pub async fn bind_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Server, Error> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| Error::StateDir {
            path: config.state_dir.display().to_string(),
            source,
        })?;
        // Stamped before it is read: a change made while it loads is reloaded by the watcher.
        let users_stamp = users_file_stamp(&config.auth.users_file);
        let users =
            UserStore::load(&config.auth.users_file).map_err(|e| Error::Users(e.to_string()))?;
        tracing::info!(users = users.len(), file = %config.auth.users_file.display(), "users loaded");
        log_skipped_lines(&config.auth.users_file, &users);
        // derive_on_login: a successful plaintext login stores the forms stronger mechanisms
        // need (SCRAM keys, ...), so users can move to them without a password reset.
        let users = if config.auth.derive_on_login {
            users.with_derivation(&config.auth.users_file, &config.auth.mechanisms)
        } else {
            users
        };
        let tls = crate::tls::server(&config.tls, &config.hostname)?;
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
        let allowlist = Arc::new(Allowlist::new(
            pbs.ttl,
            pbs.ipv6_prefix,
            pbs.max_entries,
            pbs.shared_address_warn_users,
        ));
        if pbs.enabled {
            match allowlist.load(&pbs.snapshot, clock.now()) {
                Ok(n) if n > 0 => tracing::info!(entries = n, "allowlist restored"),
                Ok(_) => {}
                Err(e) => tracing::warn!("allowlist snapshot unreadable, starting empty: {e}"),
            }
        }
        let spool =
            Arc::new(Spool::open(&config.delivery.spool).map_err(|e| Error::Spool(e.to_string()))?);
        spool.set_commit_window(config.delivery.commit_window);
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
        let metrics = crate::admin::metrics::Metrics::new();
        let audit = audit.with_observer(metrics.observer());
        let relay_shutdown = CancellationToken::new();
        let mut relay_settings =
            crate::relay::Settings::from_config(&config.hostname, &config.delivery);
        relay_settings.audit = audit.clone();
        let (relay_task, notifier) = crate::relay::spawn(
            relay_settings,
            spool.clone(),
            clock.clone(),
            relay_shutdown.clone(),
        );
        let mut listeners = Vec::new();
        let l = &config.listeners;
        let roles = [
            (Role::Pop3, &l.pop3),
            (Role::Pop3s, &l.pop3s),
            (Role::Smtp(SmtpRole::Smtp), &l.smtp),
            (Role::Smtp(SmtpRole::Submission), &l.submission),
            (Role::Smtp(SmtpRole::Submissions), &l.submissions),
        ];
        for (role, addrs) in roles {
            for addr in addrs {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        addr: *addr,
                        role: role.name(),
                        source,
                    })?;
                listeners.push((role, listener));
            }
        }
        let control = match l.control {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        addr,
                        role: "control",
                        source,
                    })?;
                // A fresh key per start, readable only by the gateway's user (and root).
                let key = crate::control::Key::generate();
                let path = config.state_dir.join(crate::control::KEY_FILE);
                key.write(&path).map_err(|source| Error::StateDir {
                    path: path.display().to_string(),
                    source,
                })?;
                Some((listener, key))
            }
            None => None,
        };
        // Admin endpoint: its token is read once, here, so a bad file stops the start.
        let admin = match l.admin {
            Some(addr) => {
                let access = crate::admin::Access::load(config.admin_token_file.as_deref())?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind {
                        addr,
                        role: "admin",
                        source,
                    })?;
                Some((listener, access))
            }
            None => None,
        };
        let user_store = Arc::new(users);
        let tokens = match &config.auth.oauth {
            Some(o) => Some(Arc::new(crate::oauth::Validator::from_config(
                o,
                user_store.clone(),
                clock.clone(),
            )?) as Arc<dyn crate::sasl::TokenValidator>),
            None => None,
        };
        let throttle = Arc::new(Throttle::new(
            &config.auth.throttle,
            config.relay.trusted_networks.clone(),
        ));
        let users: Arc<dyn Authenticator> = Arc::new(crate::throttle::ThrottledUsers::new(
            user_store.clone(),
            throttle.clone(),
            clock.clone(),
        ));
        let started = crate::clock::unix_secs(clock.now());

        let sasl_options = crate::sasl::Options {
            ntlm_domain: config.auth.ntlm_domain.clone(),
            ntlm_v1: config.auth.ntlm_v1,
            channel_binding_offered: config.auth.mechanisms.iter().any(|m| m.ends_with("-PLUS")),
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
        let verifier = crate::session::Verifier::new(
            users.clone(),
            tokens,
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        );
        let shared = Arc::new(Shared {
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
            policy: std::sync::RwLock::new(config.policy.clone()),
            notices_config: std::sync::RwLock::new(config.notices.clone()),
            notices_changed: tokio::sync::Notify::new(),
            notices,
            clock,
            mailboxes_in_use: DashSet::new(),
            mailbox_cache: crate::maildir::Cache::new(),
            next_session: AtomicU64::new(1),
            started,
            per_ip: DashMap::new(),
            config,
        });
        Ok(Server {
            shared,
            listeners,
            control,
            admin,
            relay_task,
            relay_shutdown,
            audit_task,
            audit_shutdown,
            users_stamp,
        })
    }

    /// The bound address of each listener (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(Role, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(role, l)| l.local_addr().ok().map(|a| (*role, a)))
            .collect()
    }

    /// The bound control address, if enabled.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound admin endpoint address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The shared state (tests inspect the allowlist through it).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` fires, then drains sessions and saves state.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            shared,
            listeners,
            control,
            admin,
            relay_task,
            relay_shutdown,
            audit_task,
            audit_shutdown,
            users_stamp,
        } = self;
        let tracker = TaskTracker::new();
        let sessions = CancellationToken::new();
        let semaphore = Arc::new(Semaphore::new(shared.config.limits.max_connections));
        for (role, listener) in listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(role = role.name(), %addr, "listening");
            }
            tracker.spawn(accept_loop(
                role,
                listener,
                shared.clone(),
                semaphore.clone(),
                tracker.clone(),
                shutdown.clone(),
                sessions.clone(),
            ));
        }
        if let Some((listener, key)) = control {
            tracker.spawn(crate::control::serve(
                listener,
                shared.allowlist.clone(),
                shared.clock.clone(),
                key,
                shutdown.clone(),
            ));
        }
        if let Some((listener, access)) = admin {
            tracker.spawn(crate::admin::serve(
                listener,
                access,
                shared.clone(),
                shutdown.clone(),
            ));
        }
        tracker.spawn(housekeeping(shared.clone(), shutdown.clone()));
        tracker.spawn(watch_users(shared.clone(), users_stamp, shutdown.clone()));
        // Running even without a recipient: a reload may set one.
        if shared.config.audit.is_some() {
            tracker.spawn(digests(shared.clone(), shutdown.clone()));
        }
        shutdown.cancelled().await;
        tracing::info!("shutting down");
        // Sessions answer 421 / -ERR at their next read; give them a bounded time.
        sessions.cancel();
        tracker.close();
        let grace = shared.config.limits.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("sessions still open after {grace:?}; closing them");
        }
        relay_shutdown.cancel();
        let _ = tokio::time::timeout(grace, relay_task).await;
        save_allowlist(&shared);
        save_notices(&shared);
        // Last: the audit writer drains what the sessions and the relay recorded.
        audit_shutdown.cancel();
        if let Some(task) = audit_task {
            let _ = tokio::time::timeout(grace, task).await;
        }
    }
}

/// Binds and runs the gateway until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let server = Server::bind(config).await?;
    server.run(shutdown).await;
    Ok(())
}

async fn accept_loop(
    role: Role,
    listener: TcpListener,
    shared: Arc<Shared>,
    semaphore: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    sessions: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(slot) = admit(&shared, &semaphore, peer.ip()) else {
            tracker.spawn(refuse(tcp, role, shared.config.hostname.clone()));
            continue;
        };
        let shared = shared.clone();
        let sessions = sessions.clone();
        tracker.spawn(async move {
            let _slot = slot;
            match role {
                Role::Smtp(r) => crate::smtp::conn::serve(tcp, peer, r, shared, sessions).await,
                Role::Pop3 => crate::pop3::conn::serve(tcp, peer, false, shared, sessions).await,
                Role::Pop3s => crate::pop3::conn::serve(tcp, peer, true, shared, sessions).await,
            }
        });
    }
}

/// Takes a connection slot, or `None` when the global or per-address cap is reached.
fn admit(shared: &Arc<Shared>, semaphore: &Arc<Semaphore>, ip: IpAddr) -> Option<Slot> {
    let ip = crate::canonical_ip(ip);
    let permit = semaphore.clone().try_acquire_owned().ok()?;
    let max = shared.config.limits.max_connections_per_ip;
    let mut admitted = false;
    shared
        .per_ip
        .entry(ip)
        .and_modify(|n| {
            if *n < max {
                *n += 1;
                admitted = true;
            }
        })
        .or_insert_with(|| {
            admitted = true;
            1
        });
    if !admitted {
        return None;
    }
    Some(Slot {
        _permit: permit,
        ip,
        shared: shared.clone(),
    })
}

/// Answers a connection over the caps with a one-line refusal (RFC 5321 §3.1: 421 at
/// greeting; POP3 has no code, so -ERR [SYS/TEMP]).
async fn refuse(mut tcp: TcpStream, role: Role, hostname: String) {
    use tokio::io::AsyncWriteExt;
    let text = match role {
        Role::Pop3 => "-ERR [SYS/TEMP] too many connections, try again later\r\n".to_string(),
        Role::Smtp(SmtpRole::Smtp | SmtpRole::Submission) => {
            format!("421 4.7.0 {hostname} too many connections, try again later\r\n")
        }
        // Implicit TLS: nothing readable can be sent before the handshake.
        Role::Pop3s | Role::Smtp(SmtpRole::Submissions) => return,
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(text.as_bytes())).await;
}

/// Purges expired allowlist and throttle entries and snapshots the allowlist periodically.
async fn housekeeping(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = ticker(tokio::time::Instant::now(), Duration::from_secs(30));
    let mut rounds = 0u32;
    while next_tick(&mut tick, &shutdown).await {
        let now = shared.clock.now();
        let allowlist = shared.allowlist.clone();
        // A sweep walks every shard; keep it off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || allowlist.purge(now)).await;
        shared.throttle.purge(now);
        rounds += 1;
        if rounds.is_multiple_of(10) {
            let shared = shared.clone();
            let _ = tokio::task::spawn_blocking(move || {
                save_allowlist(&shared);
                save_notices(&shared);
            })
            .await;
        }
    }
}

/// A timer for a periodic background job: first at `start`, then every `period`; a tick
/// missed while the job ran is not made up for.
fn ticker(start: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick; `false` once `shutdown` fires.
async fn next_tick(tick: &mut tokio::time::Interval, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = shutdown.cancelled() => false,
    }
}

/// How often the users file is checked for a change.
const USERS_CHECK: Duration = Duration::from_secs(2);

/// The users file as last seen: modification time, length and inode; a change to any of them
/// (an edit in place, `mailgate passwd`'s rename) means the file is read again.
type UsersStamp = (std::time::SystemTime, u64, u64);

fn users_file_stamp(path: &std::path::Path) -> Option<UsersStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Reloads the users file when it changes, as Dovecot re-reads a passwd-file: a user added
/// with `mailgate passwd` or by an edit can log in within [`USERS_CHECK`], without a restart
/// or SIGHUP. A file that does not parse (say, saved half-way) keeps the users loaded before;
/// the next change is tried again.
async fn watch_users(
    shared: Arc<Shared>,
    mut seen: Option<UsersStamp>,
    shutdown: CancellationToken,
) {
    let path = shared.config.auth.users_file.clone();
    let mut tick = ticker(tokio::time::Instant::now(), USERS_CHECK);
    while next_tick(&mut tick, &shutdown).await {
        let shared = shared.clone();
        let path = path.clone();
        let last = seen;
        seen = tokio::task::spawn_blocking(move || {
            let stamp = users_file_stamp(&path);
            if stamp.is_some() && stamp != last {
                let _ = shared.reload_users();
            }
            stamp.or(last)
        })
        .await
        .unwrap_or(last);
    }
}

/// Sends the legacy-authentication digest to `[notices] digest_to` every `digest_interval`,
/// as in force now: a reload that changes either restarts the period.
async fn digests(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let settings = shared.notices_config();
        let due = async {
            match settings.digest_to {
                Some(_) => tokio::time::sleep(settings.digest_interval).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.notices_changed.notified() => continue,
            _ = due => {}
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || send_digest(&shared, &settings)).await;
    }
}

fn send_digest(shared: &Shared, settings: &crate::config::Notices) {
    let (Some(to), Some(audit)) = (&settings.digest_to, &shared.config.audit) else {
        return;
    };
    let period = settings.digest_interval;
    let now = shared.clock.now();
    let files = crate::audit::files(&audit.path, audit.keep);
    let host = &shared.config.hostname;
    match crate::notices::digest(&files, period, to, host, now) {
        Ok(Some(text)) => {
            let unique = format!("{}.digest", crate::clock::unix_secs(now));
            match crate::maildir::deliver(
                &shared.config.delivery.maildir,
                to,
                &unique,
                host,
                text.as_bytes(),
            ) {
                Ok(_) => tracing::info!(to = %to, "legacy-auth digest delivered"),
                Err(e) => tracing::warn!(to = %to, "cannot deliver the digest: {e}"),
            }
        }
        Ok(None) => tracing::debug!("no legacy authentication in the digest period"),
        Err(e) => tracing::warn!("cannot build the digest: {e}"),
    }
}

/// Where the notices' rate limit is saved across restarts.
fn notices_file(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("notices.json")
}

fn save_notices(shared: &Shared) {
    let path = notices_file(&shared.config);
    if let Err(e) = shared.notices.save(&path, shared.clock.now()) {
        tracing::warn!(file = %path.display(), "cannot save the notices sent: {e}");
    }
}

fn save_allowlist(shared: &Shared) {
    let pbs = &shared.config.pop_before_smtp;
    if !pbs.enabled {
        return;
    }
    match shared.allowlist.save(&pbs.snapshot, shared.clock.now()) {
        Ok(()) => tracing::debug!(file = %pbs.snapshot.display(), "allowlist saved"),
        Err(e) => tracing::warn!(file = %pbs.snapshot.display(), "cannot save allowlist: {e}"),
    }
}

/// Logs each users-file line skipped for a password scheme not supported here, as
/// `FILE:LINE: ...`, so that the admin sees which users cannot log in and why.
fn log_skipped_lines(path: &std::path::Path, users: &UserStore) {
    for w in users.warnings() {
        tracing::warn!("{}:{}: {}; {}", path.display(), w.line, w.message, w.hint);
    }
}
