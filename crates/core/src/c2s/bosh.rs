//! XMPP over BOSH (XEP-0124, XEP-0206) at `/http-bind`, Prosody's path.
//!
//! As with WebSocket, each BOSH session runs the unchanged c2s `Connection`
//! (negotiation, limits, authentication, routing) over an in-memory pipe.
//! This file keeps only what HTTP adds: the session table, request ids
//! (processed in order, answers replayed, a bounded window), requests held
//! up to `wait` seconds until the server has something to say, pause,
//! inactivity and terminate. No hand-written HTTP: axum hands each request
//! body here and sends back the `Reply`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use minidom::Element;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::websocket::{Framer, ServerOutput, frame_of};
use crate::component::renamespace;
use crate::server::Server;
use crate::stream::{self, ns};

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// XEP-0124 `maxpause`: the longest pause a client may ask for (seconds).
const MAX_PAUSE: u64 = 300;
/// Answers kept for a client that resends a request whose answer it lost.
const REPLAY_ANSWERS: usize = 8;
/// How long an ended session stays to hand its last words (a stream
/// error) to a client that had no request waiting.
const END_GRACE: Duration = Duration::from_secs(10);
/// rids are integers below 2^53 (XEP-0124 §14.1), so JavaScript clients
/// can count them exactly.
const MAX_RID: u64 = (1 << 53) - 1;

/// The HTTP answer to one BOSH request.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn ok(body: String) -> Self {
        Self { status: 200, body }
    }

    /// A terminal binding error (XEP-0124 §17): HTTP 200 with a
    /// `terminate` body naming the condition, as Prosody and current
    /// clients expect.
    fn terminate(condition: Option<&str>) -> Self {
        Self::ok(terminate_body(condition, ""))
    }

    fn bad_request(why: &str) -> Self {
        debug!(reason = why, "BOSH request refused");
        Self {
            status: 400,
            body: terminate_body(Some("bad-request"), ""),
        }
    }
}

fn terminate_body(condition: Option<&str>, payload: &str) -> String {
    let condition = condition.map(|c| format!(" condition='{c}'")).unwrap_or_default();
    format!(
        "<body xmlns='{NS_HTTPBIND}' xmlns:stream='{}' type='terminate'{condition}>{payload}</body>",
        ns::STREAM
    )
}

/// Limits and defaults, from the `bosh_*` options.
#[derive(Debug, Clone)]
pub struct BoshLimits {
    pub max_inactivity: Duration,
    pub max_polling: u64,
    pub max_requests: u64,
    pub max_wait: u64,
}

impl BoshLimits {
    pub fn from_config(g: &crate::config::GlobalConfig) -> Self {
        Self {
            max_inactivity: Duration::from_secs(g.bosh_max_inactivity),
            max_polling: g.bosh_max_polling,
            max_requests: g.bosh_max_requests,
            max_wait: g.bosh_max_wait,
        }
    }
}

/// Every live BOSH session, by sid.
pub struct BoshSessions {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    limits: BoshLimits,
}

impl BoshSessions {
    pub fn new(limits: BoshLimits) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            limits,
        })
    }

    pub fn count(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        // A panic elsewhere must not take BOSH down with it: the table
        // itself is always consistent between statements.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one POSTed `<body/>`; `peer` is the client's address (after
    /// trusted proxies), used for logs and login rate limits.
    pub async fn handle(self: &Arc<Self>, server: &Arc<Server>, text: &str, peer: SocketAddr) -> Reply {
        let body: Element = match text.parse() {
            Ok(b) => b,
            Err(_) => return Reply::bad_request("not well-formed XML"),
        };
        if !body.is("body", NS_HTTPBIND) {
            return Reply::bad_request("not a BOSH <body/>");
        }
        let Some(rid) = body
            .attr("rid")
            .and_then(|r| r.parse::<u64>().ok())
            .filter(|r| (1..=MAX_RID).contains(r))
        else {
            return Reply::bad_request("missing or invalid rid");
        };
        match body.attr("sid") {
            None => self.create(server, body, rid, peer).await,
            Some(sid) => {
                let session = self.table().get(sid).cloned();
                match session {
                    Some(s) => s.request(rid, body).await,
                    None => {
                        info!(remote = %peer, "BOSH request for an unknown or ended session");
                        Reply::terminate(Some("item-not-found"))
                    }
                }
            }
        }
    }

    /// XEP-0124 §7 / XEP-0206 §3: a new session; its first answer carries
    /// the session attributes and the stream features.
    async fn create(
        self: &Arc<Self>,
        server: &Arc<Server>,
        body: Element,
        rid: u64,
        peer: SocketAddr,
    ) -> Reply {
        let Some(to) = body.attr("to").map(str::to_ascii_lowercase) else {
            return Reply::bad_request("session request without 'to'");
        };
        if server.host(&to).is_none() {
            info!(remote = %peer, host = %to, "BOSH session refused: host not served here");
            return Reply::terminate(Some("host-unknown"));
        }
        let Ok(slot) = server.connection_slots.clone().try_acquire_owned() else {
            warn!(
                remote = %peer,
                limit = server.config.global.c2s_max_connections,
                "BOSH session refused: connection limit reached (c2s_max_connections)"
            );
            return Reply::terminate(Some("remote-connection-failed"));
        };
        let number = |name: &str| body.attr(name).and_then(|v| v.parse::<u64>().ok());
        let limits = &self.limits;
        let wait = number("wait")
            .unwrap_or(limits.max_wait)
            .clamp(1, limits.max_wait);
        let hold = number("hold")
            .unwrap_or(1)
            .min(limits.max_requests.saturating_sub(1)) as usize;
        let sid = new_sid();
        let (to_server, inbound) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            sid: sid.clone(),
            host: to.clone(),
            wait: Duration::from_secs(wait),
            hold,
            requests: limits.max_requests,
            first_rid: rid,
            polling: limits.max_polling,
            to_server,
            table: Arc::downgrade(self),
            shutdown: server.shutdown.clone(),
            state: Mutex::new(State {
                next_rid: rid,
                waiting: BTreeMap::new(),
                held: VecDeque::new(),
                outbound: Vec::new(),
                answered: VecDeque::new(),
                ended: None,
                stream_error: false,
                bound: false,
                last_seen: Instant::now(),
                inactivity: limits.max_inactivity,
                default_inactivity: limits.max_inactivity,
            }),
        });
        self.table().insert(sid, session.clone());
        let lang = body.attr_ns(NS_XML, "lang").unwrap_or("en");
        session.send(stream_header(&to, lang));
        let (tx, rx) = oneshot::channel();
        {
            let mut st = session.lock();
            st.next_rid = rid + 1;
            st.held.push_back((rid, tx));
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        server
            .tasks
            .spawn(super::handle_framed(server.clone(), theirs, peer, "bosh", slot));
        server.tasks.spawn(session.clone().drive(ours, inbound));
        debug!(remote = %peer, wait, hold, "BOSH session created");
        // The answer comes once the server's features are out.
        session.await_answer(rid, rx).await
    }
}

fn new_sid() -> String {
    crate::stanza::random_hex(16)
}

fn stream_header(to: &str, lang: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{}' xml:lang='{}' version='1.0'>",
        ns::CLIENT,
        ns::STREAM,
        stream::escape(to),
        stream::escape(lang)
    )
    .into_bytes()
}

type Answer = oneshot::Sender<String>;

struct Session {
    sid: String,
    host: String,
    wait: Duration,
    hold: usize,
    requests: u64,
    polling: u64,
    /// The session request's rid, whose answer carries the attributes.
    first_rid: u64,
    /// Bytes for the c2s connection, written by `drive`.
    to_server: mpsc::UnboundedSender<Vec<u8>>,
    table: Weak<BoshSessions>,
    shutdown: tokio_util::sync::CancellationToken,
    state: Mutex<State>,
}

struct State {
    /// The rid whose payload goes to the server next.
    next_rid: u64,
    /// Requests that arrived ahead of a missing rid (XEP-0124 §14.2).
    waiting: BTreeMap<u64, (Element, Answer)>,
    /// Processed requests waiting for data or their `wait` to pass, oldest
    /// first.
    held: VecDeque<(u64, Answer)>,
    /// Serialized elements from the server not yet handed to a request.
    outbound: Vec<String>,
    /// Recent answers by rid, for a client that resends a request.
    answered: VecDeque<(u64, String)>,
    /// Set once the session ended: the terminate condition, if any.
    ended: Option<Option<&'static str>>,
    stream_error: bool,
    /// A resource is bound: no stream restart can follow, so whitespace
    /// keepalives are safe (between documents even a space is an error).
    bound: bool,
    /// Last request or answer; inactivity counts from here.
    last_seen: Instant,
    inactivity: Duration,
    default_inactivity: Duration,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, bytes: Vec<u8>) {
        // Fails only once `drive` has ended, when nothing is listening.
        let _ = self.to_server.send(bytes);
    }

    /// One request of an existing session.
    async fn request(self: &Arc<Self>, rid: u64, body: Element) -> Reply {
        let rx = {
            let mut st = self.lock();
            if let Some(condition) = st.ended {
                let payload = std::mem::take(&mut st.outbound).concat();
                return Reply::ok(terminate_body(condition, &payload));
            }
            // §14.3: a resent request gets the answer it missed.
            if let Some((_, answer)) = st.answered.iter().find(|(r, _)| *r == rid) {
                debug!(sid = %self.sid, rid, "BOSH request resent: answer replayed");
                return Reply::ok(answer.clone());
            }
            let (tx, rx) = oneshot::channel();
            if let Some(slot) = st.held.iter_mut().find(|(r, _)| *r == rid) {
                // Resent while still held: the first HTTP request is gone;
                // the new one takes its place (the old one gets an empty
                // answer its client no longer reads).
                slot.1 = tx;
            } else if let Some(slot) = st.waiting.get_mut(&rid) {
                slot.1 = tx;
            } else if rid < st.next_rid {
                info!(sid = %self.sid, rid, "BOSH rid already used and its answer forgotten: session ended");
                self.end(&mut st, Some("item-not-found"));
                return Reply::terminate(Some("item-not-found"));
            } else if rid >= st.next_rid + self.requests {
                info!(
                    sid = %self.sid,
                    rid,
                    expected = st.next_rid,
                    "BOSH rid outside the request window: session ended"
                );
                self.end(&mut st, Some("item-not-found"));
                return Reply::terminate(Some("item-not-found"));
            } else {
                st.waiting.insert(rid, (body, tx));
            }
            st.last_seen = Instant::now();
            self.process_in_order(&mut st);
            self.flush(&mut st);
            rx
        };
        self.await_answer(rid, rx).await
    }

    /// Sends the payload of every request that is next in rid order.
    fn process_in_order(&self, st: &mut State) {
        while let Some((body, tx)) = st.waiting.remove(&st.next_rid) {
            let rid = st.next_rid;
            st.next_rid += 1;
            let mut payload = Vec::new();
            for child in body.children() {
                // A child that inherited the httpbind namespace is meant
                // as a client stanza.
                let child = if child.ns() == NS_HTTPBIND {
                    renamespace(child, NS_HTTPBIND, ns::CLIENT)
                } else {
                    child.clone()
                };
                payload.extend_from_slice(stream::serialize(&child).as_bytes());
            }
            if body.attr("type") == Some("terminate") {
                // `end` closes the stream after these last stanzas.
                self.send(payload);
                debug!(sid = %self.sid, "BOSH session terminated by the client");
                st.held.push_back((rid, tx));
                self.end(st, None);
                return;
            }
            if body.attr_ns(NS_XBOSH, "restart") == Some("true") {
                let lang = body.attr_ns(NS_XML, "lang").unwrap_or("en");
                payload = stream_header(&self.host, lang);
            } else if payload.is_empty() && st.bound {
                // An empty poll is still the client's sign of life, which
                // the connection's idle ping would otherwise miss.
                payload.push(b' ');
            }
            self.send(payload);
            st.held.push_back((rid, tx));
            match body.attr("pause").map(str::parse::<u64>) {
                None => st.inactivity = st.default_inactivity,
                // §10: answer everything now and allow the longer silence.
                Some(Ok(p)) if p <= MAX_PAUSE => {
                    st.inactivity = Duration::from_secs(p);
                    while let Some((rid, tx)) = st.held.pop_front() {
                        let elements = std::mem::take(&mut st.outbound);
                        self.answer(st, rid, tx, elements);
                    }
                }
                Some(_) => {
                    info!(sid = %self.sid, "BOSH pause longer than maxpause: session ended");
                    self.end(st, Some("policy-violation"));
                    return;
                }
            }
        }
    }

    /// Answers held requests: the oldest when more than `hold` wait, and
    /// one as soon as there is output.
    fn flush(&self, st: &mut State) {
        while st.held.len() > self.hold || (!st.outbound.is_empty() && !st.held.is_empty()) {
            let Some((rid, tx)) = st.held.pop_front() else {
                break;
            };
            let elements = std::mem::take(&mut st.outbound);
            self.answer(st, rid, tx, elements);
        }
    }

    fn answer(&self, st: &mut State, rid: u64, tx: Answer, elements: Vec<String>) {
        let attrs = if rid == self.first_rid {
            format!(
                " sid='{}' wait='{}' requests='{}' hold='{}' inactivity='{}' polling='{}' maxpause='{MAX_PAUSE}' ver='1.11' from='{}' xmpp:version='1.0' xmpp:restartlogic='true'",
                self.sid,
                self.wait.as_secs(),
                self.requests,
                self.hold,
                st.default_inactivity.as_secs(),
                self.polling,
                stream::escape(&self.host),
            )
        } else {
            String::new()
        };
        let text = format!(
            "<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{}'{attrs}>{}</body>",
            ns::STREAM,
            elements.concat()
        );
        self.record(st, rid, text.clone());
        // The client may have gone; the answer stays in `answered` for a
        // resent request, so nothing is lost.
        let _ = tx.send(text);
    }

    fn record(&self, st: &mut State, rid: u64, text: String) {
        st.answered.push_back((rid, text));
        while st.answered.len() > REPLAY_ANSWERS {
            st.answered.pop_front();
        }
        st.last_seen = Instant::now();
    }

    /// Ends the session: every held request gets a terminate answer (the
    /// first carries any output left), later ones get it too until the
    /// session leaves the table, and the c2s stream is closed.
    fn end(&self, st: &mut State, condition: Option<&'static str>) {
        if st.ended.is_some() {
            return;
        }
        st.ended = Some(condition);
        while let Some((rid, tx)) = st.held.pop_front() {
            let payload = std::mem::take(&mut st.outbound).concat();
            let text = terminate_body(condition, &payload);
            self.record(st, rid, text.clone());
            let _ = tx.send(text);
        }
        // Requests behind a gap that will never fill: their senders drop
        // and they answer with the terminate condition.
        st.waiting.clear();
        self.send(b"</stream:stream>".to_vec());
    }

    /// Waits for a request's answer; after `wait` a held request is
    /// answered empty.
    async fn await_answer(&self, rid: u64, mut rx: oneshot::Receiver<String>) -> Reply {
        loop {
            match tokio::time::timeout(self.wait, &mut rx).await {
                Ok(Ok(text)) => return Reply::ok(text),
                Ok(Err(_)) => {
                    let st = self.lock();
                    return match st.ended {
                        Some(condition) => Reply::terminate(condition),
                        // Replaced by the same rid resent.
                        None => Reply::ok(format!("<body xmlns='{NS_HTTPBIND}'/>")),
                    };
                }
                Err(_) => {
                    let mut st = self.lock();
                    if let Some(pos) = st.held.iter().position(|(r, _)| *r == rid)
                        && let Some((rid, tx)) = st.held.remove(pos)
                    {
                        self.answer(&mut st, rid, tx, Vec::new());
                    }
                    // Otherwise it waits behind a missing rid (until the
                    // gap fills or inactivity ends the session), or its
                    // answer is already in the channel.
                }
            }
        }
    }

    /// Carries bytes between the HTTP side and the c2s connection until the
    /// stream ends, and ends the session after `inactivity` without
    /// requests.
    async fn drive(
        self: Arc<Self>,
        pipe: tokio::io::DuplexStream,
        mut inbound: mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let (mut from_server, mut to_server) = tokio::io::split(pipe);
        let mut framer = Framer::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut open = true;
        loop {
            tokio::select! {
                bytes = inbound.recv(), if open => match bytes {
                    Some(b) => {
                        if to_server.write_all(&b).await.is_err() {
                            open = false;
                        }
                    }
                    None => open = false,
                },
                read = from_server.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => 0,
                        Ok(n) => n,
                    };
                    let (output, done) = if n == 0 { (Vec::new(), true) } else { framer.push(&buf[..n]) };
                    let mut st = self.lock();
                    for piece in output {
                        match piece {
                            ServerOutput::Open { .. } => {}
                            ServerOutput::Element(el) => {
                                st.stream_error |= el.is("error", ns::STREAM);
                                st.bound |= el.is("iq", ns::CLIENT) && el.has_child("bind", ns::BIND);
                                st.outbound.push(frame_of(&el));
                            }
                            ServerOutput::Close => {}
                        }
                    }
                    if done {
                        let condition = st.stream_error.then_some("remote-stream-error");
                        self.end(&mut st, condition);
                        break;
                    }
                    self.flush(&mut st);
                }
                _ = tick.tick() => {
                    let mut st = self.lock();
                    if st.held.is_empty() && st.ended.is_none() && st.last_seen.elapsed() > st.inactivity {
                        info!(sid = %self.sid, "BOSH session inactive: ended");
                        self.end(&mut st, None);
                    }
                }
            }
        }
        drop(to_server);
        // Undelivered last words (a stream error) wait a little for the
        // client's next request.
        if !self.lock().outbound.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(END_GRACE) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
        if let Some(table) = self.table.upgrade() {
            table.table().remove(&self.sid);
        }
        debug!(sid = %self.sid, "BOSH session closed");
    }
}
