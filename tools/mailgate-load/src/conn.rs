//! One client connection of the load generator: a TCP connect from a chosen loopback source
//! address, optional TLS (implicit, or upgraded after STARTTLS / STLS), and lockstep reads of
//! SMTP replies (RFC 5321 §4.2, multi-line `250-` continuations) and POP3 status lines
//! (RFC 1939 §3). Every read and write has a timeout so a stuck server fails the session
//! instead of stalling a worker.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 allows 512; servers send longer EHLO lines
/// rarely, never this long).
const MAX_LINE: usize = 8 * 1024;
/// Most lines in one multi-line SMTP reply.
const MAX_REPLY_LINES: usize = 64;
/// Timeout of each read, write, connect and handshake.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("{step}: {source}")]
    Io {
        /// What the client was doing.
        step: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The server took longer than the step timeout.
    #[error("{0}: timed out")]
    Timeout(&'static str),
    /// The server closed the connection.
    #[error("{0}: connection closed by server")]
    Closed(&'static str),
    /// A reply did not have the expected code or status.
    #[error("{step}: expected {expected}, got {got:?}")]
    Unexpected {
        /// The command the reply answered.
        step: &'static str,
        /// The expected code or status.
        expected: String,
        /// The reply line.
        got: String,
    },
    /// A reply could not be parsed.
    #[error("{step}: malformed reply {got:?}")]
    Malformed {
        /// The command the reply answered.
        step: &'static str,
        /// The reply line.
        got: String,
    },
    /// Anything else (TLS name, protocol helper failures).
    #[error("{0}")]
    Other(String),
}

/// Every stream a session can run over: plain TCP or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection with a small read buffer for line-oriented replies.
pub struct Conn {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

async fn timed<T>(
    step: &'static str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Io { step, source }),
        Err(_) => Err(Error::Timeout(step)),
    }
}

/// Opens a TCP connection from `source` (port chosen by the kernel) to `target`.
pub async fn connect_tcp(
    source: IpAddr,
    target: SocketAddr,
) -> Result<tokio::net::TcpStream, Error> {
    let io = |source| Error::Io {
        step: "connect",
        source,
    };
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4().map_err(io)?,
        SocketAddr::V6(_) => TcpSocket::new_v6().map_err(io)?,
    };
    socket.bind(SocketAddr::new(source, 0)).map_err(io)?;
    let tcp = timed("connect", socket.connect(target)).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

impl Conn {
    /// Connects from `source` to `target`; with `tls`, runs the handshake at once (implicit
    /// TLS, RFC 8314).
    pub async fn connect(
        source: IpAddr,
        target: SocketAddr,
        tls: Option<&Tls>,
    ) -> Result<Conn, Error> {
        let tcp = connect_tcp(source, target).await?;
        let io: Box<dyn Stream> = match tls {
            Some(t) => {
                Box::new(timed("tls handshake", t.connector.connect(t.name.clone(), tcp)).await?)
            }
            None => Box::new(tcp),
        };
        Ok(Conn::new(io))
    }

    fn new(io: Box<dyn Stream>) -> Conn {
        Conn {
            io,
            buf: vec![0; MAX_LINE],
            start: 0,
            end: 0,
        }
    }

    /// Upgrades to TLS after the server agreed (220 to STARTTLS, +OK to STLS). Data the server
    /// sent after its agreement would be an injection attempt (RFC 3207 §6): refused.
    pub async fn upgrade(self, tls: &Tls) -> Result<Conn, Error> {
        if self.start != self.end {
            return Err(Error::Other("data after the STARTTLS reply".into()));
        }
        let io = timed(
            "tls handshake",
            tls.connector.connect(tls.name.clone(), self.io),
        )
        .await?;
        Ok(Conn::new(Box::new(io)))
    }

    /// Writes `bytes` (a command with its CRLF, or message data).
    pub async fn send(&mut self, step: &'static str, bytes: &[u8]) -> Result<(), Error> {
        timed(step, self.io.write_all(bytes)).await?;
        timed(step, self.io.flush()).await
    }

    /// Reads one line without its CRLF.
    pub async fn line(&mut self, step: &'static str) -> Result<String, Error> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let raw = &self.buf[self.start..self.start + pos];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.start += pos + 1;
                return Ok(line);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                return Err(Error::Malformed {
                    step,
                    got: "line too long".into(),
                });
            }
            let n = timed(step, self.io.read(&mut self.buf[self.end..])).await?;
            if n == 0 {
                return Err(Error::Closed(step));
            }
            self.end += n;
        }
    }

    /// Reads one SMTP reply; returns its code and the text of its last line.
    pub async fn smtp_reply(&mut self, step: &'static str) -> Result<(u16, String), Error> {
        for _ in 0..MAX_REPLY_LINES {
            let line = self.line(step).await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| Error::Malformed {
                    step,
                    got: line.clone(),
                })?;
            match line.as_bytes().get(3) {
                Some(b'-') => continue,
                Some(b' ') | None => return Ok((code, line.get(4..).unwrap_or("").to_string())),
                Some(_) => return Err(Error::Malformed { step, got: line }),
            }
        }
        Err(Error::Malformed {
            step,
            got: "too many reply lines".into(),
        })
    }

    /// Reads an SMTP reply and checks its code; returns the text of its last line.
    pub async fn expect(&mut self, step: &'static str, code: u16) -> Result<String, Error> {
        let (got, text) = self.smtp_reply(step).await?;
        if got != code {
            return Err(Error::Unexpected {
                step,
                expected: code.to_string(),
                got: format!("{got} {text}"),
            });
        }
        Ok(text)
    }

    /// Sends an SMTP command line and checks the reply code.
    pub async fn command(
        &mut self,
        step: &'static str,
        line: &str,
        code: u16,
    ) -> Result<String, Error> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(step, &bytes).await?;
        self.expect(step, code).await
    }

    /// Reads a POP3 status line and checks that it is `+OK`; returns the rest of the line.
    pub async fn pop_ok(&mut self, step: &'static str) -> Result<String, Error> {
        let line = self.line(step).await?;
        match line.strip_prefix("+OK") {
            Some(rest) => Ok(rest.trim_start().to_string()),
            None => Err(Error::Unexpected {
                step,
                expected: "+OK".into(),
                got: line,
            }),
        }
    }

    /// Sends a POP3 command line and checks for `+OK`.
    pub async fn pop_command(&mut self, step: &'static str, line: &str) -> Result<String, Error> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(step, &bytes).await?;
        self.pop_ok(step).await
    }
}

/// The client TLS setup: any certificate is accepted (the servers under test use self-signed
/// ones), and session resumption is off so that every session pays a full handshake.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// A client that sends `name` as SNI.
    pub fn new(name: &str) -> Result<Tls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Other(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(mailgate::tls::AcceptAnyCert::new(provider)))
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| Error::Other(format!("TLS server name {name:?}: {e}")))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` (what the server sends) through `f` over an in-memory pipe.
    async fn with_server<T>(script: &'static [u8], f: impl AsyncFnOnce(&mut Conn) -> T) -> T {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            // Drip-feed in 3-byte pieces so replies cross read boundaries, then hang up.
            for chunk in script.chunks(3) {
                if server.write_all(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut conn = Conn::new(Box::new(client));
        f(&mut conn).await
    }

    /// What the server sends, and the code and text expected, or the kind of error.
    type ReplyCase = (&'static [u8], Result<(u16, &'static str), &'static str>);

    #[tokio::test]
    async fn smtp_replies_single_and_multi_line() {
        let cases: &[ReplyCase] = &[
            (b"220 ready\r\n", Ok((220, "ready"))),
            (
                b"250-mail.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
                Ok((250, "SIZE 10")),
            ),
            (b"354\r\n", Ok((354, ""))),
            (b"25x oops\r\n", Err("malformed")),
            (b"250_x\r\n", Err("malformed")),
            (b"250-only continuation", Err("closed")),
        ];
        for (script, want) in cases {
            let script: &'static [u8] = Box::leak(script.to_vec().into_boxed_slice());
            let got = with_server(script, async |c| c.smtp_reply("test").await).await;
            match (want, got) {
                (Ok((code, text)), Ok((c, t))) => assert_eq!((*code, *text), (c, t.as_str())),
                (Err("malformed"), Err(Error::Malformed { .. })) => {}
                (Err("closed"), Err(Error::Closed(_))) => {}
                (want, got) => panic!("{script:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn expect_checks_the_code() {
        let r = with_server(b"550 5.7.1 no\r\n", async |c| c.expect("RCPT", 250).await).await;
        assert!(
            matches!(r, Err(Error::Unexpected { step: "RCPT", .. })),
            "{r:?}"
        );
        let r = with_server(b"250 2.1.0 ok\r\n", async |c| c.expect("MAIL", 250).await).await;
        assert_eq!(r.ok().as_deref(), Some("2.1.0 ok"));
    }

    #[tokio::test]
    async fn pop_status_lines() {
        let r = with_server(b"+OK 2 320\r\n", async |c| c.pop_ok("STAT").await).await;
        assert_eq!(r.ok().as_deref(), Some("2 320"));
        let r = with_server(b"-ERR [AUTH] no\r\n", async |c| c.pop_ok("PASS").await).await;
        assert!(
            matches!(r, Err(Error::Unexpected { step: "PASS", .. })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn overlong_line_is_refused() {
        let long: &'static [u8] = Box::leak(vec![b'a'; MAX_LINE + 10].into_boxed_slice());
        let r = with_server(long, async |c| c.line("greeting").await).await;
        assert!(matches!(r, Err(Error::Malformed { .. })), "{r:?}");
    }
}
