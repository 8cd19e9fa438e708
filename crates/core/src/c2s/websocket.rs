//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket`, Prosody's path.
//!
//! A WebSocket session is an ordinary client stream: each one runs the same
//! `Connection` as TCP (negotiation, limits, timeouts, routing) over an
//! in-memory byte pipe. This file only translates framing: `<open/>` and
//! `<close/>` become the stream header and footer, each inbound message is
//! fed as bytes, and the server's byte stream is cut back into one frame
//! per top-level element.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use crate::server::Server;
use crate::stream::{self, Limits, StreamEvent, StreamParser, ns};

pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// What the server writes at every stream (re)start; its text never appears
/// inside a stanza, where `<` is always escaped.
const HEADER_MARK: &[u8] = b"<?xml version='1.0'?>";

/// Serves one upgraded WebSocket until either side closes; `slot` is its
/// `c2s_max_connections` permit.
pub async fn serve(
    server: Arc<Server>,
    mut socket: WebSocket,
    peer: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let connection = server.tasks.spawn(super::handle_framed(
        server.clone(),
        theirs,
        peer,
        "websocket",
        slot,
    ));
    let (mut from_server, mut to_server) = tokio::io::split(ours);
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 16 * 1024];
    // Set once the client's <close/> went to the server: a second footer
    // would be a well-formedness error on a cleanly closed stream.
    let mut footer_sent = false;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // The socket is gone without a word: the stream is lost,
                    // not closed (a XEP-0198 session hibernates).
                    None | Some(Err(_)) => break,
                    // RFC 7395 §3.2: XMPP frames are text; anything else
                    // or a close frame ends the stream.
                    _ => {
                        if !footer_sent {
                            let _ = to_server.write_all(b"</stream:stream>").await;
                        }
                        break;
                    }
                };
                // RFC 7395 §3.3.3: every message is one complete element.
                if !is_one_element(&text) {
                    let error = format!(
                        "<stream:error xmlns:stream='{}'><not-well-formed xmlns='{}'/></stream:error>",
                        ns::STREAM,
                        ns::STREAMS_ERR
                    );
                    let _ = socket.send(Message::Text(error.into())).await;
                    let _ = socket.send(Message::Text(format!("<close xmlns='{NS_FRAMING}'/>").into())).await;
                    let _ = to_server.write_all(b"</stream:stream>").await;
                    debug!(remote = %peer, "websocket frame is not one complete element");
                    break;
                }
                let bytes = inbound_bytes(&text);
                footer_sent |= bytes == b"</stream:stream>";
                if to_server.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            read = from_server.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let (output, done) = framer.push(&buf[..n]);
                for frame in output.iter().map(ws_frame) {
                    if socket.send(Message::Text(frame.into())).await.is_err() {
                        break;
                    }
                }
                if done {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    // Both halves go, so the connection sees the pipe close.
    drop(to_server);
    drop(from_server);
    let _ = connection.await;
    debug!(remote = %peer, "websocket closed");
}

/// True when `text` is exactly one well-formed element (whitespace around
/// it allowed). Parsed inside a wrapper that declares the usual namespaces,
/// so stanzas relying on the stream's defaults still pass.
fn is_one_element(text: &str) -> bool {
    let wrapped = format!(
        "<w xmlns='{}' xmlns:stream='{}'>{text}</w>",
        ns::CLIENT,
        ns::STREAM
    );
    match wrapped.parse::<Element>() {
        Ok(w) => w.children().count() == 1 && w.texts().all(|t| t.trim().is_empty()),
        Err(_) => false,
    }
}

/// One client frame as the bytes of a classic stream.
fn inbound_bytes(text: &str) -> Vec<u8> {
    match text.parse::<Element>() {
        Ok(el) if el.is("open", NS_FRAMING) => {
            let attr = |name: &str| {
                el.attr(name)
                    .map(|v| format!(" {name}='{}'", stream::escape(v)))
                    .unwrap_or_default()
            };
            format!(
                "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}'{}{}{}>",
                ns::CLIENT,
                ns::STREAM,
                attr("to"),
                attr("version"),
                attr("from"),
            )
            .into_bytes()
        }
        Ok(el) if el.is("close", NS_FRAMING) => b"</stream:stream>".to_vec(),
        // Stanzas, SASL and the rest pass through; malformed text is left
        // for the stream parser to refuse with the right stream error.
        _ => text.as_bytes().to_vec(),
    }
}

/// One RFC 7395 frame for a piece of the server's output.
fn ws_frame(output: &ServerOutput) -> String {
    match output {
        ServerOutput::Open { from, id } => {
            let attr = |name: &str, v: &Option<String>| {
                v.as_ref()
                    .map(|v| format!(" {name}='{}'", stream::escape(v)))
                    .unwrap_or_default()
            };
            format!(
                "<open xmlns='{NS_FRAMING}'{}{} version='1.0' xml:lang='en'/>",
                attr("from", from),
                attr("id", id)
            )
        }
        ServerOutput::Element(el) => frame_of(el),
        ServerOutput::Close => format!("<close xmlns='{NS_FRAMING}'/>"),
    }
}

/// The server's byte stream, cut at element boundaries.
#[derive(Debug)]
pub(super) enum ServerOutput {
    /// A stream header (at the start and after each restart).
    Open {
        from: Option<String>,
        id: Option<String>,
    },
    Element(Element),
    Close,
}

/// Cuts the server's byte stream of a framed connection (WebSocket, BOSH)
/// into headers, top-level elements and the footer.
pub(super) struct Framer {
    parser: StreamParser,
    /// Bytes held back because they may begin a stream restart.
    pending: Vec<u8>,
}

impl Framer {
    pub(super) fn new() -> Self {
        Self {
            parser: Self::fresh(),
            pending: Vec::new(),
        }
    }

    /// The server's own output: generous limits, it is trusted.
    fn fresh() -> StreamParser {
        StreamParser::new(Limits {
            max_stanza_bytes: 64 * 1024 * 1024,
            max_depth: 1024,
            max_attributes: 1024,
        })
    }

    /// What `data` completes, and whether the stream ended.
    pub(super) fn push(&mut self, data: &[u8]) -> (Vec<ServerOutput>, bool) {
        self.pending.extend_from_slice(data);
        let mut frames = Vec::new();
        let mut done = false;
        loop {
            // Each stream restart is a new document: a fresh parser.
            if self.pending.starts_with(HEADER_MARK) {
                self.parser = Self::fresh();
            }
            let next_mark = find(&self.pending[1.min(self.pending.len())..], HEADER_MARK).map(|i| i + 1);
            let take = match next_mark {
                Some(i) => i,
                // Hold back a tail that could be the start of a mark.
                None => self.pending.len() - partial_mark_suffix(&self.pending),
            };
            if take == 0 {
                break;
            }
            let chunk: Vec<u8> = self.pending.drain(..take).collect();
            let mut events = Vec::new();
            if self.parser.feed(&chunk, &mut events).is_err() {
                done = true;
            }
            for ev in events {
                match ev {
                    StreamEvent::Header(h) => frames.push(ServerOutput::Open {
                        from: h.from,
                        id: h.id,
                    }),
                    StreamEvent::Stanza(el) => frames.push(ServerOutput::Element(el)),
                    StreamEvent::End => {
                        frames.push(ServerOutput::Close);
                        done = true;
                    }
                }
            }
            if next_mark.is_none() {
                break;
            }
        }
        (frames, done)
    }
}

/// Length of the longest tail of `data` that is a proper prefix of the
/// restart mark.
fn partial_mark_suffix(data: &[u8]) -> usize {
    (1..HEADER_MARK.len())
        .rev()
        .find(|&n| data.len() >= n && data.ends_with(&HEADER_MARK[..n]))
        .unwrap_or(0)
}

/// One element as a frame; stream-namespace elements keep their usual
/// `stream:` prefix, which some web clients look for by name.
pub(super) fn frame_of(el: &Element) -> String {
    if el.ns() != ns::STREAM {
        return stream::serialize(el);
    }
    let mut inner = String::new();
    for node in el.nodes() {
        match node {
            minidom::Node::Element(child) => inner.push_str(&stream::serialize(child)),
            minidom::Node::Text(t) => inner.push_str(&stream::escape(t)),
        }
    }
    format!(
        "<stream:{0} xmlns:stream='{1}'>{inner}</stream:{0}>",
        el.name(),
        ns::STREAM
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_close_become_header_and_footer() {
        let header = String::from_utf8(inbound_bytes(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        ))
        .unwrap();
        assert!(header.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:client'"));
        assert!(header.contains("to='localhost'") && header.contains("version='1.0'"));
        assert_eq!(
            inbound_bytes("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            b"</stream:stream>"
        );
        assert_eq!(inbound_bytes("<message/>"), b"<message/>");
    }

    #[test]
    fn frames_must_be_one_complete_element() {
        assert!(is_one_element("<message to='a@b'><body>hi</body></message>"));
        assert!(is_one_element(" <presence/>\n"));
        assert!(!is_one_element("<message><body>hi"));
        assert!(!is_one_element("<a/><b/>"));
        assert!(!is_one_element("text"));
    }

    #[test]
    fn server_output_is_cut_into_frames_across_restarts() {
        let mut f = Framer::new();
        let out = concat!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='abc' version='1.0'>",
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='def' version='1.0'>",
            "<iq type='result' id='1'/></stream:stream>"
        );
        // Byte by byte, as a pipe may deliver it.
        let mut frames = Vec::new();
        let mut done = false;
        for b in out.as_bytes() {
            let (f2, d) = f.push(std::slice::from_ref(b));
            frames.extend(f2.iter().map(ws_frame));
            done |= d;
        }
        assert!(done);
        assert_eq!(frames.len(), 6, "{frames:#?}");
        assert!(frames[0].starts_with("<open") && frames[0].contains("id='abc'"));
        assert!(frames[1].starts_with("<stream:features xmlns:stream="));
        assert!(frames[2].starts_with("<success"));
        assert!(frames[3].contains("id='def'"));
        assert!(frames[4].starts_with("<iq"));
        assert!(frames[5].starts_with("<close"));
    }
}
