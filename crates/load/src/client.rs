//! The client side of an XMPP connection, just enough for load: TCP (from a
//! chosen loopback source address), STARTTLS or direct TLS (XEP-0368), SASL
//! PLAIN or SCRAM-SHA-256, resource binding, initial presence, XEP-0077
//! registration, and a clean close. Every step waits under a timeout and a
//! failure says in which step it happened, for the report's failure table.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::sasl::{self, Scram, ScramCache, ScramHash};
use crate::xml::{Elem, Frame, ScanError, Scanner, escape};

pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_REGISTER: &str = "jabber:iq:register";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Largest element accepted from the server: a roster or MUC history can
/// be big, but a server that sends more is broken.
const MAX_STANZA: usize = 1 << 20;
/// Read chunk per connection; small because idle runs hold thousands.
const READ_CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// RFC 6120 STARTTLS on the client port.
    Starttls,
    /// XEP-0368 direct TLS.
    Direct,
    /// No TLS at all (the server must allow it).
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Mech {
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// For servers without SCRAM-SHA-256, such as Prosody 0.12.
    #[value(name = "SCRAM-SHA-1")]
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
}

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::ScramSha256 => "SCRAM-SHA-256",
            Mech::ScramSha1 => "SCRAM-SHA-1",
            Mech::Plain => "PLAIN",
        }
    }
}

/// Where and how to connect; shared by every connection of a run.
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: TlsMode,
    pub mech: Mech,
    pub tls_config: Arc<ClientConfig>,
    /// Local addresses to connect from, in turn; empty lets the kernel
    /// choose. Several loopback sources lift the limit of ~28,000
    /// ephemeral ports per (source, destination) pair.
    pub sources: Vec<IpAddr>,
    pub next_source: AtomicUsize,
    /// Longest wait for any one answer from the server.
    pub step_timeout: Duration,
}

/// One account of the run.
pub struct User {
    pub node: String,
    pub password: String,
    pub scram: ScramCache,
}

/// The step a login was in when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Tls,
    Stream,
    Auth,
    Bind,
    Register,
    Session,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Stream => "stream",
            Step::Auth => "auth",
            Step::Bind => "bind",
            Step::Register => "register",
            Step::Session => "session",
        }
    }
}

/// Why a connection failed, with the step it was in.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{}: {}", .0.as_str(), .1)]
    Io(Step, io::Error),
    #[error("{}: no answer within {:?}", .0.as_str(), .1)]
    Timeout(Step, Duration),
    #[error("{}: server closed the stream", .0.as_str())]
    Closed(Step),
    #[error("{}: stream error <{}/>", .0.as_str(), .1)]
    StreamError(Step, String),
    #[error("{}: bad XML from the server: {}", .0.as_str(), .1)]
    Xml(Step, ScanError),
    #[error("tls: the server offers no STARTTLS")]
    NoStartTls,
    #[error("auth: the server does not offer {0} (it offers: {1})")]
    NoMechanism(&'static str, String),
    #[error("auth: SASL failure <{0}/>")]
    SaslFailure(String),
    #[error("auth: {0}")]
    Scram(#[from] sasl::SaslError),
    #[error("{}: stanza error <{}/>", .0.as_str(), .1)]
    StanzaError(Step, String),
    #[error("{}: unexpected <{}>", .0.as_str(), .1)]
    Unexpected(Step, String),
}

impl ClientError {
    /// A short key for the failure table: step and cause, no detail that
    /// varies per connection.
    pub fn reason(&self) -> String {
        match self {
            ClientError::Io(step, e) => format!("{}: {}", step.as_str(), io_kind(e)),
            ClientError::Timeout(step, _) => format!("{}: timeout", step.as_str()),
            ClientError::Closed(step) => format!("{}: closed by server", step.as_str()),
            ClientError::StreamError(step, c) => format!("{}: stream error {c}", step.as_str()),
            ClientError::Xml(step, _) => format!("{}: bad XML", step.as_str()),
            ClientError::NoStartTls => "tls: no STARTTLS offered".into(),
            ClientError::NoMechanism(m, offered) => format!("auth: {m} not offered (offered: {offered})"),
            ClientError::SaslFailure(c) => format!("auth: {c}"),
            ClientError::Scram(e) => format!("auth: {e}"),
            ClientError::StanzaError(step, c) => format!("{}: {c}", step.as_str()),
            ClientError::Unexpected(step, what) => format!("{}: unexpected <{what}>", step.as_str()),
        }
    }
}

fn io_kind(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed".into(),
        io::ErrorKind::AddrNotAvailable => "no free local port".into(),
        io::ErrorKind::InvalidData => e
            .get_ref()
            .map(|inner| inner.to_string())
            .unwrap_or_else(|| "invalid data".into()),
        _ => match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "too many open files".into(),
            _ => e.kind().to_string(),
        },
    }
}

/// Plain TCP or TLS over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while tokio-rustls owns the socket for a handshake.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "TLS handshake in progress")
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// What `<stream:features/>` offered.
#[derive(Debug, Default)]
pub struct Features {
    pub starttls: bool,
    pub mechanisms: Vec<String>,
    pub bind: bool,
    /// RFC 3921 session establishment without `<optional/>`.
    pub session_required: bool,
}

impl Features {
    fn parse(el: &Elem<'_>) -> Features {
        let mut f = Features::default();
        for child in el.children() {
            match child.name() {
                "starttls" => f.starttls = true,
                "mechanisms" => {
                    f.mechanisms = child.children().map(|m| m.text().trim().to_string()).collect();
                }
                "bind" => f.bind = true,
                "session" => f.session_required = child.child("optional").is_none(),
                _ => {}
            }
        }
        f
    }
}

/// How long each step of a login took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// TCP connect.
    pub connect: Duration,
    /// From connected to TLS established (includes STARTTLS negotiation).
    pub tls: Duration,
    /// SASL, from the stream header to `<success/>`.
    pub auth: Duration,
    /// Stream restart, bind, session and initial presence.
    pub bind: Duration,
    pub total: Duration,
}

/// A connection and its stream state.
pub struct Conn {
    pub io: Transport,
    pub scanner: Scanner,
    pub rbuf: Vec<u8>,
    /// The full JID once bound.
    pub jid: String,
    next_id: u64,
}

impl Conn {
    /// A TCP connection to the target, from the next source address.
    async fn connect_tcp_only(target: &Target) -> Result<Conn, ClientError> {
        let tcp = timeout(target.step_timeout, connect_tcp(target))
            .await
            .map_err(|_| ClientError::Timeout(Step::Connect, target.step_timeout))?
            .map_err(|e| ClientError::Io(Step::Connect, e))?;
        let _ = tcp.set_nodelay(true);
        Ok(Conn {
            io: Transport::Plain(tcp),
            scanner: Scanner::new(MAX_STANZA),
            rbuf: vec![0; READ_CHUNK],
            jid: String::new(),
            next_id: 0,
        })
    }

    /// A connection, with TLS already up if the target uses direct TLS.
    pub async fn connect(target: &Target) -> Result<Conn, ClientError> {
        let mut conn = Conn::connect_tcp_only(target).await?;
        if target.tls == TlsMode::Direct {
            conn.upgrade_tls(target).await?;
        }
        Ok(conn)
    }

    /// Runs the TLS handshake on the TCP socket (after `<proceed/>`, or
    /// at once for direct TLS).
    async fn upgrade_tls(&mut self, target: &Target) -> Result<(), ClientError> {
        let name = ServerName::try_from(target.domain.clone())
            .map_err(|e| ClientError::Io(Step::Tls, io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let connector = TlsConnector::from(target.tls_config.clone());
        // tokio-rustls consumes the TCP stream.
        let tcp = match std::mem::replace(&mut self.io, Transport::Upgrading) {
            Transport::Plain(tcp) => tcp,
            other => {
                self.io = other;
                return Err(ClientError::Unexpected(Step::Tls, "TLS on a TLS stream".into()));
            }
        };
        let tls = timeout(target.step_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout(Step::Tls, target.step_timeout))?
            .map_err(|e| ClientError::Io(Step::Tls, e))?;
        self.io = Transport::Tls(Box::new(tls));
        self.scanner.reset();
        Ok(())
    }

    /// Writes all of `data` and flushes it.
    pub async fn send(&mut self, step: Step, data: &str) -> Result<(), ClientError> {
        let io = &mut self.io;
        let write = async {
            io.write_all(data.as_bytes()).await?;
            io.flush().await
        };
        // A server that stops reading would block us forever otherwise.
        match timeout(Duration::from_secs(30), write).await {
            Ok(r) => r.map_err(|e| ClientError::Io(step, e)),
            Err(_) => Err(ClientError::Timeout(step, Duration::from_secs(30))),
        }
    }

    /// Reads once from the socket into the scanner.
    pub async fn read_some(&mut self, step: Step) -> Result<(), ClientError> {
        let n = self
            .io
            .read(&mut self.rbuf)
            .await
            .map_err(|e| ClientError::Io(step, e))?;
        if n == 0 {
            return Err(ClientError::Closed(step));
        }
        self.scanner.feed(&self.rbuf[..n]);
        Ok(())
    }

    /// Reads frames until `f` returns a result for one, within `limit`.
    /// A stream error or the end of the stream fails the step.
    pub async fn expect<T>(
        &mut self,
        step: Step,
        limit: Duration,
        mut f: impl FnMut(&Elem<'_>) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let work = async {
            loop {
                let outcome = match self.scanner.next_frame().map_err(|e| ClientError::Xml(step, e))? {
                    Some(Frame::Stanza(el)) if is_stream_error(&el) => {
                        // The first child names the condition (RFC 6120 §4.9.3).
                        let cond = el
                            .children()
                            .map(|c| c.name())
                            .find(|n| *n != "text")
                            .unwrap_or("undefined-condition")
                            .to_string();
                        Some(Some(Err(ClientError::StreamError(step, cond))))
                    }
                    Some(Frame::Stanza(el)) => Some(f(&el)),
                    Some(Frame::Header) => {
                        Some(Some(Err(ClientError::Unexpected(step, "stream:stream".into()))))
                    }
                    Some(Frame::End) => Some(Some(Err(ClientError::Closed(step)))),
                    None => None,
                };
                match outcome {
                    Some(Some(r)) => return r,
                    // A frame `f` does not care about: look at the next one.
                    Some(None) => {}
                    None => self.read_some(step).await?,
                }
            }
        };
        timeout(limit, work)
            .await
            .map_err(|_| ClientError::Timeout(step, limit))?
    }

    /// Opens a stream and waits for the server's header and features.
    pub async fn open_stream(&mut self, target: &Target, step: Step) -> Result<Features, ClientError> {
        self.scanner.reset();
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAM}' \
             to='{}' version='1.0' xml:lang='en'>",
            escape(&target.domain)
        );
        self.send(step, &header).await?;
        let limit = target.step_timeout;
        let work = async {
            loop {
                let got_header = match self.scanner.next_frame().map_err(|e| ClientError::Xml(step, e))? {
                    Some(Frame::Header) => true,
                    Some(Frame::End) => return Err(ClientError::Closed(step)),
                    Some(Frame::Stanza(el)) => {
                        return Err(ClientError::Unexpected(step, el.qname().to_string()));
                    }
                    None => false,
                };
                if got_header {
                    return Ok(());
                }
                self.read_some(step).await?;
            }
        };
        timeout(limit, work)
            .await
            .map_err(|_| ClientError::Timeout(step, limit))??;
        self.expect(step, limit, |el| match el.name() {
            "features" => Some(Ok(Features::parse(el))),
            other => Some(Err(ClientError::Unexpected(step, other.to_string()))),
        })
        .await
    }

    /// STARTTLS if the target wants it, then the stream on TLS.
    pub async fn secure(&mut self, target: &Target) -> Result<Features, ClientError> {
        let features = self.open_stream(target, Step::Stream).await?;
        if target.tls != TlsMode::Starttls {
            return Ok(features);
        }
        if !features.starttls {
            return Err(ClientError::NoStartTls);
        }
        self.send(Step::Tls, &format!("<starttls xmlns='{NS_TLS}'/>"))
            .await?;
        self.expect(Step::Tls, target.step_timeout, |el| match el.name() {
            "proceed" => Some(Ok(())),
            other => Some(Err(ClientError::Unexpected(Step::Tls, other.to_string()))),
        })
        .await?;
        self.upgrade_tls(target).await?;
        self.open_stream(target, Step::Stream).await
    }

    /// SASL with the target's mechanism.
    pub async fn authenticate(
        &mut self,
        target: &Target,
        user: &User,
        features: &Features,
    ) -> Result<(), ClientError> {
        let mech = target.mech.name();
        if !features.mechanisms.iter().any(|m| m == mech) {
            return Err(ClientError::NoMechanism(mech, features.mechanisms.join(" ")));
        }
        let limit = target.step_timeout;
        match target.mech {
            Mech::Plain => {
                let initial = sasl::plain_initial(&user.node, &user.password);
                self.send(
                    Step::Auth,
                    &format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{initial}</auth>"),
                )
                .await?;
                self.expect(Step::Auth, limit, sasl_outcome).await?;
                Ok(())
            }
            Mech::ScramSha256 | Mech::ScramSha1 => {
                let hash = if target.mech == Mech::ScramSha1 {
                    ScramHash::Sha1
                } else {
                    ScramHash::Sha256
                };
                let (mut scram, first) = Scram::start(hash, &user.node);
                self.send(
                    Step::Auth,
                    &format!("<auth xmlns='{NS_SASL}' mechanism='{mech}'>{first}</auth>"),
                )
                .await?;
                let challenge = self
                    .expect(Step::Auth, limit, |el| match el.name() {
                        "challenge" => Some(decode_b64(&el.text())),
                        _ => sasl_outcome(el)
                            .map(|r| r.and(Err(ClientError::Unexpected(Step::Auth, "success".into())))),
                    })
                    .await?;
                let response = scram.respond(&challenge, &user.password, &user.scram)?;
                self.send(
                    Step::Auth,
                    &format!("<response xmlns='{NS_SASL}'>{response}</response>"),
                )
                .await?;
                let server_final = self.expect(Step::Auth, limit, sasl_outcome).await?;
                scram.verify(&server_final)?;
                Ok(())
            }
        }
    }

    /// A new id for a stanza of ours.
    pub fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// Binds `resource` (RFC 6120 §7), establishes a legacy session if the
    /// server insists, and records the full JID.
    pub async fn bind(
        &mut self,
        target: &Target,
        features: &Features,
        resource: &str,
    ) -> Result<(), ClientError> {
        if !features.bind {
            return Err(ClientError::Unexpected(
                Step::Bind,
                "features without bind".into(),
            ));
        }
        let id = self.id("bind");
        self.send(
            Step::Bind,
            &format!(
                "<iq type='set' id='{id}'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
                escape(resource)
            ),
        )
        .await?;
        let jid = self
            .expect(Step::Bind, target.step_timeout, |el| {
                iq_response(el, &id, Step::Bind).map(|r| {
                    r.and_then(|el| {
                        el.child("bind")
                            .and_then(|b| b.child("jid"))
                            .map(|j| j.text().into_owned())
                            .ok_or_else(|| ClientError::Unexpected(Step::Bind, "result without jid".into()))
                    })
                })
            })
            .await?;
        self.jid = jid;
        if features.session_required {
            let id = self.id("sess");
            self.send(
                Step::Bind,
                &format!("<iq type='set' id='{id}'><session xmlns='{NS_SESSION}'/></iq>"),
            )
            .await?;
            self.expect(Step::Bind, target.step_timeout, |el| {
                iq_response(el, &id, Step::Bind).map(|r| r.map(|_| ()))
            })
            .await?;
        }
        Ok(())
    }

    /// Connect, secure, authenticate, bind, send initial presence.
    pub async fn login(target: &Target, user: &User, resource: &str) -> Result<(Conn, Timings), ClientError> {
        let start = Instant::now();
        let mut conn = Conn::connect_tcp_only(target).await?;
        let connected = start.elapsed();
        if target.tls == TlsMode::Direct {
            conn.upgrade_tls(target).await?;
        }
        let features = conn.secure(target).await?;
        let secured = start.elapsed();
        conn.authenticate(target, user, &features).await?;
        let authed = start.elapsed();
        let features = conn.open_stream(target, Step::Bind).await?;
        conn.bind(target, &features, resource).await?;
        conn.send(Step::Bind, "<presence/>").await?;
        let total = start.elapsed();
        let timings = Timings {
            connect: connected,
            tls: secured - connected,
            auth: authed - secured,
            bind: total - authed,
            total,
        };
        Ok((conn, timings))
    }

    /// Creates the account with XEP-0077 before authenticating. Returns
    /// `false` if it existed already (`<conflict/>`).
    pub async fn register(target: &Target, user: &User) -> Result<bool, ClientError> {
        let mut conn = Conn::connect(target).await?;
        conn.secure(target).await?;
        let id = conn.id("reg");
        conn.send(
            Step::Register,
            &format!(
                "<iq type='set' id='{id}' to='{}'><query xmlns='{NS_REGISTER}'><username>{}</username>\
                 <password>{}</password></query></iq>",
                escape(&target.domain),
                escape(&user.node),
                escape(&user.password)
            ),
        )
        .await?;
        let created = conn
            .expect(Step::Register, target.step_timeout, |el| {
                match iq_response(el, &id, Step::Register) {
                    Some(Err(ClientError::StanzaError(_, c))) if c == "conflict" => Some(Ok(false)),
                    other => other.map(|r| r.map(|_| true)),
                }
            })
            .await?;
        conn.close(target.step_timeout).await;
        Ok(created)
    }

    /// Ends the stream (RFC 6120 §4.4): our `</stream:stream>`, then the
    /// server's or EOF, then the TCP close; bounded by `limit`.
    pub async fn close(mut self, limit: Duration) {
        let _ = timeout(limit, async {
            if self.send(Step::Session, "</stream:stream>").await.is_err() {
                return;
            }
            loop {
                loop {
                    match self.scanner.next_frame() {
                        Ok(Some(Frame::End)) | Err(_) => return,
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                    }
                }
                if self.read_some(Step::Session).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let _ = timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

async fn connect_tcp(target: &Target) -> io::Result<TcpStream> {
    if target.sources.is_empty() {
        return TcpStream::connect(target.addr).await;
    }
    let i = target.next_source.fetch_add(1, Ordering::Relaxed) % target.sources.len();
    let source = target.sources[i];
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target.addr).await
}

/// `<stream:error>`, whatever prefix the server gave the stream namespace:
/// a top-level `error` is never a stanza.
fn is_stream_error(el: &Elem<'_>) -> bool {
    el.name() == "error"
}

/// `<success/>` (its additional data, decoded) or `<failure/>`.
fn sasl_outcome(el: &Elem<'_>) -> Option<Result<String, ClientError>> {
    match el.name() {
        "success" => Some(decode_b64(el.text().trim())),
        "failure" => {
            let cond = el
                .children()
                .map(|c| c.name())
                .find(|n| *n != "text")
                .unwrap_or("failure")
                .to_string();
            Some(Err(ClientError::SaslFailure(cond)))
        }
        other => Some(Err(ClientError::Unexpected(Step::Auth, other.to_string()))),
    }
}

fn decode_b64(text: &str) -> Result<String, ClientError> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(String::new());
    }
    B64.decode(text)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ClientError::Unexpected(Step::Auth, "non-base64 SASL data".into()))
}

/// The answer to our IQ `id`: the result element, or its error condition.
/// Other stanzas (a presence or message arriving early) are skipped.
pub fn iq_response<'a>(el: &Elem<'a>, id: &str, step: Step) -> Option<Result<Elem<'a>, ClientError>> {
    if el.name() != "iq" || el.attr("id").as_deref() != Some(id) {
        return None;
    }
    match el.attr("type").as_deref() {
        Some("result") => Some(Ok(*el)),
        Some("error") => Some(Err(ClientError::StanzaError(step, stanza_error_condition(el)))),
        _ => None,
    }
}

/// The defined condition of a stanza's `<error/>`.
pub fn stanza_error_condition(el: &Elem<'_>) -> String {
    el.child("error")
        .and_then(|e| e.children().map(|c| c.name()).find(|n| *n != "text"))
        .unwrap_or("undefined-condition")
        .to_string()
}

/// The reply to an IQ get/set from the server: a result for XEP-0199
/// pings (so the server keeps an idle session), service-unavailable for
/// anything else (RFC 6120 §8.2.3 requires an answer).
pub fn answer_iq(el: &Elem<'_>) -> Option<String> {
    if el.name() != "iq" || !matches!(el.attr("type").as_deref(), Some("get" | "set")) {
        return None;
    }
    let id = el.attr("id").unwrap_or_default();
    let to = el
        .attr("from")
        .map(|f| format!(" to='{}'", escape(&f)))
        .unwrap_or_default();
    let id = escape(&id);
    if el.child("ping").is_some() {
        Some(format!("<iq type='result' id='{id}'{to}/>"))
    } else {
        Some(format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'>\
             <service-unavailable xmlns='{NS_STANZAS}'/></error></iq>"
        ))
    }
}
