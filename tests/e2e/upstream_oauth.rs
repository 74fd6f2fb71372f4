//! Relaying with an OAuth 2.0 access token upstream, end to end: the gateway obtains tokens from
//! a token endpoint run by the test (RFC 6749 refresh-token and client-credentials grants) and
//! presents them to a smarthost, also run by the test, that accepts only tokens the endpoint
//! issued and still counts valid. Covers the cache, expiry, one refresh after a 535 (XOAUTH2)
//! or after the RFC 7628 error challenge (OAUTHBEARER), an unreachable endpoint (mail waits in
//! the spool, nothing bounces), and a rotated refresh token written back to its file.

// End-to-end tests measure real elapsed time (deadlines for background delivery); the clock
// rule is for the gateway, not for its observers.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use common::client::Client;
use common::{Gateway, PASSWORD};
use extra::{eventually, set_all};
use mailgate::clock::{Clock, ManualClock, SystemClock};
use mailgate_testkit::{self as common, extra, sasl, smarthost};
use smarthost::{Bearer, BearerMech, Options, Smarthost, ValidTokens};

const WAIT: Duration = Duration::from_secs(15);

/// The mailbox the upstream tokens belong to.
const RELAY_USER: &str = "relay@example.com";

const CLIENT_ID: &str = "gateway-client";

const SCOPE: &str = "https://mail.example/smtp.send offline_access";

/// What the token endpoint does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Issue the next token.
    Issue,
    /// Read the request, then close the connection without an answer.
    Hangup,
}

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    /// Header names lower-cased.
    headers: HashMap<String, String>,
    /// The decoded form fields.
    form: HashMap<String, String>,
}

struct EndpointState {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<Seen>>,
    issued: AtomicUsize,
    /// Tokens numbered below this are issued but not made valid at the smarthost.
    valid_from: AtomicUsize,
    /// Where issued tokens become valid.
    valid: ValidTokens,
    expires_in: u64,
    /// Issue a new refresh token with each access token, and accept only the latest.
    rotate: bool,
    /// The refresh token the endpoint accepts (refresh-token grant).
    refresh_token: Mutex<String>,
    /// The client secret, required as HTTP Basic when set; else `client_id` in the body.
    client_secret: Option<String>,
}

/// A tiny OAuth 2.0 token endpoint on `127.0.0.1:0`: minimal HTTP/1.1, one request per
/// connection. It checks the client authentication and the grant and issues `at-1`, `at-2`...
struct TokenEndpoint {
    addr: SocketAddr,
    state: Arc<EndpointState>,
    task: JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    async fn start(
        valid: ValidTokens,
        expires_in: u64,
        rotate: bool,
        client_secret: Option<&str>,
    ) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(EndpointState {
            mode: Mutex::new(Mode::Issue),
            requests: Mutex::new(Vec::new()),
            issued: AtomicUsize::new(0),
            valid_from: AtomicUsize::new(0),
            valid,
            expires_in,
            rotate,
            refresh_token: Mutex::new("rt-0".into()),
            client_secret: client_secret.map(str::to_string),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(&state, sock).await;
                });
            }
        });
        TokenEndpoint { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/oauth2/token", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn serve(state: &EndpointState, mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let form = form_decode(&String::from_utf8_lossy(&body));
    let seen = Seen {
        request_line,
        headers,
        form,
    };
    state.requests.lock().unwrap().push(seen.clone());
    if *state.mode.lock().unwrap() == Mode::Hangup {
        return Ok(());
    }
    let (status, json) = answer(state, &seen);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    sock.write_all(response.as_bytes()).await?;
    sock.shutdown().await
}

/// The endpoint's decision: RFC 6749 §5.1 success or §5.2 error.
fn answer(state: &EndpointState, seen: &Seen) -> (&'static str, String) {
    let error = |status, code: &str| (status, format!(r#"{{"error":"{code}"}}"#));
    let authorized = match &state.client_secret {
        Some(secret) => {
            // RFC 6749 §2.3.1: id and secret are form-encoded, then joined for Basic.
            let basic = seen
                .headers
                .get("authorization")
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| B64.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let pair = basic.as_deref().and_then(|b| b.split_once(':'));
            let (id, pass) = pair.unwrap_or_default();
            form_value(id) == CLIENT_ID
                && form_value(pass) == *secret
                && !seen.form.contains_key("client_id")
        }
        None => {
            seen.form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && !seen.headers.contains_key("authorization")
        }
    };
    if !authorized {
        return error("401 Unauthorized", "invalid_client");
    }
    let form_type = seen.headers.get("content-type").map(String::as_str);
    if !seen.request_line.starts_with("POST /oauth2/token ")
        || form_type != Some("application/x-www-form-urlencoded")
    {
        return error("400 Bad Request", "invalid_request");
    }
    let mut refresh = state.refresh_token.lock().unwrap();
    match seen.form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            if seen.form.get("refresh_token") != Some(&*refresh) {
                return error("400 Bad Request", "invalid_grant");
            }
        }
        Some("client_credentials") => {}
        _ => return error("400 Bad Request", "unsupported_grant_type"),
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("at-{n}");
    if n >= state.valid_from.load(Ordering::SeqCst) {
        state.valid.allow(&token);
    }
    let mut json = format!(
        r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{}"#,
        state.expires_in
    );
    if state.rotate {
        *refresh = format!("rt-{n}");
        json.push_str(&format!(r#","refresh_token":"{refresh}""#));
    }
    json.push('}');
    ("200 OK", json)
}

fn form_decode(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (form_value(k), form_value(v)))
        .collect()
}

/// One `application/x-www-form-urlencoded` value, decoded.
fn form_value(s: &str) -> String {
    {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// How the gateway is set up for one test.
struct Setup<'a> {
    auth: &'a str,
    grant: &'a str,
    client_secret: Option<&'a str>,
    refresh_margin: &'a str,
    retry: &'a str,
    /// `[delivery.upstream] keep_idle`: "0s" gives every message a session of its own.
    keep_idle: &'a str,
    clock: Option<Arc<ManualClock>>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            auth: "xoauth2",
            grant: "refresh_token",
            client_secret: Some("cs-1"),
            refresh_margin: "60s",
            retry: r#"["200ms", "200ms"]"#,
            keep_idle: r#""5s""#,
            clock: None,
        }
    }
}

/// Starts a gateway relaying to `smarthost` with tokens from `endpoint`; the secret and
/// refresh-token files are written into its folder.
async fn start(smarthost: &Smarthost, endpoint: &TokenEndpoint, setup: Setup<'_>) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let refresh_file = dir.path().join("refresh-token");
    std::fs::write(&refresh_file, "rt-0\n").expect("refresh token file");
    let q = |s: &str| format!("\"{s}\"");
    let address = q(&smarthost.addr().to_string());
    let (auth, grant, url) = (q(setup.auth), q(setup.grant), q(&endpoint.url()));
    let (user, client_id, scope) = (q(RELAY_USER), q(CLIENT_ID), q(SCOPE));
    let margin = q(setup.refresh_margin);
    let refresh_path = q(&refresh_file.display().to_string());
    let mut edits = vec![
        ("delivery.upstream", "address", address.as_str()),
        ("delivery.upstream", "tls", r#""none""#),
        ("delivery.upstream", "retry", setup.retry),
        ("delivery.upstream", "keep_idle", setup.keep_idle),
        ("delivery.upstream", "auth", auth.as_str()),
        ("delivery.upstream", "username", user.as_str()),
        ("delivery.upstream.oauth", "token_url", url.as_str()),
        ("delivery.upstream.oauth", "grant", grant.as_str()),
        ("delivery.upstream.oauth", "client_id", client_id.as_str()),
        ("delivery.upstream.oauth", "scope", scope.as_str()),
        ("delivery.upstream.oauth", "refresh_margin", margin.as_str()),
        (
            "delivery.upstream.oauth",
            "refresh_token_file",
            refresh_path.as_str(),
        ),
    ];
    let secret_path;
    if let Some(secret) = setup.client_secret {
        let path = dir.path().join("client-secret");
        std::fs::write(&path, format!("{secret}\n")).expect("secret file");
        secret_path = q(&path.display().to_string());
        edits.push((
            "delivery.upstream.oauth",
            "client_secret_file",
            secret_path.as_str(),
        ));
    }
    let text = set_all(&common::config_text(""), &edits);
    match setup.clock {
        Some(clock) => Gateway::start_with_clock(dir, &text, clock).await,
        None => Gateway::start_in(dir, &text).await,
    }
}

fn refresh_file(gw: &Gateway) -> PathBuf {
    gw.dir.path().join("refresh-token")
}

/// Submits one message from alice to a remote recipient over implicit TLS with AUTH PLAIN.
async fn submit(gw: &Gateway, subject: &str) {
    let mut c = Client::connect_tls(gw.addr("submissions")).await;
    c.expect(220).await;
    c.cmd("EHLO laptop.example", 250).await;
    let plain = sasl::plain_b64("alice", PASSWORD);
    c.cmd(&format!("AUTH PLAIN {plain}"), 235).await;
    c.cmd("MAIL FROM:<alice@example.test>", 250).await;
    c.cmd("RCPT TO:<friend@remote.example>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes())
        .await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
}

fn spool_len(gw: &Gateway) -> usize {
    mailgate::spool::inspect(&gw.state().join("spool")).map_or(0, |q| q.len())
}

async fn wait_spool_empty(gw: &Gateway) {
    eventually("the spool to empty", WAIT, || {
        let empty = spool_len(gw) == 0;
        async move { empty }
    })
    .await;
}

async fn smarthost_with(mechanism: BearerMech) -> (Smarthost, ValidTokens) {
    let valid = ValidTokens::default();
    let bearer = Bearer {
        mechanism,
        user: RELAY_USER.into(),
        tokens: valid.clone(),
    };
    (
        Smarthost::start_with_bearer(Options::default(), bearer).await,
        valid,
    )
}

/// The tokens the smarthost saw, each with whether it accepted it.
fn attempts(smarthost: &Smarthost) -> Vec<(String, bool)> {
    smarthost
        .bearer_attempts()
        .into_iter()
        .map(|a| (a.token, a.accepted))
        .collect()
}

fn yes(t: &str) -> (String, bool) {
    (t.to_string(), true)
}

fn no(t: &str) -> (String, bool) {
    (t.to_string(), false)
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_token_grant_token_is_presented_and_cached() {
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    let endpoint = TokenEndpoint::start(valid, 3600, false, Some("cs-1")).await;
    // A session per message, so that the second one presents the cached token again.
    let setup = Setup {
        keep_idle: r#""0s""#,
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;

    submit(&gw, "first").await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["friend@remote.example"]);
    assert_eq!(got[0].auth_user.as_deref(), Some(RELAY_USER));
    assert_eq!(got[0].auth_token.as_deref(), Some("at-1"));

    let reqs = endpoint.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert!(r.request_line.starts_with("POST /oauth2/token HTTP/1.1"));
    // client_secret_basic: the secret from its file, never in the body.
    let basic = format!("Basic {}", B64.encode(format!("{CLIENT_ID}:cs-1")));
    assert_eq!(r.headers.get("authorization"), Some(&basic));
    let want: HashMap<String, String> = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "rt-0"),
        ("scope", SCOPE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(r.form, want);

    // The token is cached: the next message needs no request.
    submit(&gw, "second").await;
    let got = smarthost.wait_for(2, WAIT).await;
    assert_eq!(got[1].auth_token.as_deref(), Some("at-1"));
    assert_eq!(endpoint.requests().len(), 1);
    assert_eq!(attempts(&smarthost), vec![yes("at-1"), yes("at-1")]);
    assert_eq!(smarthost.sessions(), 2);
    // Without rotation the refresh-token file is left alone.
    assert_eq!(
        std::fs::read_to_string(refresh_file(&gw)).unwrap(),
        "rt-0\n"
    );
    wait_spool_empty(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_near_expiry_is_replaced_before_use() {
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    let endpoint = TokenEndpoint::start(valid.clone(), 3600, false, Some("cs-1")).await;
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let setup = Setup {
        clock: Some(clock.clone()),
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;

    submit(&gw, "first").await;
    smarthost.wait_for(1, WAIT).await;
    // 3600 s lifetime, 60 s margin: at 3539 s the token is still used.
    clock.advance(Duration::from_secs(3539));
    submit(&gw, "second").await;
    smarthost.wait_for(2, WAIT).await;
    assert_eq!(endpoint.requests().len(), 1);

    // At 3540 s it is within the margin; the smarthost would refuse it by now.
    clock.advance(Duration::from_secs(1));
    valid.revoke_all();
    submit(&gw, "third").await;
    let got = smarthost.wait_for(3, WAIT).await;
    assert_eq!(got[2].auth_token.as_deref(), Some("at-2"));
    assert_eq!(endpoint.requests().len(), 2);
    // Replaced before use: the smarthost never saw the old token after it expired.
    assert_eq!(
        attempts(&smarthost),
        vec![yes("at-1"), yes("at-1"), yes("at-2")]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_token_is_refreshed_once_and_the_message_delivered() {
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    let endpoint = TokenEndpoint::start(valid, 3600, false, Some("cs-1")).await;
    // The first token is issued but the smarthost does not take it (revoked upstream).
    endpoint.state.valid_from.store(2, Ordering::SeqCst);
    let gw = start(&smarthost, &endpoint, Setup::default()).await;

    submit(&gw, "hello").await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].auth_token.as_deref(), Some("at-2"));
    assert_eq!(attempts(&smarthost), vec![no("at-1"), yes("at-2")]);
    assert_eq!(endpoint.requests().len(), 2);
    // Both sessions in the first attempt: no wait for the retry schedule.
    assert_eq!(smarthost.sessions(), 2);
    wait_spool_empty(&gw).await;
    assert!(gw.mailbox("alice").is_empty(), "no bounce");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_refused_again_defers_and_a_later_attempt_delivers() {
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    let endpoint = TokenEndpoint::start(valid, 3600, false, Some("cs-1")).await;
    endpoint
        .state
        .valid_from
        .store(usize::MAX, Ordering::SeqCst);
    let setup = Setup {
        retry: r#"["300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]"#,
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;

    submit(&gw, "hello").await;
    eventually("two refused tokens", WAIT, || {
        let n = smarthost.bearer_attempts().len();
        async move { n >= 2 }
    })
    .await;
    // One refresh per attempt, not more: the second refusal ends the attempt.
    let first_two: Vec<_> = attempts(&smarthost).into_iter().take(2).collect();
    assert_eq!(first_two, vec![no("at-1"), no("at-2")]);
    assert_eq!(spool_len(&gw), 1, "the message waits in the spool");

    // Tokens work again from the next one on.
    let next = endpoint.state.issued.load(Ordering::SeqCst) + 1;
    endpoint.state.valid_from.store(next, Ordering::SeqCst);
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    wait_spool_empty(&gw).await;
    assert!(gw.mailbox("alice").is_empty(), "no bounce");
    let seen = attempts(&smarthost);
    assert_eq!(seen.iter().filter(|(_, ok)| *ok).count(), 1, "{seen:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_token_endpoint_keeps_mail_in_the_spool() {
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    let endpoint = TokenEndpoint::start(valid, 3600, false, Some("cs-1")).await;
    endpoint.set_mode(Mode::Hangup);
    let setup = Setup {
        retry: r#"["200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]"#,
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;

    submit(&gw, "patience").await;
    eventually("two attempts at the token endpoint", WAIT, || {
        let n = endpoint.requests().len();
        async move { n >= 2 }
    })
    .await;
    assert_eq!(spool_len(&gw), 1, "the message stays spooled");
    assert_eq!(smarthost.sessions(), 0, "no session without a token");
    assert!(gw.mailbox("alice").is_empty(), "no bounce");

    endpoint.set_mode(Mode::Issue);
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].auth_token.as_deref(), Some("at-1"));
    wait_spool_empty(&gw).await;
    assert!(gw.mailbox("alice").is_empty(), "no bounce");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_grant() {
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    // A secret that needs form-encoding inside the Basic credentials.
    let secret = "s3cret&more:x y";
    let endpoint = TokenEndpoint::start(valid, 3600, false, Some(secret)).await;
    let setup = Setup {
        grant: "client_credentials",
        client_secret: Some(secret),
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;
    submit(&gw, "hello").await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].auth_token.as_deref(), Some("at-1"));
    let reqs = endpoint.requests();
    assert_eq!(reqs.len(), 1);
    let want: HashMap<String, String> = [("grant_type", "client_credentials"), ("scope", SCOPE)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(reqs[0].form, want);
    wait_spool_empty(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauthbearer_error_challenge_leads_to_one_refresh() {
    let (smarthost, valid) = smarthost_with(BearerMech::Oauthbearer).await;
    let endpoint = TokenEndpoint::start(valid, 3600, false, Some("cs-1")).await;
    endpoint.state.valid_from.store(2, Ordering::SeqCst);
    let setup = Setup {
        auth: "oauthbearer",
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;

    submit(&gw, "hello").await;
    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].auth_user.as_deref(), Some(RELAY_USER));
    assert_eq!(got[0].auth_token.as_deref(), Some("at-2"));
    let seen = smarthost.bearer_attempts();
    assert_eq!(
        seen.iter()
            .map(|a| (a.token.as_str(), a.accepted))
            .collect::<Vec<_>>(),
        vec![("at-1", false), ("at-2", true)]
    );
    // RFC 7628 §3.1: host and port of the smarthost (its IP when no server_name is set).
    let port = smarthost.addr().port().to_string();
    assert_eq!(seen[1].mechanism, "OAUTHBEARER");
    assert_eq!(seen[1].host_port, Some(("127.0.0.1".to_string(), port)));
    wait_spool_empty(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_refresh_token_is_written_back_and_used() {
    use std::os::unix::fs::PermissionsExt;
    let (smarthost, valid) = smarthost_with(BearerMech::Xoauth2).await;
    // Tokens that expire within the margin are used once, so each message fetches one.
    let endpoint = TokenEndpoint::start(valid, 60, true, None).await;
    let setup = Setup {
        client_secret: None,
        ..Setup::default()
    };
    let gw = start(&smarthost, &endpoint, setup).await;

    submit(&gw, "first").await;
    smarthost.wait_for(1, WAIT).await;
    let file = refresh_file(&gw);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "rt-1\n");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    submit(&gw, "second").await;
    let got = smarthost.wait_for(2, WAIT).await;
    assert_eq!(got[1].auth_token.as_deref(), Some("at-2"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "rt-2\n");
    let reqs = endpoint.requests();
    let used: Vec<_> = reqs
        .iter()
        .map(|r| r.form.get("refresh_token").cloned().unwrap_or_default())
        .collect();
    assert_eq!(used, vec!["rt-0", "rt-1"]);
    // A public client: client_id in the body, no Authorization header.
    assert!(
        reqs.iter()
            .all(|r| r.form.get("client_id").map(String::as_str) == Some(CLIENT_ID))
    );
    wait_spool_empty(&gw).await;
    gw.stop().await;
}
