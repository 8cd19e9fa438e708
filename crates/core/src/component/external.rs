//! XEP-0114 Jabber Component Protocol: an external process attaches to a
//! `[components."name"]` with a `component_secret` and no `module`.
//!
//! The handshake is SHA-1(stream id + secret) in hex, compared in constant
//! time. A second connection for a domain already attached is refused with
//! `<conflict/>` and the first keeps working (Prosody does the same), so a
//! misconfigured duplicate cannot silently take over a bot's traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Component, renamespace};
use crate::server::Server;
use crate::session::Outbound;
use crate::stream::{self, Limits, StreamError, StreamEvent, StreamParser, ns};

pub const NS_ACCEPT: &str = "jabber:component:accept";
const OUTBOX_DEPTH: usize = 4096;
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The router's handle on a connected external component.
struct Attached {
    outbox: mpsc::Sender<Outbound>,
    kill: CancellationToken,
}

#[async_trait]
impl Component for Attached {
    async fn deliver(&self, server: &Server, stanza: Element) {
        match self.outbox.try_send(Outbound::Stanza(stanza)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!("component outbox full, disconnecting it");
                self.kill.cancel();
            }
            // The connection ended a moment ago: the sender hears of it.
            Err(mpsc::error::TrySendError::Closed(Outbound::Stanza(stanza))) => {
                if stanza.name() != "presence" && !matches!(stanza.attr("type"), Some("error" | "result")) {
                    server.bounce(&stanza, crate::stanza::StanzaError::service_unavailable());
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The secret of an external component, or None if `domain` is not one.
fn secret_for(server: &Server, domain: &str) -> Option<String> {
    server
        .config
        .components
        .iter()
        .find(|c| c.name == domain && c.module.is_none())
        .and_then(|c| {
            c.options
                .get("component_secret")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
}

struct Conn {
    tcp: TcpStream,
    parser: StreamParser,
    pending: std::collections::VecDeque<StreamEvent>,
    buf: Vec<u8>,
    header_sent: bool,
}

impl Conn {
    async fn write(&mut self, data: &str) -> std::io::Result<()> {
        match timeout(WRITE_TIMEOUT, self.tcp.write_all(data.as_bytes())).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    async fn fail(&mut self, domain: &str, err: StreamError) -> StreamError {
        if !self.header_sent {
            let header = format!(
                "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' xmlns:stream='{}' from='{}' id='x'>",
                ns::STREAM,
                stream::escape(domain)
            );
            let _ = self.write(&header).await;
        }
        let _ = self.write(&format!("{}</stream:stream>", err.to_xml())).await;
        err
    }

    /// The next event, or an error already sent to the peer.
    async fn next(
        &mut self,
        deadline: Option<Instant>,
        domain: &str,
    ) -> Result<StreamEvent, Option<StreamError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let read = match deadline {
                Some(d) => match timeout_at(d, self.tcp.read(&mut self.buf)).await {
                    Ok(r) => r,
                    Err(_) => return Err(Some(self.fail(domain, StreamError::ConnectionTimeout).await)),
                },
                None => self.tcp.read(&mut self.buf).await,
            };
            let n = match read {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => n,
            };
            let mut out = Vec::new();
            let data = self.buf[..n].to_vec();
            let fed = self.parser.feed(&data, &mut out);
            self.pending.extend(out);
            if let Err(e) = fed {
                return Err(Some(self.fail(domain, e).await));
            }
        }
    }
}

pub async fn handle_connection(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let span = info_span!("conn", kind = "component", remote = %peer, domain = tracing::field::Empty);
    async move {
        let limits = Limits { max_stanza_bytes: server.config.global.c2s_stanza_size_limit, ..Limits::default() };
        let mut conn = Conn { tcp, parser: StreamParser::new(limits), pending: Default::default(), buf: vec![0; 16 * 1024], header_sent: false };
        let deadline = Instant::now() + Duration::from_secs(server.config.global.c2s_timeout);
        let Some((domain, outbox, kill)) = handshake(&server, &mut conn, deadline).await else { return };
        tracing::Span::current().record("domain", tracing::field::display(&domain));
        info!("component connected");
        let end = session(&server, &mut conn, &domain, outbox, &kill).await;
        server.components.disconnect(&domain);
        info!(reason = %end.map(|e| e.to_string()).unwrap_or_else(|| "closed".into()), "component disconnected");
        let _ = timeout(Duration::from_secs(2), conn.tcp.shutdown()).await;
    }
    .instrument(span)
    .await
}

async fn handshake(
    server: &Arc<Server>,
    conn: &mut Conn,
    deadline: Instant,
) -> Option<(String, mpsc::Receiver<Outbound>, CancellationToken)> {
    let header = match conn.next(Some(deadline), "").await {
        Ok(StreamEvent::Header(h)) => h,
        Ok(_) => {
            conn.fail("", StreamError::NotWellFormed("expected a stream header".into()))
                .await;
            return None;
        }
        Err(_) => return None,
    };
    let domain = header.to.clone().unwrap_or_default().to_ascii_lowercase();
    if header.stream_ns != ns::STREAM || header.default_ns.as_deref() != Some(NS_ACCEPT) {
        conn.fail(
            &domain,
            StreamError::InvalidNamespace(header.default_ns.unwrap_or_default()),
        )
        .await;
        return None;
    }
    let Some(secret) = secret_for(server, &domain) else {
        warn!(domain = %domain, "component connection for an unknown domain");
        conn.fail(&domain, StreamError::HostUnknown(domain.clone())).await;
        return None;
    };
    let id = new_id();
    let reply = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' xmlns:stream='{}' from='{}' id='{id}'>",
        ns::STREAM,
        stream::escape(&domain)
    );
    if conn.write(&reply).await.is_err() {
        return None;
    }
    conn.header_sent = true;
    let handshake = match conn.next(Some(deadline), &domain).await {
        Ok(StreamEvent::Stanza(el)) if el.is("handshake", NS_ACCEPT) => el.text(),
        Ok(_) => {
            conn.fail(&domain, StreamError::NotAuthorized).await;
            return None;
        }
        Err(_) => return None,
    };
    let expected: String = Sha1::digest(format!("{id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let given = handshake.trim().to_ascii_lowercase();
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        warn!(domain = %domain, "component handshake failed: wrong secret");
        conn.fail(&domain, StreamError::NotAuthorized).await;
        return None;
    }
    let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
    let kill = CancellationToken::new();
    if server
        .components
        .connect(
            &domain,
            Arc::new(Attached {
                outbox: tx,
                kill: kill.clone(),
            }),
        )
        .is_err()
    {
        warn!(domain = %domain, "second connection for a component refused");
        conn.fail(&domain, StreamError::Conflict).await;
        return None;
    }
    if conn.write("<handshake/>").await.is_err() {
        server.components.disconnect(&domain);
        return None;
    }
    Some((domain, rx, kill))
}

/// True when `from` is the component's domain or one of its JIDs.
fn from_is_ours(from: Option<&str>, domain: &str) -> bool {
    from.and_then(|f| jid::Jid::new(f).ok())
        .is_some_and(|j| j.domain().as_str() == domain)
}

async fn session(
    server: &Arc<Server>,
    conn: &mut Conn,
    domain: &str,
    mut outbox: mpsc::Receiver<Outbound>,
    kill: &CancellationToken,
) -> Option<StreamError> {
    loop {
        while let Some(ev) = conn.pending.pop_front() {
            match ev {
                StreamEvent::Stanza(el) => {
                    if el.ns() != NS_ACCEPT || !matches!(el.name(), "message" | "presence" | "iq") {
                        return Some(
                            conn.fail(domain, StreamError::UnsupportedStanzaType(el.name().into()))
                                .await,
                        );
                    }
                    if !from_is_ours(el.attr("from"), domain) {
                        return Some(conn.fail(domain, StreamError::InvalidFrom).await);
                    }
                    let stanza = renamespace(&el, NS_ACCEPT, ns::CLIENT);
                    debug!(
                        kind = stanza.name(),
                        to = stanza.attr("to").unwrap_or(""),
                        "stanza from component"
                    );
                    server.route(stanza, None).await;
                }
                StreamEvent::End => {
                    let _ = conn.write("</stream:stream>").await;
                    return None;
                }
                StreamEvent::Header(_) => {
                    return Some(
                        conn.fail(domain, StreamError::NotWellFormed("unexpected header".into()))
                            .await,
                    );
                }
            }
        }
        tokio::select! {
            biased;
            _ = server.shutdown.cancelled() => return Some(conn.fail(domain, StreamError::SystemShutdown).await),
            _ = kill.cancelled() => {
                return Some(conn.fail(domain, StreamError::PolicyViolation("too many unread stanzas".into())).await)
            }
            out = outbox.recv() => match out {
                Some(Outbound::Stanza(el)) => {
                    let xml = stream::serialize(&renamespace(&el, ns::CLIENT, NS_ACCEPT));
                    if conn.write(&xml).await.is_err() {
                        return None;
                    }
                }
                Some(Outbound::Close(e)) => return Some(conn.fail(domain, e).await),
                None => return None,
            },
            read = conn.tcp.read(&mut conn.buf) => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    let mut out = Vec::new();
                    let data = conn.buf[..n].to_vec();
                    let fed = conn.parser.feed(&data, &mut out);
                    conn.pending.extend(out);
                    if let Err(e) = fed {
                        return Some(conn.fail(domain, e).await);
                    }
                }
            },
        }
    }
}

fn new_id() -> String {
    crate::stanza::random_hex(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_must_be_in_the_domain() {
        assert!(from_is_ours(Some("bot.example"), "bot.example"));
        assert!(from_is_ours(Some("user@bot.example/r"), "bot.example"));
        assert!(!from_is_ours(Some("user@example"), "bot.example"));
        assert!(!from_is_ours(None, "bot.example"));
    }
}
