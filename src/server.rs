//! Listeners, the accept loop, connection caps and graceful shutdown; nothing else.
//!
//! [`Server::bind`] opens the gateway's state ([`Gateway::open`]) and binds every configured
//! listener; [`Server::run`] accepts connections until the shutdown token fires and hands each
//! to the session driver with its protocol. Each connection runs in its own task holding a
//! permit from its service's semaphore (port 25, submission, POP3: `max_connections` each, so
//! a flood on one leaves the others their own) and a place in the per-address and
//! per-network counts; all are released when the task ends, however it ends. A connection
//! over a cap is answered (421, `-ERR [SYS/TEMP]`, or a TLS alert on implicit TLS), counted
//! in `mailgate_connections_refused_total` and logged at most once a second per cap. A
//! connection from a load balancer (`[listeners] proxy_protocol_from`) is admitted after its
//! PROXY protocol header, with the client's address it names (`server/proxy.rs`). On
//! shutdown the listeners stop accepting, sessions get
//! `shutdown_grace` to finish (each answers 421 / -ERR at its next read), the relay worker
//! stops, the allowlist and the notices are saved, and the audit writer drains.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SmtpRole};
use crate::gateway::{Gateway, Started};
use crate::session::Load;

mod proxy;

pub use proxy::{Front, HEADER_TIMEOUT};

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway's state could not be opened.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::Error),
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
    /// The admin endpoint could not be set up (its token file).
    #[error("admin endpoint: {0}")]
    Admin(#[from] crate::admin::Error),
    /// The control channel's key could not be written.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The file.
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
impl Role {
    /// The connection cap this role's listeners share.
    fn service(self) -> Service {
        match self {
            Role::Pop3 | Role::Pop3s => Service::Pop3,
            Role::Smtp(SmtpRole::Smtp) => Service::Relay,
            Role::Smtp(SmtpRole::Submission | SmtpRole::Submissions) => Service::Submission,
        }
    }
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Relay => "smtp",
            Service::Submission => "submission",
            Service::Pop3 => "pop3",
        }
    }
}

/// Listeners that share one `max_connections` cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Service {
    /// Port 25.
    Relay,
    /// Submission, with and without implicit TLS.
    Submission,
    /// POP3, with and without implicit TLS.
    Pop3,
}

/// The client network a connection counts against for `max_connections_per_network`.
fn network_of(ip: IpAddr) -> IpNet {
    let prefix = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

/// Holds a connection's place in its service's cap and the per-address and per-network
/// counts; released on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    net: IpNet,
    load: Arc<Load>,
    shared: Arc<Gateway>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        leave(&self.shared.per_ip, &self.ip);
        leave(&self.shared.per_network, &self.net);
        self.load.leave();
    }
}

/// One service's cap: its permits and how full it is.
#[derive(Clone)]
struct Cap {
    permits: Arc<Semaphore>,
    load: Arc<Load>,
}

/// Takes a place in `counts` for `key` if fewer than `max` are taken.
fn enter<K: std::hash::Hash + Eq + Clone>(counts: &DashMap<K, usize>, key: &K, max: usize) -> bool {
    let mut admitted = false;
    counts
        .entry(key.clone())
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
    admitted
}

/// Gives back a place taken by [`enter`]; the key goes at zero (no idle keys kept).
fn leave<K: std::hash::Hash + Eq>(counts: &DashMap<K, usize>, key: &K) {
    counts.remove_if_mut(key, |_, n| {
        *n = n.saturating_sub(1);
        *n == 0
    });
}

/// The bound listeners and the gateway's state, ready to serve.
pub struct Server {
    gateway: Arc<Gateway>,
    started: Started,
    listeners: Vec<(Role, TcpListener)>,
    control: Option<(TcpListener, crate::control::Key)>,
    admin: Option<(TcpListener, crate::admin::Access)>,
}

impl Server {
    /// Opens the gateway's state ([`Gateway::open`]) and binds every listener. Nothing is
    /// served until [`Server::run`].
    pub async fn bind(config: Config) -> Result<Server, Error> {
        Self::bind_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Server::bind`], with a chosen clock (tests).
    pub async fn bind_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Server, Error> {
        let (gateway, started) = Gateway::open(config, clock)?;
        let config = &gateway.config;
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
        Ok(Server {
            gateway,
            started,
            listeners,
            control,
            admin,
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

    /// The gateway's state (tests inspect the allowlist through it).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// Serves until `shutdown` fires, then drains sessions and saves state.
    pub async fn run(self, shutdown: CancellationToken) {
        let Server {
            gateway: shared,
            started,
            listeners,
            control,
            admin,
        } = self;
        let Started {
            relay_task,
            relay_shutdown,
            cluster_shutdown,
            audit_task,
            audit_shutdown,
            users_stamp,
        } = started;
        let tracker = TaskTracker::new();
        let sessions = CancellationToken::new();
        let max = shared.config.limits.max_connections;
        let mut caps: HashMap<Service, Cap> = HashMap::new();
        for (role, listener) in listeners {
            let cap = caps
                .entry(role.service())
                .or_insert_with(|| Cap {
                    permits: Arc::new(Semaphore::new(max)),
                    load: Arc::new(Load::new(role.service().name(), max)),
                })
                .clone();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(role = role.name(), %addr, "listening");
            }
            tracker.spawn(accept_loop(
                role,
                listener,
                shared.clone(),
                cap,
                tracker.clone(),
                shutdown.clone(),
                sessions.clone(),
            ));
        }
        if let Some((listener, key)) = control {
            tracker.spawn(crate::control::serve(
                listener,
                shared.allowlist.clone(),
                shared.notifier.clone(),
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
        crate::background::spawn(&tracker, &shared, users_stamp, &shutdown);
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
        crate::background::save_allowlist(&shared).await;
        crate::background::save_known_networks(&shared).await;
        crate::background::save_notices(&shared);
        cluster_shutdown.cancel();
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
    shared: Arc<Gateway>,
    cap: Cap,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    sessions: CancellationToken,
) {
    let mut refusals = Refusals::default();
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
        let permit = cap.permits.clone().try_acquire_owned().ok();
        // The session idle longest (not authenticated) is closing for this client, which
        // takes its place once it has gone.
        let evicting = permit.is_none() && cap.load.evict_oldest();
        // A balancer's connection is admitted after its header, with the client's address,
        // so the caps per address and network count clients rather than the balancer.
        let balancer = proxy::from_balancer(&shared, peer.ip());
        if evicting || (balancer && permit.is_some()) {
            let (shared, cap, sessions) = (shared.clone(), cap.clone(), sessions.clone());
            tracker.spawn(async move {
                let permit = match permit {
                    Some(permit) => Some(permit),
                    None => {
                        let freed = cap.permits.clone().acquire_owned();
                        tokio::time::timeout(EVICTION_WAIT, freed)
                            .await
                            .ok()
                            .and_then(Result::ok)
                    }
                };
                let (stream, peer) = if balancer && permit.is_some() {
                    match proxy::read_header(tcp, peer, role.name(), &shared).await {
                        Some(pair) => pair,
                        None => return,
                    }
                } else {
                    let front = Front::watching(tcp, role.name(), peer, shared.clone());
                    (front, peer)
                };
                match admit(&shared, &cap, peer.ip(), permit) {
                    Ok(slot) => session(role, stream, peer, shared, sessions, slot).await,
                    Err(why) => {
                        shared.metrics.connection_refused(role.name(), why);
                        if balancer {
                            proxy::log_cap_refusal(&shared, role.name(), why, peer);
                        }
                        refuse(stream, role, shared).await;
                    }
                }
            });
            continue;
        }
        match admit(&shared, &cap, peer.ip(), permit) {
            Ok(slot) => {
                let stream = Front::watching(tcp, role.name(), peer, shared.clone());
                tracker.spawn(session(
                    role,
                    stream,
                    peer,
                    shared.clone(),
                    sessions.clone(),
                    slot,
                ));
            }
            Err(why) => {
                shared.metrics.connection_refused(role.name(), why);
                refusals.note(why, role, peer);
                let stream = Front::replaying(tcp, Vec::new());
                tracker.spawn(refuse(stream, role, shared.clone()));
            }
        }
    }
}

/// How long a new client waits for the session closed to make room for it.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Runs one admitted connection's session; its slot goes when it ends.
async fn session(
    role: Role,
    tcp: Front<TcpStream>,
    peer: SocketAddr,
    shared: Arc<Gateway>,
    sessions: CancellationToken,
    slot: Slot,
) {
    let load = slot.load.clone();
    let _slot = slot;
    let _open = shared.metrics.flow.connection(role.name());
    match role {
        Role::Smtp(role) => {
            let smtp = crate::smtp::conn::Smtp { role };
            crate::session::serve(smtp, tcp, peer, shared, sessions, load).await
        }
        Role::Pop3 | Role::Pop3s => {
            let implicit_tls = role == Role::Pop3s;
            let pop3 = crate::pop3::conn::Pop3 { implicit_tls };
            crate::session::serve(pop3, tcp, peer, shared, sessions, load).await
        }
    }
}

/// Takes a connection slot with `permit` (the service's, if one was free), or names the cap
/// that is reached: `listener` (the service's `max_connections`), `address` or `network`.
fn admit(
    shared: &Arc<Gateway>,
    cap: &Cap,
    ip: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Slot, &'static str> {
    let limits = &shared.config.limits;
    let ip = crate::canonical_ip(ip);
    let permit = permit.ok_or("listener")?;
    if !enter(&shared.per_ip, &ip, limits.max_connections_per_ip) {
        return Err("address");
    }
    let net = network_of(ip);
    if !enter(
        &shared.per_network,
        &net,
        limits.max_connections_per_network,
    ) {
        leave(&shared.per_ip, &ip);
        return Err("network");
    }
    cap.load.enter();
    Ok(Slot {
        _permit: permit,
        ip,
        net,
        load: cap.load.clone(),
        shared: shared.clone(),
    })
}

/// The refusals of one listener since its last log line: one line a second at most per cap,
/// however many connections a flood brings.
#[derive(Default)]
struct Refusals {
    since: Option<tokio::time::Instant>,
    counts: HashMap<&'static str, u64>,
}

impl Refusals {
    fn note(&mut self, cap: &'static str, role: Role, peer: SocketAddr) {
        *self.counts.entry(cap).or_default() += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        for (cap, n) in self.counts.drain() {
            tracing::warn!(
                listener = role.name(),
                cap,
                refused = n,
                last_peer = %peer,
                "connections refused: the {cap} connection cap is reached \
                 (limits.max_connections{})",
                match cap {
                    "address" => "_per_ip",
                    "network" => "_per_network",
                    _ => "",
                }
            );
        }
        self.since = Some(now);
    }
}

/// Answers a connection over the caps with a one-line refusal (RFC 5321 §3.1: 421 at
/// greeting; POP3 has no code, so -ERR [SYS/TEMP]). On implicit TLS nothing readable can be
/// sent before a handshake, so the client gets a TLS alert instead: its ClientHello is read
/// and answered with a fatal `internal_error` (the TLS 1.2 and 1.3 record a client shows as
/// "internal error" rather than a bare reset).
async fn refuse<S>(mut tcp: S, role: Role, shared: Arc<Gateway>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text = Vec::new();
    match role {
        Role::Pop3 => crate::pop3::reply::Reply::too_many_connections().encode(&mut text),
        Role::Smtp(SmtpRole::Smtp | SmtpRole::Submission) => {
            crate::smtp::reply::too_many_connections(&shared.config.hostname).encode(&mut text)
        }
        Role::Pop3s | Role::Smtp(SmtpRole::Submissions) => {
            // Wait (briefly) for the ClientHello, so the alert is an answer to it.
            let mut hello = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut hello)).await;
            // TLS record: alert (21), version 3.3, length 2; fatal (2), internal_error (80).
            text.extend_from_slice(&[21, 3, 3, 0, 2, 2, 80]);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&text)).await;
}
