//! Helpers for the audit and policy tests: a client for each SASL mechanism and POP3 login
//! method (each returns the reply and the credential-bearing lines it sent, so tests can look
//! for them where they must not be), connections that know their own source port, reading and
//! polling the audit log, and configs for the built binary on free loopback ports. The
//! messages themselves come from [`crate::sasl`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mailgate::audit::Event;

use crate::client::{self, Client};
use crate::sasl::{self, ScramHash};

/// How long a test waits for an audit event or a file before failing.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// An authentication exchange: the final reply and what the client sent that carries
/// credentials (base64 lines and their decoded text).
#[derive(Debug, Default)]
pub struct Exchange {
    /// The final SMTP code (POP3: 1 for `+OK`, 0 for `-ERR`).
    pub code: u16,
    /// The final reply's lines.
    pub lines: Vec<String>,
    /// Credential-bearing strings the client sent.
    pub sent: Vec<String>,
}

impl Exchange {
    fn push(&mut self, b64: &str, decoded: &[u8]) {
        self.sent.push(b64.to_string());
        self.sent
            .push(String::from_utf8_lossy(decoded).into_owned());
    }
}

/// A client connected from `source`, and the source port it got.
pub async fn connect(source: IpAddr, addr: SocketAddr, implicit_tls: bool) -> (Client, u16) {
    let tcp = client::connect_from(source, addr).await;
    let port = tcp.local_addr().expect("local address").port();
    let c = if implicit_tls {
        Client::over(Box::new(client::tls(tcp).await))
    } else {
        Client::over(Box::new(tcp))
    };
    (c, port)
}

/// Connects to an SMTP listener, reads the greeting and says EHLO `name`.
pub async fn smtp(source: IpAddr, addr: SocketAddr, tls: bool, name: &str) -> (Client, u16) {
    let (mut c, port) = connect(source, addr, tls).await;
    c.expect(220).await;
    c.cmd(&format!("EHLO {name}"), 250).await;
    (c, port)
}

/// AUTH PLAIN with an initial response.
pub async fn smtp_plain(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let blob = sasl::plain_b64(user, password);
    x.push(&blob, sasl::plain("", user, password).as_bytes());
    c.send(&format!("AUTH PLAIN {blob}")).await;
    (x.code, x.lines) = c.reply().await;
    x
}

/// AUTH LOGIN: user name and password each after a 334 prompt.
pub async fn smtp_login(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let [user_b64, blob] = sasl::login_b64(user, password);
    c.cmd("AUTH LOGIN", 334).await;
    c.cmd(&user_b64, 334).await;
    x.push(&blob, password.as_bytes());
    c.send(&blob).await;
    (x.code, x.lines) = c.reply().await;
    x
}

/// AUTH CRAM-MD5.
pub async fn smtp_cram(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let r = c.cmd("AUTH CRAM-MD5", 334).await;
    let challenge = B64.decode(r[0][4..].trim()).expect("challenge is base64");
    let response = sasl::cram_md5(user, password.as_bytes(), &challenge);
    let blob = B64.encode(&response);
    x.push(&blob, response.as_bytes());
    // The digest alone, too.
    x.sent
        .push(response.rsplit(' ').next().unwrap_or_default().to_string());
    c.send(&blob).await;
    (x.code, x.lines) = c.reply().await;
    x
}

/// AUTH NTLM (NTLMv2) with the NEGOTIATE message as initial response.
pub async fn smtp_ntlm(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let r = c
        .cmd(&format!("AUTH NTLM {}", sasl::ntlm_negotiate_b64()), 334)
        .await;
    let creds = sasl::ntlm_credentials(user, "", password);
    let blob = sasl::ntlm_authenticate_b64(&r[0][4..], &creds).expect("NTLM CHALLENGE");
    x.sent.push(blob.clone());
    c.send(&blob).await;
    (x.code, x.lines) = c.reply().await;
    x
}

/// AUTH SCRAM-SHA-256 without channel binding ([`sasl::scram_client_final`]). A good exchange
/// checks the server signature and ends with 235.
pub async fn smtp_scram(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let (first, bare) = sasl::scram_client_first("n,,", user, "fyko+d2lbbFgONRv9qkxdawL");
    c.send(&format!("AUTH SCRAM-SHA-256 {}", B64.encode(first)))
        .await;
    let (code, lines) = c.reply().await;
    if code != 334 {
        (x.code, x.lines) = (code, lines);
        return x;
    }
    let server_first = String::from_utf8(B64.decode(lines[0][4..].trim()).expect("b64"))
        .expect("server-first is UTF-8");
    let last = sasl::scram_client_final(ScramHash::Sha256, password, &bare, &server_first, b"n,,")
        .expect("server-first message");
    let blob = B64.encode(&last.message);
    x.push(&blob, last.message.as_bytes());
    x.sent.push(last.proof.clone());
    c.send(&blob).await;
    let (code, lines) = c.reply().await;
    if code != 334 {
        (x.code, x.lines) = (code, lines);
        return x;
    }
    let server_final = B64.decode(lines[0][4..].trim()).expect("b64");
    assert_eq!(
        String::from_utf8_lossy(&server_final),
        last.server_final,
        "server signature"
    );
    c.send("").await;
    (x.code, x.lines) = c.reply().await;
    x
}

/// AUTH XOAUTH2 with an initial response. A refused token gets a 334 error challenge, which is
/// acknowledged with an empty line to get the final reply.
pub async fn smtp_xoauth2(c: &mut Client, user: &str, token: &str) -> Exchange {
    let mut x = Exchange::default();
    let blob = sasl::xoauth2_b64(user, token);
    x.push(&blob, sasl::xoauth2(user, token).as_bytes());
    x.sent.push(token.to_string());
    c.send(&format!("AUTH XOAUTH2 {blob}")).await;
    let (mut code, mut lines) = c.reply().await;
    if code == 334 {
        c.send("").await;
        (code, lines) = c.reply().await;
    }
    (x.code, x.lines) = (code, lines);
    x
}

/// Connects to a POP3 listener and reads the greeting; returns it too (for APOP).
pub async fn pop3(source: IpAddr, addr: SocketAddr, tls: bool) -> (Client, u16, String) {
    let (mut c, port) = connect(source, addr, tls).await;
    let greeting = c.pop(true).await;
    (c, port, greeting)
}

/// POP3 USER/PASS; `code` is 1 for `+OK`.
pub async fn pop_user_pass(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    c.pop_cmd(&format!("USER {user}"), true).await;
    x.sent.push(password.to_string());
    c.send(&format!("PASS {password}")).await;
    let line = c.line().await.expect("PASS reply");
    x.code = u16::from(line.starts_with("+OK"));
    x.lines = vec![line];
    x
}

/// POP3 APOP with the timestamp from `greeting` (RFC 1939 §7).
pub async fn pop_apop(c: &mut Client, greeting: &str, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let ts = &greeting[greeting.find('<').expect("APOP timestamp")
        ..=greeting.rfind('>').expect("APOP timestamp")];
    let digest = sasl::apop(ts, password);
    x.sent.push(digest.clone());
    c.send(&format!("APOP {user} {digest}")).await;
    let line = c.line().await.expect("APOP reply");
    x.code = u16::from(line.starts_with("+OK"));
    x.lines = vec![line];
    x
}

/// POP3 AUTH PLAIN with an initial response.
pub async fn pop_plain(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    let blob = sasl::plain_b64(user, password);
    x.push(&blob, sasl::plain("", user, password).as_bytes());
    c.send(&format!("AUTH PLAIN {blob}")).await;
    let line = c.line().await.expect("AUTH reply");
    x.code = u16::from(line.starts_with("+OK"));
    x.lines = vec![line];
    x
}

/// POP3 AUTH CRAM-MD5 (RFC 5034 with RFC 2195).
pub async fn pop_cram(c: &mut Client, user: &str, password: &str) -> Exchange {
    let mut x = Exchange::default();
    c.send("AUTH CRAM-MD5").await;
    let line = c.line().await.expect("AUTH challenge");
    let challenge = B64
        .decode(line.trim_start_matches('+').trim())
        .expect("challenge is base64");
    let response = sasl::cram_md5(user, password.as_bytes(), &challenge);
    let blob = B64.encode(&response);
    x.push(&blob, response.as_bytes());
    c.send(&blob).await;
    let line = c.line().await.expect("AUTH reply");
    x.code = u16::from(line.starts_with("+OK"));
    x.lines = vec![line];
    x
}

/// The queue id in a `250 2.0.0 OK queued as <id>` reply.
pub fn queue_id(lines: &[String]) -> String {
    lines
        .last()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_default()
        .to_string()
}

/// Sends one message (MAIL, one RCPT, DATA) with `headers` on an open session; returns the
/// queue id.
pub async fn send_mail(c: &mut Client, from: &str, to: &str, headers: &str) -> String {
    c.cmd(&format!("MAIL FROM:<{from}>"), 250).await;
    c.cmd(&format!("RCPT TO:<{to}>"), 250).await;
    c.cmd("DATA", 354).await;
    c.send_raw(format!("{headers}Subject: audit test\r\n\r\nbody\r\n.\r\n").as_bytes())
        .await;
    let lines = c.expect(250).await;
    queue_id(&lines)
}

/// The events in the audit log at `path`; a last line still being written is left out.
pub fn read_events(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// Polls the audit log until at least `n` events match `pred`; returns the matching events.
pub async fn wait_events(
    path: &Path,
    what: &str,
    n: usize,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let all = read_events(path);
        let hits: Vec<Event> = all.iter().filter(|e| pred(e)).cloned().collect();
        if hits.len() >= n {
            return hits;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} audit event(s): {what}; the log has:\n{}",
            all.iter()
                .map(|e| serde_json::to_string(e).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits for exactly one event from the client at `(ip, port)` matching `pred`.
pub async fn wait_one(
    path: &Path,
    what: &str,
    ip: IpAddr,
    port: u16,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let hits = wait_events(path, what, 1, |e| {
        e.client_ip == Some(ip) && e.client_port == Some(port) && pred(e)
    })
    .await;
    hits.into_iter().next().expect("one event")
}

/// Polls `dir` (a Maildir) until it holds `n` messages; returns their contents.
pub async fn wait_mail(dir: &Path, n: usize, what: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = crate::mailbox_files(dir);
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} message(s) in {}: {what}; has {got:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Loopback ports for the built binary's listeners.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The port-25 role.
    pub smtp: u16,
    /// Submission (STARTTLS).
    pub submission: u16,
    /// Submissions (implicit TLS).
    pub submissions: u16,
    /// POP3.
    pub pop3: u16,
    /// POP3S (implicit TLS).
    pub pop3s: u16,
}

impl Ports {
    /// Free ports, one per listener.
    pub fn free() -> Ports {
        Ports {
            smtp: crate::extra::free_port(),
            submission: crate::extra::free_port(),
            submissions: crate::extra::free_port(),
            pop3: crate::extra::free_port(),
            pop3s: crate::extra::free_port(),
        }
    }

    /// `127.0.0.1:<port>` of `role`.
    pub fn addr(&self, role: &str) -> SocketAddr {
        let port = match role {
            "smtp" => self.smtp,
            "submission" => self.submission,
            "submissions" => self.submissions,
            "pop3" => self.pop3,
            "pop3s" => self.pop3s,
            _ => panic!("no {role} listener"),
        };
        crate::extra::local(port)
    }

    /// `text` (a test config with every listener on port 0) with these ports instead.
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            let port = match line.split(" = ").next().unwrap_or_default() {
                "smtp" => Some(self.smtp),
                "submission" => Some(self.submission),
                "submissions" => Some(self.submissions),
                "pop3" => Some(self.pop3),
                "pop3s" => Some(self.pop3s),
                _ => None,
            };
            match port {
                Some(p) if line.contains("127.0.0.1:0") => {
                    out.push_str(&line.replace("127.0.0.1:0", &format!("127.0.0.1:{p}")));
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}
