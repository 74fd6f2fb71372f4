//! The control channel behind `mailgate allowlist list|add|remove`: a line protocol over TCP
//! on a loopback address (`listeners.control`), served by the running gateway.
//!
//! One request per connection, answered and then closed: a `KEY <key>` line, then one of
//!
//! ```text
//! LIST                        -> one JSON object per entry and line, then "OK"
//! ADD <ip> <ttl-secs> <user>  -> "OK"
//! REMOVE <ip>                 -> "OK" or "ERR not found"
//! ```
//!
//! Every failure is a single `ERR <reason>` line. Verbs are case-insensitive; lines end in LF
//! or CRLF and carry at most [`MAX_LINE`] bytes; a request must arrive within
//! [`READ_TIMEOUT`]. Peers that are not loopback addresses are dropped unanswered.
//!
//! Loopback alone is no login (every local user can open a loopback connection, and adding an
//! address to the allowlist lets it relay), so the gateway writes a fresh random key to
//! `<state_dir>/control.key` (mode 0600) at each start, and a request must carry it: only who
//! can read the gateway's state folder (its own user, root) can change the allowlist. The key
//! is compared in constant time. The parsing and answering ([`parse_request`], [`respond`])
//! are plain functions; [`serve`] and [`request`] are the tokio ends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::allowlist::{self, Allowlist};
use crate::clock::{Clock, unix_secs};

/// The key file's name in the state folder.
pub const KEY_FILE: &str = "control.key";

/// The secret a control request must carry (64 hex digits of 32 random bytes).
#[derive(Clone)]
pub struct Key(Zeroizing<String>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Key {
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        let mut hex = String::with_capacity(64);
        for b in bytes.iter() {
            hex.push_str(&format!("{b:02x}"));
        }
        Key(Zeroizing::new(hex))
    }

    /// Writes the key to `path` (durably, mode 0600).
    pub fn write(&self, path: &std::path::Path) -> io::Result<()> {
        // A file left by an earlier run may have wider permissions: start afresh.
        let _ = std::fs::remove_file(path);
        crate::durable::replace(path, format!("{}\n", self.0.as_str()).as_bytes())
    }

    /// Reads the key written by a running gateway.
    pub fn read(path: &std::path::Path) -> io::Result<Key> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        Ok(Key(Zeroizing::new(text.trim().to_owned())))
    }

    /// The key as sent on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this key (constant time).
    pub fn matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(self.0.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// Longest request line, without its line ending.
pub const MAX_LINE: usize = 1024;
/// Time a client gets to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the server gets to write a response, and the client to get one.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Control connections served at once; further ones are closed unanswered.
pub const MAX_CONNECTIONS: usize = 8;
/// Input read and discarded after answering, so the answer is not lost to a reset.
const DRAIN_LIMIT: u64 = 1 << 20;
/// Time spent draining.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest response [`request`] accepts (a full listing of a large allowlist fits).
pub const MAX_RESPONSE: usize = 256 << 20;

/// What can go wrong on the control channel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The request line was empty.
    #[error("empty request")]
    Empty,
    /// The verb is not LIST, ADD or REMOVE.
    #[error("unknown command")]
    UnknownCommand,
    /// Wrong number of arguments for the verb.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// The address did not parse.
    #[error("bad address")]
    BadAddress,
    /// The TTL is not a whole number of seconds between 1 and the maximum.
    #[error("bad ttl: seconds from 1 to {max}")]
    BadTtl {
        /// The largest TTL accepted, in seconds.
        max: u64,
    },
    /// The user name is longer than allowed or contains control characters.
    #[error("bad user name")]
    BadUser,
    /// The server answered `ERR <reason>`.
    #[error("server: {0}")]
    Server(String),
    /// The server's answer did not follow the protocol.
    #[error("malformed response: {0}")]
    BadResponse(String),
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// List the live entries.
    List,
    /// Allowlist `ip` for `ttl` in the name of `user`.
    Add {
        /// Client address (IPv6 is stored by its configured prefix).
        ip: IpAddr,
        /// How long the entry lives.
        ttl: Duration,
        /// Recorded as the entry's user.
        user: String,
    },
    /// Remove the entry covering `ip`.
    Remove {
        /// Client address.
        ip: IpAddr,
    },
}

/// One line of a `LIST` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedEntry {
    /// The allowlisted network (`a.b.c.d/32`, or an IPv6 network at the configured prefix).
    pub net: String,
    /// The user who last opened it.
    pub user: String,
    /// When it was created, Unix seconds.
    pub inserted_at: u64,
    /// When it stops allowing relaying, Unix seconds.
    pub expires_at: u64,
}

/// Parses one request line (line ending already removed).
pub fn parse_request(line: &str) -> Result<Request, Error> {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().ok_or(Error::Empty)?;
    let args: Vec<&str> = words.collect();
    if verb.eq_ignore_ascii_case("LIST") {
        return match args[..] {
            [] => Ok(Request::List),
            _ => Err(Error::Usage("LIST")),
        };
    }
    if verb.eq_ignore_ascii_case("ADD") {
        let [ip, ttl, user] = args[..] else {
            return Err(Error::Usage("ADD <ip> <ttl-secs> <user>"));
        };
        let ip: IpAddr = ip.parse().map_err(|_| Error::BadAddress)?;
        let max = allowlist::MAX_TTL.as_secs();
        let ttl = match ttl.parse::<u64>() {
            Ok(s) if (1..=max).contains(&s) => Duration::from_secs(s),
            _ => return Err(Error::BadTtl { max }),
        };
        if user.len() > allowlist::MAX_USER_LEN || user.chars().any(char::is_control) {
            return Err(Error::BadUser);
        }
        return Ok(Request::Add {
            ip,
            ttl,
            user: user.to_owned(),
        });
    }
    if verb.eq_ignore_ascii_case("REMOVE") {
        let [ip] = args[..] else {
            return Err(Error::Usage("REMOVE <ip>"));
        };
        let ip: IpAddr = ip.parse().map_err(|_| Error::BadAddress)?;
        return Ok(Request::Remove { ip });
    }
    Err(Error::UnknownCommand)
}

/// Carries out `line` against `allowlist` at `now` and returns the full response text.
pub fn respond(allowlist: &Allowlist, line: &str, now: SystemTime) -> String {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return format!("ERR {e}\n"),
    };
    match req {
        Request::List => {
            let mut out = String::new();
            for (net, e) in allowlist.entries(now) {
                let listed = ListedEntry {
                    net: net.to_string(),
                    user: e.user.into(),
                    inserted_at: unix_secs(e.inserted_at),
                    expires_at: unix_secs(e.expires_at),
                };
                // Serializing a struct of strings and integers cannot fail.
                if let Ok(json) = serde_json::to_string(&listed) {
                    out.push_str(&json);
                    out.push('\n');
                }
            }
            out.push_str("OK\n");
            out
        }
        Request::Add { ip, ttl, user } => {
            allowlist.insert_with_ttl(ip, &user, ttl, now);
            tracing::info!(%ip, user, ttl_secs = ttl.as_secs(), "control: allowlist add");
            "OK\n".to_owned()
        }
        Request::Remove { ip } => {
            if allowlist.remove(ip) {
                tracing::info!(%ip, "control: allowlist remove");
                "OK\n".to_owned()
            } else {
                "ERR not found\n".to_owned()
            }
        }
    }
}

/// Reads a response: `Ok(lines before the final OK)`, or the server's `ERR` as an error.
pub fn parse_response(text: &str) -> Result<Vec<&str>, Error> {
    let mut lines: Vec<&str> = text.lines().collect();
    match lines.pop() {
        Some("OK") => Ok(lines),
        Some(last) if lines.is_empty() && last.starts_with("ERR ") => {
            Err(Error::Server(last["ERR ".len()..].to_owned()))
        }
        _ => Err(Error::BadResponse("no final OK".to_owned())),
    }
}

/// Parses a `LIST` response into its entries.
pub fn parse_list(text: &str) -> Result<Vec<ListedEntry>, Error> {
    parse_response(text)?
        .into_iter()
        .map(|l| serde_json::from_str(l).map_err(|e| Error::BadResponse(e.to_string())))
        .collect()
}

/// Whether a control peer may be served: loopback only (IPv4-mapped loopback included).
pub fn peer_allowed(peer: SocketAddr) -> bool {
    crate::canonical_ip(peer.ip()).is_loopback()
}

/// Serves the control channel on `listener` until `shutdown` is cancelled, then waits for
/// the connections in progress (each is bounded by the read and write timeouts).
pub async fn serve(
    listener: TcpListener,
    allowlist: Arc<Allowlist>,
    clock: Arc<dyn Clock>,
    key: Key,
    shutdown: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !peer_allowed(peer) {
                        tracing::warn!(%peer, "control: refused non-loopback peer");
                        continue;
                    }
                    if conns.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "control: too many connections");
                        continue;
                    }
                    let (list, clock, key) = (allowlist.clone(), clock.clone(), key.clone());
                    conns.spawn(handle_conn(stream, list, clock, key, shutdown.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "control: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    while conns.join_next().await.is_some() {}
}

/// Sends `line` with `key` to the control channel at `addr` and returns the whole response
/// text.
pub async fn request(addr: SocketAddr, key: &Key, line: &str) -> io::Result<String> {
    if line.len() > MAX_LINE || line.contains(['\r', '\n']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad control request line",
        ));
    }
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = Zeroizing::new(format!("KEY {}\n{line}\n", key.expose()));
        stream.write_all(request.as_bytes()).await?;
        stream.shutdown().await?;
        let mut out = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut out)
            .await?;
        if out.len() > MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control response too long",
            ));
        }
        String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    timeout(WRITE_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "control request timed out"))?
}

/// Reads the key line and the request line: `Ok(Err(reply))` for a request to refuse.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> io::Result<Result<(Zeroizing<String>, String), &'static str>> {
    let mut lines = Vec::with_capacity(2);
    for _ in 0..2 {
        let mut buf = Zeroizing::new(Vec::new());
        reader.read_until(b'\n', &mut buf).await?;
        let ended = buf.last() == Some(&b'\n');
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE || (!ended && buf.len() > MAX_LINE) {
            return Ok(Err("ERR line too long\n"));
        }
        match std::str::from_utf8(line) {
            Ok(text) => lines.push(text.to_owned()),
            Err(_) => return Ok(Err("ERR request is not UTF-8\n")),
        }
    }
    let line = lines.pop().unwrap_or_default();
    let key = Zeroizing::new(lines.pop().unwrap_or_default());
    Ok(Ok((key, line)))
}

/// One control connection: read the key line and the request line (bounded, in time),
/// answer, close.
async fn handle_conn(
    stream: TcpStream,
    allowlist: Arc<Allowlist>,
    clock: Arc<dyn Clock>,
    key: Key,
    shutdown: CancellationToken,
) {
    let (rd, mut wr) = stream.into_split();
    // Room for two lines and their CRLFs; anything longer is refused.
    let mut reader = BufReader::new(rd).take(2 * (MAX_LINE as u64 + 2));
    let read = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = timeout(READ_TIMEOUT, read_request(&mut reader)) => r,
    };
    let reply = match read {
        Err(_) => "ERR timeout\n".to_owned(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "control: read failed");
            return;
        }
        Ok(Ok(Err(reply))) => reply.to_owned(),
        Ok(Ok(Ok((given, line)))) => {
            let given = given.strip_prefix("KEY ").unwrap_or("");
            if key.matches(given) {
                respond(&allowlist, &line, clock.now())
            } else {
                tracing::warn!("control: request without the right key refused");
                "ERR not authorized: send the key from the state folder's control.key\n".to_owned()
            }
        }
    };
    let write = async {
        wr.write_all(reply.as_bytes()).await?;
        wr.shutdown().await
    };
    if let Ok(Err(e)) = timeout(WRITE_TIMEOUT, write).await {
        tracing::debug!(error = %e, "control: write failed");
        return;
    }
    // Closing with unread input makes the kernel reset the connection, which can destroy the
    // answer before the client reads it (an overlong line, say): drain a bounded amount first.
    let mut rest = reader.into_inner().take(DRAIN_LIMIT);
    let _ = timeout(
        DRAIN_TIMEOUT,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_requests() {
        let max = allowlist::MAX_TTL.as_secs();
        let add = |a: &str, s: u64, u: &str| Request::Add {
            ip: ip(a),
            ttl: Duration::from_secs(s),
            user: u.into(),
        };
        let cases: Vec<(&str, Result<Request, Error>)> = vec![
            ("LIST", Ok(Request::List)),
            ("  list  ", Ok(Request::List)),
            ("LIST x", Err(Error::Usage("LIST"))),
            ("ADD 192.0.2.1 60 alice", Ok(add("192.0.2.1", 60, "alice"))),
            (
                "add 2001:db8::1 3600 bob@example.org",
                Ok(add("2001:db8::1", 3600, "bob@example.org")),
            ),
            (
                "ADD 192.0.2.1 60",
                Err(Error::Usage("ADD <ip> <ttl-secs> <user>")),
            ),
            (
                "ADD 192.0.2.1 60 a b",
                Err(Error::Usage("ADD <ip> <ttl-secs> <user>")),
            ),
            ("ADD 192.0.2.300 60 a", Err(Error::BadAddress)),
            ("ADD 192.0.2.0/24 60 a", Err(Error::BadAddress)),
            ("ADD 192.0.2.1 0 a", Err(Error::BadTtl { max })),
            ("ADD 192.0.2.1 -5 a", Err(Error::BadTtl { max })),
            ("ADD 192.0.2.1 1h a", Err(Error::BadTtl { max })),
            ("ADD 192.0.2.1 99999999999 a", Err(Error::BadTtl { max })),
            ("ADD 192.0.2.1 60 a\u{1}b", Err(Error::BadUser)),
            (
                "REMOVE ::ffff:192.0.2.1",
                Ok(Request::Remove {
                    ip: ip("::ffff:192.0.2.1"),
                }),
            ),
            ("REMOVE", Err(Error::Usage("REMOVE <ip>"))),
            ("", Err(Error::Empty)),
            ("   ", Err(Error::Empty)),
            ("FLUSH", Err(Error::UnknownCommand)),
        ];
        for (line, want) in cases {
            assert_eq!(parse_request(line), want, "{line:?}");
        }
        let long_user = format!(
            "ADD 192.0.2.1 60 {}",
            "u".repeat(allowlist::MAX_USER_LEN + 1)
        );
        assert_eq!(parse_request(&long_user), Err(Error::BadUser));
    }

    #[test]
    fn loopback_peers_only() {
        // (peer, allowed?)
        let cases = [
            ("127.0.0.1:5000", true),
            ("127.8.9.10:5000", true),
            ("[::1]:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("192.0.2.1:5000", false),
            ("[2001:db8::1]:5000", false),
            ("[::ffff:192.0.2.1]:5000", false),
            ("0.0.0.0:5000", false),
        ];
        for (peer, want) in cases {
            assert_eq!(peer_allowed(peer.parse().unwrap()), want, "{peer}");
        }
    }

    #[test]
    fn parse_responses() {
        assert_eq!(parse_response("OK\n"), Ok(vec![]));
        assert_eq!(parse_response("a\nb\nOK\n"), Ok(vec!["a", "b"]));
        assert_eq!(
            parse_response("ERR not found\n"),
            Err(Error::Server("not found".into()))
        );
        assert!(matches!(parse_response(""), Err(Error::BadResponse(_))));
        assert!(matches!(parse_response("{}\n"), Err(Error::BadResponse(_))));
        assert!(matches!(parse_list("{}\nOK\n"), Err(Error::BadResponse(_))));
    }

    struct Running {
        addr: SocketAddr,
        list: Arc<Allowlist>,
        clock: Arc<ManualClock>,
        key: Key,
        shutdown: CancellationToken,
        server: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let list = Arc::new(Allowlist::new(Duration::from_secs(1800), 64, 100, 3));
        let clock = Arc::new(ManualClock::new(t(0)));
        let shutdown = CancellationToken::new();
        let key = Key::generate();
        let server = tokio::spawn(serve(
            listener,
            list.clone(),
            clock.clone(),
            key.clone(),
            shutdown.clone(),
        ));
        Running {
            addr,
            list,
            clock,
            key,
            shutdown,
            server,
        }
    }

    #[tokio::test]
    async fn add_list_remove_over_tcp() {
        let r = start().await;
        assert_eq!(request(r.addr, &r.key, "LIST").await.unwrap(), "OK\n");
        assert_eq!(
            request(r.addr, &r.key, "ADD 192.0.2.1 60 alice")
                .await
                .unwrap(),
            "OK\n"
        );
        assert_eq!(
            request(r.addr, &r.key, "add 2001:db8:1:2::3 3600 bob")
                .await
                .unwrap(),
            "OK\n"
        );
        r.list.insert(ip("198.51.100.7"), "carol", t(0));
        assert!(r.list.is_allowed(ip("192.0.2.1"), t(59)));

        r.clock.advance(Duration::from_secs(30));
        let listed = parse_list(&request(r.addr, &r.key, "LIST").await.unwrap()).unwrap();
        let want = [
            ("192.0.2.1/32", "alice", 0, 60),
            ("198.51.100.7/32", "carol", 0, 1800),
            ("2001:db8:1:2::/64", "bob", 0, 3600),
        ];
        let got: Vec<_> = listed
            .iter()
            .map(|e| {
                let base = unix_secs(t(0));
                (
                    e.net.as_str(),
                    e.user.as_str(),
                    e.inserted_at - base,
                    e.expires_at - base,
                )
            })
            .collect();
        assert_eq!(got, want);

        // Expired entries are not listed.
        r.clock.advance(Duration::from_secs(30));
        assert_eq!(
            parse_list(&request(r.addr, &r.key, "LIST").await.unwrap())
                .unwrap()
                .len(),
            2
        );

        assert_eq!(
            request(r.addr, &r.key, "REMOVE 2001:db8:1:2::99")
                .await
                .unwrap(),
            "OK\n"
        );
        assert_eq!(
            request(r.addr, &r.key, "REMOVE 2001:db8:1:2::99")
                .await
                .unwrap(),
            "ERR not found\n"
        );
        assert!(!r.list.is_allowed(ip("2001:db8:1:2::3"), t(60)));
        assert_eq!(
            request(r.addr, &r.key, "FLUSH").await.unwrap(),
            "ERR unknown command\n"
        );

        r.shutdown.cancel();
        timeout(Duration::from_secs(5), r.server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn bounded_line_and_raw_framing() {
        let r = start().await;
        // (bytes sent, response)
        let cases: [(Vec<u8>, &str); 5] = [
            (
                format!("ADD 192.0.2.1 60 {}\n", "u".repeat(MAX_LINE)).into_bytes(),
                "ERR line too long\n",
            ),
            (vec![b'x'; 64 * 1024], "ERR line too long\n"),
            (b"REMOVE 192.0.2.1\r\n".to_vec(), "ERR not found\n"),
            (b"LIST".to_vec(), "OK\n"), // end of stream ends the line
            (b"LIST \xff\n".to_vec(), "ERR request is not UTF-8\n"),
        ];
        for (sent, want) in cases {
            let mut s = TcpStream::connect(r.addr).await.unwrap();
            // The server may answer and close before reading everything: ignore write errors.
            let _ = s
                .write_all(format!("KEY {}\n", r.key.expose()).as_bytes())
                .await;
            let _ = s.write_all(&sent).await;
            let _ = s.shutdown().await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            assert_eq!(
                out,
                want,
                "{:?}",
                String::from_utf8_lossy(&sent[..sent.len().min(40)])
            );
        }
        assert!(
            request(r.addr, &r.key, "LIST\nREMOVE 192.0.2.1")
                .await
                .is_err()
        );
        r.shutdown.cancel();
    }

    #[tokio::test]
    async fn requests_without_the_key_are_refused() {
        let r = start().await;
        let other = Key::generate();
        for key in [&other, &Key(Zeroizing::new(String::new()))] {
            let answer = request(r.addr, key, "ADD 192.0.2.9 60 mallory")
                .await
                .unwrap();
            assert!(answer.starts_with("ERR not authorized"), "{answer}");
        }
        // A bare command line (the old protocol) is taken as a wrong key line.
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(b"ADD 192.0.2.9 60 mallory\nLIST\n")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("ERR not authorized"), "{out}");
        assert!(!r.list.is_allowed(ip("192.0.2.9"), t(1)));
        assert!(r.key.matches(r.key.expose()) && !r.key.matches(other.expose()));
        assert_eq!(format!("{:?}", r.key), "Key(..)");
        r.shutdown.cancel();
    }

    #[test]
    fn key_file_round_trip_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let key = Key::generate();
        assert_eq!(key.expose().len(), 64);
        key.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Key::read(&path).unwrap().matches(key.expose()));
        assert!(!Key::generate().matches(key.expose()));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out() {
        let r = start().await;
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "ERR timeout\n");
        r.shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_ends_waiting_connections() {
        let r = start().await;
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(b"LI").await.unwrap();
        // Connections are accepted in order: once a later one is answered, this one is being
        // served, waiting for the rest of its line.
        assert_eq!(request(r.addr, &r.key, "LIST").await.unwrap(), "OK\n");
        r.shutdown.cancel();
        // Well before the read timeout.
        timeout(READ_TIMEOUT / 2, r.server).await.unwrap().unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        assert_eq!(out, "");
    }
}
