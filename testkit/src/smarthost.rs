//! A scriptable SMTP smarthost on `127.0.0.1:0` for end-to-end tests: it records every message
//! it accepts (envelope and dot-unstuffed data), can be told to answer a given code at MAIL,
//! RCPT or end of DATA (always, or for the first N times, optionally for one recipient only),
//! can require AUTH PLAIN (RFC 4616) or an OAuth bearer token over XOAUTH2 or OAUTHBEARER
//! (RFC 7628, answering a bad token with the §3.2.2 JSON error challenge before the 535), and
//! can offer STARTTLS (RFC 3207) with a fresh self-signed certificate. It speaks just enough
//! RFC 5321 for a client under test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mailgate::config::{Upstream, UpstreamTls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Longest command or data line the smarthost reads.
const MAX_LINE: usize = 64 * 1024;

/// Where a scripted failure applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to RCPT TO.
    Rcpt,
    /// The reply after the message data.
    Data,
}

/// A scripted reply code.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Where it applies.
    pub stage: Stage,
    /// The code to answer (4xx or 5xx).
    pub code: u16,
    /// How many times; `None` means always.
    pub times: Option<u32>,
    /// For [`Stage::Rcpt`]: only for this address.
    pub rcpt: Option<String>,
}

impl Fault {
    /// Answer `code` at `stage` every time.
    pub fn always(stage: Stage, code: u16) -> Fault {
        Fault {
            stage,
            code,
            times: None,
            rcpt: None,
        }
    }

    /// Answer `code` at `stage` the first `n` times.
    pub fn first(stage: Stage, code: u16, n: u32) -> Fault {
        Fault {
            stage,
            code,
            times: Some(n),
            rcpt: None,
        }
    }

    /// Restricts a RCPT fault to one address.
    pub fn for_rcpt(mut self, address: &str) -> Fault {
        self.rcpt = Some(address.to_string());
        self
    }
}

/// An OAuth SASL mechanism the smarthost can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerMech {
    /// `AUTH XOAUTH2`: a bad token gets a plain 535.
    Xoauth2,
    /// `AUTH OAUTHBEARER` (RFC 7628): a bad token gets the JSON error challenge, then 535.
    Oauthbearer,
}

impl BearerMech {
    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            BearerMech::Xoauth2 => "XOAUTH2",
            BearerMech::Oauthbearer => "OAUTHBEARER",
        }
    }
}

/// The access tokens the smarthost accepts right now; shared with whatever issues them.
#[derive(Debug, Clone, Default)]
pub struct ValidTokens(Arc<Mutex<Vec<String>>>);

impl ValidTokens {
    /// Accepts `token` from now on.
    pub fn allow(&self, token: &str) {
        self.0.lock().expect("tokens lock").push(token.to_string());
    }

    /// Accepts no token issued so far (as if all were revoked or expired).
    pub fn revoke_all(&self) {
        self.0.lock().expect("tokens lock").clear();
    }

    /// Whether `token` is accepted.
    pub fn contains(&self, token: &str) -> bool {
        self.0
            .lock()
            .expect("tokens lock")
            .iter()
            .any(|t| t == token)
    }
}

/// Require AUTH with an OAuth bearer token before MAIL ([`Smarthost::start_with_bearer`]).
#[derive(Debug, Clone)]
pub struct Bearer {
    /// The one mechanism offered.
    pub mechanism: BearerMech,
    /// The user the token must be presented for.
    pub user: String,
    /// The tokens accepted.
    pub tokens: ValidTokens,
}

/// One AUTH attempt with a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerAttempt {
    /// The mechanism used.
    pub mechanism: String,
    /// The user presented.
    pub user: String,
    /// The token presented.
    pub token: String,
    /// For OAUTHBEARER, the `host` and `port` fields.
    pub host_port: Option<(String, String)>,
    /// Whether it was accepted.
    pub accepted: bool,
}

/// How the smarthost behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Require AUTH PLAIN with this user and password before MAIL.
    pub auth: Option<(String, String)>,
    /// Offer STARTTLS.
    pub starttls: bool,
    /// Speak TLS from the first byte (the port-465 way) instead.
    pub implicit_tls: bool,
    /// Scripted failures; the first that matches answers.
    pub faults: Vec<Fault>,
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The reverse-path, without brackets.
    pub mail_from: String,
    /// The accepted forward-paths, without brackets.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, with its CRLFs, without the final `.` line.
    pub data: Vec<u8>,
    /// The user that authenticated, if any.
    pub auth_user: Option<String>,
    /// The bearer token that session authenticated with, if any.
    pub auth_token: Option<String>,
    /// Whether the session was under TLS.
    pub tls: bool,
}

struct State {
    options: Options,
    bearer: Option<Bearer>,
    tls: Option<TlsAcceptor>,
    used: Mutex<Vec<u32>>,
    messages: Mutex<Vec<Received>>,
    bearer_attempts: Mutex<Vec<BearerAttempt>>,
    count: watch::Sender<usize>,
    sessions: AtomicUsize,
}

/// A running smarthost; stops when dropped.
pub struct Smarthost {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Smarthost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Smarthost {
    /// Starts listening on `127.0.0.1:0`.
    pub async fn start(options: Options) -> Smarthost {
        Self::start_inner(options, None).await
    }

    /// Starts listening on `127.0.0.1:0`, requiring AUTH with a bearer token.
    pub async fn start_with_bearer(options: Options, bearer: Bearer) -> Smarthost {
        Self::start_inner(options, Some(bearer)).await
    }

    async fn start_inner(options: Options, bearer: Option<Bearer>) -> Smarthost {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smarthost");
        let addr = listener.local_addr().expect("smarthost address");
        let tls = (options.starttls || options.implicit_tls).then(acceptor);
        let used = Mutex::new(vec![0; options.faults.len()]);
        let (count, _) = watch::channel(0);
        let state = Arc::new(State {
            options,
            bearer,
            tls,
            used,
            messages: Mutex::new(Vec::new()),
            bearer_attempts: Mutex::new(Vec::new()),
            count,
            sessions: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                shared.sessions.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Stream> = match (&state.tls, state.options.implicit_tls) {
                        (Some(acceptor), true) => match acceptor.clone().accept(sock).await {
                            Ok(tls) => Box::new(tls),
                            Err(_) => return,
                        },
                        _ => Box::new(sock),
                    };
                    let mut conn = Conn {
                        io,
                        buf: Vec::new(),
                    };
                    // A session ends on QUIT, on a client error or when the client goes away.
                    let _ = session(&state, &mut conn).await;
                });
            }
        });
        Smarthost { addr, state, task }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().expect("smarthost lock").clone()
    }

    /// Every XOAUTH2/OAUTHBEARER attempt so far, in order.
    pub fn bearer_attempts(&self) -> Vec<BearerAttempt> {
        self.state
            .bearer_attempts
            .lock()
            .expect("smarthost lock")
            .clone()
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.state.sessions.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were accepted and returns them; panics after
    /// `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.state.count.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n)).await;
        assert!(
            waited.is_ok(),
            "smarthost: {n} messages not received within {timeout:?}"
        );
        self.messages()
    }

    /// An upstream configuration pointing here, matching the options (STARTTLS with any
    /// certificate accepted, credentials), with the given retry schedule.
    pub fn upstream(&self, retry: Vec<Duration>) -> Upstream {
        let (username, password) = match &self.state.options.auth {
            Some((u, p)) => (Some(u.clone()), Some(p.clone())),
            None => (None, None),
        };
        Upstream {
            address: self.addr,
            server_name: "localhost".into(),
            tls: if self.state.options.implicit_tls {
                UpstreamTls::Tls
            } else if self.state.tls.is_some() {
                UpstreamTls::Starttls
            } else {
                UpstreamTls::None
            },
            danger_accept_invalid_certs: true,
            username,
            password,
            retry,
            command_timeout: Duration::from_secs(5),
            keep_idle: Duration::ZERO,
            auth: mailgate::config::UpstreamAuth::Auto,
            oauth: None,
        }
    }
}

impl State {
    /// The scripted code for this command, if a fault matches (and counts it).
    fn fault(&self, stage: Stage, rcpt: Option<&str>) -> Option<u16> {
        let mut used = self.used.lock().expect("smarthost lock");
        for (i, f) in self.options.faults.iter().enumerate() {
            let applies = f.stage == stage
                && (f.rcpt.is_none() || f.rcpt.as_deref() == rcpt)
                && f.times.is_none_or(|n| used[i] < n);
            if applies {
                used[i] += 1;
                return Some(f.code);
            }
        }
        None
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(std::io::Error::other("line too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn reply(&mut self, text: &str) -> std::io::Result<()> {
        self.io.write_all(text.as_bytes()).await?;
        self.io.write_all(b"\r\n").await?;
        self.io.flush().await
    }
}

fn scripted(code: u16) -> String {
    format!("{code} {}.0.0 scripted failure", code / 100)
}

fn path_arg(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].to_string())
}

async fn session(state: &State, conn: &mut Conn) -> std::io::Result<()> {
    conn.reply("220 smarthost.test ESMTP").await?;
    let mut tls = state.options.implicit_tls;
    let mut user: Option<String> = None;
    let mut token: Option<String> = None;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let raw = conn.line().await?;
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("").to_string();
        match verb.as_str() {
            "EHLO" => {
                let mut caps = vec!["smarthost.test", "SIZE 10000000", "8BITMIME"];
                if state.tls.is_some() && !tls {
                    caps.push("STARTTLS");
                }
                let mut mechs = Vec::new();
                if state.options.auth.is_some() {
                    mechs.push("PLAIN");
                }
                if let Some(b) = &state.bearer {
                    mechs.push(b.mechanism.name());
                }
                let auth = format!("AUTH {}", mechs.join(" "));
                if !mechs.is_empty() {
                    caps.push(&auth);
                }
                let last = caps.len() - 1;
                for (i, cap) in caps.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    conn.reply(&format!("250{sep}{cap}")).await?;
                }
            }
            "HELO" => conn.reply("250 smarthost.test").await?,
            "STARTTLS" if !tls => {
                let Some(acceptor) = state.tls.clone() else {
                    conn.reply("502 5.5.1 not offered").await?;
                    continue;
                };
                conn.reply("220 2.0.0 go ahead").await?;
                let plain = std::mem::replace(&mut conn.io, Box::new(tokio::io::duplex(1).0));
                conn.io = Box::new(acceptor.accept(plain).await?);
                conn.buf.clear();
                tls = true;
                (user, token, from, rcpts) = (None, None, None, Vec::new());
            }
            "AUTH" if bearer_mech(state, &line).is_some() => {
                let Some(bearer) = &state.bearer else {
                    continue;
                };
                if let Some((u, t)) = bearer_auth(state, bearer, conn, &line).await? {
                    (user, token) = (Some(u), Some(t));
                }
            }
            "AUTH" => {
                let mut words = line.split(' ').skip(1);
                if state.options.auth.is_none()
                    || !words
                        .next()
                        .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN"))
                {
                    conn.reply("504 5.5.4 only PLAIN").await?;
                    continue;
                }
                let token = match words.next() {
                    Some(t) => t.to_string(),
                    None => {
                        conn.reply("334 ").await?;
                        let raw = conn.line().await?;
                        String::from_utf8_lossy(&raw).trim_end().to_string()
                    }
                };
                let decoded = BASE64.decode(token.as_bytes()).unwrap_or_default();
                let fields: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                let ok = match (&state.options.auth, fields.as_slice()) {
                    (Some((u, p)), [_, du, dp]) => du == &u.as_bytes() && dp == &p.as_bytes(),
                    _ => false,
                };
                if ok {
                    user = state.options.auth.as_ref().map(|(u, _)| u.clone());
                    conn.reply("235 2.7.0 authenticated").await?;
                } else {
                    conn.reply("535 5.7.8 bad credentials").await?;
                }
            }
            "MAIL" => {
                let required = state.options.auth.is_some() || state.bearer.is_some();
                if required && user.is_none() {
                    conn.reply("530 5.7.0 authentication required").await?;
                } else if let Some(code) = state.fault(Stage::Mail, None) {
                    conn.reply(&scripted(code)).await?;
                } else if let Some(path) = path_arg(&line) {
                    from = Some(path);
                    rcpts.clear();
                    conn.reply("250 2.1.0 ok").await?;
                } else {
                    conn.reply("501 5.5.4 syntax").await?;
                }
            }
            "RCPT" => {
                let Some(path) = path_arg(&line).filter(|_| from.is_some()) else {
                    conn.reply("503 5.5.1 MAIL first").await?;
                    continue;
                };
                if let Some(code) = state.fault(Stage::Rcpt, Some(&path)) {
                    conn.reply(&scripted(code)).await?;
                } else {
                    rcpts.push(path);
                    conn.reply("250 2.1.5 ok").await?;
                }
            }
            "DATA" => {
                let Some(mail_from) = from.clone().filter(|_| !rcpts.is_empty()) else {
                    conn.reply("554 5.5.1 no valid recipients").await?;
                    continue;
                };
                conn.reply("354 end with <CRLF>.<CRLF>").await?;
                let mut data = Vec::new();
                loop {
                    let line = conn.line().await?;
                    if line == b".\r\n" {
                        break;
                    }
                    let unstuffed = if line.starts_with(b".") {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    data.extend_from_slice(unstuffed);
                }
                if let Some(code) = state.fault(Stage::Data, None) {
                    conn.reply(&scripted(code)).await?;
                } else {
                    let msg = Received {
                        mail_from,
                        rcpt_to: std::mem::take(&mut rcpts),
                        data,
                        auth_user: user.clone(),
                        auth_token: token.clone(),
                        tls,
                    };
                    let n = {
                        let mut messages = state.messages.lock().expect("smarthost lock");
                        messages.push(msg);
                        messages.len()
                    };
                    state.count.send_replace(n);
                    conn.reply("250 2.0.0 queued").await?;
                }
                from = None;
                rcpts.clear();
            }
            "RSET" => {
                (from, rcpts) = (None, Vec::new());
                conn.reply("250 2.0.0 ok").await?;
            }
            "NOOP" => conn.reply("250 2.0.0 ok").await?,
            "QUIT" => {
                conn.reply("221 2.0.0 bye").await?;
                return Ok(());
            }
            _ => conn.reply("500 5.5.2 unknown command").await?,
        }
    }
}

/// The bearer mechanism named by an AUTH line, if it is the one required.
fn bearer_mech(state: &State, line: &str) -> Option<BearerMech> {
    let bearer = state.bearer.as_ref()?;
    let name = line.split(' ').nth(1)?;
    name.eq_ignore_ascii_case(bearer.mechanism.name())
        .then_some(bearer.mechanism)
}

/// Runs an XOAUTH2 or OAUTHBEARER exchange; the user and token if accepted.
async fn bearer_auth(
    state: &State,
    bearer: &Bearer,
    conn: &mut Conn,
    line: &str,
) -> std::io::Result<Option<(String, String)>> {
    let response = match line.split(' ').nth(2) {
        Some(r) => r.to_string(),
        None => {
            conn.reply("334 ").await?;
            let raw = conn.line().await?;
            String::from_utf8_lossy(&raw).trim_end().to_string()
        }
    };
    let decoded = BASE64.decode(response.as_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&decoded).into_owned();
    let parsed = match bearer.mechanism {
        BearerMech::Xoauth2 => parse_xoauth2(&text),
        BearerMech::Oauthbearer => parse_oauthbearer(&text),
    };
    let Some(Presented {
        user: got_user,
        token: got_token,
        host_port,
    }) = parsed
    else {
        conn.reply("501 5.5.2 malformed initial response").await?;
        return Ok(None);
    };
    let accepted = got_user == bearer.user && bearer.tokens.contains(&got_token);
    state
        .bearer_attempts
        .lock()
        .expect("smarthost lock")
        .push(BearerAttempt {
            mechanism: bearer.mechanism.name().to_string(),
            user: got_user.clone(),
            token: got_token.clone(),
            host_port,
            accepted,
        });
    if accepted {
        conn.reply("235 2.7.0 authenticated").await?;
        return Ok(Some((got_user, got_token)));
    }
    if bearer.mechanism == BearerMech::Oauthbearer {
        // RFC 7628 §3.2.2: the error as JSON in a challenge; the client must answer %x01.
        let json = r#"{"status":"invalid_token","schemes":"bearer","scope":"smtp"}"#;
        conn.reply(&format!("334 {}", BASE64.encode(json))).await?;
        let answer = conn.line().await?;
        if answer != b"AQ==\r\n" {
            conn.reply("501 5.5.2 expected the %x01 dummy response")
                .await?;
            return Ok(None);
        }
    }
    conn.reply("535 5.7.8 invalid token").await?;
    Ok(None)
}

/// What a client presented in an XOAUTH2 or OAUTHBEARER initial response.
struct Presented {
    user: String,
    token: String,
    host_port: Option<(String, String)>,
}

/// `user=U^Aauth=Bearer T^A^A`.
fn parse_xoauth2(text: &str) -> Option<Presented> {
    let rest = text.strip_suffix("\x01\x01")?;
    let (user, auth) = rest.split_once('\x01')?;
    let user = user.strip_prefix("user=")?;
    let token = auth.strip_prefix("auth=Bearer ")?;
    Some(Presented {
        user: user.to_string(),
        token: token.to_string(),
        host_port: None,
    })
}

/// `n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A` (RFC 7628 §3.1); `a=` unescaped per RFC 5801.
fn parse_oauthbearer(text: &str) -> Option<Presented> {
    let rest = text.strip_suffix("\x01\x01")?;
    let (gs2, kvpairs) = rest.split_once('\x01')?;
    let authzid = gs2.strip_prefix("n,a=")?.strip_suffix(',')?;
    let user = authzid.replace("=2C", ",").replace("=3D", "=");
    let (mut host, mut port, mut token) = (None, None, None);
    for kv in kvpairs.split('\x01') {
        let (k, v) = kv.split_once('=')?;
        match k {
            "host" => host = Some(v.to_string()),
            "port" => port = Some(v.to_string()),
            "auth" => token = Some(v.strip_prefix("Bearer ")?.to_string()),
            _ => {}
        }
    }
    Some(Presented {
        user,
        token: token?,
        host_port: host.zip(port),
    })
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost`.
fn acceptor() -> TlsAcceptor {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate test certificate");
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], pkcs8)
        .expect("TLS server config");
    TlsAcceptor::from(Arc::new(config))
}
