//! The async end of the login dialogues: TCP to the old server, implicit TLS or STARTTLS,
//! the dialogue run line by line under one deadline, and the connection kept for whoever
//! goes on using it after the login (the POP3 proxy) or closed with a logout (a check).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Dialogue, MAX_LINE, MAX_LINES, Next, Outcome};
use crate::config::{OldServer, UpstreamTls};
use crate::io::{Line, LineReader};

/// A stream to the old server: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What went wrong talking to the old server (every one of them a temporary failure for the
/// client: the old server did not judge the password).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// The old server.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The deadline passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed.
    #[error("TLS with the old server: {0}")]
    Tls(std::io::Error),
    /// Reading or writing failed.
    #[error("talking to the old server: {0}")]
    Io(#[from] std::io::Error),
    /// The old server closed the connection.
    #[error("the old server closed the connection")]
    Closed,
    /// A line longer than [`MAX_LINE`].
    #[error("the old server sent a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines without the login ending.
    #[error("the old server sent more than {MAX_LINES} lines without ending the login")]
    TooManyLines,
    /// Bytes after the go-ahead for TLS, before the handshake (a STARTTLS injection).
    #[error("the old server sent data after its TLS go-ahead, before the handshake")]
    PipelinedTls,
}

/// TLS settings for the old server: its CA file's certificates, or the system's roots.
pub fn tls_connector(server: &OldServer) -> Result<tokio_rustls::TlsConnector, String> {
    let config = client_config(server.ca_file.as_deref(), server.tls != UpstreamTls::None)?;
    Ok(tokio_rustls::TlsConnector::from(config))
}

/// A TLS client configuration trusting `ca_file`'s certificates, or the system's roots (which
/// must exist when `needed`).
pub fn client_config(
    ca_file: Option<&std::path::Path>,
    needed: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in crate::tls::load_certs(path).map_err(|e| format!("ca_file {e}"))? {
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 && needed {
                return Err("no system trust roots: set ca_file".into());
            }
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// A connection to the old server.
pub struct Connection {
    io: Box<dyn Io>,
    reader: LineReader,
    logout: &'static [u8],
}

impl Connection {
    /// Connects to `server` and runs `dialogue` to its end, all within `server.timeout`.
    /// The connection comes back only after a login (to go on using it, or to
    /// [`Connection::logout`]).
    pub async fn login(
        server: &OldServer,
        tls: &tokio_rustls::TlsConnector,
        mut dialogue: Box<dyn Dialogue>,
    ) -> (Option<Connection>, Outcome) {
        let deadline = Instant::now() + server.timeout;
        let run = async {
            let mut conn = Connection::open(server, tls).await?;
            conn.logout = dialogue.logout();
            let outcome = conn.run(server, tls, &mut *dialogue).await?;
            Ok::<_, Error>((conn, outcome))
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok((conn, Outcome::LoggedIn))) => (Some(conn), Outcome::LoggedIn),
            Ok(Ok((_, outcome))) => (None, outcome),
            Ok(Err(e)) => (None, Outcome::Temporary(e.to_string())),
            Err(_) => (
                None,
                Outcome::Temporary(Error::Timeout(server.timeout).to_string()),
            ),
        }
    }

    async fn open(server: &OldServer, tls: &tokio_rustls::TlsConnector) -> Result<Self, Error> {
        let tcp = TcpStream::connect(server.address)
            .await
            .map_err(|source| Error::Connect {
                addr: server.address,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            io: Box::new(tcp),
            reader: LineReader::new(MAX_LINE),
            logout: b"QUIT\r\n",
        };
        if server.tls == UpstreamTls::Tls {
            conn.start_tls(server, tls).await?;
        }
        Ok(conn)
    }

    async fn start_tls(
        &mut self,
        server: &OldServer,
        tls: &tokio_rustls::TlsConnector,
    ) -> Result<(), Error> {
        if !self.reader.buffered().is_empty() {
            return Err(Error::PipelinedTls);
        }
        let name = rustls::pki_types::ServerName::try_from(server.server_name.clone())
            .map_err(|e| Error::Tls(std::io::Error::other(e)))?;
        let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        let stream = tls.connect(name, plain).await.map_err(Error::Tls)?;
        self.io = Box::new(stream);
        Ok(())
    }

    async fn run(
        &mut self,
        server: &OldServer,
        tls: &tokio_rustls::TlsConnector,
        dialogue: &mut dyn Dialogue,
    ) -> Result<Outcome, Error> {
        let mut lines = 0;
        let mut next = Next::Read;
        loop {
            match next {
                Next::Done(outcome) => return Ok(outcome),
                Next::Send(bytes) => {
                    self.io.write_all(&bytes).await?;
                    self.io.flush().await?;
                    next = Next::Read;
                }
                Next::StartTls => {
                    self.start_tls(server, tls).await?;
                    next = dialogue.tls_started();
                }
                Next::Read => {
                    lines += 1;
                    if lines > MAX_LINES {
                        return Err(Error::TooManyLines);
                    }
                    let line = self.read_line().await?;
                    next = dialogue.line(&line);
                }
            }
        }
    }

    /// Reads one line (without its CRLF).
    pub async fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        match self.reader.next_line(&mut self.io).await? {
            Some(Line::Complete(range)) => Ok(self.reader.slice(range).to_vec()),
            Some(Line::TooLong) => Err(Error::LineTooLong),
            None => Err(Error::Closed),
        }
    }

    /// Appends to `buf` what the server sent: the bytes already buffered, else one read.
    pub async fn read_some(&mut self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let buffered = self.reader.buffered().len();
        if buffered > 0 {
            buf.extend_from_slice(self.reader.buffered());
            self.reader.consume(buffered);
            return Ok(());
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::io::AsyncReadExt::read(&mut self.io, &mut chunk).await?;
        if n == 0 {
            return Err(Error::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Writes `bytes` and flushes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Ends the session politely: the protocol's logout, its reply awaited for at most
    /// `wait`, then the close.
    pub async fn logout(mut self, wait: Duration) {
        let logout = self.logout;
        let _ = tokio::time::timeout(wait, async {
            self.write(logout).await?;
            self.read_line().await?;
            let _ = self.io.shutdown().await;
            Ok::<_, Error>(())
        })
        .await;
    }
}
