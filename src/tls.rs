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

/// The server's TLS setup.
pub struct ServerTls {
    /// The acceptor all TLS listeners and STARTTLS upgrades share.
    pub acceptor: TlsAcceptor,
    /// Where the certificate came from.
    pub origin: Origin,
    /// `tls-server-end-point` channel-binding data (RFC 5929 §4.1): the hash of our leaf
    /// certificate.
    pub end_point: Vec<u8>,
}

/// Builds the server TLS setup from `[tls]`, or a self-signed certificate for `hostname`.
pub fn server(cfg: &TlsConfig, hostname: &str) -> Result<ServerTls, Error> {
    let (acceptor, origin, chain) = build(cfg, hostname)?;
    let end_point = chain
        .first()
        .map(|leaf| end_point_hash(leaf))
        .unwrap_or_default();
    Ok(ServerTls {
        acceptor,
        origin,
        end_point,
    })
}

/// RFC 5929 §4.1: hash the certificate with its signature's hash, SHA-256 for MD5/SHA-1.
/// SHA-256 is what our generated (ECDSA P-256) certificates and most deployed ones use.
fn end_point_hash(cert: &CertificateDer<'_>) -> Vec<u8> {
    use sha2::{Digest, Sha256, Sha384, Sha512};
    // The signatureAlgorithm OIDs of the common SHA-384/512 signatures, in DER.
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03], // ecdsa-with-SHA384
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04], // ecdsa-with-SHA512
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
    ];
    let der = cert.as_ref();
    // The outer signatureAlgorithm follows tbsCertificate; its OID sits near the end.
    let tail = &der[der.len().saturating_sub(160)..];
    let has = |oid: &[u8]| tail.windows(oid.len()).any(|w| w == oid);
    if SHA512.iter().any(|o| has(o)) {
        Sha512::digest(der).to_vec()
    } else if SHA384.iter().any(|o| has(o)) {
        Sha384::digest(der).to_vec()
    } else {
        Sha256::digest(der).to_vec()
    }
}

/// Channel-binding data of an established session (RFC 9266, RFC 5929).
pub fn channel_binding(
    conn: &rustls::ServerConnection,
    end_point: &[u8],
) -> crate::sasl::ChannelBinding {
    // RFC 9266 §2: 32 bytes, label "EXPORTER-Channel-Binding", no context. Only defined for
    // TLS 1.3 (and 1.2 with extended master secret, which rustls always uses).
    let tls_exporter = conn
        .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
        .map(|k| k.to_vec());
    crate::sasl::ChannelBinding {
        tls_exporter,
        tls_server_end_point: (!end_point.is_empty()).then(|| end_point.to_vec()),
    }
}

fn build(
    cfg: &TlsConfig,
    hostname: &str,
) -> Result<(TlsAcceptor, Origin, Vec<CertificateDer<'static>>), Error> {
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
        .with_single_cert(chain.clone(), key)?;
    Ok((TlsAcceptor::from(Arc::new(config)), origin, chain))
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

/// A client-side certificate verifier that accepts any server certificate while still checking
/// the handshake signatures: for `danger_accept_invalid_certs` upstreams, test clients and the
/// load generator (self-signed test servers). Never for a default setting.
#[derive(Debug)]
pub struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyCert {
    /// A verifier checking signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        AcceptAnyCert(provider)
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
        let tls = server(&TlsConfig::default(), "mail.example.test").unwrap();
        assert_eq!(tls.origin, Origin::SelfSigned);
        assert_eq!(
            tls.end_point.len(),
            32,
            "ECDSA P-256 SHA-256 certificate: SHA-256"
        );
    }

    #[test]
    fn missing_files_are_reported_with_path() {
        let cfg = TlsConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
        };
        let err = server(&cfg, "h").err().unwrap().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
