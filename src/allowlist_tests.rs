//! Tests of the allowlist service: validation for every caller, and one audit event per
//! change (login, admin add and remove, expiry), over the memory store and over a store
//! that fails.

use std::sync::Mutex;

use super::*;
use crate::store::Pending;
use crate::store::memory::MemoryAllowlist;

const TTL: Duration = Duration::from_secs(1800);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings() -> Settings {
    Settings {
        enabled: true,
        ttl: TTL,
        ipv6_prefix: 64,
    }
}

/// A service over a memory store, and the events it records.
fn service(settings: Settings) -> (Allowlist, Arc<Mutex<Vec<Event>>>) {
    service_over(
        Arc::new(MemoryAllowlist::new(settings.ttl, 100, 3)),
        settings,
    )
}

fn service_over(
    store: Arc<dyn AllowlistStore>,
    settings: Settings,
) -> (Allowlist, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let audit = Auditor::disabled().with_observer(Arc::new(move |e: &Event| {
        seen.lock().unwrap().push(e.clone());
    }));
    (Allowlist::new(store, settings, audit), events)
}

fn add<'a>(address: &'a str, ttl: Ttl<'a>, user: &'a str) -> Addition<'a> {
    Addition { address, ttl, user }
}

/// (listener, mechanism, reason, user, client address) of each event.
fn summary(events: &Mutex<Vec<Event>>) -> Vec<(Option<String>, String, String, String, String)> {
    let events = std::mem::take(&mut *events.lock().unwrap());
    events
        .into_iter()
        .map(|e| {
            assert_eq!(e.kind, Kind::Allowlist);
            assert_eq!(e.result, Outcome::Success);
            assert_eq!(e.class, Some(Class::Insecure));
            (
                e.listener,
                e.mechanism.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.user.unwrap_or_default(),
                e.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn row(
    listener: Option<&str>,
    mechanism: &str,
    reason: &str,
    user: &str,
    address: &str,
) -> (Option<String>, String, String, String, String) {
    (
        listener.map(str::to_string),
        mechanism.into(),
        reason.into(),
        user.into(),
        address.into(),
    )
}

#[test]
fn admin_input_is_validated_once_for_every_end() {
    let (list, _) = service(settings());
    let day = Duration::from_secs(86_400);
    // (address, key)
    let good = [
        ("192.0.2.1", "192.0.2.1/32"),
        (" 192.0.2.1 ", "192.0.2.1/32"),
        ("::ffff:192.0.2.1", "192.0.2.1/32"),
        ("192.0.2.1/32", "192.0.2.1/32"),
        ("::ffff:192.0.2.1/128", "192.0.2.1/32"),
        // Stored exactly as written: an IPv6 address is one host.
        ("2001:db8:1:2::3", "2001:db8:1:2::3/128"),
        ("2001:db8:1:2::/64", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::3/128", "2001:db8:1:2::3/128"),
        ("2001:db8:1:2::3/64", "2001:db8:1:2::/64"),
        ("192.0.2.0/24", "192.0.2.0/24"),
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("10.1.0.0/16", "10.1.0.0/16"),
        ("2001:db8::/48", "2001:db8::/48"),
    ];
    for (address, key) in good {
        let v = list.validate(&add(address, Ttl::Default, "alice"));
        assert_eq!(v.unwrap().key, key.parse::<IpNet>().unwrap(), "{address}");
        assert_eq!(list.key_of(address).unwrap().to_string(), key);
    }
    // (TTL given, TTL meant)
    let ttls = [
        (Ttl::Default, TTL),
        (Ttl::Seconds(60), Duration::from_secs(60)),
        (Ttl::Text("30m"), Duration::from_secs(1800)),
        (Ttl::Text(" 1h30m "), Duration::from_secs(5400)),
        (Ttl::Seconds(MAX_TTL.as_secs()), MAX_TTL),
        (Ttl::Text("1d"), day),
    ];
    for (given, want) in ttls {
        let v = list.validate(&add("192.0.2.1", given, "a"));
        assert_eq!(v.unwrap().ttl, want, "{given:?}");
    }
    let long = "u".repeat(MAX_USER_LEN + 1);
    let fits = "u".repeat(MAX_USER_LEN);
    assert!(
        list.validate(&add("192.0.2.1", Ttl::Default, &fits))
            .is_ok()
    );
    // (addition, the error's text starts with)
    let bad = [
        (add("nope", Ttl::Default, "a"), "bad address"),
        (add("192.0.2.300", Ttl::Default, "a"), "bad address"),
        (add("", Ttl::Default, "a"), "bad address"),
        (
            add("10.0.0.0/8", Ttl::Default, "a"),
            "bad address: 10.0.0.0/8 is wider than an allowlist entry may be (/16 for IPv4, \
             /48 for IPv6)",
        ),
        (
            add("::ffff:192.0.0.0/104", Ttl::Default, "a"),
            "bad address",
        ),
        (add("2001:db8::/32", Ttl::Default, "a"), "bad address"),
        (add("0.0.0.0/0", Ttl::Default, "a"), "bad address"),
        // One duration grammar: the configuration's (seconds come as numbers).
        (add("192.0.2.1", Ttl::Text("3600"), "a"), "bad ttl"),
        (add("192.0.2.1", Ttl::Text("1h 30m"), "a"), "bad ttl"),
        (add("192.0.2.1", Ttl::Seconds(0), "a"), "bad ttl"),
        (add("192.0.2.1", Ttl::Seconds(u64::MAX), "a"), "bad ttl"),
        (
            add("192.0.2.1", Ttl::Seconds(MAX_TTL.as_secs() + 1), "a"),
            "bad ttl",
        ),
        (add("192.0.2.1", Ttl::Text("soon"), "a"), "bad ttl"),
        (add("192.0.2.1", Ttl::Text("-5"), "a"), "bad ttl"),
        (add("192.0.2.1", Ttl::Text("0s"), "a"), "bad ttl"),
        (add("192.0.2.1", Ttl::Default, ""), "bad user"),
        (add("192.0.2.1", Ttl::Default, "a\nb"), "bad user"),
        (add("192.0.2.1", Ttl::Default, "a\u{1}"), "bad user"),
        (add("192.0.2.1", Ttl::Default, &long), "bad user"),
    ];
    for (addition, want) in bad {
        let err = list.validate(&addition).unwrap_err().to_string();
        assert!(err.starts_with(want), "{addition:?}: {err}");
    }
    assert_eq!(
        Error::BadTtl {
            max: MAX_TTL.as_secs()
        }
        .to_string(),
        "bad ttl: a duration such as \"30m\", \"8h\" or \"1d\" (1 s to 31622400 s)"
    );
}

#[tokio::test]
async fn every_admin_change_is_audited_once() {
    let (list, events) = service(settings());
    let now = t(0);
    let (net, entry) = list
        .add(
            &add("192.0.2.1", Ttl::Seconds(60), "alice"),
            Via::Control,
            now,
        )
        .await
        .unwrap();
    assert_eq!(net, "192.0.2.1/32".parse::<IpNet>().unwrap());
    assert_eq!((entry.user.as_str(), entry.expires_at), ("alice", t(60)));
    list.add(&add("192.0.2.1/32", Ttl::Default, "bob"), Via::Http, now)
        .await
        .unwrap();
    list.add(
        &add("2001:db8:1:2::3", Ttl::Text("1h"), "carol"),
        Via::Http,
        now,
    )
    .await
    .unwrap();
    // Refused additions change nothing and record nothing.
    assert!(
        list.add(&add("192.0.0.0/8", Ttl::Default, "x"), Via::Control, now)
            .await
            .is_err()
    );
    assert_eq!(list.len().await.unwrap(), 2);
    // The listed network (as LIST shows it) removes the entry as the address does.
    let (net, removed) = list
        .remove("2001:db8:1:2::3/128", Via::Control, now)
        .await
        .unwrap();
    assert_eq!(net.to_string(), "2001:db8:1:2::3/128");
    assert_eq!(removed.user, "carol");
    list.remove("::ffff:192.0.2.1", Via::Http, now)
        .await
        .unwrap();
    assert!(matches!(
        list.remove("192.0.2.1", Via::Http, now).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        list.remove("x", Via::Http, now).await,
        Err(Error::BadAddress)
    ));
    assert!(list.is_empty().await.unwrap());
    assert_eq!(
        summary(&events),
        [
            row(Some("control"), "admin", "added", "alice", "192.0.2.1"),
            row(Some("admin"), "admin", "refreshed", "bob", "192.0.2.1"),
            row(Some("admin"), "admin", "added", "carol", "2001:db8:1:2::3"),
            row(
                Some("control"),
                "admin",
                "removed",
                "carol",
                "2001:db8:1:2::3"
            ),
            row(Some("admin"), "admin", "removed", "bob", "192.0.2.1"),
        ]
    );
}

#[tokio::test]
async fn logins_are_audited_with_the_session() {
    let (list, events) = service(settings());
    let from = Login {
        peer: "[::ffff:198.51.100.7]:50412".parse().unwrap(),
        listener: "pop3s",
        session: "5f2c9a1e000001",
        tls: Some("TLSv1.3 TLS13_AES_256_GCM_SHA384"),
        client_name: Some("CAPA USER PASS".into()),
    };
    let out = list.login(&from, "alice", t(0)).await.unwrap().unwrap();
    assert!(!out.refreshed);
    let out = list.login(&from, "bob\u{7}", t(10)).await.unwrap().unwrap();
    assert!(out.refreshed && out.distinct_users == 2);
    let entry = list.lookup(ip("198.51.100.7"), t(20)).await.unwrap();
    assert_eq!(entry.unwrap().user, "bob", "control characters dropped");
    assert!(
        list.relay_lookup(ip("198.51.100.7"), t(1810))
            .await
            .is_none()
    );
    let recorded = events.lock().unwrap().clone();
    let e = &recorded[0];
    assert_eq!(
        (
            e.protocol.as_str(),
            e.listener.as_deref(),
            e.session.as_deref()
        ),
        ("pop3", Some("pop3s"), Some("5f2c9a1e000001"))
    );
    assert_eq!(e.client_port, Some(50412));
    assert_eq!(e.tls.as_deref(), Some("TLSv1.3 TLS13_AES_256_GCM_SHA384"));
    assert_eq!(e.client_name.as_deref(), Some("CAPA USER PASS"));
    assert_eq!(
        summary(&events),
        [
            row(
                Some("pop3s"),
                "pop-before-smtp",
                "added",
                "alice",
                "198.51.100.7"
            ),
            row(
                Some("pop3s"),
                "pop-before-smtp",
                "refreshed",
                "bob",
                "198.51.100.7"
            ),
        ]
    );

    // Disabled, a login changes nothing and records nothing.
    let (off, events) = service(Settings {
        enabled: false,
        ..settings()
    });
    assert!(off.login(&from, "alice", t(0)).await.unwrap().is_none());
    assert!(off.is_empty().await.unwrap());
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn each_expired_entry_is_audited() {
    let (list, events) = service(settings());
    for (address, ttl, user) in [
        ("192.0.2.1", 60, "alice"),
        ("2001:db8:1:2::3", 120, "bob"),
        ("192.0.2.2", 3600, "carol"),
    ] {
        list.add(&add(address, Ttl::Seconds(ttl), user), Via::Control, t(0))
            .await
            .unwrap();
    }
    events.lock().unwrap().clear();
    assert_eq!(list.expire(t(59)).await.unwrap(), 0);
    assert_eq!(list.expire(t(120)).await.unwrap(), 2);
    assert_eq!(list.expire(t(120)).await.unwrap(), 0);
    assert_eq!(list.list(t(120)).await.unwrap().len(), 1);
    let recorded = events.lock().unwrap().clone();
    assert!(recorded.iter().all(|e| e.protocol == "control"));
    assert_eq!(
        summary(&events),
        [
            row(None, "expiry", "expired", "alice", "192.0.2.1"),
            row(None, "expiry", "expired", "bob", "2001:db8:1:2::3"),
        ]
    );
}

/// A store whose every call fails, as an unreachable shared backend would.
struct Down;

impl AllowlistStore for Down {
    fn put<'a>(&'a self, _: Put<'a>) -> Pending<'a, InsertOutcome> {
        Pending::boxed(async { Err(store::Error::Unavailable("down".into())) })
    }
    fn get(&self, _: IpNet, _: SystemTime) -> Pending<'_, Option<Entry>> {
        Pending::boxed(async { Err(store::Error::Unavailable("down".into())) })
    }
    fn find(&self, _: IpAddr, _: IpNet, _: SystemTime) -> Pending<'_, Option<(IpNet, Entry)>> {
        Pending::boxed(async { Err(store::Error::Unavailable("down".into())) })
    }
    fn remove(&self, _: IpNet) -> Pending<'_, Option<Entry>> {
        Pending::ready(Err(store::Error::Unavailable("down".into())))
    }
    fn list(&self, _: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>> {
        Pending::ready(Err(store::Error::Unavailable("down".into())))
    }
    fn expire(&self, _: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>> {
        Pending::ready(Err(store::Error::Unavailable("down".into())))
    }
    fn len(&self) -> Pending<'_, usize> {
        Pending::ready(Err(store::Error::Unavailable("down".into())))
    }
}

#[tokio::test]
async fn a_failing_store_refuses_changes_and_keeps_the_relay_closed() {
    let (list, events) = service_over(Arc::new(Down), settings());
    let err = list
        .add(&add("192.0.2.1", Ttl::Default, "a"), Via::Http, t(0))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "store unavailable: down");
    // Validation comes first: a bad request is refused as such.
    assert!(matches!(
        list.add(&add("x", Ttl::Default, "a"), Via::Http, t(0))
            .await,
        Err(Error::BadAddress)
    ));
    assert!(list.relay_lookup(ip("192.0.2.1"), t(0)).await.is_none());
    assert!(list.expire(t(0)).await.is_err());
    assert!(
        list.is_empty().await.is_err(),
        "the default is_empty asks len"
    );
    assert_eq!(list.persist(t(0)).await.unwrap(), 0);
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn admin_networks_let_their_addresses_relay_and_an_address_removes_its_entry() {
    let (list, _) = service(settings());
    let now = t(0);
    list.add(&add("10.1.2.0/24", Ttl::Default, "lab"), Via::Control, now)
        .await
        .unwrap();
    list.add(
        &add("2001:db8::1234", Ttl::Default, "printer"),
        Via::Control,
        now,
    )
    .await
    .unwrap();
    let allowed = |addr: &str| {
        let ip: IpAddr = addr.parse().unwrap();
        let list = &list;
        async move { list.relay_lookup(ip, now).await.map(|e| e.user.to_string()) }
    };
    assert_eq!(allowed("10.1.2.200").await.as_deref(), Some("lab"));
    assert_eq!(allowed("10.1.3.1").await, None);
    assert_eq!(allowed("2001:db8::1234").await.as_deref(), Some("printer"));
    assert_eq!(
        allowed("2001:db8::1235").await,
        None,
        "the /128 is one host"
    );
    // An address removes the entry that lets it relay.
    let (net, _) = list.remove("10.1.2.200", Via::Control, now).await.unwrap();
    assert_eq!(net.to_string(), "10.1.2.0/24");
    assert_eq!(allowed("10.1.2.200").await, None);
    assert!(matches!(
        list.remove("10.1.2.200", Via::Control, now).await,
        Err(Error::NotFound)
    ));
}
