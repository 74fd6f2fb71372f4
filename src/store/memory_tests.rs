//! Tests of the memory backends, through their own methods and through the store traits as
//! the gateway holds them (`Arc<dyn ...>`). Time is always passed in; nothing sleeps.

use std::fs;
use std::net::IpAddr;

use super::*;
use crate::store::{MAX_USER_LEN, network_key};

const TTL: Duration = Duration::from_secs(1800);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The key of `s` as the service makes it (IPv6 by /64).
fn key(s: &str) -> IpNet {
    network_key(ip(s), 64)
}

fn list() -> MemoryAllowlist {
    MemoryAllowlist::new(TTL, 1000, 3)
}

fn admin(key: IpNet, user: &str, ttl: Duration, now: SystemTime) -> Put<'_> {
    Put {
        key,
        user,
        now,
        ttl,
        expiry: Expiry::Exact,
    }
}

#[test]
fn expiry_at_ttl_boundary() {
    let a = list();
    let out = a.insert(key("192.0.2.7"), "alice", t(0));
    assert!(!out.refreshed);
    // (offset from login, allowed?)
    let cases = [
        (0, true),
        (1, true),
        (1799, true),
        (1800, false),
        (1801, false),
    ];
    for (at, want) in cases {
        assert_eq!(a.is_allowed(key("192.0.2.7"), t(at)), want, "at +{at}s");
        assert_eq!(
            a.lookup(key("192.0.2.7"), t(at)).is_some(),
            want,
            "lookup at +{at}s"
        );
    }
    let e = a.lookup(key("192.0.2.7"), t(5)).unwrap();
    assert_eq!(
        e,
        Entry {
            user: "alice".into(),
            inserted_at: t(0),
            expires_at: t(1800)
        }
    );
    assert!(!a.is_allowed(key("192.0.2.8"), t(0)));
}

#[test]
fn refresh_extends_and_keeps_inserted_at() {
    let a = list();
    a.insert(key("192.0.2.7"), "alice", t(0));
    let out = a.insert(key("192.0.2.7"), "alice", t(1000));
    assert!(out.refreshed);
    let e = a.lookup(key("192.0.2.7"), t(2500)).unwrap();
    assert_eq!((e.inserted_at, e.expires_at), (t(0), t(2800)));
    assert!(!a.is_allowed(key("192.0.2.7"), t(2800)));
    // After expiry, a new login starts a new entry.
    let out = a.insert(key("192.0.2.7"), "bob", t(5000));
    assert!(!out.refreshed);
    let e = a.lookup(key("192.0.2.7"), t(5000)).unwrap();
    assert_eq!((e.user.as_str(), e.inserted_at), ("bob", t(5000)));
}

#[test]
fn exact_expiry_and_login_keeps_later_expiry() {
    let a = list();
    let k = key("192.0.2.9");
    a.put_now(admin(k, "admin", Duration::from_secs(86400), t(0)));
    // A login does not shorten the admin's day.
    a.insert(k, "alice", t(10));
    assert_eq!(a.lookup(k, t(10)).unwrap().expires_at, t(86400));
    // An exact put sets the expiry, shorter too.
    a.put_now(admin(k, "admin", Duration::from_secs(60), t(20)));
    assert!(!a.is_allowed(k, t(80)));
    // An expiry past the end of time falls back to `now`: the entry is not live.
    a.put_now(admin(key("192.0.2.10"), "admin", Duration::MAX, t(0)));
    assert!(!a.is_allowed(key("192.0.2.10"), t(0)));
}

#[test]
fn keys_are_canonical_and_grouped() {
    // (address, its key)
    let cases = [
        ("192.0.2.1", "192.0.2.1/32"),
        ("::ffff:192.0.2.1", "192.0.2.1/32"),
        ("2001:db8:1:2::10", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ];
    for (addr, want) in cases {
        assert_eq!(key(addr), want.parse::<IpNet>().unwrap(), "{addr}");
    }
    assert_eq!(
        network_key(ip("2001:db8:1:2::10"), 200),
        "2001:db8:1:2::10/128".parse::<IpNet>().unwrap(),
        "a prefix above 128 is a host"
    );
    let a = list();
    a.insert(key("2001:db8:1:2::10"), "alice", t(0));
    assert!(a.is_allowed(key("2001:db8:1:2::99"), t(1)));
    assert!(!a.is_allowed(key("2001:db8:1:3::10"), t(1)));
    assert!(a.insert(key("2001:db8:1:2::99"), "alice", t(5)).refreshed);
    assert_eq!(a.len(), 1);
    assert!(a.take(key("2001:db8:1:2::abcd")).is_some());
    assert!(a.take(key("2001:db8:1:2::abcd")).is_none());
}

#[test]
fn eviction_at_capacity_keeps_latest() {
    let a = MemoryAllowlist::new(TTL, 200, 0);
    for i in 0..200u64 {
        let addr = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
        assert_eq!(a.insert(network_key(addr, 64), "u", t(i)).evicted, 0);
    }
    assert_eq!(a.len(), 200);
    let out = a.insert(key("192.0.2.200"), "new", t(500));
    // Batch is 1% of 200 = 2: from 201 down to 198.
    assert_eq!(out.evicted, 3);
    assert_eq!(a.len(), 198);
    assert!(a.is_allowed(key("192.0.2.200"), t(500)));
    // The soonest-expiring (oldest) went; the rest stayed.
    for i in 0..3 {
        assert!(
            !a.is_allowed(key(&format!("10.0.0.{i}")), t(500)),
            "10.0.0.{i}"
        );
    }
    assert!(a.is_allowed(key("10.0.0.3"), t(500)));
    assert!(a.is_allowed(key("10.0.0.199"), t(500)));
    // Another insert fits without a scan.
    assert_eq!(a.insert(key("192.0.2.201"), "new", t(501)).evicted, 0);
}

#[test]
fn eviction_with_equal_expiry_never_drops_the_new_key() {
    let a = MemoryAllowlist::new(TTL, 1, 0);
    a.insert(key("192.0.2.1"), "a", t(0));
    a.insert(key("192.0.2.2"), "b", t(0));
    assert_eq!(a.len(), 1);
    assert!(a.is_allowed(key("192.0.2.2"), t(0)));
}

#[test]
fn shared_address_warning() {
    let a = list(); // warn at 3 distinct users
    let k = key("203.0.113.5");
    // (user, at, distinct users, warning?)
    let steps = [
        ("alice", 0, 1, false),
        ("bob", 10, 2, false),
        ("alice", 20, 2, false),
        ("carol", 30, 3, true),
        ("carol", 40, 3, false),
        ("alice", 50, 3, false),
        ("dave", 60, 3, true), // bounded list: bob, seen longest ago, is forgotten
        // Beyond one TTL after everyone's last login, only the new user counts.
        ("erin", 60 + 1800, 1, false),
    ];
    for (user, at, n, warn) in steps {
        let out = a.insert(k, user, t(at));
        assert_eq!(
            (out.distinct_users, out.shared_warning),
            (n, warn),
            "{user} at {at}"
        );
    }
    assert_eq!(a.lookup(k, t(1900)).unwrap().user, "erin");
    // Zero disables the warning.
    let quiet = MemoryAllowlist::new(TTL, 10, 0);
    for u in ["a", "b", "c", "d"] {
        assert!(!quiet.insert(k, u, t(0)).shared_warning);
    }
}

#[test]
fn expire_returns_what_it_removed() {
    let a = list();
    a.insert(key("192.0.2.2"), "b", t(100));
    a.insert(key("192.0.2.1"), "a", t(0));
    a.insert(key("2001:db8::1"), "c", t(200));
    let gone = a.expire_now(t(1800));
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].0, gone[0].1.user.as_str()),
        (key("192.0.2.1"), "a")
    );
    assert!(a.expire_now(t(1800)).is_empty());
    assert_eq!(a.len(), 2);
    assert_eq!(a.entries(t(1899)).len(), 2);
    assert_eq!(a.entries(t(1950)).len(), 1);
    let gone: Vec<_> = a
        .expire_now(t(10_000))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        gone,
        [key("192.0.2.2"), key("2001:db8::1")],
        "sorted by network"
    );
    assert!(a.is_empty());
}

#[test]
fn snapshot_round_trip_drops_expired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.json");
    let a = list();
    a.insert(key("192.0.2.1"), "alice", t(0));
    a.insert(key("2001:db8:5:6::7"), "bob", t(1000));
    a.put_now(admin(
        key("198.51.100.1"),
        "admin",
        Duration::from_secs(10),
        t(0),
    ));
    assert_eq!(a.save(&path, t(5)).unwrap(), 3);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(names.len(), 1, "temporary file left behind");

    let b = list();
    // At t(1900) alice's entry has expired and the admin's too (live at save time only);
    // bob's is live.
    assert_eq!(b.load(&path, t(1900)).unwrap(), 1);
    assert_eq!(b.entries(t(1900)), a.entries(t(1900)));
    assert!(b.is_allowed(key("2001:db8:5:6::1"), t(1900)));
    assert!(!b.is_allowed(key("192.0.2.1"), t(1900)));
    // Loaded before alice's expiry, her entry comes back.
    assert_eq!(list().load(&path, t(1500)).unwrap(), 2);
    // Each network keeps its key: bob's /64 covers another address of that /64 through
    // `find`, whatever IPv6 prefix logins use now.
    let found = futures_ready(b.find(ip("2001:db8:5:6::99"), key("192.0.2.99"), t(1900)));
    assert_eq!(
        found.map(|(net, _)| net.to_string()),
        Some("2001:db8:5:6::/64".into())
    );

    // Merge keeps the later expiry.
    let c = list();
    c.insert(key("2001:db8:5:6::7"), "carol", t(2000));
    assert_eq!(c.load(&path, t(1900)).unwrap(), 1);
    assert_eq!(
        c.lookup(key("2001:db8:5:6::7"), t(2000)).unwrap().user,
        "carol"
    );
}

/// A store as the gateway opens one: snapshot loaded, then the journal replayed.
fn reopen(dir: &std::path::Path, now: SystemTime) -> MemoryAllowlist {
    let snapshot = dir.join("allowlist.json");
    let mut a = list().with_snapshot(snapshot.clone());
    a.load(&snapshot, now).unwrap();
    a.open_journal(&dir.join("allowlist.journal"), now).unwrap();
    a
}

#[tokio::test]
async fn acknowledged_changes_survive_a_crash_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let a = reopen(dir.path(), t(0));
    let store: &dyn AllowlistStore = &a;
    store
        .put(admin(key("192.0.2.1"), "alice", TTL, t(0)))
        .await
        .unwrap();
    store
        .put(admin(key("192.0.2.2"), "bob", TTL, t(0)))
        .await
        .unwrap();
    store
        .put(admin(key("192.0.2.3"), "carol", TTL, t(0)))
        .await
        .unwrap();
    // A snapshot, then more changes that only the journal has.
    assert_eq!(store.persist(t(1)).await.unwrap(), 3);
    assert!(
        fs::read(dir.path().join("allowlist.journal"))
            .unwrap()
            .is_empty()
    );
    store.remove(key("192.0.2.2")).await.unwrap();
    store
        .put(admin(key("192.0.2.4"), "dave", TTL, t(2)))
        .await
        .unwrap();
    // A shorter expiry replaces a longer one exactly.
    store
        .put(admin(
            key("192.0.2.1"),
            "alice",
            Duration::from_secs(60),
            t(3),
        ))
        .await
        .unwrap();
    // "Crash": nothing else is written; the process state is simply read back.
    let b = reopen(dir.path(), t(4));
    assert_eq!(b.entries(t(4)), a.entries(t(4)));
    assert!(!b.is_allowed(key("192.0.2.2"), t(4)), "a removal came back");
    assert!(b.is_allowed(key("192.0.2.4"), t(4)), "an addition was lost");
    assert!(!b.is_allowed(key("192.0.2.1"), t(64)));
    // Replayed after the expiry of an entry: it is not brought back.
    let c = reopen(dir.path(), t(2000));
    assert!(c.entries(t(2000)).is_empty());
    drop((a, b, c));
}

/// A login that only refreshes an entry with at least half a TTL on disk is not journaled;
/// one past that point and admin changes are.
#[tokio::test]
async fn refreshes_are_journaled_once_per_half_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let a = reopen(dir.path(), t(0));
    let store: &dyn AllowlistStore = &a;
    let journal = dir.path().join("allowlist.journal");
    let lines = || fs::read_to_string(&journal).unwrap().lines().count();
    let login = |user: &'static str, at: u64| Put {
        key: key("192.0.2.1"),
        user,
        now: t(at),
        ttl: TTL,
        expiry: Expiry::Extend,
    };
    store.put(login("alice", 0)).await.unwrap();
    assert_eq!(lines(), 1);
    // 30-minute TTL: until 15 minutes in, a refresh leaves at least half a TTL on disk.
    store.put(login("alice", 300)).await.unwrap();
    store.put(login("alice", 900)).await.unwrap();
    assert_eq!(lines(), 1);
    store.put(login("alice", 901)).await.unwrap();
    assert_eq!(lines(), 2);
    // Another user on the same address: the same permission, nothing new to keep.
    store.put(login("bob", 902)).await.unwrap();
    assert_eq!(lines(), 2);
    store
        .put(admin(key("192.0.2.1"), "bob", TTL, t(903)))
        .await
        .unwrap();
    assert_eq!(lines(), 3);
    // A crash now leaves the entry with what is on disk: at least half a TTL from the last
    // acknowledged login.
    let b = reopen(dir.path(), t(904));
    assert!(b.is_allowed(key("192.0.2.1"), t(903 + 1800 - 1)));
    assert!(!b.is_allowed(key("192.0.2.1"), t(903 + 1800)));
}

#[tokio::test]
async fn a_journal_record_that_does_not_parse_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let line = format!(
        "{{\"op\":\"put\",\"net\":\"192.0.2.9/32\",\"user\":\"eve\",\"inserted_at\":{},\"expires_at\":{}}}\n",
        1_700_000_000u64, 1_700_009_000u64
    );
    let text = format!("not json\n{line}{{\"op\":\"remove\",\"net\":\"bogus\"}}\n");
    fs::write(dir.path().join("allowlist.journal"), text).unwrap();
    let a = reopen(dir.path(), t(0));
    assert_eq!(a.lookup(key("192.0.2.9"), t(0)).unwrap().user, "eve");
}

#[test]
fn snapshot_missing_is_empty_corrupt_is_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = list();
    assert_eq!(a.load(&dir.path().join("none.json"), t(0)).unwrap(), 0);
    // (file content, why it is rejected)
    let bad = [
        ("{not json", "syntax"),
        (r#"{"version":9,"entries":[]}"#, "version"),
        (
            r#"{"version":1,"entries":[
                {"net":"x","user":"a","inserted_at":0,"expires_at":9999999999}]}"#,
            "net",
        ),
        (r#"{"version":1,"entries":[],"extra":1}"#, "unknown field"),
    ];
    for (text, why) in bad {
        let p = dir.path().join("bad.json");
        fs::write(&p, text).unwrap();
        let err = a.load(&p, t(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{why}");
    }
    assert!(a.is_empty());
    // User names from the file are cleaned as a login's are.
    let p = dir.path().join("edited.json");
    let long = "x".repeat(1000);
    fs::write(
        &p,
        format!(
            r#"{{"version":1,"entries":[
                {{"net":"192.0.2.1/32","user":"ev\nil","inserted_at":0,"expires_at":9999999999}},
                {{"net":"192.0.2.2/32","user":"{long}","inserted_at":0,"expires_at":9999999999}}]}}"#
        ),
    )
    .unwrap();
    assert_eq!(a.load(&p, t(0)).unwrap(), 2);
    assert_eq!(a.lookup(key("192.0.2.1"), t(0)).unwrap().user, "evil");
    assert_eq!(
        a.lookup(key("192.0.2.2"), t(0)).unwrap().user.len(),
        MAX_USER_LEN
    );
}

#[tokio::test]
async fn the_allowlist_through_the_trait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.json");
    let store: Arc<dyn AllowlistStore> =
        Arc::new(MemoryAllowlist::new(TTL, 100, 2).with_snapshot(path.clone()));
    let k = key("192.0.2.1");
    let login = |user: &'static str, at: u64| Put {
        key: k,
        user,
        now: t(at),
        ttl: TTL,
        expiry: Expiry::Extend,
    };
    let out = store.put(login("alice", 0)).await.unwrap();
    assert_eq!((out.refreshed, out.distinct_users), (false, 1));
    let out = store.put(login("bob", 10)).await.unwrap();
    assert_eq!((out.refreshed, out.distinct_users), (true, 2));
    assert!(out.shared_warning);
    assert_eq!(store.get(k, t(20)).await.unwrap().unwrap().user, "bob");
    assert_eq!(store.get(k, t(1810)).await.unwrap(), None);
    assert_eq!(store.list(t(20)).await.unwrap().len(), 1);
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(store.persist(t(20)).await.unwrap(), 1);
    assert!(path.exists());
    assert_eq!(store.expire(t(1810)).await.unwrap().len(), 1);
    assert!(store.is_empty().await.unwrap());
    assert_eq!(store.remove(k).await.unwrap(), None);
    // Without a snapshot path, persisting keeps nothing and writes nothing.
    let plain: Arc<dyn AllowlistStore> = Arc::new(list());
    assert_eq!(plain.persist(t(0)).await.unwrap(), 0);
}

fn backoff() -> Backoff {
    // The defaults of `[auth.throttle]`.
    Backoff {
        free_failures: 3,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(60),
        window: Duration::from_secs(900),
    }
}

fn addr(s: &str) -> CounterKey {
    CounterKey::Addr(network_key(ip(s), 48))
}

#[tokio::test]
async fn counters_count_within_the_window() {
    let c: Arc<dyn FailureCounters> = Arc::new(MemoryCounters::new(100));
    let (b, a) = (backoff(), addr("192.0.2.1"));
    for n in 1..=4 {
        assert_eq!(c.bump(&a, t(n), b).await.unwrap(), n as u32);
    }
    assert_eq!(c.get(&a, t(10), b.window).await.unwrap(), 4);
    assert_eq!(c.get(&addr("192.0.2.2"), t(10), b.window).await.unwrap(), 0);
    // Remembered until `window` after the last failure, then forgiven.
    assert_eq!(c.get(&a, t(4 + 899), b.window).await.unwrap(), 4);
    assert_eq!(c.get(&a, t(4 + 900), b.window).await.unwrap(), 0);
    // A failure after the window counts from one again.
    assert_eq!(c.bump(&a, t(2000), b).await.unwrap(), 1);
    // Case variants of a name share a counter; names and addresses do not.
    let alice = CounterKey::user("alice");
    c.bump(&CounterKey::user("Alice"), t(0), b).await.unwrap();
    assert_eq!(c.bump(&alice, t(1), b).await.unwrap(), 2);
    assert_eq!(c.len().await.unwrap(), 2);
    c.reset(&alice).await.unwrap();
    assert_eq!(c.get(&alice, t(2), b.window).await.unwrap(), 0);
    assert_eq!(c.len().await.unwrap(), 1);
}

#[tokio::test]
async fn counters_queue_addresses_and_refuse_users() {
    let c = MemoryCounters::new(100);
    let (b, a) = (backoff(), addr("192.0.2.1"));
    for i in 0..3 {
        let wait = c.reserve(&a, t(i), b, Reserve::Queue).await.unwrap();
        assert_eq!(wait, Duration::ZERO, "free attempt {i}");
        c.bump(&a, t(i), b).await.unwrap();
    }
    c.bump(&a, t(3), b).await.unwrap();
    // Four failures: 4 s until the next check. Five attempts at once each take the next slot.
    let mut waits = Vec::new();
    for _ in 0..5 {
        waits.push(
            c.reserve(&a, t(3), b, Reserve::Queue)
                .await
                .unwrap()
                .as_secs(),
        );
    }
    assert_eq!(waits, [4, 8, 12, 16, 20]);
    // Three of them leave before their slot: the queue's end moves back three delays, never
    // before now.
    for _ in 0..3 {
        c.release(&a, t(3), b).await.unwrap();
    }
    let wait = c.reserve(&a, t(3), b, Reserve::Queue).await.unwrap();
    assert_eq!(wait.as_secs(), 12);
    for _ in 0..10 {
        c.release(&a, t(3), b).await.unwrap();
    }
    assert_eq!(
        c.reserve(&a, t(3), b, Reserve::Queue).await.unwrap(),
        Duration::ZERO
    );
    // A user refused while its slot is ahead; the refusal takes nothing.
    let u = CounterKey::user("alice");
    for i in 0..3 {
        c.bump(&u, t(i), b).await.unwrap();
    }
    // The third failure (at 2 s) set a 2 s delay: refused until 4 s.
    let wait = c.reserve(&u, t(3), b, Reserve::IfFree).await.unwrap();
    assert_eq!(wait, Duration::from_secs(1));
    assert_eq!(
        c.reserve(&u, t(4), b, Reserve::IfFree).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        c.reserve(&u, t(4), b, Reserve::IfFree).await.unwrap(),
        Duration::from_secs(2),
        "the admitted check took the slot"
    );
    // Unknown keys never wait.
    let other = CounterKey::user("bob");
    assert_eq!(
        c.reserve(&other, t(4), b, Reserve::IfFree).await.unwrap(),
        Duration::ZERO
    );
}

#[tokio::test]
async fn counters_purge_and_stay_bounded() {
    let c = MemoryCounters::new(100);
    let b = backoff();
    c.bump(&addr("192.0.2.1"), t(0), b).await.unwrap();
    c.bump(&CounterKey::user("b"), t(500), b).await.unwrap();
    assert_eq!(c.purge(t(899), b.window).await.unwrap(), 0);
    assert_eq!(c.purge(t(900), b.window).await.unwrap(), 1);
    assert_eq!(c.purge(t(1400), b.window).await.unwrap(), 1);
    assert!(c.is_empty());
    for i in 0..=100u64 {
        c.bump(&addr(&format!("10.0.0.{i}")), t(i), b)
            .await
            .unwrap();
    }
    // 101 > 100: evict down to 99% of the bound, dropping the two oldest keys.
    assert_eq!(c.len(), 99);
    c.bump(&addr("10.0.0.100"), t(200), b).await.unwrap(); // known key: no growth
    assert_eq!(c.len(), 99);
    for gone in ["10.0.0.0", "10.0.0.1"] {
        assert_eq!(c.get(&addr(gone), t(201), b.window).await.unwrap(), 0);
    }
    assert_eq!(c.get(&addr("10.0.0.2"), t(201), b.window).await.unwrap(), 1);
    // User names have a bound of their own: addresses do not push them out.
    c.bump(&CounterKey::user("carol"), t(300), b).await.unwrap();
    assert_eq!(c.len(), 100);
}

#[tokio::test]
async fn one_lease_per_maildrop_until_dropped() {
    let locks = Arc::new(MemoryMailboxLocks::new());
    let dyn_locks: Arc<dyn MailboxLocks> = locks.clone();
    let lease = dyn_locks.acquire("alice").await.unwrap();
    assert!(lease.is_some());
    assert!(locks.is_held("alice"));
    assert!(dyn_locks.acquire("alice").await.unwrap().is_none());
    let bob = dyn_locks.acquire("bob").await.unwrap();
    assert!(bob.is_some());
    // A session that ends in another task releases its lock there.
    tokio::spawn(async move { drop(lease) }).await.unwrap();
    assert!(!locks.is_held("alice"));
    assert!(dyn_locks.acquire("alice").await.unwrap().is_some_and(|l| {
        drop(l);
        true
    }));
    assert!(!locks.is_held("alice") && locks.is_held("bob"));
}

#[test]
#[ignore = "large: run with --ignored"]
fn million_inserts_and_lookups() {
    let n = 1_000_000u32;
    let a = MemoryAllowlist::new(TTL, n as usize, 3);
    let k = |i: u32| IpNet::from(IpAddr::V4((0x0a00_0000 + i).into()));
    for i in 0..n {
        a.insert(k(i), "u", t(u64::from(i % 60)));
    }
    assert_eq!(a.len(), n as usize);
    for i in 0..n {
        assert!(a.is_allowed(k(i), t(100)));
    }
    // One more evicts a batch of the soonest-expiring.
    assert!(a.insert(key("192.0.2.1"), "u", t(100)).evicted >= 10_000);
    let len = a.len();
    assert_eq!(a.expire_now(t(10_000)).len(), len);
}

/// The answer of a store call the memory backend answers at once.
fn futures_ready<T>(pending: Pending<'_, T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(pending).unwrap()
}

#[test]
fn find_covers_admin_networks_of_any_length() {
    let a = list();
    a.insert("10.1.2.0/24".parse().unwrap(), "admin", t(0));
    a.insert("2001:db8::1234/128".parse().unwrap(), "admin", t(0));
    a.insert(key("2001:db8:9::1"), "alice", t(0));
    let found = |addr: &str| {
        let ip = ip(addr);
        futures_ready(a.find(ip, network_key(ip, 64), t(1)))
            .map(|(net, e)| format!("{net} {}", e.user))
    };
    assert_eq!(found("10.1.2.77").as_deref(), Some("10.1.2.0/24 admin"));
    assert_eq!(found("10.1.3.1"), None);
    assert_eq!(
        found("2001:db8::1234").as_deref(),
        Some("2001:db8::1234/128 admin")
    );
    assert_eq!(found("2001:db8::1235"), None, "a /128 is one host");
    assert_eq!(
        found("2001:db8:9::2").as_deref(),
        Some("2001:db8:9::/64 alice")
    );
    // Expired entries are not found.
    assert_eq!(found_at(&a, "10.1.2.77", t(1800)), None);
}

fn found_at(a: &MemoryAllowlist, addr: &str, now: SystemTime) -> Option<String> {
    let ip = ip(addr);
    futures_ready(a.find(ip, network_key(ip, 64), now)).map(|(net, _)| net.to_string())
}

/// Users seen on a key through a shared list's copies (`set_entry`) count towards the
/// shared-address warning of a login here, and a copy's entry is taken exactly.
#[test]
fn users_seen_through_the_shared_list_count_for_the_warning() {
    let l = MemoryAllowlist::new(Duration::from_secs(1800), 100, 3);
    let k = key("192.0.2.7");
    for (i, user) in ["ann", "bea"].iter().enumerate() {
        let entry = Entry {
            user: CompactString::from(*user),
            inserted_at: t(10),
            expires_at: t(1810 + i as u64),
        };
        l.set_entry(k, entry.clone(), t(10 + i as u64));
        assert_eq!(l.lookup(k, t(20)), Some(entry));
    }
    let outcome = l.insert(k, "cid", t(30));
    assert!(outcome.refreshed);
    assert_eq!(outcome.distinct_users, 3);
    assert!(
        outcome.shared_warning,
        "three users on one address, two seen elsewhere"
    );
    // Seen again, the same user is not counted twice.
    let entry = l.lookup(k, t(31)).unwrap();
    l.set_entry(k, entry, t(31));
    assert_eq!(l.insert(k, "ann", t(32)).distinct_users, 3);
}
