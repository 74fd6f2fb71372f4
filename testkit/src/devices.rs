//! Client certificates for SASL EXTERNAL tests: a device CA made with rcgen, the certificates
//! it issues (CN, serial and expiry chosen by the test), and its CRL.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
    date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA that issues device certificates.
pub struct DeviceCa {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A device's certificate and key.
pub struct Device {
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS #8).
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl DeviceCa {
    /// A fresh CA called `name`.
    pub fn new(name: &str) -> DeviceCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        DeviceCa { params, key, pem }
    }

    /// A client certificate with commonName `cn` and serial `serial`, valid from 2020 until
    /// 1 January of `until`.
    pub fn issue(&self, cn: &str, serial: u64, until: i32) -> Device {
        let params = CertificateParams::new(Vec::<String>::new()).expect("params");
        self.sign(
            params,
            cn,
            ExtendedKeyUsagePurpose::ClientAuth,
            serial,
            until,
        )
    }

    /// A server certificate for the DNS name `host`, valid from 2020 until 2099 (a private
    /// Redis's, for `rediss://`).
    pub fn issue_server(&self, host: &str, serial: u64) -> Device {
        let params = CertificateParams::new(vec![host.to_string()]).expect("params");
        self.sign(
            params,
            host,
            ExtendedKeyUsagePurpose::ServerAuth,
            serial,
            2099,
        )
    }

    /// Signs `params` with commonName `cn`, one extended key usage and serial `serial`, valid
    /// from 2020 until 1 January of `until`, for a fresh key.
    fn sign(
        &self,
        mut params: CertificateParams,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
        serial: u64,
        until: i32,
    ) -> Device {
        let key = KeyPair::generate().expect("key");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        Device {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// The CA's CRL (PEM) revoking the certificates with these serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|n| RevokedCertParams {
                    serial_number: SerialNumber::from(*n),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(&issuer).expect("CRL").pem().expect("PEM")
    }
}

impl Device {
    /// Writes `<name>.pem` and `<name>.key` into `dir` (for curl and swaks); returns both.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// The chain and key for a rustls client.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::try_from(self.key_der.clone()).expect("PKCS #8 key");
        (vec![self.der.clone()], key)
    }
}
