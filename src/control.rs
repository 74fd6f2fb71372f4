//! The control channel behind `mailgate allowlist list|add|remove`: a line protocol over TCP
//! on a loopback address (`listeners.control`), served by the running gateway.
//!
//! One request per connection, answered and then closed: a `KEY <key>` line, then one of
//!
//! ```text
//! LIST                        -> one JSON object per entry and line, then "OK"
//! ADD <ip> <ttl> <user>       -> the entry as stored (one JSON object), then "OK"
//! REMOVE <ip>                 -> the entry removed (one JSON object), then "OK";
//!                                or "ERR not found"
//! QUEUE FLUSH [<id>]          -> what was done (one line of text), then "OK"
//! QUEUE DELETE|HOLD|RELEASE <id>
//! ```
//!
//! The `QUEUE` verbs are carried out by the delivery worker ([`crate::relay::Action`]), which
//! refuses to touch a message it is delivering at that moment.
//!
//! Every failure is a single `ERR <reason>` line. Verbs are case-insensitive; lines end in LF
//! or CRLF and carry at most [`MAX_LINE`] bytes; a request must arrive within
//! [`READ_TIMEOUT`]. Peers that are not loopback addresses are dropped unanswered. An `<ip>`
//! may also be a network (`10.1.2.0/24`, `2001:db8:1:2::/64`); `<ttl>` is whole seconds or a
//! duration in the configuration's syntax (`30m`, `8h`). The arguments are checked,
//! carried out and audited by the allowlist service ([`crate::allowlist`]), the same code the
//! admin HTTP API goes through.
//!
//! Loopback alone is no login (every local user can open a loopback connection, and adding an
//! address to the allowlist lets it relay), so the gateway writes a fresh random key to
//! `<state_dir>/control.key` (mode 0600) at each start, and a request must carry it: only who
//! can read the gateway's state folder (its own user, root) can change the allowlist. The key
//! is compared in constant time. The parsing and the answers ([`parse_request`],
//! [`render_list`], [`render_error`]) are plain functions, [`respond`] the thin step between
//! them and the service; [`serve`] and [`request`] are the tokio ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::allowlist::{Addition, Allowlist, Entry, Ttl, Via};
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
    /// The server answered `ERR <reason>`.
    #[error("server: {0}")]
    Server(String),
    /// The server's answer did not follow the protocol.
    #[error("malformed response: {0}")]
    BadResponse(String),
}

/// A parsed request. Its arguments are checked by the allowlist service
/// ([`crate::allowlist::Allowlist::add`]), as the HTTP API's are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// List the live entries.
    List,
    /// Allowlist `address` for `ttl` in the name of `user`.
    Add {
        /// An address, or a network as `LIST` shows it.
        address: String,
        /// Seconds (or a duration such as `30m`).
        ttl: String,
        /// Recorded as the entry's user.
        user: String,
    },
    /// Remove the entry covering `address`.
    Remove {
        /// An address, or a network as `LIST` shows it.
        address: String,
    },
    /// An action on the queue.
    Queue(crate::relay::Action),
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

impl ListedEntry {
    /// The listing of `entry` on `net` (as the HTTP API shows it too).
    pub fn new(net: IpNet, entry: &Entry) -> ListedEntry {
        ListedEntry {
            net: net.to_string(),
            user: entry.user.to_string(),
            inserted_at: unix_secs(entry.inserted_at),
            expires_at: unix_secs(entry.expires_at),
        }
    }
}

/// Parses one request line (line ending already removed): the verb and the number of
/// arguments; what the arguments mean is the service's to check.
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
        let [address, ttl, user] = args[..] else {
            return Err(Error::Usage("ADD <ip> <ttl> <user>"));
        };
        return Ok(Request::Add {
            address: address.to_owned(),
            ttl: ttl.to_owned(),
            user: user.to_owned(),
        });
    }
    if verb.eq_ignore_ascii_case("QUEUE") {
        use crate::relay::Action;
        const USAGE: &str = "QUEUE FLUSH [<id>] | QUEUE DELETE|HOLD|RELEASE <id>";
        let (what, id) = match args[..] {
            [what] => (what, None),
            [what, id] => (what, Some(id.to_owned())),
            _ => return Err(Error::Usage(USAGE)),
        };
        let action = match (what.to_ascii_uppercase().as_str(), id) {
            ("FLUSH", id) => Action::Flush(id),
            ("DELETE", Some(id)) => Action::Delete(id),
            ("HOLD", Some(id)) => Action::Hold(id),
            ("RELEASE", Some(id)) => Action::Release(id),
            _ => return Err(Error::Usage(USAGE)),
        };
        return Ok(Request::Queue(action));
    }
    if verb.eq_ignore_ascii_case("REMOVE") {
        let [address] = args[..] else {
            return Err(Error::Usage("REMOVE <ip>"));
        };
        return Ok(Request::Remove {
            address: address.to_owned(),
        });
    }
    Err(Error::UnknownCommand)
}

/// Carries out `line` through the allowlist service at `now` and returns the full response
/// text: the thin end between [`parse_request`] and the `render_*` functions. `QUEUE`
/// requests are refused: see [`respond_with_queue`].
pub async fn respond(allowlist: &Allowlist, line: &str, now: SystemTime) -> String {
    respond_with_queue(allowlist, None, line, now).await
}

/// As [`respond`], with `QUEUE` requests carried to the delivery worker behind `queue`.
pub async fn respond_with_queue(
    allowlist: &Allowlist,
    queue: Option<&crate::relay::Notifier>,
    line: &str,
    now: SystemTime,
) -> String {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return render_error(&e),
    };
    let done = match req {
        Request::Queue(action) => {
            let Some(queue) = queue else {
                return render_error(&"the queue is not served here");
            };
            return match queue.queue(action).await {
                Ok(done) => format!("{}\nOK\n", done.replace(['\r', '\n'], " ")),
                Err(e) => render_error(&e),
            };
        }
        Request::List => {
            return match allowlist.list(now).await {
                Ok(entries) => render_list(&entries),
                Err(e) => render_error(&e),
            };
        }
        Request::Add { address, ttl, user } => {
            // The wire's whole seconds, or the configuration's duration syntax.
            let ttl = match ttl.parse::<u64>() {
                Ok(secs) => Ttl::Seconds(secs),
                Err(_) => Ttl::Text(&ttl),
            };
            let add = Addition {
                address: &address,
                ttl,
                user: &user,
            };
            allowlist.add(&add, Via::Control, now).await
        }
        Request::Remove { address } => allowlist.remove(&address, Via::Control, now).await,
    };
    match done {
        Ok(entry) => render_list(&[entry]),
        Err(e) => render_error(&e),
    }
}

/// The answer to `LIST`: one JSON object per entry and line, then `OK`.
pub fn render_list(entries: &[(IpNet, Entry)]) -> String {
    let mut out = String::new();
    for (net, e) in entries {
        // Serializing a struct of strings and integers cannot fail.
        if let Ok(json) = serde_json::to_string(&ListedEntry::new(*net, e)) {
            out.push_str(&json);
            out.push('\n');
        }
    }
    out.push_str("OK\n");
    out
}

/// A refusal: `ERR <reason>` on one line.
pub fn render_error(e: &dyn std::fmt::Display) -> String {
    // A reason is one line: anything after a line break would be read as another answer.
    let reason = e.to_string().replace(['\r', '\n'], " ");
    format!("ERR {reason}\n")
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
    queue: crate::relay::Notifier,
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
                    let queue = queue.clone();
                    conns.spawn(handle_conn(stream, list, queue, clock, key, shutdown.clone()));
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
    queue: crate::relay::Notifier,
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
                respond_with_queue(&allowlist, Some(&queue), &line, clock.now()).await
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
#[path = "control_tests.rs"]
mod tests;
