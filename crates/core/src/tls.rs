//! TLS for every listener: a rustls acceptor that SIGHUP can swap for one
//! with renewed certificates, and the channel-binding data SCRAM-PLUS needs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::sasl::ChannelBindings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("no private key in {0}")]
    NoKey(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate in use, with what channel binding derives from it.
struct Loaded {
    acceptor: TlsAcceptor,
    /// RFC 5929 tls-server-end-point: SHA-256 of the leaf certificate
    /// (our generated certificates are signed with ECDSA-SHA256).
    end_point_hash: Vec<u8>,
}

#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<Loaded>>>,
}

impl Tls {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Self, TlsError> {
        let loaded = load(cert_pem, key_pem, what)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(loaded))),
        })
    }

    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (c, k) = read_pair(cert, key)?;
        Self::from_pem(&c, &k, &cert.display().to_string())
    }

    /// Replaces the certificate (SIGHUP); connections already open keep
    /// the old one.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let (c, k) = read_pair(cert, key)?;
        let loaded = load(&c, &k, &cert.display().to_string())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    fn get(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.get().acceptor.clone()
    }

    /// Channel-binding data for a finished handshake.
    pub fn channel_bindings(&self, conn: &rustls::ServerConnection) -> ChannelBindings {
        let mut exporter = vec![0u8; 32];
        // RFC 9266 §2: label "EXPORTER-Channel-Binding", no context; only
        // offered on TLS 1.3, since on TLS 1.2 it is safe only with extended
        // master secret, which rustls does not report.
        let tls13 = conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        let tls_exporter = (tls13
            && conn
                .export_keying_material(&mut exporter, b"EXPORTER-Channel-Binding", None)
                .is_ok())
        .then_some(exporter);
        ChannelBindings {
            tls_exporter,
            tls_server_end_point: Some(self.get().end_point_hash.clone()),
        }
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn load(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Loaded, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .filter_map(Result::ok)
        .collect();
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::NoCertificate(what.to_string()))?;
    let end_point_hash = Sha256::digest(leaf.as_ref()).to_vec();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey(what.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // XEP-0368: direct TLS clients may announce "xmpp-client".
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point_hash,
    })
}
