//! RFC 6121 §3-4: presence subscriptions and presence broadcast.
//!
//! Hooks: `PresenceOut` (a local client sent presence: broadcast, directed
//! presence, outbound subscription requests and answers), `PresenceIn`
//! (presence for a local account: inbound subscription handling, probes,
//! delivery), `SessionClosed` (unavailable to everyone who saw us, also
//! after an abrupt TCP loss). Subscription state lives in the roster, so
//! every change here is pushed to the interested resources.

use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::hooks::{Event, EventKind, Handled, Hook};
use jackdaw_core::jid::{BareJid, Jid};
use jackdaw_core::minidom::Element;
use jackdaw_core::roster;
use jackdaw_core::server::Server;
use jackdaw_core::session::Session;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::storage::{RosterItem, RosterStore, Subscription};
use jackdaw_core::stream::{self, ns};
use tracing::{debug, error};

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &[];

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let hook = Arc::new(Presence {
        store: ctx.stores.rosters.clone(),
    });
    ctx.hooks.on(EventKind::PresenceOut, 0, hook.clone());
    ctx.hooks.on(EventKind::PresenceIn, 0, hook.clone());
    ctx.hooks.on(EventKind::SessionClosed, 0, hook);
    // RFC 6121 §3.4: pre-approval is announced as a stream feature.
    ctx.hooks
        .add_stream_feature(Element::bare("sub", ns::PRE_APPROVAL));
    Ok(())
}

struct Presence {
    store: Arc<dyn RosterStore>,
}

#[async_trait]
impl Hook for Presence {
    async fn handle(&self, server: &Server, event: &Event<'_>) -> Handled {
        match event {
            Event::PresenceOut { session, stanza } => self.handle_outbound(server, session, stanza).await,
            Event::PresenceIn { to, stanza } => self.handle_inbound(server, to, stanza).await,
            Event::SessionClosed { session } => {
                self.handle_session_closed(server, session).await;
                Handled::No
            }
            _ => Handled::No,
        }
    }
}

fn user_and_host(bare: &BareJid) -> (String, String) {
    (
        bare.node().map(|n| n.as_str().to_string()).unwrap_or_default(),
        bare.domain().as_str().to_string(),
    )
}

fn is_managed_host(server: &Server, owner: &BareJid) -> bool {
    server
        .host(owner.domain().as_str())
        .is_some_and(|h| h.rosters.is_managed())
}

fn managed(server: &Server, session: &Session) -> bool {
    is_managed_host(server, &session.bare())
}

fn with_addresses(stanza: &Element, from: &str, to: &str) -> Element {
    let mut p = stanza.clone();
    stanza::set_attr(&mut p, "from", from);
    stanza::set_attr(&mut p, "to", to);
    p
}

impl Presence {
    async fn roster(&self, server: &Server, owner: &BareJid) -> Vec<RosterItem> {
        let (user, host) = user_and_host(owner);
        let Some(source) = server.host(&host).map(|h| h.rosters.clone()) else {
            return Vec::new();
        };
        match source.roster(&host, &user).await {
            Ok((_, items)) => items,
            Err(e) => {
                error!(error = %e, "cannot read roster for presence");
                Vec::new()
            }
        }
    }

    async fn item(&self, server: &Server, owner: &BareJid, contact: &str) -> Option<RosterItem> {
        let (user, host) = user_and_host(owner);
        let source = server.host(&host).map(|h| h.rosters.clone())?;
        source.item(&host, &user, contact).await.unwrap_or_else(|e| {
            error!(error = %e, "cannot read roster item");
            None
        })
    }

    async fn save(&self, server: &Server, owner: &BareJid, item: &RosterItem) {
        let (user, host) = user_and_host(owner);
        match self.store.put_item(&host, &user, item).await {
            Ok(version) => roster::push(server, owner, item, false, version),
            Err(e) => error!(error = %e, "cannot store roster item"),
        }
    }

    // ---- outbound: what a local client sends ----

    async fn handle_outbound(&self, server: &Server, session: &Arc<Session>, stanza: &Element) -> Handled {
        let kind = stanza.attr("type").unwrap_or("available");
        let to = stanza::to_jid(stanza);
        match (kind, to) {
            ("available" | "unavailable", None) => {
                self.broadcast(server, session, stanza, kind == "available").await
            }
            ("available" | "unavailable", Some(to)) => {
                self.directed(server, session, stanza, to, kind == "available")
                    .await
            }
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(_))
                if managed(server, session) =>
            {
                // The web app decides who is whose contact (the seed's
                // block_subscriptions).
                let err =
                    StanzaError::not_allowed().with_text("Contact lists are managed by your organisation");
                if let Some(reply) = stanza::error_reply(stanza, &err) {
                    session.send(reply);
                }
            }
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(to)) => {
                self.outbound_subscription(server, session, stanza, kind, to.to_bare())
                    .await
            }
            ("probe", _) => {} // clients may not probe (RFC 6121 §4.3)
            ("error", Some(_)) => server.route(stanza.clone(), None).await,
            _ => debug!(kind, "presence ignored"),
        }
        Handled::Yes
    }

    /// §4.2 initial presence, §4.4 updates, §4.5 unavailable.
    async fn broadcast(&self, server: &Server, session: &Arc<Session>, stanza: &Element, available: bool) {
        let owner = session.bare();
        let from = session.jid.to_string();
        let priority = stanza
            .get_child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let (initial, directed) = session.with_presence(|p| {
            let initial = available && !p.available;
            p.available = available;
            p.priority = if available { priority } else { 0 };
            p.last_presence = available.then(|| stanza.clone());
            let directed = if available {
                Vec::new()
            } else {
                p.directed.drain().collect()
            };
            (initial, directed)
        });
        let items = self.roster(server, &owner).await;
        // Contacts with a subscription to us see the presence.
        for item in items.iter().filter(|i| i.subscription.has_from()) {
            server.route(with_addresses(stanza, &from, &item.jid), None).await;
        }
        // Our other resources see it too (§4.2.2).
        for other in server.available_resources(&owner) {
            if other.id != session.id {
                other.send(with_addresses(stanza, &from, other.jid.as_str()));
            }
        }
        // Entities that got directed presence learn we left (§4.6.3).
        for target in directed {
            server.route(with_addresses(stanza, &from, &target), None).await;
        }
        if initial {
            // The user sees itself, then its contacts' presence (§4.2.3-4).
            session.send(with_addresses(stanza, &from, &from));
            for item in items.iter().filter(|i| i.subscription.has_to()) {
                self.probe_local(server, session, &item.jid).await;
            }
            for other in server.available_resources(&owner) {
                if other.id != session.id
                    && let Some(p) = other.with_presence(|p| p.last_presence.clone())
                {
                    session.send(with_addresses(&p, other.jid.as_str(), &from));
                }
            }
            self.redeliver_pending(server, session, &owner).await;
            if let Some(host) = server.host(owner.domain().as_str()) {
                host.hooks.fire(server, &Event::InitialPresence { session }).await;
            }
        }
    }

    /// Answers a probe for a local contact on the contact's behalf.
    /// The contact's server answers from the contact's roster (§4.3.2):
    /// only a contact whose roster lets the user see it shows its presence.
    async fn probe_local(&self, server: &Server, session: &Arc<Session>, contact: &str) {
        let Ok(contact) = BareJid::new(contact) else {
            return;
        };
        if !server.is_local_domain(contact.domain().as_str()) {
            // Components (and, with federation, remote servers) answer a
            // real probe themselves.
            let probe = stanza::new_stanza(
                "presence",
                &[
                    ("type", "probe"),
                    ("from", session.bare().as_str()),
                    ("to", contact.as_str()),
                ],
            );
            server.route(probe, None).await;
            return;
        }
        let resources = server.available_resources(&contact);
        if resources.is_empty() {
            return;
        }
        let allowed = self
            .item(server, &contact, session.bare().as_str())
            .await
            .is_some_and(|i| i.subscription.has_from());
        if !allowed {
            return;
        }
        let to = session.jid.to_string();
        for r in resources {
            if let Some(p) = r.with_presence(|p| p.last_presence.clone()) {
                session.send(with_addresses(&p, r.jid.as_str(), &to));
            }
        }
    }

    /// §3.1.3: subscription requests not yet answered come again at login.
    async fn redeliver_pending(&self, _server: &Server, session: &Arc<Session>, owner: &BareJid) {
        let (user, host) = user_and_host(owner);
        let pending = self.store.pending_in(&host, &user).await.unwrap_or_else(|e| {
            error!(error = %e, "cannot read pending subscription requests");
            Vec::new()
        });
        for (contact, xml) in pending {
            let stored = xml.parse::<Element>().ok();
            let mut p = stored.unwrap_or_else(|| stanza::new_stanza("presence", &[("type", "subscribe")]));
            stanza::set_attr(&mut p, "from", contact);
            stanza::set_attr(&mut p, "to", owner.to_string());
            session.send(p);
        }
    }

    /// §4.6 directed presence.
    async fn directed(
        &self,
        server: &Server,
        session: &Arc<Session>,
        stanza: &Element,
        to: Jid,
        available: bool,
    ) {
        let item = self.item(server, &session.bare(), to.to_bare().as_str()).await;
        let subscribed = item.is_some_and(|i| i.subscription.has_from());
        if !subscribed {
            session.with_presence(|p| {
                if available {
                    p.directed.insert(to.to_string());
                } else {
                    p.directed.remove(to.as_str());
                }
            });
        }
        server.route(stanza.clone(), None).await;
    }

    /// §3.1.2, 3.2.2, 3.3.2, 3.4.2: the user's side of subscriptions.
    async fn outbound_subscription(
        &self,
        server: &Server,
        session: &Arc<Session>,
        stanza: &Element,
        kind: &str,
        contact: BareJid,
    ) {
        let owner = session.bare();
        let contact_str = contact.to_string();
        let (user, host) = user_and_host(&owner);
        // Subscription stanzas travel between bare JIDs (§3.1.2).
        let mut out = with_addresses(stanza, owner.as_str(), &contact_str);
        let mut item = self
            .item(server, &owner, &contact_str)
            .await
            .unwrap_or_else(|| RosterItem {
                jid: contact_str.clone(),
                ..Default::default()
            });
        let forward = match kind {
            "subscribe" => {
                if !item.subscription.has_to() {
                    item.ask = true;
                    self.save(server, &owner, &item).await;
                }
                true
            }
            "subscribed" => {
                let pending = self
                    .store
                    .remove_pending_in(&host, &user, &contact_str)
                    .await
                    .unwrap_or(false);
                if item.subscription.has_from() {
                    false
                } else if pending {
                    item.subscription = match item.subscription {
                        Subscription::To => Subscription::Both,
                        _ => Subscription::From,
                    };
                    item.approved = false;
                    self.save(server, &owner, &item).await;
                    true
                } else {
                    // §3.4: pre-approval, no request yet.
                    item.approved = true;
                    self.save(server, &owner, &item).await;
                    false
                }
            }
            "unsubscribe" => {
                if item.subscription.has_to() || item.ask {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::From,
                        _ => Subscription::None,
                    };
                    item.ask = false;
                    self.save(server, &owner, &item).await;
                }
                true
            }
            _ => {
                // unsubscribed: cancel or deny the contact's subscription.
                let pending = self
                    .store
                    .remove_pending_in(&host, &user, &contact_str)
                    .await
                    .unwrap_or(false);
                if item.subscription.has_from() {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::To,
                        _ => Subscription::None,
                    };
                    self.save(server, &owner, &item).await;
                    true
                } else if item.approved {
                    item.approved = false;
                    self.save(server, &owner, &item).await;
                    false
                } else {
                    pending
                }
            }
        };
        if !forward {
            return;
        }
        stanza::remove_attr(&mut out, "id");
        if let Some(id) = stanza.attr("id") {
            stanza::set_attr(&mut out, "id", id);
        }
        server.route(out, None).await;
        match kind {
            // §3.1.5: the new subscriber gets our current presence.
            "subscribed" => {
                for r in server.available_resources(&owner) {
                    if let Some(p) = r.with_presence(|p| p.last_presence.clone()) {
                        server
                            .route(with_addresses(&p, r.jid.as_str(), &contact_str), None)
                            .await;
                    }
                }
            }
            // §3.2.2: the former subscriber learns we are gone for it.
            "unsubscribed" => {
                for r in server.available_resources(&owner) {
                    let p = stanza::new_stanza("presence", &[("type", "unavailable")]);
                    server
                        .route(with_addresses(&p, r.jid.as_str(), &contact_str), None)
                        .await;
                }
            }
            _ => {}
        }
    }

    // ---- inbound: presence for a local account ----

    async fn handle_inbound(&self, server: &Server, to: &Jid, stanza: &Element) -> Handled {
        let kind = stanza.attr("type").unwrap_or("available").to_string();
        let Some(from) = stanza::from_jid(stanza) else {
            return Handled::Yes;
        };
        let owner = to.to_bare();
        match kind.as_str() {
            "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"
                if is_managed_host(server, &owner) =>
            {
                debug!(from = %from, "subscription stanza dropped: rosters are managed by the web app");
            }
            "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" => {
                self.inbound_subscription(server, &owner, stanza, &kind, from.to_bare())
                    .await
            }
            "probe" => self.inbound_probe(server, &owner, from).await,
            _ => {
                // available, unavailable, error: to the addressed resource,
                // or to every available resource for a bare JID (§4.3.2).
                match to.clone().try_into_full() {
                    Ok(full) => {
                        if let Some(s) = server.sessions.get(&full) {
                            s.send(stanza.clone());
                        }
                    }
                    Err(_) => {
                        // With managed rosters only contacts may show
                        // their presence to the user.
                        if is_managed_host(server, &owner)
                            && server.sessions.is_online(&owner)
                            && self.item(server, &owner, from.to_bare().as_str()).await.is_none()
                        {
                            return Handled::Yes;
                        }
                        for s in server.available_resources(&owner) {
                            s.send(stanza.clone());
                        }
                    }
                }
            }
        }
        Handled::Yes
    }

    fn deliver_to_available(server: &Server, owner: &BareJid, stanza: &Element) {
        for s in server.available_resources(owner) {
            s.send(stanza.clone());
        }
    }

    async fn inbound_subscription(
        &self,
        server: &Server,
        owner: &BareJid,
        stanza: &Element,
        kind: &str,
        contact: BareJid,
    ) {
        let (user, host) = user_and_host(owner);
        match server.host(&host).map(|h| h.auth.clone()) {
            Some(auth) if auth.user_exists(&host, &user).await.unwrap_or(false) => {}
            _ => {
                // §3.1.3: no such user; for a request, answer unsubscribed.
                if kind == "subscribe" {
                    let p = stanza::new_stanza(
                        "presence",
                        &[
                            ("type", "unsubscribed"),
                            ("from", owner.as_str()),
                            ("to", contact.as_str()),
                        ],
                    );
                    server.route(p, None).await;
                }
                return;
            }
        }
        let contact_str = contact.to_string();
        let existing = self.item(server, owner, &contact_str).await;
        let mut delivered = with_addresses(stanza, contact.as_str(), owner.as_str());
        stanza::remove_attr(&mut delivered, "id");
        if let Some(id) = stanza.attr("id") {
            stanza::set_attr(&mut delivered, "id", id);
        }
        match kind {
            "subscribe" => {
                if existing.as_ref().is_some_and(|i| i.subscription.has_from()) {
                    // Already subscribed: answer for the user (§3.1.3 #2).
                    let p = stanza::new_stanza(
                        "presence",
                        &[
                            ("type", "subscribed"),
                            ("from", owner.as_str()),
                            ("to", contact.as_str()),
                        ],
                    );
                    server.route(p, None).await;
                } else if let Some(mut item) = existing.filter(|i| i.approved) {
                    // Pre-approved (§3.4): accept without asking.
                    item.approved = false;
                    item.subscription = match item.subscription {
                        Subscription::To => Subscription::Both,
                        _ => Subscription::From,
                    };
                    self.save(server, owner, &item).await;
                    let p = stanza::new_stanza(
                        "presence",
                        &[
                            ("type", "subscribed"),
                            ("from", owner.as_str()),
                            ("to", contact.as_str()),
                        ],
                    );
                    server.route(p, None).await;
                    for r in server.available_resources(owner) {
                        if let Some(p) = r.with_presence(|p| p.last_presence.clone()) {
                            server
                                .route(with_addresses(&p, r.jid.as_str(), &contact_str), None)
                                .await;
                        }
                    }
                } else {
                    let xml = stream::serialize(&delivered);
                    if let Err(e) = self.store.add_pending_in(&host, &user, &contact_str, &xml).await {
                        error!(error = %e, "cannot store subscription request");
                    }
                    Self::deliver_to_available(server, owner, &delivered);
                }
            }
            "subscribed" => {
                let Some(mut item) = existing.filter(|i| i.ask) else {
                    return;
                };
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::From => Subscription::Both,
                    _ => Subscription::To,
                };
                self.save(server, owner, &item).await;
                Self::deliver_to_available(server, owner, &delivered);
            }
            "unsubscribe" => {
                let had_pending = self
                    .store
                    .remove_pending_in(&host, &user, &contact_str)
                    .await
                    .unwrap_or(false);
                if let Some(mut item) = existing.filter(|i| i.subscription.has_from()) {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::To,
                        _ => Subscription::None,
                    };
                    self.save(server, owner, &item).await;
                    Self::deliver_to_available(server, owner, &delivered);
                    // §3.3.3: the former subscriber sees us go unavailable.
                    for r in server.available_resources(owner) {
                        let p = stanza::new_stanza("presence", &[("type", "unavailable")]);
                        server
                            .route(with_addresses(&p, r.jid.as_str(), &contact_str), None)
                            .await;
                    }
                } else if had_pending {
                    Self::deliver_to_available(server, owner, &delivered);
                }
            }
            _ => {
                let Some(mut item) = existing.filter(|i| i.subscription.has_to() || i.ask) else {
                    return;
                };
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::Both => Subscription::From,
                    _ => Subscription::None,
                };
                self.save(server, owner, &item).await;
                Self::deliver_to_available(server, owner, &delivered);
            }
        }
    }

    /// §4.3.2: a subscribed contact asks for our presence.
    async fn inbound_probe(&self, server: &Server, owner: &BareJid, from: Jid) {
        let item = self.item(server, owner, from.to_bare().as_str()).await;
        if !item.is_some_and(|i| i.subscription.has_from()) {
            return;
        }
        let resources = server.available_resources(owner);
        if resources.is_empty() {
            let p = stanza::new_stanza("presence", &[("type", "unavailable")]);
            server
                .route(with_addresses(&p, owner.as_str(), from.as_str()), None)
                .await;
        }
        for r in resources {
            if let Some(p) = r.with_presence(|p| p.last_presence.clone()) {
                server
                    .route(with_addresses(&p, r.jid.as_str(), from.as_str()), None)
                    .await;
            }
        }
    }

    /// A session that ends while available goes unavailable for everyone
    /// who could see it (§4.5.2), even if it never said goodbye.
    async fn handle_session_closed(&self, server: &Server, session: &Arc<Session>) {
        if !session.is_available() {
            return;
        }
        let unavailable = stanza::new_stanza("presence", &[("type", "unavailable")]);
        self.broadcast(server, session, &unavailable, false).await;
    }
}
