//! Introspection against a small HTTP server on 127.0.0.1, spawned per test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::Algorithm::RS256;
use serde_json::json;

use super::*;
use crate::oauth::testing::{NOW, claims, config, mint, validator, with};
use crate::sasl::TokenValidator;

/// One request the endpoint saw.
#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    body: String,
}

/// An endpoint answering each request with `answer(body)`: (status line, response body).
/// `None` keeps the connection open without answering.
struct Endpoint {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The DER of the HTTPS endpoint's self-signed certificate (empty for HTTP).
    cert: Vec<u8>,
}

type Answer = fn(&str) -> Option<(&'static str, String)>;

impl Endpoint {
    fn start(answer: Answer) -> Endpoint {
        Self::start_with(None, answer)
    }

    /// Serves HTTPS with a self-signed certificate for 127.0.0.1.
    fn start_tls(answer: Answer) -> Endpoint {
        let (chain, key) = crate::tls::self_signed("127.0.0.1").expect("certificate");
        let cert = chain[0].as_ref().to_vec();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        Endpoint {
            cert,
            ..Self::start_with(Some(Arc::new(config)), answer)
        }
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, answer: Answer) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            // Bounded: a test makes only a few requests.
            for stream in listener.incoming().take(16) {
                let Ok(stream) = stream else { return };
                let mut s: Box<dyn ReadWrite> = match &tls {
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                            return;
                        };
                        Box::new(rustls::StreamOwned::new(conn, stream))
                    }
                    None => Box::new(stream),
                };
                let Some(req) = read_request(&mut s) else {
                    continue;
                };
                log.lock().expect("log").push(req.clone());
                match answer(&req.body) {
                    Some((status, body)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nLocation: http://127.0.0.1:1/\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.flush();
                    }
                    None => std::thread::sleep(Duration::from_secs(8)),
                }
            }
        });
        Endpoint {
            addr,
            seen,
            cert: Vec::new(),
        }
    }

    fn config(&self, path: &std::path::Path) -> Introspection {
        let secret = path.join("client.secret");
        std::fs::write(&secret, "s3cret:&=\n").expect("write");
        Introspection {
            url: format!("http://{}/introspect", self.addr),
            client_id: Some("mail gate".into()),
            secret_file: Some(secret),
            ca_file: None,
            danger_accept_invalid_certs: false,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

fn read_request(stream: &mut Box<dyn ReadWrite>) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let (mut len, mut authorization) = (0usize, None);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(": ") {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.parse().ok()?,
                "authorization" => authorization = Some(value.to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len.min(65536)];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        authorization,
        body: String::from_utf8(body).ok()?,
    })
}

/// The endpoint's view of tokens: `tok-alice` active for alice (exp far), `tok-short` active
/// with exp NOW+5, `tok-wrong-aud` active for another audience, anything else inactive.
fn idp(body: &str) -> Option<(&'static str, String)> {
    let token = body.strip_prefix("token=")?.split('&').next()?;
    let active = |changes| with(claims("alice"), changes).to_string();
    let json = match token {
        "tok-alice" => active(json!({"active": true, "exp": NOW + 3600})),
        "tok-short" => active(json!({"active": true, "exp": NOW + 5})),
        "tok-no-exp" => active(json!({"active": true, "exp": null})),
        "tok-wrong-aud" => active(json!({"active": true, "aud": "calendar"})),
        "tok-error" => return Some(("500 Internal Server Error", "{}".into())),
        "tok-redirect" => return Some(("302 Found", String::new())),
        "tok-text" => return Some(("200 OK", "active".into())),
        "tok-hang" => return None,
        _ => json!({"active": false}).to_string(),
    };
    Some(("200 OK", json))
}

#[tokio::test]
async fn request_shape_and_active_answer() {
    let ep = Endpoint::start(idp);
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(&ep.config(dir.path())).expect("client");
    let claims = client.introspect("tok-alice", NOW).await.expect("active");
    assert_eq!(claims["sub"], json!("alice"));
    let seen = ep.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "token=tok-alice&token_type_hint=access_token");
    // RFC 6749 §2.3.1: id and secret form-encoded, then HTTP Basic.
    let basic = base64::engine::general_purpose::STANDARD.encode("mail%20gate:s3cret%3A%26%3D");
    assert_eq!(seen[0].authorization, Some(format!("Basic {basic}")));
    assert!(!format!("{client:?}").contains("s3cret"));
}

#[tokio::test]
async fn positive_answers_are_cached_briefly() {
    let ep = Endpoint::start(idp);
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(&ep.config(dir.path())).expect("client");
    let count = || ep.seen().len();
    for (token, at, requests) in [
        ("tok-alice", NOW, 1),
        ("tok-alice", NOW + 59, 1),
        ("tok-alice", NOW + 60, 2),
        // exp NOW+5 bounds the cache life.
        ("tok-short", NOW, 3),
        ("tok-short", NOW + 4, 3),
        ("tok-short", NOW + 5, 4),
        // Negative answers are not cached.
        ("tok-revoked", NOW, 5),
        ("tok-revoked", NOW, 6),
    ] {
        let _ = client.introspect(token, at).await;
        assert_eq!(count(), requests, "{token} at +{}", at - NOW);
    }
    assert!(client.lock().keys().all(|k| k.len() == 32));
}

#[tokio::test]
async fn failures() {
    let ep = Endpoint::start(idp);
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(&ep.config(dir.path())).expect("client");
    let cases = [
        ("tok-revoked", "not active"),
        ("tok-error", "HTTP 500"),
        ("tok-redirect", "HTTP 302"),
        ("tok-text", "not a JSON object"),
    ];
    for (token, want) in cases {
        let why = match client.introspect(token, NOW).await {
            Err(TokenError::Invalid(why) | TokenError::Unavailable(why)) => why,
            other => panic!("{token}: {other:?}"),
        };
        assert!(why.contains(want), "{token}: {why}");
        assert!(!why.contains(token), "{token} leaked into {why}");
    }
    assert!(matches!(
        client.introspect("tok-revoked", NOW).await,
        Err(TokenError::Invalid(_))
    ));
    assert!(matches!(
        client.introspect("tok-error", NOW).await,
        Err(TokenError::Unavailable(_))
    ));
}

#[tokio::test]
async fn unreachable_and_hanging_endpoints_are_unavailable() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Endpoint::start(idp).config(dir.path());
    cfg.url = format!("http://{addr}/introspect");
    let client = Client::new(&cfg).expect("client");
    assert!(matches!(
        client.introspect("tok-alice", NOW).await,
        Err(TokenError::Unavailable(_))
    ));

    let ep = Endpoint::start(idp);
    let client = Client::new(&ep.config(dir.path())).expect("client");
    // The real elapsed time is the point here: the blocking call must give up on its own.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    assert!(matches!(
        client.introspect("tok-hang", NOW).await,
        Err(TokenError::Unavailable(_))
    ));
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(2));
}

#[test]
fn credentials_go_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Endpoint::start(idp).config(dir.path());
    cfg.secret_file = None;
    assert!(matches!(Client::new(&cfg), Err(Error::Introspection(_))));
    cfg.client_id = None;
    assert!(Client::new(&cfg).is_ok());
}

#[tokio::test]
async fn validator_uses_introspection_for_opaque_and_unknown_key_tokens() {
    let ep = Endpoint::start(|body| {
        // The JWT below is "active" too: the endpoint is the authority for keys we lack.
        if body.starts_with("token=ey") {
            Some((
                "200 OK",
                with(claims("bob"), json!({"active": true})).to_string(),
            ))
        } else {
            idp(body)
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.introspection = Some(ep.config(dir.path()));
    let (v, _) = validator(&cfg);
    assert_eq!(v.validate(b"tok-alice", None).await, Ok("alice".into()));
    assert_eq!(
        v.validate(b"tok-no-exp", Some("alice")).await,
        Ok("alice".into())
    );
    assert!(matches!(
        v.validate(b"tok-wrong-aud", None).await,
        Err(TokenError::Invalid(why)) if why.contains("audience")
    ));
    assert!(matches!(
        v.validate(b"tok-revoked", None).await,
        Err(TokenError::Invalid(_))
    ));
    let rotated = mint(RS256, 2, Some("rotated"), &claims("bob"));
    assert_eq!(v.validate(rotated.as_bytes(), None).await, Ok("bob".into()));
    // A JWT signed under a known kid with the wrong key is refused offline, not introspected.
    let before = ep.seen().len();
    let forged = mint(RS256, 2, Some("rsa-1"), &claims("bob"));
    assert!(v.validate(forged.as_bytes(), None).await.is_err());
    assert_eq!(ep.seen().len(), before);
}

#[tokio::test]
async fn https_endpoint() {
    let ep = Endpoint::start_tls(idp);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ep.config(dir.path());
    cfg.url = format!("https://{}/introspect", ep.addr);
    // A self-signed certificate is refused against the system roots...
    let client = Client::new(&cfg).expect("client");
    assert!(matches!(
        client.introspect("tok-alice", NOW).await,
        Err(TokenError::Unavailable(_))
    ));
    assert!(ep.seen().is_empty());
    // ...accepted when introspection_ca_file names it...
    let pem = dir.path().join("ca.pem");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ep.cert);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    let text = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    std::fs::write(&pem, text).expect("write CA file");
    cfg.ca_file = Some(pem.clone());
    let client = Client::new(&cfg).expect("client");
    let claims = client
        .introspect("tok-alice", NOW)
        .await
        .expect("active over HTTPS with the CA file");
    assert_eq!(claims["sub"], json!("alice"));
    assert_eq!(ep.seen().len(), 1);
    // ...refused when the CA file names another certificate...
    let (other, _) = crate::tls::self_signed("127.0.0.1").expect("certificate");
    let b64 = base64::engine::general_purpose::STANDARD.encode(other[0].as_ref());
    std::fs::write(
        &pem,
        format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
    )
    .expect("write CA file");
    let client = Client::new(&cfg).expect("client");
    assert!(matches!(
        client.introspect("tok-bob", NOW).await,
        Err(TokenError::Unavailable(_))
    ));
    // ...a CA file without a certificate is a configuration error...
    std::fs::write(&pem, "not a certificate\n").expect("write CA file");
    let err = Client::new(&cfg).expect_err("empty CA file");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    cfg.ca_file = None;
    // ...and accepted with danger_accept_invalid_certs.
    cfg.danger_accept_invalid_certs = true;
    let client = Client::new(&cfg).expect("client");
    let claims = client
        .introspect("tok-alice", NOW)
        .await
        .expect("active over HTTPS");
    assert_eq!(claims["sub"], json!("alice"));
    assert_eq!(ep.seen().len(), 2);
}

#[test]
fn form_encoding() {
    assert_eq!(form_encode(b"aZ09-._~"), "aZ09-._~");
    assert_eq!(form_encode(b"a b+c/=&%"), "a%20b%2Bc%2F%3D%26%25");
    assert_eq!(form_encode("\u{e9}".as_bytes()), "%C3%A9");
}
