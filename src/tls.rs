//! TLS for the listeners: the rustls server configuration (from PEM files, or a self-signed
//! certificate made at start), and the helpers sessions use for STARTTLS/STLS and implicit TLS
//! (RFC 3207, RFC 2595, RFC 8314).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Errors building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Whether the certificate came from files or was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from `[tls] cert` and `key`.
    Files,
    /// Generated at start for `hostname` (clients will not trust it).
    SelfSigned,
}

/// Builds the acceptor all TLS listeners and STARTTLS upgrades share.
pub fn acceptor(cfg: &TlsConfig, hostname: &str) -> Result<(TlsAcceptor, Origin), Error> {
    let (chain, key, origin) = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => (load_certs(cert)?, load_key(key)?, Origin::Files),
        _ => {
            let (chain, key) = self_signed(hostname)?;
            (chain, key, Origin::SelfSigned)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok((TlsAcceptor::from(Arc::new(config)), origin))
}

/// Makes a self-signed certificate and key for `hostname`.
pub fn self_signed(
    hostname: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()])?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(|e| Error::Pem {
        path: "<generated>".into(),
        message: e.to_string(),
    })?;
    Ok((vec![ck.cert.der().clone()], key))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let err = |message: String| Error::Pem {
        path: path.display().to_string(),
        message,
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect();
    let certs = certs.map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Describes a finished handshake for logs and Received headers, e.g. `TLSv1.3
/// TLS13_AES_256_GCM_SHA384`.
pub fn describe(conn: &rustls::ServerConnection) -> String {
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .unwrap_or("TLS")
        .replace("_", ".");
    let suite = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    format!("{version} {suite}")
}

/// An `io::Error` for a handshake that timed out.
pub fn handshake_timeout() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_acceptor_builds() {
        let (_, origin) = acceptor(&TlsConfig::default(), "mail.example.test").unwrap();
        assert_eq!(origin, Origin::SelfSigned);
    }

    #[test]
    fn missing_files_are_reported_with_path() {
        let cfg = TlsConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
        };
        let err = acceptor(&cfg, "h").err().unwrap().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
