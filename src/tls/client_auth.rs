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
            map: cfg
                .map
                .iter()
                .map(|(identity, user)| (identity.to_lowercase(), user.clone()))
                .collect(),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, RevokedCertParams,
        SerialNumber, date_time_ymd,
    };

    use super::*;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("CA").pem();
        Ca { params, key, pem }
    }

    /// A device certificate from `ca`: CN `cn` (if any), SAN rfc822Name `email`, serial
    /// `serial`, valid until the start of `until` (a year).
    fn leaf(
        ca: &Ca,
        cn: Option<&str>,
        email: &str,
        serial: u64,
        until: i32,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().expect("ia5"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        params.signed_by(&key, &issuer).expect("leaf").der().clone()
    }

    fn crl(ca: &Ca, revoked: u64) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2024, 2, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(revoked),
                revocation_time: date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        params.signed_by(&issuer).expect("CRL").pem().expect("pem")
    }

    fn year(y: u64) -> SystemTime {
        // Close enough to the middle of year `y` for these tests.
        SystemTime::UNIX_EPOCH + Duration::from_secs((y - 1970) * 365 * 86_400 + 200 * 86_400)
    }

    fn load(
        dir: &Path,
        ca: &Ca,
        identity: CertIdentity,
        map: &[(&str, &str)],
        crl: Option<&str>,
    ) -> ClientAuth {
        std::fs::write(dir.join("ca.pem"), &ca.pem).expect("write");
        let crl_file = crl.map(|text| {
            let path = dir.join("crl.pem");
            std::fs::write(&path, text).expect("write");
            path
        });
        let cfg = ExternalConfig {
            ca_file: dir.join("ca.pem"),
            identity,
            map: map
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            crl_file,
        };
        ClientAuth::load(&cfg).expect("loads")
    }

    fn user(
        auth: &ClientAuth,
        cert: CertificateDer<'static>,
        at: u64,
    ) -> Option<Result<String, &'static str>> {
        auth.check(&[cert], year(at)).map(|c| c.user)
    }

    #[test]
    fn certificates_are_judged_by_ca_dates_and_crl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let devices = ca("devices CA");
        let other = ca("someone else's CA");
        let auth = load(
            dir.path(),
            &devices,
            CertIdentity::Cn,
            &[("Scanner-2", "office")],
            Some(&crl(&devices, 66)),
        );
        let printer = leaf(&devices, Some("printer"), "printer@example.test", 1, 2030);
        let found = auth
            .check(std::slice::from_ref(&printer), year(2025))
            .expect("chains");
        assert_eq!(found.user, Ok("printer".to_string()));
        assert_eq!(found.identity.as_deref(), Some("printer"));
        assert!(found.subject.contains("CN=printer"), "{}", found.subject);
        {
            use sha2::{Digest, Sha256};
            assert_eq!(found.sha256, hex::encode(Sha256::digest(printer.as_ref())));
        }
        // The map, compared ignoring case.
        let scanner = leaf(&devices, Some("scanner-2"), "s@example.test", 2, 2030);
        assert_eq!(user(&auth, scanner, 2025), Some(Ok("office".into())));
        // Dates are the gateway's clock's, not the machine's.
        assert_eq!(user(&auth, printer.clone(), 2031), Some(Err(EXPIRED)));
        assert_eq!(user(&auth, printer.clone(), 2019), Some(Err(NOT_YET_VALID)));
        let expired = leaf(&devices, Some("printer"), "p@example.test", 3, 2021);
        assert_eq!(user(&auth, expired, 2025), Some(Err(EXPIRED)));
        // Revoked by the CRL.
        let revoked = leaf(&devices, Some("printer"), "p@example.test", 66, 2030);
        assert_eq!(user(&auth, revoked, 2025), Some(Err(REVOKED)));
        // Another CA's certificates never reach EXTERNAL, expired or not.
        assert_eq!(
            user(
                &auth,
                leaf(&other, Some("printer"), "p@example.test", 1, 2030),
                2025
            ),
            None
        );
        assert_eq!(
            user(
                &auth,
                leaf(&other, Some("printer"), "p@example.test", 1, 2021),
                2025
            ),
            None
        );
        assert!(auth.check(&[], year(2025)).is_none());
        assert!(
            auth.check(&[CertificateDer::from(vec![0x30, 0x00])], year(2025))
                .is_none()
        );
        // A certificate without the configured identity.
        let nameless = leaf(&devices, None, "p@example.test", 4, 2030);
        assert_eq!(
            user(&auth, nameless, 2025),
            Some(Err("client certificate has no commonName"))
        );
    }

    #[test]
    fn identities_from_the_subject_alternative_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let devices = ca("devices CA");
        let auth = load(dir.path(), &devices, CertIdentity::SanEmail, &[], None);
        let cert = leaf(&devices, Some("printer"), "Printer@example.test", 1, 2030);
        assert_eq!(
            user(&auth, cert.clone(), 2025),
            Some(Ok("Printer@example.test".into()))
        );
        let auth = load(dir.path(), &devices, CertIdentity::SanDns, &[], None);
        assert_eq!(
            user(&auth, cert, 2025),
            Some(Err("client certificate has no dNSName subjectAltName"))
        );
    }

    #[test]
    fn the_handshake_asks_but_never_requires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = load(dir.path(), &ca("devices CA"), CertIdentity::Cn, &[], None);
        let v = auth.handshake_verifier();
        assert!(v.offer_client_auth());
        assert!(!v.client_auth_mandatory());
        assert_eq!(
            v.root_hint_subjects().len(),
            1,
            "the CA is named in the request"
        );
    }

    #[test]
    fn unreadable_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca("devices CA").pem).expect("write");
        std::fs::write(dir.path().join("crl.pem"), "not a CRL").expect("write");
        let mut cfg = ExternalConfig {
            ca_file: dir.path().join("missing.pem"),
            identity: CertIdentity::Cn,
            map: BTreeMap::new(),
            crl_file: None,
        };
        let err = ClientAuth::load(&cfg).expect_err("no CA").to_string();
        assert!(err.contains("missing.pem"), "{err}");
        cfg.ca_file = dir.path().join("ca.pem");
        cfg.crl_file = Some(dir.path().join("crl.pem"));
        let err = ClientAuth::load(&cfg).expect_err("bad CRL").to_string();
        assert!(
            err.contains("crl.pem") && err.contains("holds no CRL"),
            "{err}"
        );
    }
}
