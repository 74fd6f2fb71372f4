//! TLS for the listeners: the rustls server configuration (from PEM files, or a self-signed
//! certificate made at start), and the helpers sessions use for STARTTLS/STLS and implicit TLS
//! (RFC 3207, RFC 2595, RFC 8314). With `[auth.external]` the listeners also ask clients for
//! a certificate (never requiring one): `client_auth.rs`.

pub mod client_auth;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ExternalConfig, TlsConfig};

#[cfg(feature = "legacy-tls")]
pub mod legacy;
mod stream;

pub use stream::ServerStream;

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
    /// The OpenSSL acceptor for `[tls] legacy_networks` could not be built.
    #[error("legacy TLS acceptor: {0}")]
    Legacy(String),
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
    /// The OpenSSL acceptor for `[tls] legacy_networks`, if any.
    #[cfg(feature = "legacy-tls")]
    pub legacy: Option<legacy::Acceptor>,
    /// `[auth.external]`: the CA client certificates are judged by, when configured.
    pub client_auth: Option<Arc<client_auth::ClientAuth>>,
}

/// Builds the server TLS setup from `[tls]`, or a self-signed certificate for `hostname`;
/// with `external`, the handshake asks for a client certificate from its CA.
pub fn server(
    cfg: &TlsConfig,
    hostname: &str,
    external: Option<&ExternalConfig>,
) -> Result<ServerTls, Error> {
    let client_auth = match external {
        Some(e) => Some(Arc::new(client_auth::ClientAuth::load(e)?)),
        None => None,
    };
    let (acceptor, origin, chain, key) = build(cfg, hostname, client_auth.as_deref())?;
    let end_point = chain
        .first()
        .map(|leaf| end_point_hash(leaf))
        .unwrap_or_default();
    #[cfg(feature = "legacy-tls")]
    let legacy = match &cfg.legacy {
        Some(l) => Some(legacy::Acceptor::new(l, &chain, &key, end_point.clone())?),
        None => None,
    };
    // Without the feature the configuration refuses legacy networks (see config validation).
    #[cfg(not(feature = "legacy-tls"))]
    let _ = key;
    Ok(ServerTls {
        acceptor,
        origin,
        end_point,
        #[cfg(feature = "legacy-tls")]
        legacy,
        client_auth,
    })
}

/// RFC 5929 §4.1: hash the certificate with the hash function of its signature algorithm,
/// SHA-256 where that is MD5 or SHA-1. Empty where the binding is undefined: a signature with
/// no separate hash (Ed25519, Ed448), one we do not know, or a certificate we cannot parse;
/// `tls-server-end-point` is then not offered (`tls-exporter` still is).
fn end_point_hash(cert: &CertificateDer<'_>) -> Vec<u8> {
    use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
    let der = cert.as_ref();
    match signature_hash(der) {
        Some(SigHash::Sha256) => Sha256::digest(der).to_vec(),
        Some(SigHash::Sha224) => Sha224::digest(der).to_vec(),
        Some(SigHash::Sha384) => Sha384::digest(der).to_vec(),
        Some(SigHash::Sha512) => Sha512::digest(der).to_vec(),
        None => Vec::new(),
    }
}

/// The hash a `tls-server-end-point` binding uses (MD5 and SHA-1 already mapped to SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The end-point hash for the certificate `der`: `Certificate ::= SEQUENCE { tbsCertificate,
/// signatureAlgorithm AlgorithmIdentifier, signatureValue }` (RFC 5280 §4.1), read with the
/// bounded DER walker [`der_tlv`]; the OID of `signatureAlgorithm` decides, and for RSASSA-PSS
/// the `hashAlgorithm` of its parameters (RFC 4055 §3.1, default SHA-1).
fn signature_hash(der: &[u8]) -> Option<SigHash> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (cert, _) = der_tlv(der, SEQUENCE)?;
    let (_tbs, rest) = der_tlv(cert, SEQUENCE)?;
    let (algorithm, _) = der_tlv(rest, SEQUENCE)?;
    let (oid, params) = der_tlv(algorithm, OID)?;
    // 1.2.840.113549.1.1.x (PKCS #1), 1.2.840.10045.4.x (ECDSA), 1.2.840.10040.4.3 (DSA),
    // 2.16.840.1.101.3.4.3.x (DSA with SHA-2), 2.16.840.1.101.3.4.2.x (the hashes, for PSS).
    const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    const DSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03];
    const DSA_SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03];
    const HASHES: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
    let last = |prefix: &[u8]| match oid.strip_prefix(prefix) {
        Some([b]) => Some(*b),
        _ => None,
    };
    if let Some(n) = last(PKCS1) {
        return match n {
            0x04 | 0x05 => Some(SigHash::Sha256), // md5WithRSA, sha1WithRSA
            0x0b => Some(SigHash::Sha256),
            0x0c => Some(SigHash::Sha384),
            0x0d => Some(SigHash::Sha512),
            0x0e => Some(SigHash::Sha224),
            0x0a => pss_hash(params, HASHES), // RSASSA-PSS
            _ => None,
        };
    }
    if oid == [ECDSA, &[0x01]].concat() || oid == DSA_SHA1 {
        return Some(SigHash::Sha256); // ecdsa-with-SHA1, dsa-with-sha1
    }
    let sha2 = |n: u8| match n {
        1 => Some(SigHash::Sha224),
        2 => Some(SigHash::Sha256),
        3 => Some(SigHash::Sha384),
        4 => Some(SigHash::Sha512),
        _ => None,
    };
    if let Some(rest) = oid.strip_prefix(ECDSA)
        && let [0x03, n] = rest
    {
        return sha2(*n); // ecdsa-with-SHA224..512
    }
    if let Some(n) = last(DSA_SHA2) {
        return sha2(n);
    }
    None
}

/// The hash of RSASSA-PSS parameters `params` (`SEQUENCE { [0] hashAlgorithm ... }`).
fn pss_hash(params: &[u8], hashes: &[u8]) -> Option<SigHash> {
    let (seq, _) = der_tlv(params, 0x30)?;
    let Some((explicit, _)) = der_tlv(seq, 0xa0) else {
        return Some(SigHash::Sha256); // hashAlgorithm absent: SHA-1, replaced by SHA-256
    };
    let (hash_alg, _) = der_tlv(explicit, 0x30)?;
    let (oid, _) = der_tlv(hash_alg, 0x06)?;
    match oid.strip_prefix(hashes) {
        Some([0x01]) => Some(SigHash::Sha256),
        Some([0x02]) => Some(SigHash::Sha384),
        Some([0x03]) => Some(SigHash::Sha512),
        Some([0x04]) => Some(SigHash::Sha224),
        _ if oid == [0x2b, 0x0e, 0x03, 0x02, 0x1a] => Some(SigHash::Sha256), // SHA-1
        _ => None,
    }
}

/// Reads one DER element with tag `tag` at the start of `buf`: its contents and what follows.
/// Bounded: single-byte tags only, definite lengths of at most 4 length bytes, and the
/// contents must lie inside `buf`; anything else is `None`.
fn der_tlv(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&got, rest) = buf.split_first()?;
    if got != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            if rest.len() < n {
                return None;
            }
            let (bytes, rest) = rest.split_at(n);
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, rest)
        }
        _ => return None, // indefinite length (BER) or an absurd length-of-length
    };
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// What a session knows of its finished TLS handshake, whichever library made it: for the
/// log, the Received header, the audit (a handshake below TLS 1.2 makes every login on the
/// session class `insecure`) and SCRAM's channel binding.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The version and cipher, e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
    pub description: String,
    /// The handshake is below TLS 1.2 (a `[tls] legacy_networks` client).
    pub legacy: bool,
    /// Channel-binding data (SCRAM-*-PLUS).
    pub channel_binding: crate::sasl::ChannelBinding,
    /// The client certificate, judged once for the session against `[auth.external]`'s CA:
    /// `None` when there is none, or it does not chain to that CA (EXTERNAL is then not
    /// offered). Legacy-network sessions never carry one (their acceptor does not ask).
    pub client_cert: Option<Arc<crate::sasl::ClientCertificate>>,
}

impl TlsInfo {
    /// The facts of a rustls session made with `server` (its certificate's
    /// `tls-server-end-point` hash, the `[auth.external]` CA), the client certificate judged
    /// at `now` by the gateway's clock.
    pub fn of(conn: &rustls::ServerConnection, server: &ServerTls, now: SystemTime) -> TlsInfo {
        let client_cert = server
            .client_auth
            .as_ref()
            .and_then(|check| check.check(conn.peer_certificates()?, now))
            .map(Arc::new);
        TlsInfo {
            description: describe(conn),
            // rustls speaks TLS 1.2 and 1.3 only.
            legacy: false,
            channel_binding: channel_binding(conn, &server.end_point),
            client_cert,
        }
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

/// The rustls acceptor, where its certificate came from, the chain and the key.
type Built = (
    TlsAcceptor,
    Origin,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
);

fn build(
    cfg: &TlsConfig,
    hostname: &str,
    client_auth: Option<&client_auth::ClientAuth>,
) -> Result<Built, Error> {
    let (chain, key, origin) = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => (load_certs(cert)?, load_key(key)?, Origin::Files),
        _ => {
            let (chain, key) = self_signed(hostname)?;
            (chain, key, Origin::SelfSigned)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        Some(c) => builder.with_client_cert_verifier(c.handshake_verifier()),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain.clone(), key.clone_key())?;
    Ok((TlsAcceptor::from(Arc::new(config)), origin, chain, key))
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

/// The certificates of a PEM file; an error if it holds none.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let err = |message: String| Error::Pem {
        path: path.display().to_string(),
        message,
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect();
    let certs = certs.map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate (no CERTIFICATE block)".into()));
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
        let tls = server(&TlsConfig::default(), "mail.example.test", None).unwrap();
        assert_eq!(tls.origin, Origin::SelfSigned);
        assert_eq!(
            tls.end_point.len(),
            32,
            "ECDSA P-256 SHA-256 certificate: SHA-256"
        );
    }

    /// RFC 5929 §4.1 on real certificates (tests/fixtures/tls/README.md says how each was
    /// made): the signature's hash, SHA-256 for SHA-1, none for Ed25519.
    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        use sha2::{Digest, Sha256, Sha384, Sha512};
        let cases: [(&str, Option<SigHash>); 7] = [
            ("ecdsa-p256-sha256", Some(SigHash::Sha256)),
            ("ecdsa-p384-sha384", Some(SigHash::Sha384)),
            ("rsa-sha384", Some(SigHash::Sha384)),
            ("rsa-sha512", Some(SigHash::Sha512)),
            ("rsa-pss-sha512", Some(SigHash::Sha512)),
            ("rsa-sha1", Some(SigHash::Sha256)),
            ("ed25519", None),
        ];
        for (name, want) in cases {
            let path = format!(
                "{}/tests/fixtures/tls/{name}.pem",
                env!("CARGO_MANIFEST_DIR")
            );
            let cert = load_certs(Path::new(&path))
                .unwrap_or_else(|e| panic!("{e}"))
                .remove(0);
            let der = cert.as_ref();
            assert_eq!(signature_hash(der), want, "{name}");
            let hash = end_point_hash(&cert);
            let expected = match want {
                Some(SigHash::Sha384) => Sha384::digest(der).to_vec(),
                Some(SigHash::Sha512) => Sha512::digest(der).to_vec(),
                Some(_) => Sha256::digest(der).to_vec(),
                None => Vec::new(),
            };
            assert_eq!(hash, expected, "{name}");
        }
    }

    #[test]
    fn der_walker_refuses_what_it_cannot_bound() {
        let parsed: [(&[u8], &[u8], &[u8]); 2] = [
            (&[0x30, 0x02, 1, 2, 9], &[1, 2], &[9]),
            (&[0x30, 0x81, 0x01, 7], &[7], &[]),
        ];
        for (input, contents, rest) in parsed {
            assert_eq!(der_tlv(input, 0x30), Some((contents, rest)), "{input:?}");
        }
        let refused: [&[u8]; 6] = [
            &[0x30, 0x03, 1, 2],          // contents past the end
            &[0x30, 0x80, 1, 0, 0],       // indefinite length
            &[0x30, 0x85, 1, 1, 1, 1, 1], // length of length 5
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x31, 0x00], // another tag
            &[0x30],
        ];
        for input in refused {
            assert_eq!(der_tlv(input, 0x30), None, "{input:?}");
        }
        for junk in [
            &[][..],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0xff; 64],
        ] {
            assert_eq!(signature_hash(junk), None);
        }
    }

    #[test]
    fn missing_files_are_reported_with_path() {
        let cfg = TlsConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            legacy: None,
        };
        let err = server(&cfg, "h", None).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
