//! A slow dependency holds only the sessions that wait for it (issue 10): an RFC 7662
//! introspection endpoint that accepts connections and never answers holds 8 XOAUTH2 logins,
//! and 8 logins against a deliberately slow password hash run at once, while PLAIN logins on
//! other connections each complete in well under half a second. Before the credential check
//! became a round trip through the session driver, the introspection call blocked a runtime
//! worker and the hashes held the few verification slots every login queued for: a PLAIN login
//! then waited seconds.

// The test times logins with the real clock; the gateway's rule (clippy.toml) is for the gateway.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use common::client::Client;
use common::{Gateway, host};

/// The bound each PLAIN login must stay under while the slow checks run.
const FAST: Duration = Duration::from_millis(500);

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

/// A gateway offering `mechanisms` on plaintext loopback, with `extra` config and `users` as
/// its users file.
async fn start(users: &str, mechanisms: &str, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("users"), users).expect("users");
    let text = common::config_text(extra).replace(
        "[auth]\n",
        &format!(
            "[auth]\nmechanisms = [{mechanisms}]\n\
             insecure_plaintext_networks = [\"127.0.0.0/8\"]\n"
        ),
    );
    Gateway::start_in(dir, &text).await
}

/// Logs in with PLAIN from `source` `rounds` times, one connection each; returns the slowest
/// time from AUTH to its 235.
async fn plain_logins(gw: &Gateway, source: u8, rounds: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..rounds {
        let mut c = Client::connect_from(host(source), gw.addr("submission")).await;
        c.expect(220).await;
        c.cmd("EHLO fast.example", 250).await;
        let began = Instant::now();
        c.cmd(&format!("AUTH PLAIN {}", plain("alice", common::PASSWORD)), 235)
            .await;
        slowest = slowest.max(began.elapsed());
        c.cmd("QUIT", 221).await;
    }
    slowest
}

/// Sends `auth` (a whole AUTH line) on a fresh connection from `source` and returns the task
/// that waits for its answer.
async fn pending_login(addr: SocketAddr, source: u8, auth: String) -> JoinHandle<String> {
    let mut c = Client::connect_from(host(source), addr).await;
    c.expect(220).await;
    c.cmd("EHLO slow.example", 250).await;
    c.send(&auth).await;
    tokio::spawn(async move { c.line().await.unwrap_or_default() })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_introspection_endpoint_holds_only_its_own_logins() {
    // The endpoint accepts every connection and never says a word.
    let idp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let idp_addr = idp.local_addr().expect("addr");
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = idp.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let gw = start(
        common::USERS,
        "\"PLAIN\", \"XOAUTH2\"",
        &format!(
            "\n[auth.oauth]\nintrospection_url = \"http://{idp_addr}/introspect\"\n\
             audience = [\"mailgate\"]\n"
        ),
    )
    .await;
    let token = B64.encode("user=bob\x01auth=Bearer opaque-token-that-needs-introspection\x01\x01");
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let auth = format!("AUTH XOAUTH2 {token}");
        waiting.push(pending_login(gw.addr("submission"), 3, auth).await);
    }
    for n in 0..8 {
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of 8 introspection requests reached the endpoint"));
    }
    let slowest = plain_logins(&gw, 2, 5).await;
    assert!(
        slowest < FAST,
        "a PLAIN login took {slowest:?} while 8 XOAUTH2 logins waited for the endpoint"
    );
    for login in &waiting {
        assert!(!login.is_finished(), "an XOAUTH2 login was answered early");
    }
    // The held logins end with a temporary failure once the request times out (RFC 7628
    // error challenge carrying XOAUTH2's status 503), not with a hang.
    for login in waiting {
        let line = tokio::time::timeout(Duration::from_secs(15), login)
            .await
            .expect("the held login is answered after the introspection timeout")
            .expect("join");
        let json = B64
            .decode(line.trim_start_matches("334 ").trim())
            .expect("base64 error challenge");
        assert!(
            String::from_utf8_lossy(&json).contains("503"),
            "{line}: {}",
            String::from_utf8_lossy(&json)
        );
    }
    silent.abort();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_password_hashes_do_not_hold_cheap_logins() {
    // bcrypt at cost 13: about half a second per check, by design; 8 of them saturate the
    // machine's cores for seconds.
    let slow = bcrypt::hash("slow-password", 13).expect("bcrypt");
    let users = format!("{}slow:{{BLF-CRYPT}}{slow}\n", common::USERS);
    let gw = start(&users, "\"PLAIN\"", "").await;
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let auth = format!("AUTH PLAIN {}", plain("slow", "slow-password"));
        waiting.push(pending_login(gw.addr("submission"), 4, auth).await);
    }
    let slowest = plain_logins(&gw, 2, 5).await;
    let busy = waiting.iter().filter(|l| !l.is_finished()).count();
    assert!(
        slowest < FAST,
        "a PLAIN login took {slowest:?} while slow hashes ran"
    );
    assert!(busy > 0, "the slow hashes had all finished before the PLAIN logins: no overlap");
    for login in waiting {
        let line = tokio::time::timeout(Duration::from_secs(60), login)
            .await
            .expect("slow login answered")
            .expect("join");
        assert!(line.starts_with("235"), "{line}");
    }
    gw.stop().await;
}
