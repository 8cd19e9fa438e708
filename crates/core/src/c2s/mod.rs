//! Client-to-server connections (RFC 6120): stream negotiation (STARTTLS,
//! SASL, resource binding), then the session loop that feeds the router and
//! drains the session's outbox.
//!
//! One task per connection owns the socket: it reads and parses, and in
//! the same `select!` writes what the router queued, so nothing else ever
//! touches the socket.

pub mod bosh;
mod sasl_exchange;
pub mod stream_management;
mod transport;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::hooks::{Event, IqRequest, IqType};
use crate::sasl::ChannelBindings;
use crate::server::Server;
use crate::session::{Outbound, Session};
use crate::stanza::{self, StanzaError};
use crate::stream::{self, Limits, StreamError, StreamEvent, StreamHeader, StreamParser, ns};
use stream_management::{Detached, SmState, TakeoverRequest};
pub use transport::Transport;

/// Outbox depth per session: enough for bursts (a roster of pushes, a MUC
/// history); a client that lets it fill is not reading and is dropped.
const OUTBOX_DEPTH: usize = 1024;
/// Longest a single write may block on a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Plaintext read per call: small, because every idle connection keeps it
/// (TLS records are reassembled by rustls in its own buffer anyway).
const READ_BUFFER: usize = 4 * 1024;
/// Queued stanzas written at once.
const WRITE_BATCH_STANZAS: usize = 64;

/// How a connection ended, for the log.
#[derive(Debug)]
enum End {
    /// The peer closed the stream.
    Closed,
    /// The socket closed without the stream's end: a resumable session
    /// hibernates.
    Lost,
    /// A new connection resumed this session (XEP-0198).
    TakenOver,
    /// We closed it with a stream error (already sent).
    Error(StreamError),
    Io(std::io::Error),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

/// Accepts one client connection; `direct_tls` for XEP-0368 ports.
pub async fn handle_connection(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let _ = tcp.set_nodelay(true);
    let span =
        info_span!("conn", id = %short_id(), kind = "c2s", remote = %peer, jid = tracing::field::Empty);
    async move {
        debug!(direct_tls, "connection accepted");
        let deadline = Instant::now() + Duration::from_secs(server.config.global.c2s_timeout);
        let transport = if direct_tls {
            match timeout_at(deadline, server.tls.acceptor().accept(tcp)).await {
                Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!("TLS handshake timed out");
                    return;
                }
            }
        } else {
            Transport::Plain(tcp)
        };
        serve(server, transport, peer, deadline).await;
    }
    .instrument(span)
    .await
}

/// A client stream carried by another protocol (RFC 7395 WebSocket): the
/// same negotiation, limits and session as TCP, over a byte pipe whose other
/// end does the framing.
/// `_slot` is the connection's `c2s_max_connections` permit, held until
/// the stream ends.
pub async fn handle_framed(
    server: Arc<Server>,
    pipe: tokio::io::DuplexStream,
    peer: SocketAddr,
    kind: &'static str,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let span = info_span!("conn", id = %short_id(), kind, remote = %peer, jid = tracing::field::Empty);
    async move {
        debug!("connection accepted");
        let deadline = Instant::now() + Duration::from_secs(server.config.global.c2s_timeout);
        serve(server, Transport::Framed(pipe), peer, deadline).await;
    }
    .instrument(span)
    .await
}

async fn serve(server: Arc<Server>, transport: Transport, peer: SocketAddr, deadline: Instant) {
    let mut conn = Connection::new(server, transport, peer);
    let end = conn.run(deadline).await;
    match &end {
        End::Closed => debug!("stream closed"),
        End::Lost => debug!("connection lost"),
        End::TakenOver => info!("session resumed on a new connection"),
        End::Error(e) => info!(error = %e, "stream closed with error"),
        End::Io(e) => debug!(error = %e, "connection lost"),
    }
    conn.finish().await;
}

fn short_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("{n:016x}")
}

struct Connection {
    server: Arc<Server>,
    io: Option<Transport>,
    peer: SocketAddr,
    parser: StreamParser,
    pending: std::collections::VecDeque<StreamEvent>,
    buf: Vec<u8>,
    header_sent: bool,
    stream_id: String,
    host: Option<String>,
    bindings: Option<ChannelBindings>,
    /// The authenticated user (node part), once SASL succeeded.
    user: Option<String>,
    /// The OAuth token the user logged in with (OAUTHBEARER).
    token_login: Option<crate::auth::TokenLogin>,
    session: Option<Arc<Session>>,
    outbox: Option<mpsc::Receiver<Outbound>>,
    /// XEP-0198 state once the client enabled stream management.
    sm: Option<SmState>,
    /// Where a resuming connection asks for this session (resumable only).
    takeover: Option<mpsc::Receiver<TakeoverRequest>>,
    /// The request that ended this connection by resumption elsewhere.
    handover: Option<TakeoverRequest>,
    /// After a resumption: stanzas to send again (unacknowledged) and for
    /// the first time (queued meanwhile).
    resent: Vec<Element>,
    queued: Vec<(Element, String)>,
    /// XEP-0352: the client said it is inactive; non-urgent stanzas wait.
    inactive: bool,
    held_back: Vec<(Element, String)>,
}

impl Connection {
    fn new(server: Arc<Server>, io: Transport, peer: SocketAddr) -> Self {
        let g = &server.config.global;
        let limits = Limits {
            max_stanza_bytes: g.c2s_preauth_stanza_size_limit.min(g.c2s_stanza_size_limit),
            ..Limits::default()
        };
        let bindings = match &io {
            Transport::Tls(tls) => Some(server.tls.channel_bindings(tls.get_ref().1)),
            Transport::Plain(_) | Transport::Framed(_) => None,
        };
        Self {
            server,
            io: Some(io),
            peer,
            parser: StreamParser::new(limits),
            pending: Default::default(),
            buf: vec![0; READ_BUFFER],
            header_sent: false,
            stream_id: String::new(),
            host: None,
            bindings,
            user: None,
            token_login: None,
            session: None,
            outbox: None,
            sm: None,
            takeover: None,
            handover: None,
            resent: Vec::new(),
            queued: Vec::new(),
            inactive: false,
            held_back: Vec::new(),
        }
    }

    fn io(&mut self) -> &mut Transport {
        // Invariant: `io` is only None for the instant of a TLS upgrade.
        self.io.as_mut().expect("transport present outside a TLS upgrade")
    }

    async fn write(&mut self, data: &str) -> Result<(), End> {
        let io = self.io();
        match timeout(WRITE_TIMEOUT, async {
            io.write_all(data.as_bytes()).await?;
            io.flush().await
        })
        .await
        {
            Ok(r) => r.map_err(End::Io),
            Err(_) => Err(End::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    async fn write_element(&mut self, el: &Element) -> Result<(), End> {
        let xml = stream::serialize(el);
        self.write(&xml).await
    }

    /// Sends a stream error and closes the stream (RFC 6120 §4.9.1.1); a
    /// header goes first if none was sent yet.
    async fn stream_error(&mut self, err: StreamError) -> End {
        if !self.header_sent {
            let from = self.host.clone().unwrap_or_else(|| self.default_host());
            let header = stream::response_header(ns::CLIENT, &from, None, &new_stream_id());
            let _ = self.write(&header).await;
            self.header_sent = true;
        }
        let _ = self.write(&format!("{}</stream:stream>", err.to_xml())).await;
        End::Error(err)
    }

    fn default_host(&self) -> String {
        self.server
            .config
            .hosts
            .first()
            .map(|h| h.name.clone())
            .unwrap_or_default()
    }

    /// Reads until the next stream event, or fails at `deadline`.
    async fn next_event(&mut self, deadline: Option<Instant>) -> Result<StreamEvent, End> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let mut buf = std::mem::take(&mut self.buf);
            let read = {
                let io = self.io();
                match deadline {
                    Some(d) => match timeout_at(d, io.read(&mut buf)).await {
                        Ok(r) => r,
                        Err(_) => {
                            self.buf = buf;
                            return Err(self.stream_error(StreamError::ConnectionTimeout).await);
                        }
                    },
                    None => io.read(&mut buf).await,
                }
            };
            let n = match read {
                Ok(0) => {
                    self.buf = buf;
                    return Err(End::Closed);
                }
                Ok(n) => n,
                Err(e) => {
                    self.buf = buf;
                    return Err(End::Io(e));
                }
            };
            let fed = self.feed(&buf[..n]);
            self.buf = buf;
            if let Err(e) = fed {
                return Err(self.stream_error(e).await);
            }
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), StreamError> {
        let mut out = Vec::new();
        let r = self.parser.feed(data, &mut out);
        self.pending.extend(out);
        r
    }

    async fn run(&mut self, deadline: Instant) -> End {
        match self.negotiate(deadline).await {
            Ok(()) => self.session_loop().await,
            Err(end) => end,
        }
    }

    /// Stream negotiation up to a bound resource (RFC 6120 §4.3).
    async fn negotiate(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            let header = match self.next_event(Some(deadline)).await? {
                StreamEvent::Header(h) => h,
                _ => {
                    return Err(self
                        .stream_error(StreamError::NotWellFormed("expected a stream header".into()))
                        .await);
                }
            };
            self.open_stream(&header).await?;
            let secure = self.io().is_tls();
            let require_tls = self.server.config.global.c2s_require_encryption;
            self.send_features(secure, require_tls).await?;
            match (secure || !require_tls, self.user.is_some()) {
                (false, _) => self.await_starttls(deadline).await?,
                (true, false) => self.authenticate(deadline).await?,
                (true, true) => return self.bind(deadline).await,
            }
        }
    }

    async fn open_stream(&mut self, header: &StreamHeader) -> Result<(), End> {
        if header.local_name != "stream" || header.stream_ns != ns::STREAM {
            return Err(self
                .stream_error(StreamError::InvalidNamespace(header.stream_ns.clone()))
                .await);
        }
        // RFC 6120 §4.8.2: the content namespace of a client stream.
        if header.default_ns.as_deref() != Some(ns::CLIENT) {
            let found = header.default_ns.clone().unwrap_or_default();
            return Err(self.stream_error(StreamError::InvalidNamespace(found)).await);
        }
        let to = header.to.as_deref().map(str::to_ascii_lowercase);
        match to {
            Some(ref host) if self.server.is_local_domain(host) => {
                if self.host.as_deref().is_some_and(|h| h != host) {
                    // A restarted stream must stay on the same host.
                    return Err(self.stream_error(StreamError::HostUnknown(host.clone())).await);
                }
                self.host = Some(host.clone());
            }
            Some(host) => {
                warn!(host = %host, "stream to unknown host");
                return Err(self.stream_error(StreamError::HostUnknown(host)).await);
            }
            None => {
                return Err(self
                    .stream_error(StreamError::HostUnknown("no 'to' attribute".into()))
                    .await);
            }
        }
        let host = self.host.clone().unwrap_or_default();
        self.stream_id = new_stream_id();
        let reply = stream::response_header(ns::CLIENT, &host, None, &self.stream_id);
        self.write(&reply).await?;
        self.header_sent = true;
        match header.version.as_deref() {
            Some(v)
                if v.split('.')
                    .next()
                    .and_then(|m| m.parse::<u32>().ok())
                    .unwrap_or(0)
                    >= 1 =>
            {
                Ok(())
            }
            _ => Err(self.stream_error(StreamError::UnsupportedVersion).await),
        }
    }

    fn host_ref(&self) -> &crate::server::Host {
        // Invariant: open_stream set `host` to a configured host.
        let name = self.host.as_deref().unwrap_or_default();
        self.server.host(name).expect("stream host is configured")
    }

    async fn send_features(&mut self, secure: bool, require_tls: bool) -> Result<(), End> {
        let mut features = String::from("<stream:features>");
        if !secure {
            features.push_str(&format!(
                "<starttls xmlns='{}'>{}</starttls>",
                ns::TLS,
                if require_tls { "<required/>" } else { "" }
            ));
        }
        if (secure || !require_tls) && self.user.is_none() {
            features.push_str(&format!("<mechanisms xmlns='{}'>", ns::SASL));
            for m in self.mechanisms(secure) {
                features.push_str(&format!("<mechanism>{}</mechanism>", m.name()));
            }
            features.push_str("</mechanisms>");
            if let Some(b) = &self.bindings {
                // XEP-0440: which channel-binding types we support.
                features.push_str(&format!("<sasl-channel-binding xmlns='{}'>", ns::SASL_CB));
                for t in b.types() {
                    features.push_str(&format!("<channel-binding type='{t}'/>"));
                }
                features.push_str("</sasl-channel-binding>");
            }
            if self.host_ref().config.allow_registration {
                features.push_str(&format!("<register xmlns='{}'/>", ns::REGISTER_FEATURE));
            }
        }
        if self.user.is_some() {
            features.push_str(&format!("<bind xmlns='{}'/>", ns::BIND));
            // RFC 6121 legacy session establishment, optional (RFC 3921bis).
            features.push_str(&format!("<session xmlns='{}'><optional/></session>", ns::SESSION));
            features.push_str(&format!("<sm xmlns='{}'/><csi xmlns='{}'/>", ns::SM, ns::CSI));
            let extra: Vec<String> = self
                .host_ref()
                .hooks
                .stream_features()
                .iter()
                .map(stream::serialize)
                .collect();
            for f in extra {
                features.push_str(&f);
            }
        }
        features.push_str("</stream:features>");
        self.write(&features).await
    }

    /// Offered mechanisms: PLAIN only over TLS (RFC 6120 §13.8); -PLUS only
    /// with channel-binding data; SCRAM only if the backend has keys.
    fn mechanisms(&self, secure: bool) -> Vec<crate::sasl::Mechanism> {
        use crate::sasl::Mechanism;
        let mut out = Vec::new();
        if self.host_ref().auth.supports_scram() {
            if self.bindings.as_ref().is_some_and(|b| !b.types().is_empty()) {
                out.push(Mechanism::ScramSha256Plus);
                out.push(Mechanism::ScramSha1Plus);
            }
            out.push(Mechanism::ScramSha256);
            out.push(Mechanism::ScramSha1);
        }
        // Bearer tokens, like passwords, only cross encrypted streams.
        if secure && self.host_ref().hooks.token_verifier().is_some() {
            out.push(Mechanism::OAuthBearer);
        }
        if secure {
            out.push(Mechanism::Plain);
        }
        out
    }

    /// The next top-level element during negotiation: the stream's end
    /// closes, a second header is malformed.
    async fn next_element(&mut self, deadline: Instant) -> Result<Element, End> {
        match self.next_event(Some(deadline)).await? {
            StreamEvent::Stanza(el) => Ok(el),
            StreamEvent::End => Err(End::Closed),
            StreamEvent::Header(_) => Err(self
                .stream_error(StreamError::NotWellFormed("unexpected stream header".into()))
                .await),
        }
    }

    async fn await_starttls(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            let el = self.next_element(deadline).await?;
            if el.is("starttls", ns::TLS) {
                self.write(&format!("<proceed xmlns='{}'/>", ns::TLS)).await?;
                return self.upgrade_tls(deadline).await;
            }
            if el.is("auth", ns::SASL) {
                // RFC 6120 §6.4.? encryption-required: SASL before TLS.
                self.write(&format!(
                    "<failure xmlns='{}'><encryption-required/></failure>",
                    ns::SASL
                ))
                .await?;
                continue;
            }
            return Err(self
                .stream_error(StreamError::PolicyViolation("TLS is required".into()))
                .await);
        }
    }

    async fn upgrade_tls(&mut self, deadline: Instant) -> Result<(), End> {
        let Some(Transport::Plain(tcp)) = self.io.take() else {
            return Err(End::Closed);
        };
        let tls = match timeout_at(deadline, self.server.tls.acceptor().accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(End::Io(e)),
            Err(_) => return Err(End::Io(std::io::ErrorKind::TimedOut.into())),
        };
        self.bindings = Some(self.server.tls.channel_bindings(tls.get_ref().1));
        self.io = Some(Transport::Tls(Box::new(tls)));
        self.restart_stream();
        Ok(())
    }

    fn restart_stream(&mut self) {
        let limits = self.parser_limits();
        self.parser = StreamParser::new(limits);
        self.pending.clear();
        self.header_sent = false;
    }

    fn parser_limits(&self) -> Limits {
        let g = &self.server.config.global;
        Limits {
            max_stanza_bytes: if self.user.is_some() {
                g.c2s_stanza_size_limit
            } else {
                g.c2s_preauth_stanza_size_limit.min(g.c2s_stanza_size_limit)
            },
            ..Limits::default()
        }
    }

    /// SASL (RFC 6120 §6) and, when allowed, in-band registration.
    async fn authenticate(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            let el = self.next_element(deadline).await?;
            if el.is("auth", ns::SASL) {
                if self.sasl(&el, deadline).await? {
                    self.restart_stream();
                    return Ok(());
                }
                continue;
            }
            if el.is("abort", ns::SASL) {
                self.write(&format!("<failure xmlns='{}'><aborted/></failure>", ns::SASL))
                    .await?;
                continue;
            }
            if el.is("iq", ns::CLIENT)
                && stanza::iq_payload(&el).is_some_and(|p| p.is("query", ns::REGISTER))
                && self.host_ref().config.allow_registration
            {
                self.preauth_register(el).await?;
                continue;
            }
            return Err(self.stream_error(StreamError::NotAuthorized).await);
        }
    }

    async fn preauth_register(&mut self, mut iq: Element) -> Result<(), End> {
        let host = self.host.clone().unwrap_or_default();
        stanza::remove_attr(&mut iq, "from");
        let kind = match iq.attr("type") {
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            _ => return Ok(()),
        };
        let Some(handler) = self.host_ref().hooks.iq_handler(ns::REGISTER, kind) else {
            return Ok(());
        };
        let Some(payload) = stanza::iq_payload(&iq) else {
            return Ok(());
        };
        let to = jid::Jid::new(&host).map_err(|_| End::Closed)?;
        let req = IqRequest {
            iq: &iq,
            payload,
            host: &host,
            from: None,
            to,
            session: None,
        };
        let reply = match handler.handle(&self.server, req).await {
            Ok(payload) => stanza::iq_result(&iq, payload),
            Err(err) => match stanza::error_reply(&iq, &err) {
                Some(r) => r,
                None => return Ok(()),
            },
        };
        self.write_element(&reply).await
    }

    /// Resource binding (RFC 6120 §7) and then the session is live.
    async fn bind(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            let el = self.next_element(deadline).await?;
            if el.is("resume", ns::SM) {
                if self.resume(&el).await? {
                    return Ok(());
                }
                continue;
            }
            if el.ns() == ns::SM {
                // XEP-0198 §3: enable comes after binding.
                self.write(&sm_failed("unexpected-request", None)).await?;
                continue;
            }
            let Some(bind) = el.get_child("bind", ns::BIND).filter(|_| el.is("iq", ns::CLIENT)) else {
                if el.is("iq", ns::CLIENT) && el.attr("type").is_some_and(|t| t == "get" || t == "set") {
                    // Before binding the client has no address to answer to.
                    let err = StanzaError::not_authorized();
                    if let Some(reply) = stanza::error_reply(&el, &err) {
                        self.write_element(&reply).await?;
                    }
                    continue;
                }
                return Err(self.stream_error(StreamError::NotAuthorized).await);
            };
            if el.attr("type") != Some("set") {
                if let Some(reply) = stanza::error_reply(&el, &StanzaError::bad_request()) {
                    self.write_element(&reply).await?;
                }
                continue;
            }
            let requested = bind
                .get_child("resource", ns::BIND)
                .map(|r| r.text())
                .unwrap_or_default();
            let resource = if requested.trim().is_empty() {
                generated_resource()
            } else {
                requested
            };
            let user = self.user.clone().unwrap_or_default();
            let host = self.host.clone().unwrap_or_default();
            let Some(full) = Server::full_jid(&user, &host, &resource) else {
                let err = StanzaError::bad_request().with_text("invalid resource");
                if let Some(reply) = stanza::error_reply(&el, &err) {
                    self.write_element(&reply).await?;
                }
                continue;
            };
            let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
            let session = Arc::new(Session::new(full.clone(), tx, CancellationToken::new()));
            if let Some(login) = self.token_login.clone() {
                let _ = session.token_login.set(login);
            }
            if let Some(old) = self.server.sessions.insert(session.clone()) {
                info!(jid = %full, "resource conflict: replacing the older session");
                old.close(StreamError::Conflict);
            }
            // A token or grant revoked between SASL and now closed no
            // session (there was none to find): look once more, now that
            // there is.
            let revoked = match session.token_login.get() {
                Some(login) => {
                    let now = crate::stanza::now_secs() as i64;
                    matches!(
                        self.server.stores.oauth.token(&login.token_hash, now).await,
                        Ok(None)
                    )
                }
                None => false,
            };
            if revoked {
                info!(jid = %full, "OAuth grant revoked during login: closing the session");
                session.close(StreamError::NotAuthorized);
            }
            tracing::Span::current().record("jid", tracing::field::display(&full));
            info!("session bound");
            self.server.metrics.c2s_sessions.inc();
            let mut jid_el = Element::bare("jid", ns::BIND);
            jid_el.append_text(full.to_string());
            let mut bind_el = Element::bare("bind", ns::BIND);
            bind_el.append_child(jid_el);
            let mut result = stanza::new_stanza("iq", &[("type", "result")]);
            if let Some(id) = el.attr("id") {
                stanza::set_attr(&mut result, "id", id);
            }
            result.append_child(bind_el);
            self.write_element(&result).await?;
            self.session = Some(session.clone());
            self.outbox = Some(rx);
            let host = self.server.host(&host).expect("stream host is configured");
            host.hooks
                .fire(&self.server, &Event::SessionBound { session: &session })
                .await;
            return Ok(());
        }
    }
}

fn new_stream_id() -> String {
    stanza::random_hex(12)
}

fn generated_resource() -> String {
    format!("jackdaw-{}", &new_stream_id()[..12])
}

impl Connection {
    /// The bound session: client stanzas to the router, the outbox to the
    /// socket, pings when the line goes quiet (XEP-0199 dead-peer check).
    async fn session_loop(&mut self) -> End {
        let Some(session) = self.session.clone() else {
            return End::Closed;
        };
        let Some(mut outbox) = self.outbox.take() else {
            return End::Closed;
        };
        self.parser.set_limits(self.parser_limits());
        let g = &self.server.config.global;
        let ping_interval = Duration::from_secs(g.c2s_ping_interval);
        let ping_timeout = Duration::from_secs(g.c2s_ping_timeout);
        let max_ack_delay = Duration::from_secs(g.smacks_max_ack_delay);
        let shutdown = self.server.shutdown.clone();
        let mut takeover = self.takeover.take();
        let mut last_read = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut buf = std::mem::take(&mut self.buf);
        let end = 'session: {
            if let Err(e) = self.send_resumed_backlog().await {
                break 'session e;
            }
            loop {
                while let Some(ev) = self.pending.pop_front() {
                    let handled = match ev {
                        StreamEvent::Stanza(el) if el.ns() == ns::SM => {
                            self.stream_management(&session, el).await
                        }
                        StreamEvent::Stanza(el) if el.ns() == ns::CSI => self.client_state(el).await,
                        StreamEvent::Stanza(el) => {
                            let r = self.handle_client_stanza(&session, el).await;
                            if let Some(sm) = &mut self.sm {
                                sm.handled_in = sm.handled_in.wrapping_add(1);
                            }
                            r
                        }
                        StreamEvent::End => {
                            let _ = self.write("</stream:stream>").await;
                            break 'session End::Closed;
                        }
                        StreamEvent::Header(_) => Err(self
                            .stream_error(StreamError::NotWellFormed("unexpected stream header".into()))
                            .await),
                    };
                    if let Err(end) = handled {
                        break 'session end;
                    }
                }
                // A resumable `<enable/>` just handled registered a
                // takeover channel.
                if takeover.is_none() {
                    takeover = self.takeover.take();
                }
                let wake = match ping_sent {
                    Some(sent) => sent + ping_timeout,
                    None => last_read + ping_interval,
                };
                // XEP-0198 ack overdue: the client may be asleep (push).
                let ack_overdue = self
                    .sm
                    .as_ref()
                    .filter(|sm| sm.notified_through != sm.sent_count())
                    .and_then(|sm| sm.ack_requested)
                    .map(|asked| asked + max_ack_delay);
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        // Goodbyes queued before shutdown (MUC status 332) go first.
                        self.flush_outbox(&mut outbox).await;
                        break self.stream_error(StreamError::SystemShutdown).await
                    }
                    _ = session.kill.cancelled() => {
                        break self.stream_error(StreamError::PolicyViolation("too many unread stanzas".into())).await
                    }
                    Some(request) = recv_takeover(&mut takeover) => {
                        self.handover = Some(request);
                        break End::TakenOver;
                    }
                    out = outbox.recv() => match out {
                        Some(Outbound::Stanza(el)) => {
                            // Everything already queued goes out in one write (one
                            // TLS record, one syscall) rather than one per stanza.
                            let mut batch = vec![el];
                            let mut close = None;
                            while batch.len() < WRITE_BATCH_STANZAS {
                                match outbox.try_recv() {
                                    Ok(Outbound::Stanza(more)) => batch.push(more),
                                    Ok(Outbound::Close(err)) => {
                                        close = Some(err);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            if let Err(e) = self.deliver(batch).await {
                                break e;
                            }
                            if let Some(err) = close {
                                self.flush_outbox(&mut outbox).await;
                                break self.stream_error(err).await;
                            }
                        }
                        Some(Outbound::Close(err)) => {
                            // What was queued before the close still goes out
                            // (an IQ result ahead of XEP-0077's not-authorized).
                            self.flush_outbox(&mut outbox).await;
                            break self.stream_error(err).await
                        }
                        None => break End::Closed,
                    },
                    read = self.io.as_mut().expect("transport present").read(&mut buf) => match read {
                        Ok(0) => break End::Lost,
                        Ok(n) => {
                            last_read = Instant::now();
                            ping_sent = None;
                            if let Err(e) = self.feed(&buf[..n]) {
                                break self.stream_error(e).await;
                            }
                        }
                        Err(e) => break End::Io(e),
                    },
                    _ = sleep_until_some(ack_overdue) => {
                        let unacked = self.sm.as_mut().map(|sm| sm.take_unnotified()).unwrap_or_default();
                        debug!(unacked = unacked.len(), "acknowledgement overdue (smacks_max_ack_delay)");
                        if let Some(host) = self.server.host(session.jid.domain().as_str()) {
                            host.hooks
                                .fire(&self.server, &Event::AckDelayed { session: &session, unacked: &unacked })
                                .await;
                        }
                    }
                    _ = tokio::time::sleep_until(wake) => {
                        if ping_sent.is_some() {
                            break self.stream_error(StreamError::ConnectionTimeout).await;
                        }
                        let host = self.host.clone().unwrap_or_default();
                        let mut ping = stanza::new_stanza("iq", &[
                            ("type", "get"),
                            ("id", &format!("ping-{}", short_id())),
                            ("from", &host),
                            ("to", &session.jid.to_string()),
                        ]);
                        ping.append_child(Element::bare("ping", ns::PING));
                        if let Err(e) = self.write_stanzas(vec![(ping, stanza::now_stamp())]).await {
                            break e;
                        }
                        ping_sent = Some(Instant::now());
                    }
                }
            }
        };
        self.buf = buf;
        if takeover.is_some() {
            self.takeover = takeover;
        }
        let resumable = self.sm.as_ref().is_some_and(|sm| sm.resume_id.is_some());
        // A silent peer (ping timeout) is as lost as a closed socket.
        let lost = matches!(
            end,
            End::Lost | End::Io(_) | End::Error(StreamError::ConnectionTimeout)
        ) && !shutdown.is_cancelled();
        if matches!(end, End::TakenOver) || (resumable && lost) {
            let state = self.detach(session, outbox);
            match self.handover.take() {
                Some(reply) => {
                    if let Err(state) = reply.send(state) {
                        self.server
                            .tasks
                            .spawn(stream_management::hibernate(self.server.clone(), state));
                    }
                }
                None => {
                    self.server
                        .tasks
                        .spawn(stream_management::hibernate(self.server.clone(), state));
                }
            }
            return end;
        }
        // The session ends for good: unregister it first, so what it still
        // holds is routed elsewhere (another resource, offline storage)
        // rather than back into this closing outbox.
        self.session = None;
        if let Some(id) = self.sm.as_ref().and_then(|sm| sm.resume_id.clone()) {
            self.server.resumable.forget(&id);
        }
        end_session(&self.server, &session).await;
        outbox.close();
        let mut undelivered: Vec<(Element, String)> = self
            .sm
            .take()
            .map(|mut sm| sm.unacked.drain(..).collect())
            .unwrap_or_default();
        undelivered.append(&mut self.held_back);
        while let Ok(out) = outbox.try_recv() {
            if let Outbound::Stanza(el) = out {
                undelivered.push((el, stanza::now_stamp()));
            }
        }
        for (el, stamp) in undelivered {
            requeue_message(&self.server, &session.jid, el, Some(&stamp)).await;
        }
        end
    }

    /// Packs the live session for hibernation or for the resuming
    /// connection.
    fn detach(&mut self, session: Arc<Session>, outbox: mpsc::Receiver<Outbound>) -> Detached {
        self.session = None;
        let hibernation = Duration::from_secs(self.server.config.global.smacks_hibernation_time);
        Detached {
            session,
            outbox,
            sm: self.sm.take().unwrap_or_else(|| SmState::new(hibernation)),
            pending: std::mem::take(&mut self.held_back),
            takeover: self.takeover.take().unwrap_or_else(|| mpsc::channel(1).1),
        }
    }

    /// Writes stanzas; with stream management each is kept until acked,
    /// and an ack is requested past `smacks_max_unacked_stanzas`.
    async fn write_stanzas(&mut self, stanzas: Vec<(Element, String)>) -> Result<(), End> {
        let mut out = String::new();
        for (el, _) in &stanzas {
            out.push_str(&stream::serialize(el));
        }
        if let Some(sm) = &mut self.sm {
            for (el, stamp) in stanzas {
                sm.sent(el, stamp);
            }
            let max = self.server.config.global.smacks_max_unacked_stanzas;
            if sm.ack_requested.is_none() && sm.unacked.len() > max {
                out.push_str(&format!("<r xmlns='{}'/>", ns::SM));
                sm.ack_requested = Some(Instant::now());
            }
        }
        self.write(&out).await
    }

    /// Stanzas from the outbox to the client, held back while it is
    /// inactive (XEP-0352) unless one of them is urgent or too many wait.
    async fn deliver(&mut self, batch: Vec<Element>) -> Result<(), End> {
        let stamp = stanza::now_stamp();
        let batch: Vec<(Element, String)> = batch.into_iter().map(|el| (el, stamp.clone())).collect();
        if !self.inactive {
            return self.write_stanzas(batch).await;
        }
        let mut urgent = false;
        for (el, stamp) in batch {
            urgent |= is_urgent(&el);
            if el.name() == "presence" {
                // Only the latest presence of each contact matters.
                let from = el.attr("from").map(str::to_string);
                self.held_back.retain(|(held, _)| {
                    held.name() != "presence" || held.attr("from").map(str::to_string) != from
                });
            }
            self.held_back.push((el, stamp));
            // Bounded however the stanzas arrive (one by one or in a burst).
            if self.held_back.len() >= self.server.config.global.csi_queue_size {
                let held = std::mem::take(&mut self.held_back);
                self.write_stanzas(held).await?;
            }
        }
        if urgent && !self.held_back.is_empty() {
            let held = std::mem::take(&mut self.held_back);
            return self.write_stanzas(held).await;
        }
        Ok(())
    }

    /// XEP-0352 `<active/>` / `<inactive/>`.
    async fn client_state(&mut self, el: Element) -> Result<(), End> {
        match el.name() {
            "inactive" => self.inactive = true,
            "active" => {
                self.inactive = false;
                let held = std::mem::take(&mut self.held_back);
                if !held.is_empty() {
                    self.write_stanzas(held).await?;
                }
            }
            _ => {
                return Err(self
                    .stream_error(StreamError::UnsupportedStanzaType(el.name().to_string()))
                    .await);
            }
        }
        Ok(())
    }

    /// XEP-0198 elements on a bound session.
    async fn stream_management(&mut self, session: &Arc<Session>, el: Element) -> Result<(), End> {
        match el.name() {
            "enable" if self.sm.is_none() => {
                let g = &self.server.config.global;
                let wanted = el.attr("max").and_then(|m| m.parse::<u64>().ok());
                let seconds = wanted
                    .unwrap_or(g.smacks_hibernation_time)
                    .min(g.smacks_hibernation_time);
                let mut sm = SmState::new(Duration::from_secs(seconds));
                let reply = if matches!(el.attr("resume"), Some("true" | "1")) {
                    let (id, takeover) = self.server.resumable.register(session.bare());
                    self.takeover = Some(takeover);
                    sm.resume_id = Some(id.clone());
                    format!(
                        "<enabled xmlns='{}' id='{id}' resume='true' max='{seconds}'/>",
                        ns::SM
                    )
                } else {
                    format!("<enabled xmlns='{}'/>", ns::SM)
                };
                self.sm = Some(sm);
                debug!(resumable = self.takeover.is_some(), "stream management enabled");
                self.write(&reply).await
            }
            "r" if self.sm.is_some() => {
                let h = self.sm.as_ref().map(|sm| sm.handled_in).unwrap_or(0);
                self.write(&format!("<a xmlns='{}' h='{h}'/>", ns::SM)).await
            }
            "a" if self.sm.is_some() => {
                let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
                let ok = match (h, self.sm.as_mut()) {
                    (Some(h), Some(sm)) => sm.acknowledge(h),
                    _ => false,
                };
                if !ok {
                    return Err(self
                        .stream_error(StreamError::UndefinedCondition(
                            "the acknowledgement counts stanzas that were never sent".into(),
                        ))
                        .await);
                }
                // Stanzas sent after our request are still unacknowledged:
                // ask again, or they would wait for the next stanza (and an
                // asleep client would never be noticed).
                let max = self.server.config.global.smacks_max_unacked_stanzas;
                let ask_again = self.sm.as_mut().is_some_and(|sm| {
                    let again = sm.ack_requested.is_none() && sm.unacked.len() > max;
                    if again {
                        sm.ack_requested = Some(Instant::now());
                    }
                    again
                });
                if ask_again {
                    self.write(&format!("<r xmlns='{}'/>", ns::SM)).await
                } else {
                    Ok(())
                }
            }
            _ => self.write(&sm_failed("unexpected-request", None)).await,
        }
    }

    /// XEP-0198 §5: takes over a hibernating (or still connected) session
    /// of the authenticated account. False when it cannot be resumed; the
    /// client may then bind a new resource.
    async fn resume(&mut self, el: &Element) -> Result<bool, End> {
        let user = self.user.clone().unwrap_or_default();
        let host = self.host.clone().unwrap_or_default();
        let owner = jid::BareJid::new(&format!("{user}@{host}")).map_err(|_| End::Closed)?;
        let (Some(previd), Some(h)) = (
            el.attr("previd"),
            el.attr("h").and_then(|h| h.parse::<u32>().ok()),
        ) else {
            self.write(&sm_failed("bad-request", None)).await?;
            return Ok(false);
        };
        let Some(mut state) = self.server.resumable.take(previd, &owner).await else {
            debug!("resumption refused: unknown or expired session");
            self.write(&sm_failed("item-not-found", None)).await?;
            return Ok(false);
        };
        if !state.sm.acknowledge(h) {
            let handled = state.sm.handled_in;
            self.server
                .tasks
                .spawn(stream_management::hibernate(self.server.clone(), state));
            self.write(&sm_failed("undefined-condition", Some(handled)))
                .await?;
            return Ok(false);
        }
        let handled = state.sm.handled_in;
        self.resent = state.sm.unacked.iter().map(|(el, _)| el.clone()).collect();
        self.queued = std::mem::take(&mut state.pending);
        tracing::Span::current().record("jid", tracing::field::display(&state.session.jid));
        self.session = Some(state.session);
        self.outbox = Some(state.outbox);
        self.takeover = Some(state.takeover);
        self.sm = Some(state.sm);
        self.write(&format!(
            "<resumed xmlns='{}' h='{handled}' previd='{}'/>",
            ns::SM,
            stream::escape(previd)
        ))
        .await?;
        info!(
            resent = self.resent.len(),
            queued = self.queued.len(),
            "session resumed"
        );
        Ok(true)
    }

    /// After a resumption: the stanzas the client never acknowledged, then
    /// what arrived meanwhile.
    async fn send_resumed_backlog(&mut self) -> Result<(), End> {
        let resent = std::mem::take(&mut self.resent);
        if !resent.is_empty() {
            let out: String = resent.iter().map(stream::serialize).collect();
            self.write(&out).await?;
        }
        let queued = std::mem::take(&mut self.queued);
        if !queued.is_empty() {
            self.write_stanzas(queued).await?;
        }
        Ok(())
    }

    /// Writes every stanza already queued, stopping at a close.
    async fn flush_outbox(&mut self, outbox: &mut mpsc::Receiver<Outbound>) {
        let mut batch: Vec<(Element, String)> = std::mem::take(&mut self.held_back);
        while let Ok(Outbound::Stanza(el)) = outbox.try_recv() {
            batch.push((el, stanza::now_stamp()));
        }
        if !batch.is_empty() {
            let _ = self.write_stanzas(batch).await;
        }
    }

    /// A stanza the client sent on its bound session.
    async fn handle_client_stanza(&mut self, session: &Arc<Session>, mut el: Element) -> Result<(), End> {
        if el.ns() != ns::CLIENT {
            return Err(self.stream_error(StreamError::InvalidNamespace(el.ns())).await);
        }
        if !matches!(el.name(), "message" | "presence" | "iq") {
            return Err(self
                .stream_error(StreamError::UnsupportedStanzaType(el.name().to_string()))
                .await);
        }
        // RFC 6120 §8.1.2.1: the server stamps the sender's full JID; a
        // client may only claim its own bare or full JID.
        if let Some(from) = el.attr("from") {
            let ok = jid::Jid::new(from)
                .is_ok_and(|j| j.as_str() == session.jid.as_str() || j.as_str() == session.bare().as_str());
            if !ok {
                return Err(self.stream_error(StreamError::InvalidFrom).await);
            }
        }
        stanza::set_attr(&mut el, "from", session.jid.to_string());
        debug!(
            kind = el.name(),
            r#type = el.attr("type").unwrap_or(""),
            id = el.attr("id").unwrap_or(""),
            to = el.attr("to").unwrap_or(""),
            "stanza from client"
        );
        if el.name() == "iq" && el.get_child("session", ns::SESSION).is_some() && el.attr("to").is_none() {
            // Legacy session establishment: nothing to do but agree.
            let reply = stanza::iq_result(&el, None);
            session.send(reply);
            return Ok(());
        }
        self.server.route(el, Some(session)).await;
        Ok(())
    }

    /// Ends the session if it is still this connection's (not hibernating
    /// or resumed elsewhere), so contacts see it go offline (also after an
    /// abrupt TCP loss), and closes the socket.
    async fn finish(&mut self) {
        if let Some(session) = self.session.take() {
            if let Some(id) = self.sm.as_ref().and_then(|sm| sm.resume_id.clone()) {
                self.server.resumable.forget(&id);
            }
            end_session(&self.server, &session).await;
        }
        if let Some(io) = self.io.as_mut() {
            let _ = timeout(Duration::from_secs(2), io.shutdown()).await;
        }
    }
}

/// Unregisters a session and tells the modules (presence unavailable to
/// contacts, carbons state dropped, ...).
async fn end_session(server: &Server, session: &Arc<Session>) {
    server.sessions.remove(session);
    server.metrics.c2s_sessions.dec();
    if let Some(host) = server.host(session.jid.domain().as_str()) {
        host.hooks.fire(server, &Event::SessionClosed { session }).await;
    }
    info!(jid = %session.jid, "session ended");
}

/// A message that reached a session but not its client goes back through
/// the router to the account (another resource, or offline storage),
/// stamped with when it first arrived (XEP-0203). Other stanzas are stale
/// once the session is gone.
async fn requeue_message(server: &Server, previous: &jid::FullJid, mut el: Element, stamp: Option<&str>) {
    let owner = &previous.to_bare();
    // RFC 6120 §8.2.3: a request must get an answer; the resource is gone.
    if el.name() == "iq" && matches!(el.attr("type"), Some("get" | "set")) {
        server.bounce(&el, StanzaError::service_unavailable());
        return;
    }
    if el.name() != "message" || stanza::is_error(&el) {
        return;
    }
    // Archive results and carbons belong to the session that asked.
    if el.has_child("result", ns::MAM)
        || el.has_child("sent", ns::CARBONS)
        || el.has_child("received", ns::CARBONS)
    {
        return;
    }
    if let Some(stamp) = stamp
        && !el.has_child("delay", ns::DELAY)
    {
        el.append_child(stanza::delay(owner.domain().as_str(), stamp));
    }
    // A new login with the same resource replaced the session: it is the
    // client that was meant, bound or not yet available.
    if let Some(successor) = server.sessions.get(previous) {
        successor.send(el);
        return;
    }
    stanza::set_attr(&mut el, "to", owner.to_string());
    // Straight to the account's delivery: it already passed the message
    // filters (archived once, with its stanza-id).
    server.redeliver(el, owner).await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next takeover request, or never when the session is not resumable.
async fn recv_takeover(rx: &mut Option<mpsc::Receiver<TakeoverRequest>>) -> Option<TakeoverRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// XEP-0352 §5 / Prosody's mod_csi_simple: what an inactive client still
/// gets at once. Messages with a body (or encrypted), and IQs, which someone
/// waits on; presence, chat states and receipts can wait.
fn is_urgent(el: &Element) -> bool {
    match el.name() {
        "presence" => false,
        "message" => {
            el.has_child("body", ns::CLIENT)
                || el.children().any(|c| c.name() == "encrypted")
                || el.has_child("sent", ns::CARBONS)
                || el.has_child("received", ns::CARBONS)
        }
        _ => true,
    }
}

/// A XEP-0198 `<failed/>` with a stanza error condition.
fn sm_failed(condition: &str, h: Option<u32>) -> String {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{}'{h}><{condition} xmlns='{}'/></failed>",
        ns::SM,
        ns::STANZAS_ERR
    )
}
