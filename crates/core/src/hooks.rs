//! The event/hook bus. Modules register IQ handlers by payload namespace
//! and listeners for session and stanza events, as Prosody's modules hook
//! events; listeners run in priority order until one says `Handled::Yes`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, Jid};
use minidom::Element;

use crate::auth::TokenVerifier;
use crate::roster::RosterSource;
use crate::server::Server;
use crate::session::Session;
use crate::stanza::StanzaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Yes,
    No,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqType {
    Get,
    Set,
}

/// An IQ get/set addressed to the server or to an account's bare JID.
pub struct IqRequest<'a> {
    pub iq: &'a Element,
    pub payload: &'a Element,
    /// The virtual host the IQ is addressed to (or comes from).
    pub host: &'a str,
    /// The sender; None before authentication (in-band registration).
    pub from: Option<&'a Jid>,
    /// The addressee: the host itself or a local bare JID.
    pub to: Jid,
    pub session: Option<&'a Arc<Session>>,
}

impl IqRequest<'_> {
    /// True when the IQ is addressed to the sender's own account (a
    /// missing `to` means the account, RFC 6120 §10.3.3).
    pub fn is_to_own_account(&self) -> bool {
        match self.from {
            Some(from) => self.to.as_str() == from.to_bare().as_str(),
            None => false,
        }
    }

    pub fn is_to_host(&self) -> bool {
        self.to.node().is_none()
    }
}

/// Answers an IQ: `Ok(Some(payload))` or `Ok(None)` for an empty result,
/// `Err` for an error reply.
#[async_trait]
pub trait IqHandler: Send + Sync {
    async fn handle(&self, server: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError>;
}

/// Events modules may listen to.
pub enum Event<'a> {
    /// The server is up, before the first connection is served: the time
    /// for work a module wants done at start (loading keys).
    Started,
    /// A resource was bound; the session is routable.
    SessionBound { session: &'a Arc<Session> },
    /// The session sent its first available presence (RFC 6121 §4.2):
    /// the moment to flush what was kept for it (offline messages).
    InitialPresence { session: &'a Arc<Session> },
    /// The session ended (cleanly or not); it is already unregistered.
    SessionClosed { session: &'a Arc<Session> },
    /// A presence stanza sent by a local session, `from` stamped.
    PresenceOut {
        session: &'a Arc<Session>,
        stanza: &'a Element,
    },
    /// A presence stanza addressed to a local account (bare or full JID).
    PresenceIn { to: &'a Jid, stanza: &'a Element },
    /// A message for a local account with no resource to take it.
    MessageOffline { to: &'a BareJid, stanza: &'a Element },
    /// A XEP-0198 session lost its connection and hibernates, holding
    /// `queued` stanzas its client never acknowledged.
    Hibernating {
        session: &'a Arc<Session>,
        queued: &'a [Element],
    },
    /// A stanza reached a hibernating session's queue.
    QueuedWhileHibernating {
        session: &'a Arc<Session>,
        stanza: &'a Element,
    },
    /// The client has not acknowledged `unacked` stanzas within
    /// `smacks_max_ack_delay`: it may be asleep.
    AckDelayed {
        session: &'a Arc<Session>,
        unacked: &'a [Element],
    },
    /// Any module asks for a push notification to the account's devices
    /// (Prosody's `cloud-notify-ping`).
    NotifyPing { account: &'a BareJid },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Started,
    SessionBound,
    InitialPresence,
    SessionClosed,
    PresenceOut,
    PresenceIn,
    MessageOffline,
    Hibernating,
    QueuedWhileHibernating,
    AckDelayed,
    NotifyPing,
}

impl Event<'_> {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Started => EventKind::Started,
            Event::SessionBound { .. } => EventKind::SessionBound,
            Event::InitialPresence { .. } => EventKind::InitialPresence,
            Event::SessionClosed { .. } => EventKind::SessionClosed,
            Event::PresenceOut { .. } => EventKind::PresenceOut,
            Event::PresenceIn { .. } => EventKind::PresenceIn,
            Event::MessageOffline { .. } => EventKind::MessageOffline,
            Event::Hibernating { .. } => EventKind::Hibernating,
            Event::QueuedWhileHibernating { .. } => EventKind::QueuedWhileHibernating,
            Event::AckDelayed { .. } => EventKind::AckDelayed,
            Event::NotifyPing { .. } => EventKind::NotifyPing,
        }
    }
}

#[async_trait]
pub trait Hook: Send + Sync {
    async fn handle(&self, server: &Server, event: &Event<'_>) -> Handled;
}

/// Whom an account blocks (XEP-0191); the router asks it for every stanza
/// to or from a local account.
#[async_trait]
pub trait BlockList: Send + Sync {
    async fn blocks(&self, owner: &BareJid, other: &Jid) -> bool;
}

/// Sees every message between a local account and anyone, and may amend
/// it before it goes on (the archive stamps its XEP-0359 stanza-id here);
/// carbons copy it to the account's other resources.
#[async_trait]
pub trait MessageFilter: Send + Sync {
    /// A message a local session sent, `from` stamped, before routing.
    async fn outgoing(&self, _server: &Server, _session: &Arc<Session>, _stanza: &mut Element) {}
    /// A message for the local account `to`, before delivery (to a
    /// resource, or offline storage).
    async fn incoming(&self, _server: &Server, _to: &BareJid, _stanza: &mut Element) {}
    /// An incoming message is about to be handed to these sessions of `to`;
    /// last chance to amend it (carbons strip `<private/>` here).
    fn delivered(&self, _server: &Server, _to: &BareJid, _stanza: &mut Element, _sessions: &[Arc<Session>]) {}
}

/// The hooks and features of one virtual host.
#[derive(Default)]
pub struct Hooks {
    iq: HashMap<(String, IqType), Arc<dyn IqHandler>>,
    listeners: Vec<(EventKind, i32, Arc<dyn Hook>)>,
    message_filters: Vec<Arc<dyn MessageFilter>>,
    features: Vec<String>,
    /// Features of each account's bare JID (XEP-0313 on the account).
    account_features: Vec<String>,
    /// Stream features a module adds after authentication (e.g. rosterver).
    stream_features: Vec<Element>,
    /// Set by a module that takes rosters from elsewhere (roster_http).
    roster_source: Option<Arc<dyn RosterSource>>,
    /// Set by the module that keeps blocklists (XEP-0191).
    block_list: Option<Arc<dyn BlockList>>,
    /// Set by the module that issues OAuth tokens: OAUTHBEARER is offered.
    token_verifier: Option<Arc<dyn TokenVerifier>>,
    /// HTTP routes modules mount on the HTTP listener for this host.
    http_routes: Option<axum::Router<Arc<Server>>>,
}

impl Hooks {
    pub fn on_iq(&mut self, ns: &str, kind: IqType, handler: Arc<dyn IqHandler>) {
        self.iq.insert((ns.to_string(), kind), handler);
    }

    /// Registers a listener; higher priority runs first.
    pub fn on(&mut self, kind: EventKind, priority: i32, hook: Arc<dyn Hook>) {
        self.listeners.push((kind, priority, hook));
        self.listeners.sort_by_key(|(_, p, _)| -p);
    }

    /// Adds a message filter; filters run in the order added.
    pub fn on_message(&mut self, filter: Arc<dyn MessageFilter>) {
        self.message_filters.push(filter);
    }

    pub fn message_filters(&self) -> &[Arc<dyn MessageFilter>] {
        &self.message_filters
    }

    /// Advertises a disco#info feature for the host.
    pub fn add_feature(&mut self, feature: &str) {
        if !self.features.iter().any(|f| f == feature) {
            self.features.push(feature.to_string());
        }
    }

    /// Advertises a disco#info feature on every account's bare JID.
    pub fn add_account_feature(&mut self, feature: &str) {
        if !self.account_features.iter().any(|f| f == feature) {
            self.account_features.push(feature.to_string());
        }
    }

    pub fn account_features(&self) -> &[String] {
        &self.account_features
    }

    pub fn add_stream_feature(&mut self, el: Element) {
        self.stream_features.push(el);
    }

    /// Replaces where this host's rosters come from.
    pub fn set_roster_source(&mut self, source: Arc<dyn RosterSource>) {
        self.roster_source = Some(source);
    }

    pub fn roster_source(&self) -> Option<&Arc<dyn RosterSource>> {
        self.roster_source.as_ref()
    }

    pub fn set_block_list(&mut self, list: Arc<dyn BlockList>) {
        self.block_list = Some(list);
    }

    pub fn block_list(&self) -> Option<&Arc<dyn BlockList>> {
        self.block_list.as_ref()
    }

    pub fn set_token_verifier(&mut self, verifier: Arc<dyn TokenVerifier>) {
        self.token_verifier = Some(verifier);
    }

    pub fn token_verifier(&self) -> Option<&Arc<dyn TokenVerifier>> {
        self.token_verifier.as_ref()
    }

    /// Mounts routes on the HTTP listener; requests reach them by the
    /// `Host` header (or directly when one host has routes).
    pub fn add_http_routes(&mut self, routes: axum::Router<Arc<Server>>) {
        self.http_routes = Some(match self.http_routes.take() {
            Some(r) => r.merge(routes),
            None => routes,
        });
    }

    pub fn take_http_routes(&mut self) -> Option<axum::Router<Arc<Server>>> {
        self.http_routes.take()
    }

    pub fn features(&self) -> &[String] {
        &self.features
    }

    pub fn stream_features(&self) -> &[Element] {
        &self.stream_features
    }

    pub fn iq_handler(&self, ns: &str, kind: IqType) -> Option<Arc<dyn IqHandler>> {
        self.iq.get(&(ns.to_string(), kind)).cloned()
    }

    pub async fn fire(&self, server: &Server, event: &Event<'_>) -> Handled {
        let kind = event.kind();
        for (k, _, hook) in &self.listeners {
            if *k == kind && hook.handle(server, event).await == Handled::Yes {
                return Handled::Yes;
            }
        }
        Handled::No
    }
}
