//! TLS 1.0 and 1.1 for the networks that still need them (`[tls] legacy_networks`): an
//! OpenSSL acceptor with the same certificate as rustls, allowing the old versions and the
//! configured cipher string. rustls does not speak TLS below 1.2 at all, which is right for
//! everyone else; this acceptor exists only so that a device that cannot be upgraded need not
//! send its password in clear text. Its sessions are marked legacy, so every login on them is
//! audited as class `insecure` and the migration report lists the devices still on old TLS.

use std::net::IpAddr;
use std::pin::Pin;

use ipnet::IpNet;
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslOptions, SslRef, SslVersion};
use openssl::x509::X509;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use super::{Error, TlsInfo};
use crate::config::LegacyTls;

/// The OpenSSL acceptor for the legacy networks.
pub struct Acceptor {
    acceptor: SslAcceptor,
    networks: Vec<IpNet>,
    end_point: Vec<u8>,
}

impl Acceptor {
    /// An acceptor serving `chain` with `key` to `cfg.networks`, from `cfg.min_version` up,
    /// with `cfg.ciphers` below TLS 1.3; `end_point` is the certificate's
    /// `tls-server-end-point` hash.
    pub fn new(
        cfg: &LegacyTls,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        end_point: Vec<u8>,
    ) -> Result<Acceptor, Error> {
        let err = |e: openssl::error::ErrorStack| Error::Legacy(e.to_string());
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(err)?;
        let min = if cfg.min_version <= 10 {
            SslVersion::TLS1
        } else {
            SslVersion::TLS1_1
        };
        // The Mozilla profile forbids TLS 1.0 and 1.1 by option as well as by minimum.
        b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
        b.set_min_proto_version(Some(min)).map_err(err)?;
        b.set_cipher_list(&cfg.ciphers).map_err(|e| {
            Error::Legacy(format!(
                "tls.legacy_ciphers {:?} selects no cipher: {e}",
                cfg.ciphers
            ))
        })?;
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Legacy("no certificate".into()))?;
        let leaf = X509::from_der(leaf).map_err(err)?;
        b.set_certificate(&leaf).map_err(err)?;
        for extra in &chain[1..] {
            b.add_extra_chain_cert(X509::from_der(extra).map_err(err)?)
                .map_err(err)?;
        }
        let key = PKey::private_key_from_der(key.secret_der()).map_err(err)?;
        b.set_private_key(&key).map_err(err)?;
        b.check_private_key().map_err(err)?;
        Ok(Acceptor {
            acceptor: b.build(),
            networks: cfg.networks.clone(),
            end_point,
        })
    }

    /// Whether a client at `ip` gets this acceptor.
    pub fn covers(&self, ip: IpAddr) -> bool {
        crate::config::in_networks(&self.networks, ip)
    }

    /// Runs the handshake on `tcp`; the stream and what the session knows of it.
    pub async fn accept<S>(&self, tcp: S) -> Result<(SslStream<S>, TlsInfo), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = Ssl::new(self.acceptor.context()).map_err(|e| e.to_string())?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        Pin::new(&mut stream)
            .accept()
            .await
            .map_err(|e| e.to_string())?;
        let info = info(stream.ssl(), &self.end_point);
        Ok((stream, info))
    }
}

/// What the session knows of an OpenSSL handshake.
fn info(ssl: &SslRef, end_point: &[u8]) -> TlsInfo {
    let version = ssl.version2();
    let name = match version {
        Some(SslVersion::TLS1) => "TLSv1.0",
        Some(SslVersion::TLS1_1) => "TLSv1.1",
        Some(SslVersion::TLS1_2) => "TLSv1.2",
        Some(SslVersion::TLS1_3) => "TLSv1.3",
        _ => "TLS",
    };
    let cipher = ssl
        .current_cipher()
        .map(|c| c.standard_name().unwrap_or(c.name()).to_string())
        .unwrap_or_else(|| "unknown".into());
    // RFC 9266's exporter binding is defined for TLS 1.3 (and 1.2 with extended master
    // secret, which cannot be told here): offered on TLS 1.3 only.
    let tls_exporter = (version == Some(SslVersion::TLS1_3))
        .then(|| {
            let mut out = vec![0u8; 32];
            ssl.export_keying_material(&mut out, "EXPORTER-Channel-Binding", None)
                .ok()
                .map(|()| out)
        })
        .flatten();
    TlsInfo {
        description: format!("{name} {cipher}"),
        legacy: matches!(version, Some(SslVersion::TLS1 | SslVersion::TLS1_1)) || version.is_none(),
        channel_binding: crate::sasl::ChannelBinding {
            tls_exporter,
            tls_server_end_point: (!end_point.is_empty()).then(|| end_point.to_vec()),
        },
        client_cert: None,
    }
}
