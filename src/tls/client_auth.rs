//! TLS client certificates for SASL EXTERNAL (RFC 4422 appendix A), from `[auth.external]`.
//!
//! The listeners *request* a certificate (the CertificateRequest names the CA) but never
//! require one: a client without a certificate, or with one from another CA, completes the
//! handshake as before. The handshake checks only that the client holds the key of the
//! certificate it sent (the CertificateVerify signature); whether the certificate chains to
//! the configured CA, is in its validity period by the gateway's clock and is not revoked is
//! decided afterwards, once per TLS session, by [`ClientAuth::check`] with webpki. Only a
//! certificate that chains to the CA reaches the SASL layer; one that chains but is expired,
//! not valid yet or revoked reaches it with the reason it cannot be used, so that EXTERNAL is
//! refused with that reason rather than silently missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DistinguishedName, RootCertStore, SignatureScheme};

use super::Error;
use crate::config::{CertIdentity, ExternalConfig};
use crate::sasl::ClientCertificate;

/// Why a certificate that chains to the CA cannot be used now.
pub const EXPIRED: &str = "client certificate expired";
/// See [`EXPIRED`].
pub const NOT_YET_VALID: &str = "client certificate not valid yet";
/// See [`EXPIRED`].
pub const REVOKED: &str = "client certificate revoked";

/// The CA, the CRLs and the identity rule of `[auth.external]`.
pub struct ClientAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    identity: CertIdentity,
    map: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("identity", &self.identity)
            .field("map", &self.map.len())
            .finish()
    }
}

impl ClientAuth {
    /// Reads the CA file and the CRL file (blocking).
    pub fn load(cfg: &ExternalConfig) -> Result<ClientAuth, Error> {
        let mut roots = RootCertStore::empty();
        for cert in super::load_certs(&cfg.ca_file)? {
            roots.add(cert).map_err(|e| Error::Pem {
                path: cfg.ca_file.display().to_string(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            // A CRL covers the certificates of its issuer; those of an issuer with no CRL in
            // the file are not checked (rather than all refused).
            .allow_unknown_revocation_status()
            .allow_unauthenticated();
        if let Some(path) = &cfg.crl_file {
            builder = builder.with_crls(load_crls(path)?);
        }
        let verifier = builder.build().map_err(|e| Error::Pem {
            path: cfg.ca_file.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(ClientAuth {
            verifier,
            identity: cfg.identity,
            map: cfg.map.clone(),
        })
    }

    /// The verifier the handshake uses: asks for a certificate, never requires one, and
    /// checks only the client's proof that it holds the certificate's key.
    pub(super) fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(RequestCert(self.verifier.clone()))
    }

    /// Judges the certificate chain a client presented (`chain[0]` is its own), at `now` by
    /// the gateway's clock: `None` when there is none or it does not chain to the CA (EXTERNAL
    /// is then not offered); otherwise its subject, fingerprint and user, or why it cannot
    /// be used.
    pub fn check(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Option<ClientCertificate> {
        let (leaf, intermediates) = chain.split_first()?;
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
            tracing::info!("client certificate cannot be parsed; EXTERNAL not offered");
            return None;
        };
        let verify = |at: UnixTime| self.verifier.verify_client_cert(leaf, intermediates, at);
        let at = |secs: i64| {
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.max(0) as u64))
        };
        let now_unix = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let validity = parsed.validity();
        let usable = match verify(now_unix) {
            Ok(_) => Ok(()),
            Err(rustls::Error::InvalidCertificate(e)) => match e {
                CertificateError::Revoked => Err(REVOKED),
                // webpki looks at the dates before the issuer: ask again at a moment inside
                // the certificate's validity to know whether it chains to the CA at all.
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
                    if verify(at(validity.not_after.timestamp())).is_ok() =>
                {
                    Err(EXPIRED)
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
                    if verify(at(validity.not_before.timestamp())).is_ok() =>
                {
                    Err(NOT_YET_VALID)
                }
                other => return not_ours(&other.to_string()),
            },
            Err(other) => return not_ours(&other.to_string()),
        };
        let subject = parsed.subject().to_string();
        let sha256 = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(leaf.as_ref()))
        };
        let identity = identity(&parsed, self.identity);
        let user = match (usable, &identity) {
            (Err(why), _) => Err(why),
            (Ok(()), None) => Err(match self.identity {
                CertIdentity::Cn => "client certificate has no commonName",
                CertIdentity::SanEmail => "client certificate has no rfc822Name subjectAltName",
                CertIdentity::SanDns => "client certificate has no dNSName subjectAltName",
            }),
            (Ok(()), Some(id)) => Ok(self
                .map
                .get(&id.to_lowercase())
                .cloned()
                .unwrap_or_else(|| id.clone())),
        };
        Some(ClientCertificate {
            subject,
            sha256,
            identity,
            user,
        })
    }
}

/// A certificate that does not chain to the CA: logged, and EXTERNAL is not offered.
fn not_ours(why: &str) -> Option<ClientCertificate> {
    tracing::info!(
        "client certificate not accepted by [auth.external] ({why}); EXTERNAL not offered"
    );
    None
}

/// The identity `kind` names in the leaf certificate: the first commonName, rfc822Name or
/// dNSName.
fn identity(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    kind: CertIdentity,
) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let san = |pick: fn(&GeneralName<'_>) -> Option<String>| {
        let ext = cert.subject_alternative_name().ok()??;
        ext.value.general_names.iter().find_map(pick)
    };
    let found = match kind {
        CertIdentity::Cn => cert
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().map(str::to_string)),
        CertIdentity::SanEmail => san(|g| match g {
            GeneralName::RFC822Name(s) => Some(s.to_string()),
            _ => None,
        }),
        CertIdentity::SanDns => san(|g| match g {
            GeneralName::DNSName(s) => Some(s.to_string()),
            _ => None,
        }),
    };
    found.filter(|s| !s.is_empty() && s.len() <= crate::auth::MAX_USER_LEN)
}

/// The CRLs of a PEM file, or of a DER file (one CRL) when it holds no PEM block.
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let err = |message: String| Error::Pem {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let pem: Result<Vec<_>, _> = CertificateRevocationListDer::pem_slice_iter(&bytes).collect();
    let pem = pem.map_err(|e| err(e.to_string()))?;
    if !pem.is_empty() {
        return Ok(pem);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(err(
        "holds no CRL (no X509 CRL PEM block, and not DER)".into()
    ))
}

/// The handshake's verifier: see the module docs.
#[derive(Debug)]
struct RequestCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for RequestCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged after the handshake by ClientAuth::check (the gateway's clock, and a
        // certificate from another CA must not end the session).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
