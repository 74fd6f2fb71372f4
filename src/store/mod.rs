//! Seams for the gateway's shared state: the POP-before-SMTP allowlist
//! ([`AllowlistStore`]), the failed-login counters of the throttle ([`FailureCounters`]) and
//! the one-session-per-maildrop locks of RFC 1939 §8 ([`MailboxLocks`]).
//!
//! Each trait is used as `Arc<dyn ...>`, so a backend is chosen once at start and the rest of
//! the gateway does not know which one it talks to. [`memory`] holds the in-process backends;
//! [`cluster`] the ones shared between gateway nodes through Redis (`[cluster]`), each over a
//! memory backend that serves while Redis is down. Callers own the policy (validation, audit, delays); a backend only stores, bounds
//! and expires.
//!
//! # Why [`Pending`] and not `async fn` in the traits
//!
//! The traits must be object-safe, which rules out plain `async fn`. Every method returns a
//! [`Pending`] instead: a future that is either an answer already computed or a boxed future.
//! The memory backends answer at once ([`Pending::ready`]), so a lookup on the relay path costs
//! no allocation; a networked backend returns [`Pending::boxed`]. This needs no extra crate
//! (`async-trait` would box every call, the memory lookups included).
//!
//! # Contract for backends
//!
//! - Methods MUST NOT block on I/O inside the call; work that waits goes into the boxed
//!   future. The memory backends do their work in the call itself (a map operation), except
//!   the sweeps ([`AllowlistStore::expire`], [`AllowlistStore::persist`]) which walk every
//!   entry: callers run those off the async workers.
//! - Keys arrive canonical (see [`crate::allowlist::network_key`] and [`CounterKey`]); a
//!   backend compares them as they are.
//! - Every map is bounded; at the bound the backend drops the entries that matter least (the
//!   soonest to expire, the least recently failed) rather than refuse the new one.

pub mod cluster;
pub mod journal;
pub mod known;
pub mod memory;
pub mod prefixes;

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use ipnet::IpNet;

/// What a store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not be reached, or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A file the backend keeps (the memory allowlist's snapshot) could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The answer of a store method: ready at once (memory backends) or a boxed future.
///
/// Await it like any future; it yields `Result<T, store::Error>`.
#[must_use = "a store call does nothing useful unless its answer is awaited"]
pub struct Pending<'a, T>(Answer<'a, T>);

enum Answer<'a, T> {
    /// Computed in the call; taken by the first poll.
    Ready(Option<Result<T, Error>>),
    /// Computed by the future.
    Boxed(Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>),
}

impl<'a, T> Pending<'a, T> {
    /// An answer already computed: polling it allocates nothing and never waits.
    pub fn ready(answer: Result<T, Error>) -> Self {
        Pending(Answer::Ready(Some(answer)))
    }

    /// An answer still to come from `future` (a networked backend).
    pub fn boxed(future: impl Future<Output = Result<T, Error>> + Send + 'a) -> Self {
        Pending(Answer::Boxed(Box::pin(future)))
    }
}

// Sound without `T: Unpin`: a `Pending` never pins its `T` (the ready value is moved out of
// the `Option`, and the boxed future is pinned on the heap by `Box::pin`).
impl<T> Unpin for Pending<'_, T> {}

impl<T> Future for Pending<'_, T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Answer::Ready(answer) => Poll::Ready(answer.take().unwrap_or_else(|| {
                Err(Error::Unavailable("store answer polled twice".to_owned()))
            })),
            Answer::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for Pending<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Answer::Ready(_) => "Pending(ready)",
            Answer::Boxed(_) => "Pending(boxed)",
        })
    }
}

/// One allowlisted network and who opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The user whose login (or the admin's command) last refreshed the entry. A name of up to
    /// 24 bytes is stored inline, so that a lookup on a large list costs one cache miss (the
    /// entry), not two (the entry, then the name on the heap).
    pub user: CompactString,
    /// When the entry was created (kept across refreshes while it stays live).
    pub inserted_at: SystemTime,
    /// The first instant at which the entry no longer allows relaying.
    pub expires_at: SystemTime,
}

/// How a put sets the expiry of an entry that is already live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A login: `now + ttl`, unless the entry already lives longer (an admin's day is not
    /// shortened by a login).
    Extend,
    /// An admin's command: exactly `now + ttl`, shorter too.
    Exact,
}

/// One insertion or refresh of an allowlist entry. The key and user arrive validated.
#[derive(Debug, Clone, Copy)]
pub struct Put<'a> {
    /// The network ([`network_key`]).
    pub key: IpNet,
    /// The user recorded on the entry (at most [`MAX_USER_LEN`] bytes, no control
    /// characters: see [`clean_user`]).
    pub user: &'a str,
    /// The time of the change: the new entry's `inserted_at`.
    pub now: SystemTime,
    /// How long from `now` the entry lives.
    pub ttl: Duration,
    /// How an existing expiry is updated.
    pub expiry: Expiry,
}

/// What a put did, for the caller's log and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// A live entry for the same key existed and was refreshed.
    pub refreshed: bool,
    /// Distinct users that allowlisted this key within one (configured) TTL, counting this
    /// one.
    pub distinct_users: usize,
    /// `distinct_users` reached the warning threshold and this put added a new user to the
    /// key: the address is probably shared (NAT, proxy) and the caller should warn once.
    pub shared_warning: bool,
    /// Entries evicted to stay within the bound.
    pub evicted: usize,
}

/// The POP-before-SMTP allowlist: networks that may relay until their entry expires.
///
/// Bounded: when full, a put evicts the entries that expire soonest (never the one it puts).
pub trait AllowlistStore: Send + Sync + 'static {
    /// Creates or refreshes the entry for `put.key`.
    fn put<'a>(&'a self, put: Put<'a>) -> Pending<'a, InsertOutcome>;

    /// The entry for `key` if it is live at `now` (`expires_at > now`).
    fn get(&self, key: IpNet, now: SystemTime) -> Pending<'_, Option<Entry>>;

    /// The live entry at `now` whose network holds `ip` (canonical): the one keyed `first`
    /// (a login's network, the common case) if live, else the narrowest other network that
    /// holds `ip` (an admin's entry: a host, or a CIDR of any length).
    fn find(
        &self,
        ip: IpAddr,
        first: IpNet,
        now: SystemTime,
    ) -> Pending<'_, Option<(IpNet, Entry)>>;

    /// Removes the entry for `key`, live or not; the entry removed, if there was one.
    fn remove(&self, key: IpNet) -> Pending<'_, Option<Entry>>;

    /// The entries live at `now`, sorted by network.
    fn list(&self, now: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>>;

    /// Removes every entry expired at `now` and returns them, so that the caller can record
    /// each. Walks every entry: run it off the async workers.
    fn expire(&self, now: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>>;

    /// Entries stored, including expired ones not yet removed by [`AllowlistStore::expire`].
    fn len(&self) -> Pending<'_, usize>;

    /// Whether nothing is stored.
    fn is_empty(&self) -> Pending<'_, bool> {
        Pending::boxed(async move { Ok(self.len().await? == 0) })
    }

    /// Makes the entries live at `now` survive a restart where this backend needs it (the
    /// memory backend writes its snapshot file); returns the entries kept. A backend that
    /// keeps its data elsewhere does nothing. May do file I/O: run it off the async workers.
    fn persist(&self, now: SystemTime) -> Pending<'_, usize> {
        let _ = now;
        Pending::ready(Ok(0))
    }

    /// Whether [`AllowlistStore::persist`] is due before its regular time (the memory
    /// backend's journal has grown large). Cheap: called on every housekeeping round.
    fn wants_persist(&self) -> bool {
        false
    }
}

/// What a failure counter counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CounterKey {
    /// A client network ([`network_key`] at the throttle's prefix).
    Addr(IpNet),
    /// A user name as tried: lower-cased and bounded (see [`CounterKey::user`]).
    User(CompactString),
}

/// User names are keyed by at most this many bytes (lower-cased).
pub const MAX_USER_KEY_LEN: usize = 256;

/// Longest user name an allowlist entry keeps, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// The key for `ip`: canonical (IPv4-mapped IPv6 becomes IPv4), and for IPv6 its
/// `/ipv6_prefix` network, since one host often rotates privacy addresses within its /64.
pub fn network_key(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match crate::canonical_ip(ip) {
        IpAddr::V4(v4) => IpNet::V4(ipnet::Ipv4Net::from(v4)),
        IpAddr::V6(v6) => {
            // The prefix is at most 128, so construction cannot fail; fall back to the host.
            let net = ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128))
                .unwrap_or_else(|_| ipnet::Ipv6Net::from(v6));
            IpNet::V6(net.trunc())
        }
    }
}

/// A user name made safe to store, list and log: control characters dropped, cut to
/// [`MAX_USER_LEN`] bytes at a character boundary.
pub fn clean_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len().min(MAX_USER_LEN));
    for c in user.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_USER_LEN {
            break;
        }
        out.push(c);
    }
    out
}

impl CounterKey {
    /// The key for a user name: lower-cased, so case variants share one counter, and cut to
    /// [`MAX_USER_KEY_LEN`] bytes at a character boundary.
    pub fn user(name: &str) -> CounterKey {
        let mut key = CompactString::with_capacity(name.len().min(MAX_USER_KEY_LEN));
        for c in name.chars().flat_map(char::to_lowercase) {
            if key.len() + c.len_utf8() > MAX_USER_KEY_LEN {
                break;
            }
            key.push(c);
        }
        CounterKey::User(key)
    }
}

/// The throttle's schedule, passed with each call so that a backend keeps no configuration:
/// after `free_failures` failures each further one doubles the delay from `base_delay` up to
/// `max_delay`; a key is forgotten `window` after its last failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures without delay.
    pub free_failures: u32,
    /// The first delay.
    pub base_delay: Duration,
    /// The largest delay.
    pub max_delay: Duration,
    /// How long a failure is remembered after the key's last one.
    pub window: Duration,
}

impl Backoff {
    /// The delay after `failures` remembered failures.
    pub fn delay_for(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let doublings = failures - self.free_failures;
        let grown = 2u32
            .checked_pow(doublings)
            .and_then(|f| self.base_delay.checked_mul(f))
            .unwrap_or(self.max_delay);
        grown.min(self.max_delay)
    }
}

/// How [`FailureCounters::reserve`] treats a slot that is not free yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Take the next slot even if it lies ahead, and return the wait (per address: parallel
    /// connections queue behind each other).
    Queue,
    /// Take the slot only if it is free now; otherwise change nothing and return the wait
    /// (per user: the attempt is refused).
    IfFree,
}

/// Per user, the client networks that logged in successfully lately ("known" networks): the
/// throttle's per-user limit does not apply to them, so guessing a user's password from
/// elsewhere does not lock that user out of the places they use.
pub trait KnownAddresses: Send + Sync + 'static {
    /// Records a successful login by `user` from `net` at `now`.
    fn remember<'a>(&'a self, user: &'a str, net: IpNet, now: SystemTime) -> Pending<'a, ()>;

    /// Whether `user` logged in from `net` within the backend's window before `now`.
    fn is_known<'a>(&'a self, user: &'a str, net: IpNet, now: SystemTime) -> Pending<'a, bool>;

    /// Forgets what is older than the window; returns the users left.
    fn purge(&self, now: SystemTime) -> Pending<'_, usize>;

    /// Makes the known networks survive a restart where this backend needs it (the memory
    /// backend's snapshot file); returns the users kept. May do file I/O.
    fn persist(&self, now: SystemTime) -> Pending<'_, usize> {
        let _ = now;
        Pending::ready(Ok(0))
    }
}

/// Failed-login counters with a check schedule, per [`CounterKey`].
///
/// A counter remembers how many failures its key had, when the last was, and the earliest
/// time of its next credential check. Bounded: when full, the keys that failed least recently
/// are dropped.
pub trait FailureCounters: Send + Sync + 'static {
    /// Records a failure of `key` at `now` and returns the failures remembered, this one
    /// included (1 after a quiet `window`). The next check moves to at least
    /// `now + delay_for(failures)`.
    fn bump<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
    ) -> Pending<'a, u32>;

    /// The failures remembered for `key` at `now` (0 once `window` has passed since its last).
    fn get<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        window: Duration,
    ) -> Pending<'a, u32>;

    /// Takes the next check slot of `key` at `now` as `how` says and returns the wait until
    /// it: zero for an unknown key, a forgiven one, or one within its free failures. A slot
    /// taken moves the next one a delay further.
    fn reserve<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
        how: Reserve,
    ) -> Pending<'a, Duration>;

    /// Gives back the last slot [`FailureCounters::reserve`] queued for `key` (its client left
    /// before it came): the queue's end moves one delay closer, not before `now`. A backend
    /// that cannot give a slot back keeps it (the default): the queue is only longer.
    fn release<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
    ) -> Pending<'a, ()> {
        let _ = (key, now, backoff);
        Pending::ready(Ok(()))
    }

    /// Forgets `key` (a successful login).
    fn reset<'a>(&'a self, key: &'a CounterKey) -> Pending<'a, ()>;

    /// Forgets the keys whose last failure is `window` or more before `now`; returns how many.
    fn purge(&self, now: SystemTime, window: Duration) -> Pending<'_, usize>;

    /// Keys tracked (addresses plus user names).
    fn len(&self) -> Pending<'_, usize>;

    /// Whether no key is tracked.
    fn is_empty(&self) -> Pending<'_, bool> {
        Pending::boxed(async move { Ok(self.len().await? == 0) })
    }
}

/// Exclusive access to a maildrop for one POP3 session (RFC 1939 §8).
pub trait MailboxLocks: Send + Sync + 'static {
    /// Takes the lock of `user`'s maildrop: `None` while another session holds it. The lock
    /// is held until the lease is dropped.
    fn acquire<'a>(&'a self, user: &'a str) -> Pending<'a, Option<MailboxLease>>;
}

/// A held maildrop lock; dropping it releases the lock, however the session ends.
#[must_use = "the maildrop lock is released as soon as the lease is dropped"]
pub struct MailboxLease {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl MailboxLease {
    /// A lease that runs `release` when dropped (a networked backend hands it a task that
    /// deletes its key).
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> MailboxLease {
        MailboxLease {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for MailboxLease {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for MailboxLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailboxLease")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_answers_ready_and_boxed() {
        assert_eq!(Pending::ready(Ok(7)).await.unwrap(), 7);
        let n = 5;
        let boxed = Pending::boxed(async move {
            tokio::task::yield_now().await;
            Ok(n * 2)
        });
        assert_eq!(format!("{boxed:?}"), "Pending(boxed)");
        assert_eq!(boxed.await.unwrap(), 10);
        let failed: Pending<'_, ()> = Pending::ready(Err(Error::Unavailable("down".into())));
        assert_eq!(
            failed.await.unwrap_err().to_string(),
            "store unavailable: down"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(900),
        };
        // (failures so far, delay before the next attempt)
        let cases = [
            (0, 0),
            (2, 0),
            (3, 2),
            (4, 4),
            (7, 32),
            (8, 60),
            (40, 60),
            (u32::MAX, 60),
        ];
        for (n, want) in cases {
            assert_eq!(b.delay_for(n).as_secs(), want, "after {n} failures");
        }
    }

    #[test]
    fn user_keys_fold_case_and_are_bounded() {
        assert_eq!(CounterKey::user("Alice"), CounterKey::user("ALICE"));
        let CounterKey::User(long) = CounterKey::user(&"É".repeat(1000)) else {
            unreachable!("a user key")
        };
        assert!(long.len() <= MAX_USER_KEY_LEN && long.starts_with('é'));
    }

    #[test]
    fn a_lease_releases_once_on_drop() {
        let released = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = released.clone();
        let lease = MailboxLease::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(released.load(std::sync::atomic::Ordering::SeqCst), 0);
        drop(lease);
        assert_eq!(released.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
