//! Tests of the token source: request building, response parsing, the cache and the token
//! files.

use super::*;

fn cfg(grant: Grant, scope: Option<&str>) -> UpstreamOAuth {
    UpstreamOAuth {
        token_url: "https://login.example/token".into(),
        grant,
        client_id: "gate way".into(),
        client_secret_file: None,
        refresh_token_file: None,
        scope: scope.map(str::to_string),
        refresh_margin: Duration::from_secs(60),
        danger_accept_invalid_certs: false,
    }
}

fn secret(s: &str) -> Secret {
    Secret::new(s.into())
}

#[test]
fn form_encoding() {
    let cases = [
        ("abcXYZ019", "abcXYZ019"),
        ("*-._", "*-._"),
        ("a b", "a+b"),
        ("a+b&c=d/e", "a%2Bb%26c%3Dd%2Fe"),
        ("~:%", "%7E%3A%25"),
        ("é", "%C3%A9"),
        ("", ""),
    ];
    for (input, want) in cases {
        let mut out = String::new();
        form_encode(input, &mut out);
        assert_eq!(out, want, "{input:?}");
    }
}

/// (grant, scope, secret, refresh token, body, authorization)
type Case<'a> = (
    Grant,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a Secret>,
    &'a str,
    Option<String>,
);

#[test]
fn token_requests() {
    let scope = "https://outlook.office.com/SMTP.Send offline_access";
    let refresh = secret("1//rt+x");
    let basic = |pair: &str| Some(format!("Basic {}", BASE64.encode(pair)));
    let cases: [Case<'_>; 4] = [
        (
            Grant::RefreshToken,
            None,
            None,
            Some(&refresh),
            "grant_type=refresh_token&refresh_token=1%2F%2Frt%2Bx&client_id=gate+way",
            None,
        ),
        (
            Grant::RefreshToken,
            Some(scope),
            Some("s3:c&t"),
            Some(&refresh),
            "grant_type=refresh_token&refresh_token=1%2F%2Frt%2Bx&scope=https%3A%2F%2F\
             outlook.office.com%2FSMTP.Send+offline_access",
            // RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
            basic("gate+way:s3%3Ac%26t"),
        ),
        (
            Grant::ClientCredentials,
            Some("smtp"),
            Some("pw"),
            None,
            "grant_type=client_credentials&scope=smtp",
            basic("gate+way:pw"),
        ),
        (
            Grant::ClientCredentials,
            None,
            None,
            None,
            "grant_type=client_credentials&client_id=gate+way",
            None,
        ),
    ];
    for (grant, scope, client_secret, refresh, body, auth) in cases {
        let client_secret = client_secret.map(secret);
        let req = token_request(&cfg(grant, scope), client_secret.as_ref(), refresh);
        assert_eq!(req.body.as_str(), body, "{grant:?}");
        assert_eq!(req.authorization.as_ref().map(|a| a.to_string()), auth);
        assert!(!format!("{req:?}").contains("rt"), "Debug shows nothing");
    }
}

#[test]
fn responses() {
    let ok = |token: &str, expires: Option<u64>, refresh: Option<&str>| {
        Ok::<_, String>(TokenResponse {
            access_token: secret(token),
            expires_in: expires.map(Duration::from_secs),
            refresh_token: refresh.map(secret),
        })
    };
    let malformed = |what: &str| Err::<TokenResponse, _>(format!("malformed: {what}"));
    let refused = |e: &str| Err::<TokenResponse, _>(format!("refused: {e}"));
    let cases: Vec<(u16, &str, Result<TokenResponse, String>)> = vec![
        (
            200,
            r#"{"access_token":"ya29.a-b","token_type":"Bearer","expires_in":3599}"#,
            ok("ya29.a-b", Some(3599), None),
        ),
        (
            200,
            r#"{"access_token":"t","token_type":"bearer","expires_in":"3600",
                "refresh_token":"r2","scope":"x","ext_expires_in":1}"#,
            ok("t", Some(3600), Some("r2")),
        ),
        (
            200,
            r#"{"access_token":"t","token_type":"BEARER","expires_in":59.9}"#,
            ok("t", Some(59), None),
        ),
        (
            201,
            r#"{"access_token":"t","token_type":"Bearer"}"#,
            ok("t", None, None),
        ),
        (
            200,
            r#"{"access_token":"t","token_type":"Bearer","expires_in":99999999999}"#,
            ok("t", Some(MAX_LIFETIME.as_secs()), None),
        ),
        (
            200,
            r#"{"token_type":"Bearer"}"#,
            malformed("no access_token"),
        ),
        (200, r#"{"access_token":"t"}"#, malformed("no token_type")),
        (
            200,
            r#"{"access_token":"t","token_type":"mac"}"#,
            malformed("token_type \"mac\" is not Bearer"),
        ),
        (
            200,
            r#"{"access_token":"a b","token_type":"Bearer"}"#,
            malformed("access_token has characters outside printable ASCII"),
        ),
        (
            200,
            r#"{"access_token":"","token_type":"Bearer"}"#,
            malformed("access_token is empty or longer than 8192 bytes"),
        ),
        (
            200,
            r#"{"access_token":"t","token_type":"Bearer","refresh_token":"r\n"}"#,
            malformed("refresh_token has characters outside printable ASCII"),
        ),
        (
            200,
            r#"{"access_token":"t","token_type":"Bearer","expires_in":-5}"#,
            malformed("expires_in is not a number of seconds"),
        ),
        (
            200,
            r#"{"access_token":"t","token_type":"Bearer","expires_in":"soon"}"#,
            malformed("expires_in is not a number of seconds"),
        ),
        (200, "<html>", malformed("not a JSON object")),
        (200, "[1]", malformed("not a JSON object")),
        (
            400,
            r#"{"error":"invalid_grant","error_description":"Token\nexpired"}"#,
            refused("400 invalid_grant Some(\"Token?expired\")"),
        ),
        (
            401,
            r#"{"error":"invalid_client"}"#,
            refused("401 invalid_client None"),
        ),
        (503, "down for maintenance", refused("503 unknown None")),
        (
            302,
            r#"{"access_token":"t","token_type":"Bearer"}"#,
            refused("302 unknown None"),
        ),
    ];
    for (status, body, want) in cases {
        let got = parse_response(status, body.as_bytes()).map_err(|e| match e {
            Error::Malformed(m) => format!("malformed: {m}"),
            Error::Refused {
                status,
                error,
                description,
            } => format!("refused: {status} {error} {description:?}"),
            other => format!("other: {other}"),
        });
        assert_eq!(got, want, "{status} {body}");
    }
    let long = format!(
        r#"{{"access_token":"{}","token_type":"Bearer"}}"#,
        "x".repeat(MAX_TOKEN + 1)
    );
    assert!(matches!(
        parse_response(200, long.as_bytes()),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn errors_show_no_secrets() {
    let e = parse_response(400, br#"{"error":"invalid_grant"}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "token endpoint answered HTTP 400: invalid_grant"
    );
    let r = parse_response(200, br#"{"access_token":"tok-9","token_type":"Bearer"}"#);
    assert!(!format!("{r:?}").contains("tok-9"));
    assert_eq!(format!("{:?}", secret("hunter2")), "Secret(<redacted>)");
}

#[test]
fn cache_until_margin_before_expiry() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let s = Duration::from_secs;
    // (expires_in, margin, seconds later, still cached)
    let cases = [
        (Some(3600), 60, 0, true),
        (Some(3600), 60, 3539, true),
        (Some(3600), 60, 3540, false),
        (Some(30), 60, 0, false),
        (None, 60, DEFAULT_LIFETIME.as_secs() - 61, true),
        (None, 60, DEFAULT_LIFETIME.as_secs() - 60, false),
        (Some(10), 0, 9, true),
    ];
    for (expires, margin, later, cached) in cases {
        let mut c = Cache::default();
        c.store(secret("a"), expires.map(s), s(margin), t0);
        assert_eq!(
            c.get(t0 + s(later)).is_some(),
            cached,
            "{expires:?} {margin} {later}"
        );
    }
    let mut c = Cache::default();
    assert_eq!(c.get(t0), None);
    c.store(secret("a"), Some(s(3600)), s(60), t0);
    // Another delivery already replaced the rejected token: keep the new one.
    assert!(!c.invalidate(&secret("old")));
    assert_eq!(c.get(t0), Some(secret("a")));
    assert!(c.invalidate(&secret("a")));
    assert_eq!(c.get(t0), None);
}

#[test]
fn loopback_urls() {
    let cases = [
        ("http://127.0.0.1:8080/token", true),
        ("http://localhost/token", true),
        ("http://127.3.4.5", true),
        ("http://[::1]:9/t", true),
        ("https://user@127.0.0.1/t", true),
        ("https://login.example/token", false),
        ("https://127.0.0.1.example/t", false),
        ("http://10.0.0.1/t", false),
        ("ftp://127.0.0.1/", false),
    ];
    for (url, want) in cases {
        assert_eq!(is_loopback_url(url), want, "{url}");
    }
}

#[test]
fn secret_files_read_trimmed_and_written_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refresh");
    std::fs::write(&path, "  1//rt-old\r\n").unwrap();
    assert_eq!(read_secret(&path).unwrap(), secret("1//rt-old"));

    // A stale temporary file from a crash, world-readable, is replaced.
    std::fs::write(dir.path().join(".refresh.new"), "junk").unwrap();
    write_secret(&path, &secret("1//rt-new")).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1//rt-new\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["refresh"]);

    for (content, why) in [
        (b"  \n".to_vec(), "empty"),
        (vec![0xff, 0xfe], "not UTF-8"),
        (
            vec![b'x'; MAX_SECRET_FILE as usize + 1],
            "larger than 64 KiB",
        ),
    ] {
        std::fs::write(&path, content).unwrap();
        let e = read_secret(&path).unwrap_err();
        assert!(e.to_string().ends_with(why), "{e}");
    }
    assert!(matches!(
        read_secret(&dir.path().join("missing")),
        Err(Error::File { .. })
    ));
    assert!(write_secret(&dir.path().join("no/such/dir/f"), &secret("x")).is_err());
}

/// A one-answer-fits-all token endpoint on loopback that holds every answer until released;
/// returns its URL, a receiver of "request arrived" and the release switch.
async fn held_endpoint(
    status: &'static str,
    body: &'static str,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::watch::Sender<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let (arrived, rx) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let arrived = arrived.clone();
            let mut released = released.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = arrived.send(());
                let _ = released.wait_for(|r| *r).await;
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, rx, release)
}

fn source(url: String) -> Arc<TokenSource> {
    let mut c = cfg(Grant::ClientCredentials, None);
    c.token_url = url;
    Arc::new(TokenSource::new(c))
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let ok = r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#;
    let (url, mut arrived, release) = held_endpoint("200 OK", ok).await;
    let tokens = source(url);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let t = tokens.clone();
            tokio::spawn(async move { t.token(now).await })
        })
        .collect();
    // On this single-threaded runtime every task has reached the lock by the time the first
    // request arrives.
    arrived.recv().await.unwrap();
    release.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), secret("tok-1"));
    }
    assert!(arrived.try_recv().is_err(), "one request only");

    // A rejected token is dropped; the next caller fetches anew.
    tokens.invalidate(&secret("tok-1")).await;
    assert_eq!(tokens.token(now).await.unwrap(), secret("tok-1"));
    assert!(arrived.try_recv().is_ok(), "a second request");
}

#[tokio::test]
async fn callers_queued_behind_a_failure_share_it() {
    let (url, mut arrived, release) = held_endpoint("503 Unavailable", "{}").await;
    let tokens = source(url);
    let now = SystemTime::UNIX_EPOCH;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let t = tokens.clone();
            tokio::spawn(async move { t.token(now).await })
        })
        .collect();
    arrived.recv().await.unwrap();
    release.send_replace(true);
    let mut errors = Vec::new();
    for t in tasks {
        errors.push(t.await.unwrap().unwrap_err().to_string());
    }
    assert!(arrived.try_recv().is_err(), "one request only");
    let want = "token endpoint answered HTTP 503: unknown";
    assert!(errors.iter().all(|e| e == want), "{errors:?}");
    // A later caller tries again.
    assert!(tokens.token(now).await.is_err());
    assert!(arrived.try_recv().is_ok());
}
