//! Tests of the control channel: request parsing, answers through the allowlist service, and
//! the TCP end (framing, the key, timeouts, shutdown) on loopback.

use super::*;
use crate::clock::ManualClock;
use crate::store::memory::MemoryAllowlist;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// The answer to an ADD or REMOVE of an entry made at t(0) for `ttl` seconds.
fn entry_ok(net: &str, user: &str, ttl: u64) -> String {
    let at = 1_700_000_000;
    format!(
        "{{\"net\":\"{net}\",\"user\":\"{user}\",\"inserted_at\":{at},\"expires_at\":{}}}\nOK\n",
        at + ttl
    )
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

async fn allowed(list: &Allowlist, address: &str, now: SystemTime) -> bool {
    list.lookup(ip(address), now).await.unwrap().is_some()
}

/// The service over a memory store, and the events it records.
fn service() -> (Allowlist, Arc<std::sync::Mutex<Vec<crate::audit::Event>>>) {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let audit = crate::audit::Auditor::disabled().with_observer(Arc::new(
        move |e: &crate::audit::Event| seen.lock().unwrap().push(e.clone()),
    ));
    let settings = crate::allowlist::Settings {
        enabled: true,
        ttl: Duration::from_secs(1800),
        ipv6_prefix: 64,
    };
    let store = Arc::new(MemoryAllowlist::new(settings.ttl, 100, 3));
    (Allowlist::new(store, settings, audit), events)
}

#[test]
fn parse_requests() {
    let add = |a: &str, ttl: &str, u: &str| Request::Add {
        address: a.into(),
        ttl: ttl.into(),
        user: u.into(),
    };
    let cases: Vec<(&str, Result<Request, Error>)> = vec![
        ("LIST", Ok(Request::List)),
        ("  list  ", Ok(Request::List)),
        ("LIST x", Err(Error::Usage("LIST"))),
        (
            "ADD 192.0.2.1 60 alice",
            Ok(add("192.0.2.1", "60", "alice")),
        ),
        (
            "add 2001:db8::1 3600 bob@example.org",
            Ok(add("2001:db8::1", "3600", "bob@example.org")),
        ),
        (
            "ADD 192.0.2.1 60",
            Err(Error::Usage("ADD <ip> <ttl> <user>")),
        ),
        (
            "ADD 192.0.2.1 60 a b",
            Err(Error::Usage("ADD <ip> <ttl> <user>")),
        ),
        // Arguments are the service's to check.
        ("ADD 192.0.2.300 0 a", Ok(add("192.0.2.300", "0", "a"))),
        (
            "REMOVE ::ffff:192.0.2.1",
            Ok(Request::Remove {
                address: "::ffff:192.0.2.1".into(),
            }),
        ),
        ("REMOVE", Err(Error::Usage("REMOVE <ip>"))),
        ("", Err(Error::Empty)),
        ("   ", Err(Error::Empty)),
        ("FLUSH", Err(Error::UnknownCommand)),
    ];
    for (line, want) in cases {
        assert_eq!(parse_request(line), want, "{line:?}");
    }
}

#[tokio::test]
async fn answers_come_from_the_service() {
    let (list, events) = service();
    let max = crate::allowlist::MAX_TTL.as_secs();
    // (request line, answer)
    let cases = [
        (
            "ADD 192.0.2.1 60 alice".to_string(),
            entry_ok("192.0.2.1/32", "alice", 60),
        ),
        (
            "ADD 192.0.2.2 1h bob".into(),
            entry_ok("192.0.2.2/32", "bob", 3600),
        ),
        ("ADD 192.0.2.300 60 a".into(), "ERR bad address\n".into()),
        (
            "ADD 192.0.0.0/8 60 a".into(),
            "ERR bad address: 192.0.0.0/8 is wider than an allowlist entry may be (/16 for \
             IPv4, /48 for IPv6); networks that always relay belong in [relay] \
             trusted_networks\n"
                .into(),
        ),
        (
            "ADD 192.0.2.1 0 a".into(),
            format!("ERR bad ttl: a duration such as \"30m\", \"8h\" or \"1d\" (1 s to {max} s)\n"),
        ),
        (
            "ADD 192.0.2.1 -5 a".into(),
            format!("ERR bad ttl: a duration such as \"30m\", \"8h\" or \"1d\" (1 s to {max} s)\n"),
        ),
        (
            "ADD 192.0.2.1 99999999999 a".into(),
            format!("ERR bad ttl: a duration such as \"30m\", \"8h\" or \"1d\" (1 s to {max} s)\n"),
        ),
        (
            "ADD 192.0.2.1 60 a\u{1}b".into(),
            "ERR bad user name\n".into(),
        ),
        (
            format!(
                "ADD 192.0.2.1 60 {}",
                "u".repeat(crate::allowlist::MAX_USER_LEN + 1)
            ),
            "ERR bad user name\n".into(),
        ),
        (
            "REMOVE 192.0.2.2/32".into(),
            entry_ok("192.0.2.2/32", "bob", 3600),
        ),
        ("REMOVE 192.0.2.2".into(), "ERR not found\n".into()),
        ("FLUSH".into(), "ERR unknown command\n".into()),
    ];
    for (line, want) in cases {
        assert_eq!(respond(&list, &line, t(0)).await, want, "{line:?}");
    }
    let listed = parse_list(&respond(&list, "LIST", t(0)).await).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].net.as_str(), listed[0].user.as_str()),
        ("192.0.2.1/32", "alice")
    );
    // One event per change, named as the control channel's.
    let seen: Vec<(String, String)> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e.listener.as_deref(), Some("control"));
            (
                e.reason.clone().unwrap_or_default(),
                e.user.clone().unwrap_or_default(),
            )
        })
        .collect();
    let want = [("added", "alice"), ("added", "bob"), ("removed", "bob")];
    assert_eq!(seen, want.map(|(r, u)| (r.to_string(), u.to_string())));
    assert_eq!(render_error(&"two\nlines"), "ERR two lines\n");
}

#[test]
fn loopback_peers_only() {
    // (peer, allowed?)
    let cases = [
        ("127.0.0.1:5000", true),
        ("127.8.9.10:5000", true),
        ("[::1]:5000", true),
        ("[::ffff:127.0.0.1]:5000", true),
        ("192.0.2.1:5000", false),
        ("[2001:db8::1]:5000", false),
        ("[::ffff:192.0.2.1]:5000", false),
        ("0.0.0.0:5000", false),
    ];
    for (peer, want) in cases {
        assert_eq!(peer_allowed(peer.parse().unwrap()), want, "{peer}");
    }
}

#[test]
fn parse_responses() {
    assert_eq!(parse_response("OK\n"), Ok(vec![]));
    assert_eq!(parse_response("a\nb\nOK\n"), Ok(vec!["a", "b"]));
    assert_eq!(
        parse_response("ERR not found\n"),
        Err(Error::Server("not found".into()))
    );
    assert!(matches!(parse_response(""), Err(Error::BadResponse(_))));
    assert!(matches!(parse_response("{}\n"), Err(Error::BadResponse(_))));
    assert!(matches!(parse_list("{}\nOK\n"), Err(Error::BadResponse(_))));
}

struct Running {
    addr: SocketAddr,
    list: Arc<Allowlist>,
    clock: Arc<ManualClock>,
    key: Key,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let list = Arc::new(service().0);
    let clock = Arc::new(ManualClock::new(t(0)));
    let shutdown = CancellationToken::new();
    let key = Key::generate();
    let server = tokio::spawn(serve(
        listener,
        list.clone(),
        crate::relay::Notifier::unconnected(),
        clock.clone(),
        key.clone(),
        shutdown.clone(),
    ));
    Running {
        addr,
        list,
        clock,
        key,
        shutdown,
        server,
    }
}

#[tokio::test]
async fn add_list_remove_over_tcp() {
    let r = start().await;
    assert_eq!(request(r.addr, &r.key, "LIST").await.unwrap(), "OK\n");
    assert_eq!(
        request(r.addr, &r.key, "ADD 192.0.2.1 60 alice")
            .await
            .unwrap(),
        entry_ok("192.0.2.1/32", "alice", 60)
    );
    assert_eq!(
        request(r.addr, &r.key, "add 2001:db8:1:2::/64 3600 bob")
            .await
            .unwrap(),
        entry_ok("2001:db8:1:2::/64", "bob", 3600)
    );
    let carol = Addition {
        address: "198.51.100.7",
        ttl: Ttl::Default,
        user: "carol",
    };
    r.list.add(&carol, Via::Http, t(0)).await.unwrap();
    assert!(allowed(&r.list, "192.0.2.1", t(59)).await);

    r.clock.advance(Duration::from_secs(30));
    let listed = parse_list(&request(r.addr, &r.key, "LIST").await.unwrap()).unwrap();
    let want = [
        ("192.0.2.1/32", "alice", 0, 60),
        ("198.51.100.7/32", "carol", 0, 1800),
        ("2001:db8:1:2::/64", "bob", 0, 3600),
    ];
    let got: Vec<_> = listed
        .iter()
        .map(|e| {
            let base = unix_secs(t(0));
            (
                e.net.as_str(),
                e.user.as_str(),
                e.inserted_at - base,
                e.expires_at - base,
            )
        })
        .collect();
    assert_eq!(got, want);

    // Expired entries are not listed.
    r.clock.advance(Duration::from_secs(30));
    assert_eq!(
        parse_list(&request(r.addr, &r.key, "LIST").await.unwrap())
            .unwrap()
            .len(),
        2
    );

    assert_eq!(
        request(r.addr, &r.key, "REMOVE 2001:db8:1:2::99")
            .await
            .unwrap(),
        entry_ok("2001:db8:1:2::/64", "bob", 3600)
    );
    assert_eq!(
        request(r.addr, &r.key, "REMOVE 2001:db8:1:2::99")
            .await
            .unwrap(),
        "ERR not found\n"
    );
    assert!(!allowed(&r.list, "2001:db8:1:2::3", t(60)).await);
    assert_eq!(
        request(r.addr, &r.key, "FLUSH").await.unwrap(),
        "ERR unknown command\n"
    );

    r.shutdown.cancel();
    timeout(Duration::from_secs(5), r.server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bounded_line_and_raw_framing() {
    let r = start().await;
    // (bytes sent, response)
    let cases: [(Vec<u8>, &str); 5] = [
        (
            format!("ADD 192.0.2.1 60 {}\n", "u".repeat(MAX_LINE)).into_bytes(),
            "ERR line too long\n",
        ),
        (vec![b'x'; 64 * 1024], "ERR line too long\n"),
        (b"REMOVE 192.0.2.1\r\n".to_vec(), "ERR not found\n"),
        (b"LIST".to_vec(), "OK\n"), // end of stream ends the line
        (b"LIST \xff\n".to_vec(), "ERR request is not UTF-8\n"),
    ];
    for (sent, want) in cases {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        // The server may answer and close before reading everything: ignore write errors.
        let _ = s
            .write_all(format!("KEY {}\n", r.key.expose()).as_bytes())
            .await;
        let _ = s.write_all(&sent).await;
        let _ = s.shutdown().await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        assert_eq!(
            out,
            want,
            "{:?}",
            String::from_utf8_lossy(&sent[..sent.len().min(40)])
        );
    }
    assert!(
        request(r.addr, &r.key, "LIST\nREMOVE 192.0.2.1")
            .await
            .is_err()
    );
    r.shutdown.cancel();
}

#[tokio::test]
async fn requests_without_the_key_are_refused() {
    let r = start().await;
    let other = Key::generate();
    for key in [&other, &Key(Zeroizing::new(String::new()))] {
        let answer = request(r.addr, key, "ADD 192.0.2.9 60 mallory")
            .await
            .unwrap();
        assert!(answer.starts_with("ERR not authorized"), "{answer}");
    }
    // A bare command line (the old protocol) is taken as a wrong key line.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"ADD 192.0.2.9 60 mallory\nLIST\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("ERR not authorized"), "{out}");
    assert!(!allowed(&r.list, "192.0.2.9", t(1)).await);
    assert!(r.key.matches(r.key.expose()) && !r.key.matches(other.expose()));
    assert_eq!(format!("{:?}", r.key), "Key(..)");
    r.shutdown.cancel();
}

#[test]
fn key_file_round_trip_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE);
    let key = Key::generate();
    assert_eq!(key.expose().len(), 64);
    key.write(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(Key::read(&path).unwrap().matches(key.expose()));
    assert!(!Key::generate().matches(key.expose()));
}

#[tokio::test(start_paused = true)]
async fn silent_client_times_out() {
    let r = start().await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "ERR timeout\n");
    r.shutdown.cancel();
}

#[tokio::test]
async fn shutdown_ends_waiting_connections() {
    let r = start().await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"LI").await.unwrap();
    // Connections are accepted in order: once a later one is answered, this one is being
    // served, waiting for the rest of its line.
    assert_eq!(request(r.addr, &r.key, "LIST").await.unwrap(), "OK\n");
    r.shutdown.cancel();
    // Well before the read timeout.
    timeout(READ_TIMEOUT / 2, r.server).await.unwrap().unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    assert_eq!(out, "");
}
