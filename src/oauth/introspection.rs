//! An RFC 7662 token introspection client: an asynchronous HTTP(S) POST of `token=...` (§2.1)
//! with HTTP Basic client authentication (RFC 6749 §2.3.1), whose JSON answer (§2.2) must say
//! `"active": true`. The answer's claims then pass the same checks as a JWT's (`claims.rs`).
//!
//! The request is awaited by the session that needs it, so an identity provider that is slow
//! or never answers holds only the logins that wait for it: every other session goes on.
//! Each call (connect, TLS, request, answer) is bounded by [`TIMEOUT`], the answer by
//! [`MAX_RESPONSE`], and at most [`MAX_IN_FLIGHT`] requests run at once (the rest fail as
//! temporarily unavailable rather than pile up). Redirects are not followed, so the token is
//! only ever sent to the configured URL. Positive answers are cached for at most [`CACHE_TTL`]
//! (never past the token's `exp`), keyed by the SHA-256 of the token, so the token itself is
//! never kept. TLS is rustls with the ring provider and the system's roots, or only the CA
//! certificates of `introspection_ca_file`.
//!
//! The HTTP/1.1 exchange is hyper's client connection (one connection per request: a cache
//! miss is rare next to logins, and a fresh connection cannot carry a stale one's state).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::Error;
use crate::config::Introspection;
use crate::sasl::TokenError;

/// Time allowed for one introspection request, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest introspection response read, in bytes.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Longest a positive answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most cached answers; when full, expired ones are dropped, then all.
pub const MAX_CACHE: usize = 10_000;
/// Most requests to the endpoint at once; a login over that is told to try again later.
pub const MAX_IN_FLIGHT: usize = 64;

/// The introspection client.
pub struct Client {
    url: String,
    endpoint: Endpoint,
    /// The `Authorization` header value, if client credentials are configured.
    authorization: Option<Zeroizing<String>>,
    in_flight: Arc<Semaphore>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// Where requests go, from the configured URL.
struct Endpoint {
    host: String,
    port: u16,
    /// The `Host` header: the authority as written in the URL.
    authority: String,
    /// The request target: path and query.
    target: String,
    /// TLS for `https` URLs.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

struct Cached {
    claims: Map<String, Value>,
    until: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("authenticates", &self.authorization.is_some())
            .finish()
    }
}

impl Client {
    /// A client for `cfg`, reading the client secret from its file. Client id and secret go
    /// together: one without the other is an error.
    pub fn new(cfg: &Introspection) -> Result<Client, Error> {
        let authorization = match (&cfg.client_id, &cfg.secret_file) {
            (Some(id), Some(path)) => {
                let secret = super::read_secret(path)?;
                let pair = Zeroizing::new(format!(
                    "{}:{}",
                    form_encode(id.as_bytes()),
                    form_encode(secret.expose())
                ));
                Some(Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                )))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Introspection(
                    "introspection_client_id and introspection_secret_file must be set together"
                        .into(),
                ));
            }
        };
        Ok(Client {
            url: cfg.url.clone(),
            endpoint: Endpoint::new(cfg)?,
            authorization,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The claims of an active `token` at `now` (Unix seconds), from the cache or the
    /// endpoint. An inactive token is `Invalid`; a failed request is `Unavailable`.
    pub async fn introspect(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Map<String, Value>, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.lock().get(&key).filter(|c| now < c.until) {
            return Ok(hit.claims.clone());
        }
        let claims = self.request(token).await?;
        let mut until = now.saturating_add(CACHE_TTL.as_secs());
        if let Some(exp) = claims.get("exp").and_then(Value::as_f64) {
            until = until.min(exp.max(0.0) as u64);
        }
        if until > now {
            let mut cache = self.lock();
            if cache.len() >= MAX_CACHE {
                cache.retain(|_, c| now < c.until);
                if cache.len() >= MAX_CACHE {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    claims: claims.clone(),
                    until,
                },
            );
        }
        Ok(claims)
    }

    async fn request(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let unavailable = |why: String| TokenError::Unavailable(format!("introspection: {why}"));
        let Ok(_slot) = self.in_flight.clone().try_acquire_owned() else {
            return Err(unavailable(format!(
                "{MAX_IN_FLIGHT} requests already waiting for the endpoint"
            )));
        };
        let encoded = Zeroizing::new(form_encode(token.as_bytes()));
        let body = Zeroizing::new(format!(
            "token={}&token_type_hint=access_token",
            encoded.as_str()
        ));
        let (status, bytes) = tokio::time::timeout(TIMEOUT, self.exchange(body.as_bytes()))
            .await
            .map_err(|_| unavailable(format!("no answer within {}s", TIMEOUT.as_secs())))?
            .map_err(unavailable)?;
        if status != 200 {
            return Err(unavailable(format!("endpoint answered HTTP {status}")));
        }
        let claims: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| unavailable("response is not a JSON object".into()))?;
        // RFC 7662 §2.2: `active` is REQUIRED; anything but `true` means not usable.
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Invalid(
                "token is not active (introspection)".into(),
            ));
        }
        Ok(claims)
    }

    /// Connects (with TLS for `https`), sends the POST and reads the answer: its status and
    /// body (at most [`MAX_RESPONSE`] bytes).
    async fn exchange(&self, body: &[u8]) -> Result<(u16, Bytes), String> {
        let ep = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", ep.host, ep.port))?;
        let _ = tcp.set_nodelay(true);
        match &ep.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                self.post(tls, body).await
            }
            None => self.post(tcp, body).await,
        }
    }

    async fn post<S>(&self, io: S, body: &[u8]) -> Result<(u16, Bytes), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ep = &self.endpoint;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        // The connection task ends with the exchange: aborted when this request is done or
        // given up (the caller's timeout drops this future).
        let conn = AbortOnDrop(tokio::spawn(conn));
        let mut request = hyper::Request::post(ep.target.as_str())
            .header(hyper::header::HOST, ep.authority.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::USER_AGENT, "mailgate");
        if let Some(auth) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, auth.as_str());
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        drop(conn);
        Ok((status, bytes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        // The cache holds no invariant a panic could break: recover it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Endpoint {
    /// The endpoint of `cfg.url` (`http://` or `https://`, as the config check allows).
    fn new(cfg: &Introspection) -> Result<Endpoint, Error> {
        let bad = |why: &str| Error::Introspection(format!("introspection_url: {why}"));
        let uri: hyper::Uri = cfg.url.parse().map_err(|_| bad("not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must start with https:// or http://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let tls = if https {
            let name = ServerName::try_from(host.clone()).map_err(|_| bad("bad host name"))?;
            Some((tls_connector(cfg)?, name))
        } else {
            None
        };
        Ok(Endpoint {
            host,
            port,
            authority: authority.as_str().to_owned(),
            target,
            tls,
        })
    }
}

/// TLS for the endpoint: the system's roots, only `introspection_ca_file`'s, or (with
/// `danger_accept_invalid_certs`) any certificate.
fn tls_connector(cfg: &Introspection) -> Result<tokio_rustls::TlsConnector, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Introspection(format!("TLS: {e}")))?;
    let config = if cfg.danger_accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyCert::new(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca_file {
            Some(path) => {
                let certs = crate::tls::load_certs(path)
                    .map_err(|e| Error::Introspection(format!("introspection_ca_file {e}")))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| Error::Introspection(format!("introspection_ca_file: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for err in &found.errors {
                    tracing::warn!(error = %err, "oauth introspection: problem loading system trust roots");
                }
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    tracing::warn!(
                        "oauth introspection: no system trust roots; HTTPS requests will fail"
                    );
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `application/x-www-form-urlencoded` for one value: unreserved characters (RFC 3986 §2.3)
/// as they are, every other byte as `%XX`.
pub fn form_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "introspection_tests.rs"]
mod tests;
