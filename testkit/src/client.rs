//! A small line-protocol client for SMTP and POP3 tests: connect from a chosen loopback source
//! address, send lines, and assert on replies ("send AUTH PLAIN ..., expect 235").

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Any stream the client can speak over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connected client.
pub struct Client {
    io: BufReader<Box<dyn Stream>>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Connects from `source` (e.g. 127.0.0.2) to `addr`.
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source");
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect")
}

impl Client {
    /// Plain TCP from 127.0.0.1.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_from(IpAddr::from([127, 0, 0, 1]), addr).await
    }

    /// Plain TCP from `source`.
    pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
        Client::over(Box::new(connect_from(source, addr).await))
    }

    /// Implicit TLS from 127.0.0.1 (any certificate accepted).
    pub async fn connect_tls(addr: SocketAddr) -> Client {
        Self::connect_tls_from(IpAddr::from([127, 0, 0, 1]), addr).await
    }

    /// Implicit TLS from `source`.
    pub async fn connect_tls_from(source: IpAddr, addr: SocketAddr) -> Client {
        let tcp = connect_from(source, addr).await;
        Client::over(Box::new(tls(tcp).await))
    }

    /// Implicit TLS from 127.0.0.1, with the session's `tls-exporter` channel-binding data
    /// (RFC 9266 §2: 32 bytes exported with the label "EXPORTER-Channel-Binding", no context).
    pub async fn connect_tls_exporter(addr: SocketAddr) -> (Client, Vec<u8>) {
        let tcp = connect_from(IpAddr::from([127, 0, 0, 1]), addr).await;
        let stream = tls(tcp).await;
        let exporter = stream
            .get_ref()
            .1
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .expect("tls-exporter keying material")
            .to_vec();
        (Client::over(Box::new(stream)), exporter)
    }

    /// Wraps a stream.
    pub fn over(stream: Box<dyn Stream>) -> Client {
        Client {
            io: BufReader::new(stream),
        }
    }

    /// Upgrades to TLS (after STARTTLS/STLS was accepted).
    pub async fn starttls(self) -> Client {
        assert!(self.io.buffer().is_empty(), "data buffered before TLS");
        let inner = self.io.into_inner();
        Client::over(Box::new(tls(inner).await))
    }

    /// Implicit TLS from 127.0.0.1, presenting `device`'s client certificate.
    pub async fn connect_tls_as(addr: SocketAddr, device: &crate::devices::Device) -> Client {
        let tcp = connect_from(IpAddr::from([127, 0, 0, 1]), addr).await;
        Client::over(Box::new(tls_as(tcp, Some(device)).await))
    }

    /// Upgrades to TLS after STARTTLS/STLS, presenting `device`'s client certificate.
    pub async fn starttls_as(self, device: &crate::devices::Device) -> Client {
        assert!(self.io.buffer().is_empty(), "data buffered before TLS");
        let inner = self.io.into_inner();
        Client::over(Box::new(tls_as(inner, Some(device)).await))
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// Sends raw bytes, reporting failure instead of panicking (for tests that kill servers).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await
    }

    /// Reads an SMTP reply's code, or `None` if the connection failed.
    pub async fn reply_opt(&mut self) -> Option<u16> {
        loop {
            let mut buf = Vec::new();
            let n = tokio::time::timeout(TIMEOUT, self.io.read_until(b'\n', &mut buf))
                .await
                .ok()?
                .ok()?;
            if n < 4 {
                return None;
            }
            let code = std::str::from_utf8(&buf[..3]).ok()?.parse().ok()?;
            if buf[3] != b'-' {
                return Some(code);
            }
        }
    }

    /// Sends one line (CRLF added).
    pub async fn send(&mut self, line: &str) {
        let _ = self.try_send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Reads one line (without CRLF); `None` at EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(TIMEOUT, self.io.read_until(b'\n', &mut buf))
            .await
            .expect("reply timeout")
            .ok()?;
        if n == 0 {
            return None;
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads a whole SMTP reply (all continuation lines); returns (code, lines).
    pub async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let line = self
                .line()
                .await
                .expect("connection closed while reading a reply");
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("bad reply {line:?}"));
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line);
            if !more {
                return (code, lines);
            }
        }
    }

    /// Expects an SMTP reply with `code`; returns its lines.
    pub async fn expect(&mut self, code: u16) -> Vec<String> {
        let (got, lines) = self.reply().await;
        assert_eq!(got, code, "expected {code}, got {lines:?}");
        lines
    }

    /// Sends a line and expects an SMTP reply code.
    pub async fn cmd(&mut self, line: &str, code: u16) -> Vec<String> {
        self.send(line).await;
        self.expect(code).await
    }

    /// Expects a POP3 `+OK` (true) or `-ERR` (false) line; returns it.
    pub async fn pop(&mut self, ok: bool) -> String {
        let line = self.line().await.expect("connection closed");
        assert_eq!(
            line.starts_with("+OK"),
            ok,
            "unexpected POP3 reply {line:?}"
        );
        line
    }

    /// Sends a POP3 command and expects `+OK`/`-ERR`.
    pub async fn pop_cmd(&mut self, line: &str, ok: bool) -> String {
        self.send(line).await;
        self.pop(ok).await
    }

    /// Reads a POP3 multi-line body up to the "." line, undoing byte-stuffing.
    pub async fn multiline(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self
                .line()
                .await
                .expect("connection closed in multi-line response");
            if line == "." {
                return out;
            }
            out.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
        }
    }

    /// Whether the server closed the connection (EOF) within the timeout.
    pub async fn closed(&mut self) -> bool {
        self.line().await.is_none()
    }
}

/// A client TLS handshake that accepts any certificate (test gateways are self-signed).
pub async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
) -> tokio_rustls::client::TlsStream<S> {
    tls_as(stream, None).await
}

/// As [`tls`], presenting `device`'s client certificate when the server asks for one.
pub async fn tls_as<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    device: Option<&crate::devices::Device>,
) -> tokio_rustls::client::TlsStream<S> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(mailgate::tls::AcceptAnyCert::new(provider)));
    let config = match device {
        Some(d) => {
            let (chain, key) = d.identity();
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("mail.example.test").expect("name");
    tokio::time::timeout(TIMEOUT, connector.connect(name, stream))
        .await
        .expect("tls timeout")
        .expect("tls")
}
