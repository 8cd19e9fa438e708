//! The server context shared by every connection and module, and the
//! router: one place where each stanza's destination is decided (RFC 6121
//! §8 delivery rules), so nothing writes to another session's socket.

use std::collections::HashMap;
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::auth::rate_limit::AuthRateLimiter;
use crate::component::ComponentRegistry;
use crate::config::{Config, HostConfig};
use crate::hooks::{Event, Handled, Hooks, IqRequest, IqType};
use crate::metrics::Metrics;
use crate::roster::RosterSource;
use crate::session::{Session, SessionRegistry};
use crate::stanza::{self, StanzaError, StanzaKind};
use crate::storage::Stores;
use crate::stream::ns;
use crate::tls::Tls;

/// One virtual host: its options, authentication backend and hooks.
pub struct Host {
    pub config: HostConfig,
    pub auth: Arc<dyn Authenticator>,
    pub hooks: Hooks,
    /// Where this host's rosters come from (the store unless a module
    /// such as roster_http set another source).
    pub rosters: Arc<dyn RosterSource>,
}

pub struct Server {
    pub config: Config,
    pub hosts: HashMap<String, Host>,
    pub sessions: SessionRegistry,
    pub components: ComponentRegistry,
    pub stores: Stores,
    pub tls: Tls,
    pub auth_limiter: AuthRateLimiter,
    /// `c2s_max_connections`: a permit per client connection, whatever
    /// carries it (TCP, WebSocket, BOSH) and per component connection.
    pub connection_slots: Arc<tokio::sync::Semaphore>,
    /// IQs the server sent and waits answers for (push notifications).
    pub pending_iqs: PendingIqs,
    /// XEP-0198 sessions that may be resumed.
    pub resumable: crate::c2s::stream_management::ResumableSessions,
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM: every connection closes with system-shutdown.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them to flush.
    pub tasks: TaskTracker,
    /// The server's own Arc, for work that outlives a hook call (set with
    /// `Arc::new_cyclic`).
    pub self_ref: std::sync::Weak<Server>,
}

/// Answers awaited for IQs the server sent on its own or an account's
/// behalf, by id; only the entity asked may answer.
#[derive(Default)]
pub struct PendingIqs {
    waiting: std::sync::Mutex<HashMap<String, (String, tokio::sync::oneshot::Sender<Element>)>>,
}

impl PendingIqs {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, tokio::sync::oneshot::Sender<Element>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a result or error to whoever waits for it; false if nobody
    /// does.
    pub fn answer(&self, iq: &Element) -> bool {
        let Some(id) = iq.attr("id") else { return false };
        let mut map = self.map();
        let expected = map.get(id).map(|(from, _)| from.as_str());
        if expected.is_none() || expected != iq.attr("from") {
            return false;
        }
        match map.remove(id) {
            Some((_, tx)) => tx.send(iq.clone()).is_ok(),
            None => false,
        }
    }
}

impl Server {
    /// Sends an IQ get/set (its `from` set by the caller) and waits for the
    /// answer; `None` after `wait` or if it cannot be routed.
    pub async fn request_iq(&self, mut iq: Element, wait: std::time::Duration) -> Option<Element> {
        let id = stanza::random_hex(12);
        stanza::set_attr(&mut iq, "id", id.as_str());
        let to = iq.attr("to")?.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending_iqs.map().insert(id.clone(), (to, tx));
        self.route(iq, None).await;
        let answer = tokio::time::timeout(wait, rx).await.ok().and_then(Result::ok);
        self.pending_iqs.map().remove(&id);
        answer
    }

    /// A strong handle, for tasks spawned from hooks.
    pub fn arc(&self) -> Option<Arc<Server>> {
        self.self_ref.upgrade()
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.hosts.contains_key(domain)
    }

    /// Routes a stanza whose `from` is already trustworthy (stamped by the
    /// stream it arrived on, or built by the server).
    pub async fn route(&self, stanza: Element, origin: Option<&Arc<Session>>) {
        let Some(kind) = StanzaKind::of(&stanza) else {
            return;
        };
        let to = match stanza.attr("to") {
            None => None,
            Some(s) => match Jid::new(s) {
                Ok(j) => Some(j),
                Err(_) => {
                    self.bounce(&stanza, StanzaError::jid_malformed());
                    return;
                }
            },
        };
        if let Some(to) = &to
            && self.refused_by_blocking(&stanza, kind, to).await
        {
            return;
        }
        // A client's own presence goes through the presence hooks first
        // (roster state, bare-JID stamping), wherever it is going.
        if kind == StanzaKind::Presence && origin.is_some() {
            self.route_presence(stanza, to, origin).await;
            return;
        }
        // A client's own message goes through the message filters (archive,
        // carbons), wherever it is going: a contact, a room, a bot.
        let mut stanza = stanza;
        if kind == StanzaKind::Message
            && let Some(session) = origin
            && let Some(host) = self.host(session.jid.domain().as_str())
        {
            for filter in host.hooks.message_filters() {
                filter.outgoing(self, session, &mut stanza).await;
            }
        }
        if let Some(to) = &to
            && let Some(component) = self.components.get(to.domain().as_str())
        {
            match component {
                Some(c) => c.deliver(self, stanza).await,
                // XEP-0114 component configured but not connected.
                None if kind != StanzaKind::Presence
                    && !matches!(stanza.attr("type"), Some("error" | "result")) =>
                {
                    self.bounce(&stanza, StanzaError::service_unavailable())
                }
                None => {}
            }
            return;
        }
        match kind {
            StanzaKind::Presence => self.route_presence(stanza, to, origin).await,
            StanzaKind::Message => self.route_message(stanza, to).await,
            StanzaKind::Iq => self.route_iq(stanza, to, origin).await,
        }
    }

    /// Whether `owner` (a local account) blocks `other` (XEP-0191).
    pub async fn is_blocked(&self, owner: &BareJid, other: &Jid) -> bool {
        match self
            .host(owner.domain().as_str())
            .and_then(|h| h.hooks.block_list())
        {
            Some(list) => list.blocks(owner, other).await,
            None => false,
        }
    }

    /// XEP-0191 §3.3: nothing passes between an account and whom it
    /// blocks. A blocked sender's messages and requests get
    /// service-unavailable (it must not learn it is blocked); the blocking
    /// user's own get not-acceptable with `<blocked/>`; presence is dropped.
    async fn refused_by_blocking(&self, stanza: &Element, kind: StanzaKind, to: &Jid) -> bool {
        let Some(from) = stanza::from_jid(stanza) else {
            return false;
        };
        let answerable = match kind {
            StanzaKind::Message => !stanza::is_error(stanza),
            StanzaKind::Iq => matches!(stanza.attr("type"), Some("get" | "set")),
            StanzaKind::Presence => false,
        };
        let from_bare = from.to_bare();
        if from_bare.node().is_some()
            && self.is_local_domain(from_bare.domain().as_str())
            && from_bare.as_str() != to.to_bare().as_str()
            && self.is_blocked(&from_bare, to).await
        {
            if answerable {
                self.bounce(
                    stanza,
                    StanzaError::new(crate::stanza::ErrorType::Cancel, "not-acceptable")
                        .with_app_condition("blocked", "urn:xmpp:blocking:errors"),
                );
            }
            return true;
        }
        let to_bare = to.to_bare();
        if to_bare.node().is_some()
            && self.is_local_domain(to_bare.domain().as_str())
            && from_bare.as_str() != to_bare.as_str()
            && self.is_blocked(&to_bare, &from).await
        {
            if answerable {
                self.bounce(stanza, StanzaError::service_unavailable());
            }
            return true;
        }
        false
    }

    /// Sends an error reply back to the stanza's sender, if it is allowed
    /// one (never for errors).
    pub fn bounce(&self, stanza: &Element, err: StanzaError) {
        if let Some(reply) = stanza::error_reply(stanza, &err) {
            self.deliver_direct(reply);
        }
    }

    /// Delivers a server-generated stanza to the local full JID in `to`,
    /// without delivery rules (replies to IQs, errors, pushes).
    pub fn deliver_direct(&self, stanza: Element) -> bool {
        // An error for an IQ the server sent itself (an unreachable push
        // service) goes to whoever waits for it.
        if stanza.name() == "iq" && stanza::is_error(&stanza) && self.pending_iqs.answer(&stanza) {
            return true;
        }
        let Some(to) = stanza::to_jid(&stanza) else {
            return false;
        };
        // Errors for a component's stanzas go back to the component.
        if let Some(Some(component)) = self.components.get(to.domain().as_str()) {
            if let Some(server) = self.arc() {
                tokio::spawn(async move { component.deliver(&server, stanza).await });
                return true;
            }
            return false;
        }
        match to.try_into_full() {
            Ok(full) => match self.sessions.get(&full) {
                Some(s) => s.send(stanza),
                None => false,
            },
            Err(_) => false,
        }
    }

    async fn route_presence(&self, stanza: Element, to: Option<Jid>, origin: Option<&Arc<Session>>) {
        if let Some(session) = origin {
            let ev = Event::PresenceOut {
                session,
                stanza: &stanza,
            };
            if let Some(host) = self.host(session.jid.domain().as_str())
                && host.hooks.fire(self, &ev).await == Handled::Yes
            {
                return;
            }
        }
        let Some(to) = to else { return };
        if self.is_local_domain(to.domain().as_str()) {
            if to.node().is_none() {
                return; // presence to the server itself: nothing to do
            }
            let ev = Event::PresenceIn {
                to: &to,
                stanza: &stanza,
            };
            if let Some(host) = self.host(to.domain().as_str())
                && host.hooks.fire(self, &ev).await == Handled::Yes
            {
                return;
            }
            // Without a presence module: deliver to a full JID as is.
            if let Ok(full) = to.try_into_full()
                && let Some(s) = self.sessions.get(&full)
            {
                s.send(stanza);
            }
        }
        // Presence to remote domains is dropped until federation exists.
    }

    async fn route_message(&self, mut stanza: Element, to: Option<Jid>) {
        let msg_type = stanza.attr("type").unwrap_or("normal").to_string();
        let Some(to) = to else {
            // A message to nobody is for the user's own account.
            if let Some(from) = stanza::from_jid(&stanza) {
                let bare = from.to_bare();
                self.deliver_message_to_bare(stanza, &bare, &msg_type).await;
            }
            return;
        };
        let domain = to.domain().as_str().to_string();
        if !self.is_local_domain(&domain) {
            self.bounce(&stanza, StanzaError::remote_server_not_found());
            return;
        }
        if to.node().is_none() {
            // Messages to the server: nothing consumes them yet (RFC 6121 §8.5.1).
            if msg_type != "error" && msg_type != "headline" {
                self.bounce(&stanza, StanzaError::service_unavailable());
            }
            return;
        }
        let host = self.host(&domain);
        let filters = host.map(|h| h.hooks.message_filters()).unwrap_or_default();
        let bare = to.to_bare();
        for filter in filters {
            filter.incoming(self, &bare, &mut stanza).await;
        }
        match to.try_into_full() {
            Ok(full) => {
                if let Some(s) = self.sessions.get(&full) {
                    let delivered = [s];
                    for filter in filters {
                        filter.delivered(self, &bare, &mut stanza, &delivered);
                    }
                    let [s] = delivered;
                    s.send(stanza);
                    return;
                }
                // RFC 6121 §8.5.3.2: no such resource.
                match msg_type.as_str() {
                    "normal" | "chat" => {
                        self.deliver_message_to_bare(stanza, &full.to_bare(), &msg_type)
                            .await
                    }
                    "groupchat" => self.bounce(&stanza, StanzaError::service_unavailable()),
                    _ => {} // headline and error are silently dropped
                }
            }
            Err(bare) => self.deliver_message_to_bare(stanza, &bare, &msg_type).await,
        }
    }

    /// Delivers again a message that reached a session of `owner` which
    /// ended before its client got it: to another resource or offline
    /// storage, without the message filters it already passed.
    pub async fn redeliver(&self, stanza: Element, owner: &BareJid) {
        let msg_type = stanza.attr("type").unwrap_or("normal").to_string();
        if msg_type == "groupchat" {
            // Room history is the room's business; the room has it.
            return;
        }
        self.deliver_message_to_bare(stanza, owner, &msg_type).await;
    }

    /// RFC 6121 §8.5.2: a message for a local bare JID.
    async fn deliver_message_to_bare(&self, mut stanza: Element, bare: &BareJid, msg_type: &str) {
        let resources: Vec<Arc<Session>> = self
            .sessions
            .resources(bare)
            .into_iter()
            .filter(|s| s.is_available() && s.priority() >= 0)
            .collect();
        if msg_type == "groupchat" {
            self.bounce(&stanza, StanzaError::service_unavailable());
            return;
        }
        if !resources.is_empty() {
            let targets: Vec<&Arc<Session>> = if msg_type == "headline" {
                resources.iter().collect()
            } else {
                let top = resources.iter().map(|s| s.priority()).max().unwrap_or(0);
                resources.iter().filter(|s| s.priority() == top).collect()
            };
            if let Some(host) = self.host(bare.domain().as_str()) {
                let sessions: Vec<Arc<Session>> = targets.iter().map(|s| Arc::clone(s)).collect();
                for filter in host.hooks.message_filters() {
                    filter.delivered(self, bare, &mut stanza, &sessions);
                }
            }
            // The last target takes the stanza itself: no copy in the common
            // one-resource case.
            if let Some((last, rest)) = targets.split_last() {
                for s in rest {
                    s.send(stanza.clone());
                }
                last.send(stanza);
            }
            return;
        }
        if msg_type == "error" || msg_type == "headline" {
            return;
        }
        let Some(host) = self.host(bare.domain().as_str()) else {
            return;
        };
        let node = bare.node().map(|n| n.as_str()).unwrap_or_default();
        match host.auth.user_exists(bare.domain().as_str(), node).await {
            Ok(true) => {
                let ev = Event::MessageOffline {
                    to: bare,
                    stanza: &stanza,
                };
                if host.hooks.fire(self, &ev).await == Handled::No {
                    self.bounce(&stanza, StanzaError::service_unavailable());
                }
            }
            Ok(false) => self.bounce(&stanza, StanzaError::service_unavailable()),
            Err(e) => {
                // The backend logs its outage once; this is per message.
                tracing::debug!(error = %e, "cannot check account for offline message");
                // The backend is down for now: the sender may try again.
                self.bounce(
                    &stanza,
                    StanzaError::new(crate::stanza::ErrorType::Wait, "internal-server-error"),
                );
            }
        }
    }

    async fn route_iq(&self, stanza: Element, to: Option<Jid>, origin: Option<&Arc<Session>>) {
        let iq_type = match stanza.attr("type") {
            Some("get") => Some(IqType::Get),
            Some("set") => Some(IqType::Set),
            Some("result") | Some("error") => None,
            _ => {
                self.bounce(&stanza, StanzaError::bad_request());
                return;
            }
        };
        let from = stanza::from_jid(&stanza);
        let target = match (&to, &from) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => Jid::from(f.to_bare()),
            (None, None) => return,
        };
        let domain = target.domain().as_str().to_string();
        if !self.is_local_domain(&domain) {
            if iq_type.is_some() {
                self.bounce(&stanza, StanzaError::remote_server_not_found());
            }
            return;
        }
        if let Ok(full) = target.clone().try_into_full() {
            // An IQ to a full JID goes to that resource (RFC 6121 §8.5.3.1).
            match self.sessions.get(&full) {
                Some(s) => {
                    s.send(stanza);
                }
                None if iq_type.is_some() => self.bounce(&stanza, StanzaError::service_unavailable()),
                None => {}
            }
            return;
        }
        let Some(iq_type) = iq_type else {
            // Results and errors to a bare JID or the host: the server sent
            // the request (pings, push notifications).
            self.pending_iqs.answer(&stanza);
            return;
        };
        let Some(payload) = stanza::iq_payload(&stanza) else {
            self.bounce(&stanza, StanzaError::bad_request());
            return;
        };
        let Some(host) = self.host(&domain) else { return };
        // RFC 6121 §8.5.1: an IQ for another account that does not exist.
        let own = from
            .as_ref()
            .is_some_and(|f| f.to_bare().as_str() == target.as_str());
        if let Some(node) = target.node().filter(|_| !own) {
            match host.auth.user_exists(&domain, node.as_str()).await {
                Ok(true) => {}
                Ok(false) => {
                    self.bounce(&stanza, StanzaError::service_unavailable());
                    return;
                }
                Err(_) => {
                    self.bounce(&stanza, StanzaError::internal_server_error());
                    return;
                }
            }
        }
        let Some(handler) = host.hooks.iq_handler(&payload.ns(), iq_type) else {
            self.bounce(&stanza, StanzaError::service_unavailable());
            return;
        };
        let req = IqRequest {
            iq: &stanza,
            payload,
            host: &domain,
            from: from.as_ref(),
            to: target,
            session: origin,
        };
        let reply = match handler.handle(self, req).await {
            Ok(payload) => stanza::iq_result(&stanza, payload),
            Err(err) => match stanza::error_reply(&stanza, &err) {
                Some(r) => r,
                None => return,
            },
        };
        match origin {
            // Replies go straight back to the asking session, even before
            // it is available.
            Some(s) => {
                s.send(reply);
            }
            None => {
                self.deliver_direct(reply);
            }
        }
    }

    /// Full JIDs of the available resources of `bare`.
    pub fn available_resources(&self, bare: &BareJid) -> Vec<Arc<Session>> {
        self.sessions
            .resources(bare)
            .into_iter()
            .filter(|s| s.is_available())
            .collect()
    }

    /// Sends `stanza` (a roster push, say) to every interested resource.
    pub fn push_to_interested(&self, bare: &BareJid, stanza: &Element) {
        for s in self.sessions.resources(bare) {
            if s.is_interested() {
                let mut push = stanza.clone();
                stanza::set_attr(&mut push, "to", s.jid.to_string());
                s.send(push);
            }
        }
    }

    /// Disco features of a host: core's plus every module's.
    pub fn features(&self, host: &str) -> Vec<String> {
        let mut features: Vec<String> = [ns::DISCO_INFO, ns::DISCO_ITEMS]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(h) = self.host(host) {
            for f in h.hooks.features() {
                if !features.contains(f) {
                    features.push(f.clone());
                }
            }
        }
        features
    }

    pub fn full_jid(user: &str, host: &str, resource: &str) -> Option<FullJid> {
        FullJid::new(&format!("{user}@{host}/{resource}")).ok()
    }
}
