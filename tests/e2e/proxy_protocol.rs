//! The PROXY protocol end to end: a connection from a `[listeners] proxy_protocol_from` source
//! opens with a version 1 or 2 header, and the client it names is the one the gateway judges,
//! audits and allowlists (and the one `insecure_plaintext_networks` and the per-address cap
//! see); a version 2 `LOCAL` header closes quietly; a balancer's connection without a header
//! and a header from any other source are refused and counted; implicit TLS starts after the
//! header. Last, Debian's HAProxy (`send-proxy-v2`) relays a POP3 login.
//!
//! Here 127.0.0.1 plays the balancer; clients named in headers come from TEST-NET-1
//! (192.0.2.0/24, RFC 5737), which plaintext logins are allowed from.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use mailgate::audit::{Kind, Outcome};
use tokio::io::AsyncWriteExt;

use common::{Gateway, PASSWORD, client::Client, host};
use mailgate_testkit::{self as common, extra, mech};

const BALANCER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

async fn start(edits: &[(&str, &str, &str)]) -> Gateway {
    let mut all = vec![
        ("listeners", "proxy_protocol_from", r#"["127.0.0.1/32"]"#),
        ("auth", "insecure_plaintext_networks", r#"["192.0.2.0/24"]"#),
    ];
    all.extend_from_slice(edits);
    let text = extra::set_all(&common::config_text(""), &all);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    Gateway::start_in(dir, &text).await
}

fn audit_log(gw: &Gateway) -> PathBuf {
    gw.state().join("audit.log")
}

/// A version 1 header naming `client` (IPv4) connected to `to`.
fn v1(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        to.ip(),
        client.port(),
        to.port()
    )
    .into_bytes()
}

/// A version 2 header: PROXY over TCP/IPv4 naming `client`, with one TLV (a unique id); or
/// LOCAL without addresses.
fn v2(client: Option<SocketAddr>, to: SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let Some(client) = client else {
        out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return out;
    };
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (client.ip(), to.ip()) else {
        panic!("IPv4 only");
    };
    out.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&to.port().to_be_bytes());
    out.extend_from_slice(&[0x05, 0x00, 0x04, b'a', b'b', b'c', b'd']);
    out
}

async fn allowlisted(gw: &Gateway, ip: IpAddr) -> bool {
    let now = gw.shared.clock.now();
    gw.shared.allowlist.lookup(ip, now).await.unwrap().is_some()
}

fn refused(gw: &Gateway, listener: &str, cap: &str) -> bool {
    let metrics = gw.shared.metrics.encode(&Default::default());
    let series =
        format!(r#"mailgate_connections_refused_total{{listener="{listener}",cap="{cap}"}} 1"#);
    metrics.contains(&series)
}

/// Logs in over POP3 after `header`, from the balancer, and checks the audit event and the
/// allowlist name `client`, not the balancer.
async fn login_through(gw: &Gateway, header: &[u8], client: SocketAddr) {
    let mut c = Client::connect_from(BALANCER, gw.addr("pop3")).await;
    c.send_raw(header).await;
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "alice", PASSWORD).await;
    assert_eq!(x.code, 1, "{:?}", x.lines);
    c.pop_cmd("QUIT", true).await;
    let event = mech::wait_one(&audit_log(gw), "login", client.ip(), client.port(), |e| {
        e.kind == Kind::Auth
    })
    .await;
    assert_eq!(event.result, Outcome::Success);
    assert!(allowlisted(gw, client.ip()).await, "{client} allowlisted");
    assert!(!allowlisted(gw, BALANCER).await, "the balancer is not");
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_header_names_the_client() {
    let gw = start(&[]).await;
    let client: SocketAddr = "192.0.2.10:50123".parse().unwrap();
    login_through(&gw, &v1(client, gw.addr("pop3")), client).await;
    gw.stop().await;
}

/// A balancer on a dual-stack socket names an IPv4 client as IPv4-mapped IPv6 (`TCP6`): the
/// gateway sees the IPv4 client.
#[tokio::test(flavor = "multi_thread")]
async fn a_mapped_ipv4_client_is_the_ipv4_client() {
    let gw = start(&[]).await;
    let client: SocketAddr = "192.0.2.16:50124".parse().unwrap();
    let header = b"PROXY TCP6 ::ffff:192.0.2.16 ::ffff:127.0.0.1 50124 110\r\n";
    login_through(&gw, header, client).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_header_names_the_client() {
    let gw = start(&[]).await;
    let client: SocketAddr = "192.0.2.11:40000".parse().unwrap();
    login_through(&gw, &v2(Some(client), gw.addr("pop3")), client).await;
    gw.stop().await;
}

/// A header that names no client (v1 `UNKNOWN`, v2 `AF_UNSPEC`) keeps the connection's own
/// address, as the spec asks.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_keeps_the_balancer_address() {
    let nets = r#"["192.0.2.0/24", "127.0.0.1/32"]"#;
    let gw = start(&[("auth", "insecure_plaintext_networks", nets)]).await;
    let unspec = b"\r\n\r\n\0\r\nQUIT\n\x21\x00\x00\x00";
    for header in [&b"PROXY UNKNOWN\r\n"[..], unspec] {
        let (mut c, port) = mech::connect(BALANCER, gw.addr("pop3"), false).await;
        c.send_raw(header).await;
        c.pop(true).await;
        let x = mech::pop_user_pass(&mut c, "alice", PASSWORD).await;
        assert_eq!(x.code, 1, "{:?}", x.lines);
        c.pop_cmd("QUIT", true).await;
        mech::wait_one(&audit_log(&gw), "login", BALANCER, port, |e| {
            e.kind == Kind::Auth
        })
        .await;
    }
    gw.stop().await;
}

/// Mail through the balancer: the Received header names the client, not the balancer.
#[tokio::test(flavor = "multi_thread")]
async fn received_names_the_client() {
    let gw = start(&[]).await;
    let client: SocketAddr = "192.0.2.15:2525".parse().unwrap();
    let mut c = Client::connect_from(BALANCER, gw.addr("smtp")).await;
    c.send_raw(&v2(Some(client), gw.addr("smtp"))).await;
    c.expect(220).await;
    c.cmd("EHLO client.example", 250).await;
    mech::send_mail(&mut c, "friend@remote.example", "alice@example.test", "").await;
    c.cmd("QUIT", 221).await;
    let mail = gw.wait_for_mail("alice", 1).await;
    let received = mail[0]
        .lines()
        .find(|l| l.starts_with("Received:"))
        .expect("a Received header");
    assert!(mail[0].contains("192.0.2.15"), "{}", mail[0]);
    assert!(!received.contains("127.0.0.1"), "{}", mail[0]);
    gw.stop().await;
}

/// `insecure_plaintext_networks` judges the named client: one outside it may not send a
/// password without TLS, though the balancer's own address is loopback.
#[tokio::test(flavor = "multi_thread")]
async fn networks_see_the_named_client() {
    let gw = start(&[]).await;
    let outside: SocketAddr = "198.51.100.7:1234".parse().unwrap();
    let mut c = Client::connect_from(BALANCER, gw.addr("pop3")).await;
    c.send_raw(&v1(outside, gw.addr("pop3"))).await;
    c.pop(true).await;
    let refusal = c.pop_cmd("USER alice", false).await;
    assert!(refusal.contains("requires TLS"), "{refusal}");
    assert!(!allowlisted(&gw, outside.ip()).await);
    gw.stop().await;
}

/// The per-address cap counts the clients the headers name, not the balancer.
#[tokio::test(flavor = "multi_thread")]
async fn the_address_cap_counts_named_clients() {
    let gw = start(&[("limits", "max_connections_per_ip", "1")]).await;
    let pop3 = gw.addr("pop3");
    let one: SocketAddr = "192.0.2.20:1000".parse().unwrap();
    let two: SocketAddr = "192.0.2.21:1000".parse().unwrap();
    let mut a = Client::connect_from(BALANCER, pop3).await;
    a.send_raw(&v1(one, pop3)).await;
    a.pop(true).await;
    let mut b = Client::connect_from(BALANCER, pop3).await;
    b.send_raw(&v2(Some(two), pop3)).await;
    b.pop(true).await;
    let mut again = Client::connect_from(BALANCER, pop3).await;
    again.send_raw(&v1(one, pop3)).await;
    assert!(again.pop(false).await.starts_with("-ERR [SYS/TEMP]"));
    assert!(refused(&gw, "pop3", "address"));
    a.pop_cmd("QUIT", true).await;
    b.pop_cmd("QUIT", true).await;
    gw.stop().await;
}

/// A balancer's health check: LOCAL, then nothing; closed without a greeting or a refusal.
#[tokio::test(flavor = "multi_thread")]
async fn v2_local_closes_quietly() {
    let gw = start(&[]).await;
    for role in ["pop3", "smtp"] {
        let mut c = Client::connect_from(BALANCER, gw.addr(role)).await;
        c.send_raw(&v2(None, gw.addr(role))).await;
        assert!(c.closed().await, "{role}: no greeting after LOCAL");
    }
    let metrics = gw.shared.metrics.encode(&Default::default());
    assert!(!metrics.contains(r#"cap="proxy-header""#), "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_balancer_connection_without_a_header_is_refused() {
    let gw = start(&[]).await;
    let mut c = Client::connect_from(BALANCER, gw.addr("smtp")).await;
    c.send_raw(b"EHLO client.example\r\n").await;
    assert!(c.closed().await, "closed without a greeting");
    assert!(refused(&gw, "smtp", "proxy-header"));
    // A header that is not one: the version 2 signature with version 1.
    let mut c = Client::connect_from(BALANCER, gw.addr("pop3")).await;
    let mut bad = v2(Some("192.0.2.12:1".parse().unwrap()), gw.addr("pop3"));
    bad[12] = 0x11;
    c.send_raw(&bad).await;
    assert!(c.closed().await);
    assert!(refused(&gw, "pop3", "proxy-header"));
    gw.stop().await;
}

/// A silent connection from the balancer holds its slot only for the header's timeout.
/// A header sent a byte at a time, each byte within the timeout, is refused at the timeout all
/// the same: the deadline is for the whole header (`proxy_header_timeout`, 1 s here).
#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_header_is_refused_at_its_deadline() {
    let gw = start(&[("listeners", "proxy_header_timeout", r#""1s""#)]).await;
    let started = tokio::time::Instant::now();
    let mut c = Client::connect_from(BALANCER, gw.addr("pop3")).await;
    let header = v1("192.0.2.20:4000".parse().unwrap(), gw.addr("pop3"));
    let mut closed = false;
    for byte in &header[..header.len() - 2] {
        if c.try_send_raw(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(closed || c.closed().await, "closed without a greeting");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert!(refused(&gw, "pop3", "proxy-header"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_balancer_connection_is_closed_after_the_header_timeout() {
    let gw = start(&[]).await;
    let started = tokio::time::Instant::now();
    let mut c = Client::connect_from(BALANCER, gw.addr("pop3")).await;
    assert!(c.closed().await, "closed without a greeting");
    let waited = started.elapsed();
    let limit = mailgate::server::HEADER_TIMEOUT;
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(refused(&gw, "pop3", "proxy-header"));
    gw.stop().await;
}

/// Any other source must not choose its address: a header from it ends the session, with
/// nothing authenticated or allowlisted.
#[tokio::test(flavor = "multi_thread")]
async fn a_header_from_another_source_is_refused() {
    let gw = start(&[]).await;
    let named: SocketAddr = "192.0.2.13:1".parse().unwrap();
    let mut c = Client::connect_from(host(2), gw.addr("pop3")).await;
    c.pop(true).await;
    c.send_raw(&v1(named, gw.addr("pop3"))).await;
    c.send_raw(format!("USER alice\r\nPASS {PASSWORD}\r\n").as_bytes())
        .await;
    assert!(c.closed().await, "closed without an answer");
    assert!(refused(&gw, "pop3", "proxy-unexpected"));
    let mut c = Client::connect_from(host(2), gw.addr("smtp")).await;
    c.expect(220).await;
    c.send_raw(&v2(Some(named), gw.addr("smtp"))).await;
    assert!(c.closed().await);
    assert!(refused(&gw, "smtp", "proxy-unexpected"));
    assert!(!allowlisted(&gw, named.ip()).await);
    assert!(!allowlisted(&gw, host(2)).await);
    gw.stop().await;
}

/// Implicit TLS starts after the header, here sent in the same write as the ClientHello's
/// first bytes would follow it.
#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_after_the_header() {
    let gw = start(&[]).await;
    let client: SocketAddr = "192.0.2.14:44444".parse().unwrap();
    let mut tcp = common::client::connect_from(BALANCER, gw.addr("pop3s")).await;
    tcp.write_all(&v2(Some(client), gw.addr("pop3s")))
        .await
        .unwrap();
    let mut c = Client::over(Box::new(common::client::tls(tcp).await));
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "bob", PASSWORD).await;
    assert_eq!(x.code, 1, "{:?}", x.lines);
    c.pop_cmd("QUIT", true).await;
    let event = mech::wait_one(&audit_log(&gw), "login", client.ip(), client.port(), |e| {
        e.kind == Kind::Auth
    })
    .await;
    assert!(event.tls.is_some(), "over TLS");
    assert!(allowlisted(&gw, client.ip()).await);
    gw.stop().await;
}

/// HAProxy in TCP mode with `send-proxy-v2`, started privately on loopback: a POP3 login from
/// 127.0.0.77 through it is audited and allowlisted as 127.0.0.77, and its health checks
/// (version 2 `LOCAL` headers every 50 ms) are no refusals.
#[tokio::test(flavor = "multi_thread")]
async fn through_haproxy() {
    if !common::have("haproxy") {
        return;
    }
    let gw = start(&[("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#)]).await;
    let front = extra::free_port();
    let cfg = gw.dir.path().join("haproxy.cfg");
    let text = format!(
        "global\n    maxconn 64\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n\nfrontend mail\n    bind \
         127.0.0.1:{front}\n    default_backend gateway\n\nbackend gateway\n    server s1 {} \
         send-proxy-v2 check inter 50ms\n",
        gw.addr("pop3")
    );
    std::fs::write(&cfg, text).expect("haproxy config");
    let mut haproxy = extra::haproxy(&cfg);
    let front = extra::local(front);
    extra::wait_listening(front).await;
    let source = host(77);
    let (mut c, port) = mech::connect(source, front, false).await;
    c.pop(true).await;
    let x = mech::pop_user_pass(&mut c, "alice", PASSWORD).await;
    assert_eq!(x.code, 1, "{:?}", x.lines);
    c.pop_cmd("QUIT", true).await;
    let event = mech::wait_one(&audit_log(&gw), "login via haproxy", source, port, |e| {
        e.kind == Kind::Auth
    })
    .await;
    assert_eq!(event.result, Outcome::Success);
    assert!(allowlisted(&gw, source).await, "127.0.0.77 allowlisted");
    assert!(!allowlisted(&gw, BALANCER).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = gw.shared.metrics.encode(&Default::default());
    assert!(!metrics.contains(r#"cap="proxy-header""#), "{metrics}");
    extra::stop_child(&mut haproxy).await;
    gw.stop().await;
}
