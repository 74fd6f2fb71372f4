//! Listeners, the accept loop, connection caps and graceful shutdown; nothing else.
//!
//! [`Server::bind`] opens the gateway's state ([`Gateway::open`]) and binds every configured
//! listener; [`Server::run`] accepts connections until the shutdown token fires and hands each
//! to the session driver with its protocol. Each connection runs in its own task holding a
//! permit from the global semaphore and a slot in the per-address count; both are released
//! when the task ends, however it ends. On shutdown the listeners stop accepting, sessions get
//! `shutdown_grace` to finish (each answers 421 / -ERR at its next read), the relay worker
//! stops, the allowlist and the notices are saved, and the audit writer drains.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, SmtpRole};
use crate::gateway::{Gateway, Started};

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
/// Holds a connection's place in the global and per-address caps; released on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    shared: Arc<Gateway>,
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
            audit_task,
            audit_shutdown,
            users_stamp,
        } = started;
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
                Role::Smtp(role) => {
                    let smtp = crate::smtp::conn::Smtp { role };
                    crate::session::serve(smtp, tcp, peer, shared, sessions).await
                }
                Role::Pop3 | Role::Pop3s => {
                    let implicit_tls = role == Role::Pop3s;
                    let pop3 = crate::pop3::conn::Pop3 { implicit_tls };
                    crate::session::serve(pop3, tcp, peer, shared, sessions).await
                }
            }
        });
    }
}

/// Takes a connection slot, or `None` when the global or per-address cap is reached.
fn admit(shared: &Arc<Gateway>, semaphore: &Arc<Semaphore>, ip: IpAddr) -> Option<Slot> {
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
    let mut text = Vec::new();
    match role {
        Role::Pop3 => crate::pop3::reply::Reply::too_many_connections().encode(&mut text),
        Role::Smtp(SmtpRole::Smtp | SmtpRole::Submission) => {
            crate::smtp::reply::too_many_connections(&hostname).encode(&mut text)
        }
        // Implicit TLS: nothing readable can be sent before the handshake.
        Role::Pop3s | Role::Smtp(SmtpRole::Submissions) => return,
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&text)).await;
}
