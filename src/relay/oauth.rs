//! The OAuth 2.0 token source for the smarthost: obtains the access token that AUTH XOAUTH2 or
//! OAUTHBEARER (RFC 7628) presents upstream, caches it until shortly before it expires, and
//! refreshes it when the smarthost rejects it.
//!
//! It implements the client side of RFC 6749: the refresh-token grant (§6) and the
//! client-credentials grant (§4.4), POSTed as `application/x-www-form-urlencoded` (§3.2, with
//! the encoding of Appendix B), client authentication with HTTP Basic (`client_secret_basic`,
//! §2.3.1) when a secret file is configured and with `client_id` in the body otherwise (§2.2,
//! §3.2.1), and the JSON token response (§5.1) or error response (§5.2). A refresh token that
//! the server rotates (§6, last paragraph) is written back to its file atomically.
//!
//! Building the request ([`token_request`]) and reading the response ([`parse_response`]) are
//! pure functions; [`TokenSource`] adds the files, the cache and the HTTP call, which runs on
//! the blocking pool under a timeout. Secrets and tokens never reach a log line or a `Debug`
//! output; errors carry only the server's error code and description.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::{Grant, UpstreamOAuth};

/// The whole token request, connection to last byte (RFC 6749 gives none; a token endpoint
/// answers in well under a second, and a stalled one must not hold deliveries for long).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest token response body read.
pub const MAX_RESPONSE: u64 = 64 * 1024;

/// Longest access or refresh token accepted. XOAUTH2 and OAUTHBEARER carry the access token in
/// one base64 line, which RFC 4954 §4 bounds at 12288 octets.
pub const MAX_TOKEN: usize = 8192;

/// Largest secret or refresh-token file read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// How long a token whose response gave no `expires_in` is kept (RFC 6749 §5.1 only
/// recommends the field); a rejection by the smarthost replaces it sooner.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// The longest a token is cached, whatever `expires_in` says.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Errors of the token source. None of them carries a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A secret or refresh-token file could not be read or is empty.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The token endpoint could not be reached or the exchange broke off.
    #[error("token endpoint: {0}")]
    Transport(String),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered with an error (RFC 6749 §5.2).
    #[error("token endpoint answered HTTP {status}: {error}{}", paren(.description))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error` code, or `"unknown"` if the body had none.
        error: String,
        /// The `error_description`, if any (made printable and bounded).
        description: Option<String>,
    },
    /// A successful answer that is not a usable token response.
    #[error("token endpoint sent an unusable response: {0}")]
    Malformed(String),
    /// The request made for another delivery while this one waited failed.
    #[error("{0}")]
    Shared(String),
    /// The blocking task running the request failed.
    #[error("token request task failed: {0}")]
    Task(String),
}

fn paren(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// A secret string (token or client secret): wiped on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Secret {
        Secret(Arc::new(Zeroizing::new(s)))
    }

    /// The secret itself, to be put on the wire and nowhere else.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A token request ready to be sent: the form body and, for `client_secret_basic`, the
/// `Authorization` header value.
#[derive(PartialEq, Eq)]
pub struct TokenRequest {
    /// The `application/x-www-form-urlencoded` body.
    pub body: Zeroizing<String>,
    /// `Basic <base64(id:secret)>`, when a client secret is used.
    pub authorization: Option<Zeroizing<String>>,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest").finish_non_exhaustive()
    }
}

/// Builds the token request for `cfg`'s grant: RFC 6749 §6 (`grant_type=refresh_token`,
/// `refresh_token`) or §4.4.2 (`grant_type=client_credentials`), plus `scope` if configured.
/// With a client secret the client authenticates with HTTP Basic, id and secret each
/// form-encoded first (§2.3.1); without one, `client_id` goes in the body (§3.2.1).
pub fn token_request(
    cfg: &UpstreamOAuth,
    client_secret: Option<&Secret>,
    refresh_token: Option<&Secret>,
) -> TokenRequest {
    let mut body = Zeroizing::new(String::new());
    let mut field = |name: &str, value: &str| {
        if !body.is_empty() {
            body.push('&');
        }
        body.push_str(name);
        body.push('=');
        form_encode(value, &mut body);
    };
    match cfg.grant {
        Grant::RefreshToken => {
            field("grant_type", "refresh_token");
            field("refresh_token", refresh_token.map_or("", Secret::expose));
        }
        Grant::ClientCredentials => field("grant_type", "client_credentials"),
    }
    if let Some(scope) = &cfg.scope {
        field("scope", scope);
    }
    let authorization = match client_secret {
        Some(secret) => {
            let mut pair = Zeroizing::new(String::new());
            form_encode(&cfg.client_id, &mut pair);
            pair.push(':');
            form_encode(secret.expose(), &mut pair);
            Some(Zeroizing::new(format!(
                "Basic {}",
                BASE64.encode(pair.as_bytes())
            )))
        }
        None => {
            field("client_id", &cfg.client_id);
            None
        }
    };
    TokenRequest {
        body,
        authorization,
    }
}

/// Appends `s` in `application/x-www-form-urlencoded` form (RFC 6749 Appendix B): ASCII
/// letters, digits and `*-._` as they are, space as `+`, every other UTF-8 byte as `%XX`.
pub fn form_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime, if the server said.
    pub expires_in: Option<Duration>,
    /// A new refresh token, if the server rotated it.
    pub refresh_token: Option<Secret>,
}

/// Reads the token endpoint's answer: HTTP `status` and `body`. A 2xx must carry a JSON
/// object with a Bearer `access_token` (token_type compared without case, §5.1); anything else
/// becomes [`Error::Refused`] with the §5.2 error code if the body has one. `expires_in` is
/// accepted as a number or a numeric string, as some providers send it.
pub fn parse_response(status: u16, body: &[u8]) -> Result<TokenResponse, Error> {
    #[derive(Deserialize)]
    struct Raw {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
        refresh_token: Option<String>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let raw: Option<Raw> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let (error, description) = match raw {
            Some(r) => (r.error, r.error_description),
            None => (None, None),
        };
        return Err(Error::Refused {
            status,
            error: error.map_or_else(|| "unknown".into(), |e| printable(&e)),
            description: description.map(|d| printable(&d)),
        });
    }
    let raw = raw.ok_or_else(|| Error::Malformed("not a JSON object".into()))?;
    let access_token = raw
        .access_token
        .ok_or_else(|| Error::Malformed("no access_token".into()))?;
    check_token("access_token", &access_token)?;
    match raw.token_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => {
            return Err(Error::Malformed(format!(
                "token_type {:?} is not Bearer",
                printable(t)
            )));
        }
        None => return Err(Error::Malformed("no token_type".into())),
    }
    let bad_lifetime = || Error::Malformed("expires_in is not a number of seconds".into());
    let expires_in = match &raw.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Some(secs),
            // 3599.0 and the like: whole seconds are enough.
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Some(f as u64),
            _ => return Err(bad_lifetime()),
        },
        Some(serde_json::Value::String(s)) => Some(s.trim().parse().map_err(|_| bad_lifetime())?),
        Some(_) => return Err(bad_lifetime()),
    };
    let expires_in = expires_in.map(|secs| Duration::from_secs(secs).min(MAX_LIFETIME));
    let refresh_token = match raw.refresh_token {
        Some(r) => {
            check_token("refresh_token", &r)?;
            Some(Secret::new(r))
        }
        None => None,
    };
    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        expires_in,
        refresh_token,
    })
}

/// Accepts a token only if it fits on an SMTP line and in a file of one line: 1 to
/// [`MAX_TOKEN`] printable ASCII characters without spaces (RFC 6750 §2.1 `b64token` is
/// narrower still).
fn check_token(field: &str, token: &str) -> Result<(), Error> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(Error::Malformed(format!(
            "{field} is empty or longer than {MAX_TOKEN} bytes"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Malformed(format!(
            "{field} has characters outside printable ASCII"
        )));
    }
    Ok(())
}

/// Server-supplied text made safe for a log line: controls replaced, at most 200 characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The cached access token and the moment it stops being used; pure, time given by the caller.
#[derive(Debug, Default)]
struct Cache {
    current: Option<(Secret, SystemTime)>,
}

impl Cache {
    /// The token, if there is one and `now` is before its use-by time.
    fn get(&self, now: SystemTime) -> Option<Secret> {
        match &self.current {
            Some((token, until)) if now < *until => Some(token.clone()),
            _ => None,
        }
    }

    /// Keeps `token`, obtained at `now`, until `margin` before it expires.
    fn store(
        &mut self,
        token: Secret,
        expires_in: Option<Duration>,
        margin: Duration,
        now: SystemTime,
    ) {
        let lifetime = expires_in
            .unwrap_or(DEFAULT_LIFETIME)
            .saturating_sub(margin);
        let until = now.checked_add(lifetime).unwrap_or(now);
        self.current = Some((token, until));
    }

    /// Drops the cached token if it is `rejected`; a newer one (already refreshed by another
    /// delivery) stays. Returns whether it dropped it.
    fn invalidate(&mut self, rejected: &Secret) -> bool {
        if self.current.as_ref().is_some_and(|(t, _)| t == rejected) {
            self.current = None;
            return true;
        }
        false
    }
}

/// Where the smarthost's access tokens come from: one per delivery worker, shared by its
/// deliveries. Concurrent callers wait for one refresh instead of each starting their own, and
/// share its failure too: deliveries queued behind a request that failed do not each repeat it.
pub struct TokenSource {
    cfg: UpstreamOAuth,
    agent: ureq::Agent,
    /// Failed requests so far; read before waiting for `state` to see whether one failed
    /// meanwhile.
    failures: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    cache: Cache,
    /// A rotated refresh token that could not be written back; used instead of the file.
    rotated: Option<Secret>,
    /// Why the last request failed.
    last_failure: Option<String>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.cfg.token_url)
            .field("grant", &self.cfg.grant)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Prepares the HTTP client: rustls with ring, the system trust roots (or none checked
    /// with `danger_accept_invalid_certs`), no redirects, the environment's proxy except for a
    /// loopback endpoint. Reads the trust roots, so call it off the async threads.
    pub fn new(cfg: UpstreamOAuth) -> TokenSource {
        let agent = agent(&cfg);
        TokenSource {
            cfg,
            agent,
            failures: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The configuration it serves.
    pub fn config(&self) -> &UpstreamOAuth {
        &self.cfg
    }

    /// A token usable at `now`: the cached one, or a fresh one from the endpoint.
    pub async fn token(&self, now: SystemTime) -> Result<Secret, Error> {
        let failures = self.failures.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if let Some(token) = state.cache.get(now) {
            return Ok(token);
        }
        if self.failures.load(Ordering::Acquire) != failures {
            let why = state.last_failure.clone().unwrap_or_default();
            return Err(Error::Shared(why));
        }
        match self.fetch(&mut state, now).await {
            Ok(token) => Ok(token),
            Err(e) => {
                state.last_failure = Some(e.to_string());
                self.failures.fetch_add(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    async fn fetch(&self, state: &mut State, now: SystemTime) -> Result<Secret, Error> {
        let rotated = state.rotated.clone();
        let cfg = self.cfg.clone();
        let agent = self.agent.clone();
        let job = tokio::task::spawn_blocking(move || fetch(&cfg, &agent, rotated));
        // ureq enforces REQUEST_TIMEOUT itself; this bound also covers the file reads.
        let limit = REQUEST_TIMEOUT + Duration::from_secs(5);
        let fetched = tokio::time::timeout(limit, job)
            .await
            .map_err(|_| Error::Timeout(limit))?
            .map_err(|e| Error::Task(e.to_string()))??;
        match fetched.write_back {
            WriteBack::Unchanged => {}
            WriteBack::Written => {
                tracing::info!("relay: rotated refresh token saved");
                state.rotated = None;
            }
            WriteBack::Failed(e, token) => {
                // Keep the new refresh token in memory: the old one may no longer work.
                tracing::error!(error = %e, "relay: cannot save the rotated refresh token");
                state.rotated = Some(token);
            }
        }
        let resp = fetched.response;
        tracing::info!(expires_in = ?resp.expires_in, "relay: obtained upstream access token");
        let token = resp.access_token.clone();
        state.cache.store(
            resp.access_token,
            resp.expires_in,
            self.cfg.refresh_margin,
            now,
        );
        Ok(token)
    }

    /// Forgets `rejected` (the smarthost refused it), so the next [`TokenSource::token`]
    /// fetches a new one; a token that replaced it meanwhile is kept.
    pub async fn invalidate(&self, rejected: &Secret) {
        if self.state.lock().await.cache.invalidate(rejected) {
            tracing::info!("relay: smarthost rejected the access token; it will be refreshed");
        }
    }
}

/// What became of a rotated refresh token.
enum WriteBack {
    Unchanged,
    Written,
    Failed(io::Error, Secret),
}

struct Fetched {
    response: TokenResponse,
    write_back: WriteBack,
}

/// One token request, blocking: read the files, POST, parse, save a rotated refresh token.
fn fetch(
    cfg: &UpstreamOAuth,
    agent: &ureq::Agent,
    rotated: Option<Secret>,
) -> Result<Fetched, Error> {
    let secret = match &cfg.client_secret_file {
        Some(path) => Some(read_secret(path)?),
        None => None,
    };
    let refresh = match (cfg.grant, &cfg.refresh_token_file) {
        (Grant::ClientCredentials, _) => None,
        (Grant::RefreshToken, _) if rotated.is_some() => rotated,
        (Grant::RefreshToken, Some(path)) => Some(read_secret(path)?),
        (Grant::RefreshToken, None) => {
            return Err(Error::Malformed("no refresh_token_file configured".into()));
        }
    };
    let request = token_request(cfg, secret.as_ref(), refresh.as_ref());
    let (status, body) = post(agent, &cfg.token_url, &request)?;
    let response = parse_response(status, &body)?;
    let write_back = match (&response.refresh_token, &cfg.refresh_token_file) {
        (Some(new), Some(path))
            if cfg.grant == Grant::RefreshToken && Some(new) != refresh.as_ref() =>
        {
            match write_secret(path, new) {
                Ok(()) => WriteBack::Written,
                Err(e) => WriteBack::Failed(e, new.clone()),
            }
        }
        _ => WriteBack::Unchanged,
    };
    Ok(Fetched {
        response,
        write_back,
    })
}

/// POSTs the request; returns the status and the (bounded) body.
fn post(
    agent: &ureq::Agent,
    url: &str,
    req: &TokenRequest,
) -> Result<(u16, Zeroizing<Vec<u8>>), Error> {
    let mut builder = agent
        .post(url)
        .header("Accept", "application/json")
        .content_type("application/x-www-form-urlencoded");
    if let Some(auth) = &req.authorization {
        builder = builder.header("Authorization", auth.as_str());
    }
    let transport = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => Error::Timeout(REQUEST_TIMEOUT),
        other => Error::Transport(other.to_string()),
    };
    let mut resp = builder.send(req.body.as_str()).map_err(transport)?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_vec()
        .map_err(transport)?;
    Ok((status, Zeroizing::new(body)))
}

fn agent(cfg: &UpstreamOAuth) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider);
    if cfg.danger_accept_invalid_certs {
        tls = tls.disable_verification(true);
    } else {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::warn!(error = %err, "relay: problem loading system trust roots");
        }
        if found.certs.is_empty() {
            tracing::warn!("relay: no system trust roots; the token endpoint's TLS will fail");
        }
        let roots: Vec<Certificate<'static>> = found
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
    }
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .max_redirects(0)
        .user_agent(concat!("mailgate/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build());
    if is_loopback_url(&cfg.token_url) {
        config = config.proxy(None);
    }
    config.build().new_agent()
}

/// Whether the URL's host is a loopback name or address (no proxy is used for it).
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or_default();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a secret or token file: at most 64 KiB of UTF-8, surrounding white space dropped,
/// not empty.
pub fn read_secret(path: &Path) -> Result<Secret, Error> {
    let err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE + 1).read_to_end(&mut buf))
        .map_err(err)?;
    let invalid = |why: &str| err(io::Error::new(io::ErrorKind::InvalidData, why.to_string()));
    if buf.len() as u64 > MAX_SECRET_FILE {
        return Err(invalid("larger than 64 KiB"));
    }
    let text = std::str::from_utf8(&buf).map_err(|_| invalid("not UTF-8"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(Secret::new(text.to_string()))
}

/// Replaces the file at `path` with `secret` and a newline, atomically: a temporary file in the
/// same folder, mode 0600, written and fsynced, renamed over `path`, then the folder fsynced.
pub fn write_secret(path: &Path, secret: &Secret) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = path.with_file_name(format!(".{}.new", name.to_string_lossy()));
    // A leftover from a crash may have other permissions; start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
