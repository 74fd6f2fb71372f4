//! The POP-before-SMTP allowlist service: the one owner of every change to the allowlist.
//!
//! There is no RFC for POP-before-SMTP; this follows the old pop-before-smtp and DRAC
//! daemons: a successful POP3 login lets the client address relay for `ttl` after the last
//! such login. Addresses are canonicalized (IPv4-mapped IPv6 becomes IPv4) and IPv6 clients
//! are grouped by their `/ipv6_prefix` network, since one host often rotates privacy
//! addresses within its /64 ([`network_key`]).
//!
//! Four callers change the list, and all of them go through [`Allowlist`]:
//! - a POP3 login ([`Allowlist::login`]),
//! - `mailgate allowlist` over the control channel, and the admin HTTP API
//!   ([`Allowlist::add`], [`Allowlist::remove`], told apart by [`Via`]),
//! - the housekeeping sweep ([`Allowlist::expire`]).
//!
//! Input from the admins is validated here once, for both ends: an address or a network no
//! wider than one entry, a TTL from 1 s to [`MAX_TTL`], a user name without control
//! characters. Every change records one `allowlist` audit event (the list of events, with
//! their `mechanism` and `reason`, is in `docs/audit.md`). The entries themselves live behind
//! [`AllowlistStore`]: in memory today ([`crate::store::memory::MemoryAllowlist`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::audit::{Auditor, Class, Event, Kind, Outcome};
use crate::store::{self, AllowlistStore, Expiry, Put};

pub use crate::store::{Entry, InsertOutcome, MAX_USER_LEN, network_key};

/// The widest IPv4 network an admin may allowlist (a /16: 65,536 addresses).
pub const WIDEST_V4: u8 = 16;
/// The widest IPv6 network an admin may allowlist (a site's /48).
pub const WIDEST_V6: u8 = 48;

/// Longest TTL an admin may give an entry.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// The `mechanism` of the events of logins (and of relays authorized by them).
pub const LOGIN_MECHANISM: &str = "pop-before-smtp";
/// The `mechanism` of the events of changes made by an admin (CLI or HTTP API).
pub const ADMIN_MECHANISM: &str = "admin";
/// The `mechanism` of the events of entries removed because they expired.
pub const EXPIRY_MECHANISM: &str = "expiry";

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address (or network) did not parse.
    #[error("bad address")]
    BadAddress,
    /// A network wider than an entry may be ([`WIDEST_V4`], [`WIDEST_V6`]).
    #[error(
        "bad address: {net} is wider than an allowlist entry may be (/{WIDEST_V4} for IPv4, \
         /{WIDEST_V6} for IPv6); networks that always relay belong in [relay] trusted_networks"
    )]
    TooWide {
        /// The network given.
        net: IpNet,
    },
    /// The TTL is not a duration from 1 s to [`MAX_TTL`].
    #[error("bad ttl: a duration such as \"30m\", \"8h\" or \"1d\" (1 s to {max} s)")]
    BadTtl {
        /// The largest TTL accepted, in seconds.
        max: u64,
    },
    /// The user name is empty, longer than [`MAX_USER_LEN`] bytes, or contains control
    /// characters.
    #[error("bad user name")]
    BadUser,
    /// No entry covers the address.
    #[error("not found")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The settings of `[pop_before_smtp]` the service applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether POP3 logins open the relay.
    pub enabled: bool,
    /// How long a login keeps the address allowed; also an admin's TTL when none is given.
    pub ttl: Duration,
    /// IPv6 clients are recorded by this prefix length (at most 128).
    pub ipv6_prefix: u8,
}

impl Settings {
    /// The settings of `config`.
    pub fn from_config(config: &crate::config::PopBeforeSmtp) -> Settings {
        Settings {
            enabled: config.enabled,
            ttl: config.ttl,
            ipv6_prefix: config.ipv6_prefix.min(128),
        }
    }
}

/// Which admin end a change came through; named as the event's `listener`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The control channel (`mailgate allowlist`).
    Control,
    /// The admin HTTP API.
    Http,
}

impl Via {
    /// The event's `listener`.
    pub fn listener(self) -> &'static str {
        match self {
            Via::Control => "control",
            Via::Http => "admin",
        }
    }
}

/// A TTL as an admin gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl<'a> {
    /// None given: the configured `ttl`.
    Default,
    /// Whole seconds.
    Seconds(u64),
    /// A duration in the configuration's syntax (`"30m"`, `"1h30m"`, `"1d"`; see
    /// [`crate::config::parse_duration`]): the one grammar of the config, the CLI and the API.
    Text(&'a str),
}

/// An entry an admin asks for, as given.
#[derive(Debug, Clone, Copy)]
pub struct Addition<'a> {
    /// An address, stored as itself (`192.0.2.1` as `/32`, `2001:db8::1` as `/128`), or a
    /// network no wider than [`WIDEST_V4`] / [`WIDEST_V6`] (`10.1.2.0/24`,
    /// `2001:db8:1:2::/64`, as `LIST` shows them).
    pub address: &'a str,
    /// How long the entry lives.
    pub ttl: Ttl<'a>,
    /// Recorded as the entry's user.
    pub user: &'a str,
}

/// The POP3 session a login came from, for its audit event.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The listener role (`pop3`, `pop3s`).
    pub listener: &'a str,
    /// The session id.
    pub session: &'a str,
    /// TLS version and cipher, if any.
    pub tls: Option<&'a str>,
    /// The client hint (see `docs/audit.md`).
    pub client_name: Option<String>,
}

/// The allowlist service. Share it behind an `Arc`; all methods take `&self`.
pub struct Allowlist {
    store: Arc<dyn AllowlistStore>,
    settings: Settings,
    audit: Auditor,
}

impl std::fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowlist")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Allowlist {
    /// The service over `store`, recording its events with `audit`.
    pub fn new(store: Arc<dyn AllowlistStore>, settings: Settings, audit: Auditor) -> Allowlist {
        Allowlist {
            store,
            settings,
            audit,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The key `ip` is stored under.
    pub fn key(&self, ip: IpAddr) -> IpNet {
        network_key(ip, self.settings.ipv6_prefix)
    }

    /// The key an admin's address or network (as [`Addition::address`]) is stored under.
    pub fn key_of(&self, address: &str) -> Result<IpNet, Error> {
        self.target(address).map(|(_, key)| key)
    }

    /// The live entry covering `ip` at `now`: its login network's, else an admin's network
    /// that holds it.
    pub async fn lookup(&self, ip: IpAddr, now: SystemTime) -> Result<Option<Entry>, Error> {
        let ip = crate::canonical_ip(ip);
        let found = self.store.find(ip, self.key(ip), now).await?;
        Ok(found.map(|(_, entry)| entry))
    }

    /// As [`Allowlist::lookup`] for the relay decision: a store that fails counts as no
    /// entry (the relay stays closed), with a warning in the log.
    pub async fn relay_lookup(&self, ip: IpAddr, now: SystemTime) -> Option<Entry> {
        match self.lookup(ip, now).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(%ip, "allowlist lookup failed, relay not opened: {e}");
                None
            }
        }
    }

    /// Records a successful POP3 login by `user` from `from.peer` at `now`: the network may
    /// relay until `now + ttl` (a later expiry is kept). Audited as `added` or `refreshed`.
    /// Does nothing (`Ok(None)`) while POP-before-SMTP is disabled.
    pub async fn login(
        &self,
        from: &Login<'_>,
        user: &str,
        now: SystemTime,
    ) -> Result<Option<InsertOutcome>, Error> {
        if !self.settings.enabled {
            return Ok(None);
        }
        let user = store::clean_user(user);
        let ip = crate::canonical_ip(from.peer.ip());
        let outcome = self
            .store
            .put(Put {
                key: self.key(ip),
                user: &user,
                now,
                ttl: self.settings.ttl,
                expiry: Expiry::Extend,
            })
            .await?;
        let mut e = event(now, "pop3", LOGIN_MECHANISM, added(&outcome));
        e.listener = Some(from.listener.to_string());
        e.session = Some(from.session.to_string());
        e.client_ip = Some(ip);
        e.client_port = Some(from.peer.port());
        e.tls = from.tls.map(str::to_string);
        e.client_name = from.client_name.clone();
        e.user = Some(user);
        self.audit.record(e);
        if outcome.shared_warning {
            tracing::warn!(
                address = %ip,
                users = outcome.distinct_users,
                "address allowlisted by many different users within one TTL (NAT or shared host?)"
            );
        }
        warn_evicted(&outcome);
        Ok(Some(outcome))
    }

    /// Adds (or refreshes) the entry an admin asks for, with exactly the TTL given, after
    /// validating it; returns the entry as stored. Audited as `added` or `refreshed`.
    pub async fn add(
        &self,
        add: &Addition<'_>,
        via: Via,
        now: SystemTime,
    ) -> Result<(IpNet, Entry), Error> {
        let valid = self.validate(add)?;
        let outcome = self
            .store
            .put(Put {
                key: valid.key,
                user: add.user,
                now,
                ttl: valid.ttl,
                expiry: Expiry::Exact,
            })
            .await?;
        tracing::info!(
            ip = %valid.ip,
            user = add.user,
            ttl_secs = valid.ttl.as_secs(),
            via = via.listener(),
            "allowlist add"
        );
        let mut e = admin_event(now, via, valid.ip, added(&outcome));
        e.user = Some(add.user.to_string());
        self.audit.record(e);
        warn_evicted(&outcome);
        match self.store.get(valid.key, now).await? {
            Some(entry) => Ok((valid.key, entry)),
            None => Err(store::Error::Unavailable("the entry was not kept".into()).into()),
        }
    }

    /// Removes an entry; returns it. Audited as `removed`. A network (`10.1.2.0/24`) names
    /// its own entry; an address names the live entry that lets it relay (its own, its
    /// login network's, or an admin's network holding it). [`Error::NotFound`] if none.
    pub async fn remove(
        &self,
        address: &str,
        via: Via,
        now: SystemTime,
    ) -> Result<(IpNet, Entry), Error> {
        let (ip, mut key) = self.target(address)?;
        if !address.contains('/')
            && let Some((covering, _)) = self.store.find(ip, key, now).await?
        {
            key = covering;
        }
        let Some(entry) = self.store.remove(key).await? else {
            return Err(Error::NotFound);
        };
        tracing::info!(%ip, via = via.listener(), "allowlist remove");
        let mut e = admin_event(now, via, ip, "removed");
        e.user = Some(entry.user.to_string());
        self.audit.record(e);
        Ok((key, entry))
    }

    /// The entries live at `now`, sorted by network.
    pub async fn list(&self, now: SystemTime) -> Result<Vec<(IpNet, Entry)>, Error> {
        Ok(self.store.list(now).await?)
    }

    /// Removes the entries expired at `now`, recording one `expired` event for each; returns
    /// how many. Walks every entry: the housekeeping runs it off the async workers.
    pub async fn expire(&self, now: SystemTime) -> Result<usize, Error> {
        let gone = self.store.expire(now).await?;
        for (net, entry) in &gone {
            let mut e = event(now, "control", EXPIRY_MECHANISM, "expired");
            e.client_ip = Some(net.addr());
            e.user = Some(entry.user.to_string());
            self.audit.record(e);
        }
        if !gone.is_empty() {
            tracing::debug!(entries = gone.len(), "allowlist entries expired");
        }
        Ok(gone.len())
    }

    /// Makes the live entries survive a restart where the store needs it (the memory
    /// store's snapshot); returns how many were kept. May do file I/O.
    pub async fn persist(&self, now: SystemTime) -> Result<usize, Error> {
        Ok(self.store.persist(now).await?)
    }

    /// Whether [`Allowlist::persist`] is due before its regular time.
    pub fn wants_persist(&self) -> bool {
        self.store.wants_persist()
    }

    /// Entries stored, including expired ones not yet swept.
    pub async fn len(&self) -> Result<usize, Error> {
        Ok(self.store.len().await?)
    }

    /// Whether nothing is stored.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.store.is_empty().await?)
    }

    /// Checks an admin's addition: its address, TTL and user name.
    fn validate(&self, add: &Addition<'_>) -> Result<Valid, Error> {
        let (ip, key) = self.target(add.address)?;
        let ttl = ttl(add.ttl, self.settings.ttl)?;
        let user = add.user;
        if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
            return Err(Error::BadUser);
        }
        Ok(Valid { ip, key, ttl })
    }

    /// The address (canonical; a network's first) and the key of an admin's `text`, stored
    /// exactly as written: an address as a host (`/32`, `/128`), a network as that network,
    /// no wider than [`WIDEST_V4`] / [`WIDEST_V6`].
    fn target(&self, text: &str) -> Result<(IpAddr, IpNet), Error> {
        let text = text.trim();
        let net: IpNet = match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => text.parse().map_err(|_| Error::BadAddress)?,
        };
        let ip = crate::canonical_ip(net.network());
        // An IPv4-mapped network (`::ffff:192.0.2.1/128`) is its IPv4 address's.
        let prefix = match (net, ip) {
            (IpNet::V6(v6), IpAddr::V4(_)) => v6.prefix_len().saturating_sub(96),
            _ => net.prefix_len(),
        };
        let widest = match ip {
            IpAddr::V4(_) => WIDEST_V4,
            IpAddr::V6(_) => WIDEST_V6,
        };
        if prefix < widest {
            return Err(Error::TooWide { net });
        }
        let key = IpNet::new(ip, prefix)
            .map_err(|_| Error::BadAddress)?
            .trunc();
        Ok((ip, key))
    }
}

/// A validated admin addition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Valid {
    /// The address to record in the event (canonical; a network's first address).
    ip: IpAddr,
    key: IpNet,
    ttl: Duration,
}

/// The TTL `given` means: 1 s to [`MAX_TTL`], `default` when none is given.
fn ttl(given: Ttl<'_>, default: Duration) -> Result<Duration, Error> {
    let max = MAX_TTL.as_secs();
    let ttl = match given {
        Ttl::Default => default,
        Ttl::Seconds(s) => Duration::from_secs(s),
        Ttl::Text(text) => {
            crate::config::parse_duration(text.trim()).ok_or(Error::BadTtl { max })?
        }
    };
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(Error::BadTtl { max });
    }
    Ok(ttl)
}

/// The `reason` of a put.
fn added(outcome: &InsertOutcome) -> &'static str {
    if outcome.refreshed {
        "refreshed"
    } else {
        "added"
    }
}

/// An `allowlist` event: successful, class `insecure` (an address that may relay).
fn event(now: SystemTime, protocol: &str, mechanism: &str, reason: &str) -> Event {
    let time = crate::audit::event::rfc3339(now);
    let mut e = Event::new(Kind::Allowlist, protocol, time, Outcome::Success);
    e.mechanism = Some(mechanism.to_string());
    e.class = Some(Class::Insecure);
    e.reason = Some(reason.to_string());
    e
}

/// The event of an admin's change: protocol `control`, listener `control` or `admin`, the
/// address the admin named.
fn admin_event(now: SystemTime, via: Via, ip: IpAddr, reason: &str) -> Event {
    let mut e = event(now, "control", ADMIN_MECHANISM, reason);
    e.listener = Some(via.listener().to_string());
    e.client_ip = Some(ip);
    e
}

fn warn_evicted(outcome: &InsertOutcome) {
    if outcome.evicted > 0 {
        tracing::warn!(
            evicted = outcome.evicted,
            "allowlist full (max_entries): the entries expiring soonest were dropped"
        );
    }
}

#[cfg(test)]
#[path = "allowlist_tests.rs"]
mod tests;
