//! A tokio-xmpp [`ServerConnector`] for the test server's STARTTLS port.
//!
//! tokio-xmpp's own `StartTlsServerConnector` builds its rustls config from
//! webpki-roots or the platform store (or `SSL_CERT_FILE`, process-wide), and
//! its `starttls` feature pulls in a DNS resolver. [`StartTls`] instead dials a
//! fixed address and trusts exactly one certificate, the server's self-signed
//! one, with the name still checked. Everything after the TLS handshake (stream
//! restart, SASL, bind, stanzas) is tokio-xmpp's own code; the STARTTLS
//! exchange uses its stream types and mirrors `connect::starttls`, including
//! the RFC 9266 `tls-exporter` channel binding on TLS 1.3.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sasl::common::ChannelBinding;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::error::{Error, ProtocolError};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::starttls::{Nonza, Request};
use tokio_xmpp::xmlstream::{
    PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream, XmppStreamElement, initiate_stream,
};

/// Connects to one address, negotiates STARTTLS, trusts one certificate.
#[derive(Clone, Debug)]
pub struct StartTls {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl StartTls {
    /// Trusts the PEM certificate(s) in `cert` (panics if there are none).
    pub fn trusting(addr: SocketAddr, cert: &Path) -> StartTls {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display())) {
            let der = der.unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
            roots
                .add(der)
                .unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
        }
        assert!(!roots.is_empty(), "{}: no certificate", cert.display());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        StartTls {
            addr,
            tls: Arc::new(tls),
        }
    }
}

impl ServerConnector for StartTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), Error> {
        let domain = jid.domain().as_str();
        let header = || StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };

        let tcp = BufStream::new(TcpStream::connect(self.addr).await?);
        let (features, stream) = initiate_stream(tcp, ns, header(), timeouts)
            .await?
            .recv_features()
            .await?;
        if !features.can_starttls() {
            return Err(ProtocolError::NoTls.into());
        }
        let tcp = starttls(stream).await?;

        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = TlsConnector::from(self.tls.clone()).connect(name, tcp).await?;
        let channel_binding = tls_exporter(&tls)?;
        let stream = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((stream, channel_binding))
    }
}

/// Sends `<starttls/>`, waits for `<proceed/>` and hands back the bare socket.
async fn starttls(mut stream: XmppStream<BufStream<TcpStream>>) -> Result<TcpStream, Error> {
    stream
        .send(&XmppStreamElement::Starttls(Nonza::Request(Request)))
        .await?;
    loop {
        match stream
            .next()
            .await
            .map(|item| item.and_then(|element| element.into_read_error()))
        {
            Some(Ok(XmppStreamElement::Starttls(Nonza::Proceed(_)))) => break,
            Some(Ok(other)) => {
                let what = format!("expected <proceed/> after <starttls/>, got {other:?}");
                return Err(io::Error::new(io::ErrorKind::InvalidData, what).into());
            }
            Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(e.into()),
            Some(Err(ReadError::ParseError(e))) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e).into());
            }
            None | Some(Err(ReadError::StreamFooterReceived)) => return Err(Error::Disconnected),
        }
    }
    Ok(stream.into_inner().into_inner())
}

/// RFC 9266 channel binding data on TLS 1.3, as tokio-xmpp computes it.
fn tls_exporter(tls: &TlsStream<TcpStream>) -> Result<ChannelBinding, Error> {
    let (_, connection) = tls.get_ref();
    if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Ok(ChannelBinding::None);
    }
    let data = connection
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(ChannelBinding::TlsExporter(data))
}
