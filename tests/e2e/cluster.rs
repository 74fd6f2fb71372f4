//! Two gateway nodes behind Debian's HAProxy (`send-proxy-v2`), sharing one private Redis
//! (`[cluster]`) and one Maildir root, each with its own state folder and spool: what the
//! issue's "several nodes" promise means to a client.
//!
//! HAProxy listens on one port per (node, protocol), so a test chooses the node; clients
//! connect from their own loopback address (127.0.0.N), which HAProxy passes on in the
//! PROXY header.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailgate::audit::{Kind, Outcome};
use tokio::time::Instant;

use common::{Gateway, PASSWORD, host};
use mailgate_testkit::redis::Redis;
use mailgate_testkit::{self as common, extra, mech};

/// A node's config: the balancer on 127.0.0.1 sends PROXY headers; plaintext logins are
/// allowed from loopback clients; the throttle delays from the third failure on.
fn node_config(redis: &Redis, prefix: &str, maildir: &Path) -> String {
    extra::set_all(
        &common::config_text(""),
        &[
            ("listeners", "proxy_protocol_from", r#"["127.0.0.1/32"]"#),
            ("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#),
            ("auth.throttle", "free_failures", "2"),
            ("auth.throttle", "base_delay", r#""600ms""#),
            ("auth.throttle", "max_delay", r#""1200ms""#),
            (
                "delivery",
                "maildir",
                &format!("{:?}", maildir.display().to_string()),
            ),
            ("cluster", "redis", &format!("{:?}", redis.url())),
            ("cluster", "key_prefix", &format!("{prefix:?}")),
            ("cluster", "timeout", r#""300ms""#),
            ("cluster", "lease", r#""3s""#),
        ],
    )
}

/// Two nodes, the balancer in front of them, and the shared folder.
struct Site {
    a: Gateway,
    b: Gateway,
    /// Balancer ports: POP3 and SMTP of node A, then of node B.
    pop_a: SocketAddr,
    smtp_a: SocketAddr,
    pop_b: SocketAddr,
    smtp_b: SocketAddr,
    haproxy: tokio::process::Child,
    _shared: tempfile::TempDir,
}

impl Site {
    async fn start(redis: &Redis, prefix: &str) -> Site {
        let shared = tempfile::tempdir().expect("shared folder");
        let maildir = shared.path().join("maildir");
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().expect("node folder");
            std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
            nodes.push(Gateway::start_in(dir, &node_config(redis, prefix, &maildir)).await);
        }
        let b = nodes.pop().expect("node b");
        let a = nodes.pop().expect("node a");
        let ports: Vec<u16> = (0..4).map(|_| extra::free_port()).collect();
        let backends = [
            ("pop_a", ports[0], a.addr("pop3")),
            ("smtp_a", ports[1], a.addr("smtp")),
            ("pop_b", ports[2], b.addr("pop3")),
            ("smtp_b", ports[3], b.addr("smtp")),
        ];
        let mut cfg = String::from(
            "global\n    maxconn 256\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 30s\n    timeout server 30s\n",
        );
        for (name, port, to) in backends {
            cfg.push_str(&format!(
                "\nlisten {name}\n    bind 127.0.0.1:{port}\n    server s1 {to} send-proxy-v2\n"
            ));
        }
        let path = shared.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("haproxy config");
        let haproxy = extra::haproxy(&path);
        let front: Vec<SocketAddr> = ports.iter().map(|p| extra::local(*p)).collect();
        for f in &front {
            extra::wait_listening(*f).await;
        }
        let site = Site {
            a,
            b,
            pop_a: front[0],
            smtp_a: front[1],
            pop_b: front[2],
            smtp_b: front[3],
            haproxy,
            _shared: shared,
        };
        site.wait_cluster_up().await;
        site
    }

    /// Waits until both nodes have Redis.
    async fn wait_cluster_up(&self) {
        for gw in [&self.a, &self.b] {
            wait_until("the node to reach Redis", || up(gw)).await;
        }
    }

    async fn stop(mut self) {
        extra::stop_child(&mut self.haproxy).await;
        self.a.stop().await;
        self.b.stop().await;
    }
}

fn up(gw: &Gateway) -> bool {
    gw.shared.cluster.as_ref().is_some_and(|c| c.is_up())
}

fn audit_log(gw: &Gateway) -> PathBuf {
    gw.state().join("audit.log")
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A POP3 USER/PASS login from `source` through `front`; the session stays open.
async fn pop_login(
    source: IpAddr,
    front: SocketAddr,
    password: &str,
) -> (common::client::Client, u16, String) {
    let (mut c, port) = mech::connect(source, front, false).await;
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "alice", password).await;
    (c, port, x.lines.join(" "))
}

/// The reply code to `RCPT TO:<to>` for mail from `source` through `front`.
async fn rcpt(source: IpAddr, front: SocketAddr, to: &str) -> u16 {
    let (mut c, _) = mech::smtp(source, front, false, "client.example").await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.send(&format!("RCPT TO:<{to}>")).await;
    let (code, _) = c.reply().await;
    c.send("QUIT").await;
    code
}

/// Whether `source` may relay through `front`, waiting up to 1 s for the change to arrive.
async fn relays_within_a_second(source: IpAddr, front: SocketAddr) -> bool {
    relay_answer_within_a_second(source, front, 250).await
}

/// The shared allowlist, the audit, the mailbox lease and the throttle across two nodes.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_the_allowlist_the_mailbox_lock_and_the_failure_counts() {
    if !common::have("haproxy") {
        return;
    }
    let Some(redis) = Redis::start().await else {
        return;
    };
    let site = Site::start(&redis, "t1:").await;
    let client = host(61);

    // Before any login, neither node relays for the client.
    assert_eq!(
        rcpt(client, site.smtp_b, "friend@remote.example").await,
        554
    );

    // A POP3 login through node A lets the client relay through both nodes.
    let (mut pop, port, reply) = pop_login(client, site.pop_a, PASSWORD).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(relays_within_a_second(client, site.smtp_a).await, "node A");
    assert!(relays_within_a_second(client, site.smtp_b).await, "node B");

    // A message relayed through node B.
    let (mut c, _) = mech::smtp(client, site.smtp_b, false, "client.example").await;
    mech::send_mail(&mut c, "alice@example.test", "friend@remote.example", "").await;
    c.send("QUIT").await;

    // Both audits name the client, not the balancer.
    let login = mech::wait_one(&audit_log(&site.a), "login on A", client, port, |e| {
        e.kind == Kind::Auth
    })
    .await;
    assert_eq!(login.result, Outcome::Success);
    let relayed = mech::wait_events(&audit_log(&site.b), "relay on B", 1, |e| {
        e.kind == Kind::Relay && e.client_ip == Some(client)
    })
    .await;
    assert_eq!(relayed[0].result, Outcome::Success);
    for gw in [&site.a, &site.b] {
        let balancer = IpAddr::from([127, 0, 0, 1]);
        let events = mech::read_events(&audit_log(gw));
        assert!(
            events.iter().all(|e| e.client_ip != Some(balancer)),
            "no event names the balancer"
        );
    }

    // The mailbox is leased: node B refuses a second session while A's lives.
    let (mut second, _, reply) = pop_login(client, site.pop_b, PASSWORD).await;
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    second.send("QUIT").await;
    // Past the lease's life (3 s), renewed while the session lives: still in use. (NOOPs
    // keep the session within its 3 s idle timeout.)
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        pop.pop_cmd("NOOP", true).await;
    }
    let (mut third, _, reply) = pop_login(client, site.pop_b, PASSWORD).await;
    assert!(reply.starts_with("-ERR [IN-USE]"), "lease renewed: {reply}");
    third.send("QUIT").await;
    pop.pop_cmd("NOOP", true).await;
    pop.pop_cmd("QUIT", true).await;
    // Released at QUIT: node B opens it now.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (mut c, _, reply) = pop_login(client, site.pop_b, PASSWORD).await;
        if reply.starts_with("+OK") {
            c.pop_cmd("QUIT", true).await;
            break;
        }
        assert!(Instant::now() < deadline, "lease not released: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Failures counted on node A delay the next check on node B. (A guesser from 127.0.0.71:
    // three failures through A reach the delay; B makes the fourth attempt wait for it.)
    let guesser = host(71);
    for _ in 0..3 {
        let (mut c, _, reply) = pop_login(guesser, site.pop_a, "wrong-password").await;
        assert!(reply.starts_with("-ERR"), "{reply}");
        c.send("QUIT").await;
    }
    let started = Instant::now();
    let (mut c, _, reply) = pop_login(guesser, site.pop_b, "wrong-password").await;
    let waited = started.elapsed();
    assert!(reply.starts_with("-ERR"), "{reply}");
    c.send("QUIT").await;
    assert!(
        waited >= Duration::from_millis(800),
        "node B checked at once ({waited:?}): it did not see node A's failures"
    );
    site.stop().await;
}

/// With Redis stopped, each node keeps serving logins and its own entries, reports
/// `mailgate_cluster_up 0`; when Redis returns, an entry added during the outage reaches the
/// other node.
#[tokio::test(flavor = "multi_thread")]
async fn during_a_redis_outage_each_node_serves_alone_and_writes_back_after() {
    if !common::have("haproxy") {
        return;
    }
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let site = Site::start(&redis, "t2:").await;
    let before = host(81);
    let (mut c, _, reply) = pop_login(before, site.pop_a, PASSWORD).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    c.pop_cmd("QUIT", true).await;
    assert!(relays_within_a_second(before, site.smtp_b).await);

    redis.stop();
    wait_until("both nodes to notice the outage", || {
        !up(&site.a) && !up(&site.b)
    })
    .await;
    let metrics = site.a.shared.metrics.encode(&mailgate::metrics::Gauges {
        cluster_up: Some(false),
        ..Default::default()
    });
    assert!(metrics.contains("mailgate_cluster_up 0"), "{metrics}");

    // Logins keep working on both nodes; each keeps what it knew and what it records now.
    let during = host(82);
    let (mut c, _, reply) = pop_login(during, site.pop_a, PASSWORD).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    c.pop_cmd("QUIT", true).await;
    assert_eq!(
        rcpt(during, site.smtp_a, "friend@remote.example").await,
        250
    );
    assert_eq!(
        rcpt(before, site.smtp_a, "friend@remote.example").await,
        250
    );
    assert_eq!(
        rcpt(before, site.smtp_b, "friend@remote.example").await,
        250
    );
    // Node B has not heard of the entry made during the outage.
    assert_eq!(
        rcpt(during, site.smtp_b, "friend@remote.example").await,
        554
    );
    let (mut c, _, reply) = pop_login(host(83), site.pop_b, PASSWORD).await;
    assert!(
        reply.starts_with("+OK"),
        "node B serves logins alone: {reply}"
    );
    c.pop_cmd("QUIT", true).await;

    // Redis returns (empty: it kept nothing): node A writes its entries back, B gets them.
    redis.start_again().await;
    site.wait_cluster_up().await;
    assert!(
        relays_within_a_second(during, site.smtp_b).await,
        "the outage's entry reached node B"
    );
    let listed = redis
        .query(&["--scan", "--pattern", "t2:allow:*"])
        .await
        .unwrap_or_default();
    assert!(
        listed.iter().any(|k| k == "t2:allow:127.0.0.82/32"),
        "written back: {listed:?}"
    );
    // Redis came back empty: the entry made before the outage is written back too.
    assert!(
        listed.iter().any(|k| k == "t2:allow:127.0.0.81/32"),
        "restored: {listed:?}"
    );
    site.stop().await;
}

/// Runs the `mailgate` command against `gw` (its config, with the bound control address).
async fn cli(gw: &Gateway, words: &[&str]) -> (bool, String) {
    let control = gw.control.expect("control listener");
    let text = std::fs::read_to_string(gw.dir.path().join("mailgate.toml")).expect("config");
    let path = gw.dir.path().join("cli.toml");
    let text = text.replace(
        "control = \"127.0.0.1:0\"",
        &format!("control = \"{control}\""),
    );
    std::fs::write(&path, text).expect("cli config");
    let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    args.extend(["--config".to_string(), path.display().to_string()]);
    let out = common::run(env!("CARGO_BIN_EXE_mailgate"), args, None).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Waits up to 1 s for `front` to answer `code` to a relay RCPT from `source`.
async fn relay_answer_within_a_second(source: IpAddr, front: SocketAddr, code: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if rcpt(source, front, "friend@remote.example").await == code {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `mailgate allowlist list|add|remove` on one node see and change the cluster's list; and a
/// lease left by a node that died lapses, then another node opens the mailbox.
#[tokio::test(flavor = "multi_thread")]
async fn the_allowlist_command_works_on_the_cluster_list_and_dead_leases_lapse() {
    if !common::have("haproxy") {
        return;
    }
    let Some(redis) = Redis::start().await else {
        return;
    };
    let site = Site::start(&redis, "t3:").await;
    let user = host(91);
    let (mut c, _, reply) = pop_login(user, site.pop_a, PASSWORD).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    c.pop_cmd("QUIT", true).await;

    // Node B lists the entry node A made.
    let (ok, out) = cli(&site.b, &["allowlist", "list"]).await;
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("127.0.0.91/32"))
        .unwrap_or_else(|| panic!("not listed on B: {out}"));
    assert!(row.contains("alice"), "{row}");

    // An admin's entry on node B lets a device relay through node A.
    let printer = host(92);
    let (ok, out) = cli(
        &site.b,
        &["allowlist", "add", "127.0.0.92", "--user", "printer"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        relay_answer_within_a_second(printer, site.smtp_a, 250).await,
        "added on B, A relays"
    );

    // A removal on node B ends the relay through node A.
    let (ok, out) = cli(&site.b, &["allowlist", "remove", "127.0.0.91"]).await;
    assert!(ok, "{out}");
    assert!(
        relay_answer_within_a_second(user, site.smtp_a, 554).await,
        "removed on B, A refuses"
    );

    // A lease held by a node that died (never released) keeps the mailbox until it lapses.
    let dead = redis
        .command(&["SET", "t3:lock:bob", "dead-node/1", "PX", "1500"])
        .await;
    assert_eq!(dead.as_deref(), Some("+OK"));
    let (mut c, _) = mech::connect(host(93), site.pop_a, false).await;
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "bob", PASSWORD).await;
    assert!(x.lines[0].starts_with("-ERR [IN-USE]"), "{:?}", x.lines);
    c.send("QUIT").await;
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let (mut c, _) = mech::connect(host(93), site.pop_a, false).await;
        c.pop(true).await;
        let x = mech::pop_user_pass(&mut c, "bob", PASSWORD).await;
        if x.code == 1 {
            c.pop_cmd("QUIT", true).await;
            break;
        }
        c.send("QUIT").await;
        assert!(
            Instant::now() < deadline,
            "the dead lease never lapsed: {:?}",
            x.lines
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    site.stop().await;
}

/// `rediss://` with `ca_file`, a password from `password_file` and an ACL user allowed only the
/// prefix's keys, the change channel and the commands the nodes send (the list in
/// docs/security.md): the node shares its state; with a wrong password it serves alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_reaches_redis_over_tls_as_a_restricted_acl_user() {
    let certs = tempfile::tempdir().expect("certificates");
    let ca = mailgate_testkit::devices::DeviceCa::new("Redis test CA");
    let server = ca.issue_server("localhost", 7);
    let (cert, key) = server.write(certs.path(), "redis");
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("CA file");
    let tls_port = extra::free_port();
    let args: Vec<String> = [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert.display().to_string(),
        "--tls-key-file",
        &key.display().to_string(),
        "--tls-ca-cert-file",
        &ca_file.display().to_string(),
        "--tls-auth-clients",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Some(redis) = Redis::start_with(args).await else {
        return;
    };
    let acl = "ACL SETUSER mailgate on >s3cret-redis-pw ~t5:* &t5:changes +ping +info +get \
               +set +del +mget +scan +hmget +eval +evalsha +script|load +publish +subscribe";
    let words: Vec<&str> = acl.split_whitespace().collect();
    assert_eq!(redis.command(&words).await.as_deref(), Some("+OK"));

    let start = |password: &'static str| {
        let ca_file = ca_file.clone();
        async move {
            let dir = tempfile::tempdir().expect("node folder");
            std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
            std::fs::write(dir.path().join("redis.pass"), format!("{password}\n"))
                .expect("password file");
            let text = extra::set_all(
                &common::config_text(""),
                &[
                    ("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#),
                    (
                        "cluster",
                        "redis",
                        &format!("\"rediss://mailgate@localhost:{tls_port}/0\""),
                    ),
                    ("cluster", "password_file", "\"redis.pass\""),
                    (
                        "cluster",
                        "ca_file",
                        &format!("{:?}", ca_file.display().to_string()),
                    ),
                    ("cluster", "key_prefix", "\"t5:\""),
                ],
            );
            Gateway::start_in(dir, &text).await
        }
    };
    let gw = start("s3cret-redis-pw").await;
    wait_until("the node to reach Redis over TLS", || up(&gw)).await;
    let client = host(95);
    let (mut c, _) = mech::connect(client, gw.addr("pop3"), false).await;
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "alice", PASSWORD).await;
    assert_eq!(x.code, 1, "{:?}", x.lines);
    c.pop_cmd("QUIT", true).await;
    let listed = redis
        .query(&["--scan", "--pattern", "t5:allow:*"])
        .await
        .unwrap_or_default();
    assert!(
        listed.iter().any(|k| k == "t5:allow:127.0.0.95/32"),
        "shared over TLS: {listed:?}"
    );
    // The ACL let every command through: nothing marked the cluster down.
    assert!(up(&gw));
    gw.stop().await;

    // A wrong password: the node starts and serves logins on its own view.
    let gw = start("not-the-password").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!up(&gw), "a refused AUTH leaves the cluster down");
    let (mut c, _) = mech::connect(host(96), gw.addr("pop3"), false).await;
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "alice", PASSWORD).await;
    assert_eq!(x.code, 1, "{:?}", x.lines);
    c.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

/// The Redis counters answer exactly as the in-memory ones for the same calls at the same
/// times: growing delays, the queue of check slots, a slot given back, the window, a reset.
/// (The Lua scripts restate the memory backend's rules; this holds them to it.)
#[tokio::test(flavor = "multi_thread")]
async fn redis_failure_counters_follow_the_memory_counters_rules() {
    use mailgate::store::memory::MemoryCounters;
    use mailgate::store::{Backoff, CounterKey, FailureCounters, Reserve};
    let Some(redis) = Redis::start().await else {
        return;
    };
    let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = std::sync::Arc::new(mailgate::clock::ManualClock::new(start));
    let cfg = mailgate::config::Cluster {
        redis: redis.url(),
        password_file: None,
        ca_file: None,
        key_prefix: "t6:".into(),
        timeout: Duration::from_millis(500),
        lease: Duration::from_secs(30),
        resync: Duration::from_secs(60),
    };
    let cluster = std::sync::Arc::new(
        mailgate::store::cluster::Cluster::new(&cfg, "node", clock.clone()).expect("cluster"),
    );
    let copy = mailgate::store::memory::MemoryAllowlist::new(Duration::from_secs(1800), 1000, 0);
    let list = std::sync::Arc::new(mailgate::store::cluster::RedisAllowlist::new(
        cluster.clone(),
        copy,
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cluster.clone().watch(list, stop.clone()));
    wait_until("Redis", || cluster.is_up()).await;
    let shared =
        mailgate::store::cluster::RedisCounters::new(cluster.clone(), MemoryCounters::new(100));
    let memory = MemoryCounters::new(100);
    let b = Backoff {
        free_failures: 2,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(8),
        window: Duration::from_secs(60),
    };
    let addr = CounterKey::Addr("192.0.2.0/24".parse().unwrap());
    let user = CounterKey::user("Bob");
    // (step in ms, operation) applied to both; every answer compared.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Bump,
        Get,
        Queue,
        IfFree,
        Release,
        Reset,
    }
    use Op::*;
    let script: &[(u64, Op)] = &[
        (0, Queue),
        (0, Bump),
        (100, Bump),
        (0, Get),
        (0, Queue),
        (0, Queue),
        (0, IfFree),
        (200, Bump),
        (0, Queue),
        (0, Queue),
        (0, Release),
        (0, Queue),
        (500, IfFree),
        (3000, IfFree),
        (0, IfFree),
        (0, Bump),
        (0, Bump),
        (0, Bump),
        (0, Get),
        (0, Queue),
        (61_000, Get),
        (0, Queue),
        (0, Bump),
        (0, Reset),
        (0, Get),
        (0, Queue),
    ];
    for key in [&addr, &user] {
        for (i, (step, op)) in script.iter().enumerate() {
            clock.advance(Duration::from_millis(*step));
            let now = mailgate::clock::Clock::now(&*clock);
            let (got, want) = match op {
                Bump => (
                    u64::from(shared.bump(key, now, b).await.unwrap()),
                    u64::from(memory.bump(key, now, b).await.unwrap()),
                ),
                Get => (
                    u64::from(shared.get(key, now, b.window).await.unwrap()),
                    u64::from(memory.get(key, now, b.window).await.unwrap()),
                ),
                Queue | IfFree => {
                    let how = if matches!(op, Queue) {
                        Reserve::Queue
                    } else {
                        Reserve::IfFree
                    };
                    (
                        shared.reserve(key, now, b, how).await.unwrap().as_millis() as u64,
                        memory.reserve(key, now, b, how).await.unwrap().as_millis() as u64,
                    )
                }
                Release => {
                    shared.release(key, now, b).await.unwrap();
                    memory.release(key, now, b).await.unwrap();
                    (0, 0)
                }
                Reset => {
                    shared.reset(key).await.unwrap();
                    memory.reset(key).await.unwrap();
                    (0, 0)
                }
            };
            assert_eq!(got, want, "{key:?} step {i} ({op:?})");
        }
    }
    stop.cancel();
}
