//! RFC 6121 §2 roster management: get (with versioning, §2.6), set and
//! remove, with pushes to every interested resource. Removing a contact
//! also cancels the subscriptions both ways (§2.5.2).

use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::hooks::{IqHandler, IqRequest, IqType};
use jackdaw_core::jid::{BareJid, Jid};
use jackdaw_core::minidom::Element;
use jackdaw_core::roster::{self, RosterSource};
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::storage::{RosterItem, RosterStore};
use jackdaw_core::stream::ns;

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &["max_roster_items"];

/// Longest roster name or group name accepted, in bytes.
const MAX_TEXT: usize = 1023;

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_max_items")]
    max_roster_items: usize,
}

fn default_max_items() -> usize {
    1000
}

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    let handler = Arc::new(Roster {
        store: ctx.stores.rosters.clone(),
        max_items: config.max_roster_items,
    });
    ctx.hooks.on_iq(ns::ROSTER, IqType::Get, handler.clone());
    ctx.hooks.on_iq(ns::ROSTER, IqType::Set, handler);
    ctx.hooks.add_stream_feature(Element::bare("ver", ns::ROSTER_VER));
    Ok(())
}

struct Roster {
    store: Arc<dyn RosterStore>,
    max_items: usize,
}

fn internal(e: impl std::fmt::Display) -> StanzaError {
    tracing::error!(error = %e, "roster storage failed");
    StanzaError::internal_server_error()
}

#[async_trait]
impl IqHandler for Roster {
    async fn handle(&self, server: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        // Only the owner may read or change a roster (RFC 6121 §2.1.3).
        let Some(from) = req.from.filter(|_| req.is_to_own_account()) else {
            return Err(StanzaError::forbidden());
        };
        let owner = from.to_bare();
        let user = owner.node().map(|n| n.as_str().to_string()).unwrap_or_default();
        let Some(host) = server.host(req.host) else {
            return Err(StanzaError::service_unavailable());
        };
        if req.iq.attr("type") == Some("get") {
            self.handle_get(host.rosters.as_ref(), req, &user).await
        } else if host.rosters.is_managed() {
            Err(StanzaError::not_allowed().with_text("Contact lists are managed by your organisation"))
        } else {
            self.handle_set(server, req, &owner, &user).await
        }
    }
}

impl Roster {
    async fn handle_get(
        &self,
        source: &dyn RosterSource,
        req: IqRequest<'_>,
        user: &str,
    ) -> Result<Option<Element>, StanzaError> {
        if let Some(s) = req.session {
            s.with_presence(|p| p.interested = true);
        }
        let (version, items) = source.roster(req.host, user).await.map_err(internal)?;
        let ver = version.to_string();
        // §2.6.3: an unchanged roster is answered with an empty result.
        if req.payload.attr("ver") == Some(ver.as_str()) {
            return Ok(None);
        }
        let mut query = Element::bare("query", ns::ROSTER);
        stanza::set_attr(&mut query, "ver", ver);
        for item in &items {
            query.append_child(roster::item_element(item));
        }
        Ok(Some(query))
    }

    async fn handle_set(
        &self,
        server: &Server,
        req: IqRequest<'_>,
        owner: &BareJid,
        user: &str,
    ) -> Result<Option<Element>, StanzaError> {
        let mut items = req.payload.children().filter(|c| c.is("item", ns::ROSTER));
        let (Some(item_el), None) = (items.next(), items.next()) else {
            return Err(StanzaError::bad_request().with_text("a roster set carries exactly one item"));
        };
        let contact = item_el
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(StanzaError::jid_malformed)?
            .to_bare();
        if contact == *owner {
            // Prosody refuses this too: one's own JID is not a contact.
            return Err(StanzaError::not_allowed().with_text("you cannot add yourself to your roster"));
        }
        let contact_str = contact.to_string();
        if item_el.attr("subscription") == Some("remove") {
            return self.remove(server, req.host, owner, user, &contact_str).await;
        }
        let name = item_el.attr("name").map(str::to_string).filter(|n| !n.is_empty());
        let mut groups: Vec<String> = Vec::new();
        for g in item_el.children().filter(|c| c.is("group", ns::ROSTER)) {
            let g = g.text();
            if g.is_empty() || g.len() > MAX_TEXT {
                return Err(StanzaError::new(
                    jackdaw_core::stanza::ErrorType::Modify,
                    "not-acceptable",
                ));
            }
            if groups.contains(&g) {
                return Err(StanzaError::bad_request().with_text("duplicate group"));
            }
            groups.push(g);
        }
        if name.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
            return Err(StanzaError::new(
                jackdaw_core::stanza::ErrorType::Modify,
                "not-acceptable",
            ));
        }
        let existing = self
            .store
            .item(req.host, user, &contact_str)
            .await
            .map_err(internal)?;
        if existing.is_none() {
            let (_, all) = self.store.roster(req.host, user).await.map_err(internal)?;
            if all.len() >= self.max_items {
                return Err(StanzaError::resource_constraint().with_text("roster is full"));
            }
        }
        // The client sets name and groups; subscription state is the
        // server's (§2.1.2.5: a client's 'subscription' other than remove is ignored).
        let mut item = existing.unwrap_or_else(|| RosterItem {
            jid: contact_str,
            ..Default::default()
        });
        item.name = name;
        item.groups = groups;
        let version = self
            .store
            .put_item(req.host, user, &item)
            .await
            .map_err(internal)?;
        roster::push(server, owner, &item, false, version);
        Ok(None)
    }

    async fn remove(
        &self,
        server: &Server,
        host: &str,
        owner: &BareJid,
        user: &str,
        contact: &str,
    ) -> Result<Option<Element>, StanzaError> {
        let Some(item) = self.store.item(host, user, contact).await.map_err(internal)? else {
            return Err(StanzaError::item_not_found());
        };
        let Some(version) = self
            .store
            .remove_item(host, user, contact)
            .await
            .map_err(internal)?
        else {
            return Err(StanzaError::item_not_found());
        };
        self.store
            .remove_pending_in(host, user, contact)
            .await
            .map_err(internal)?;
        roster::push(server, owner, &item, true, version);
        // §2.5.2: cancel both directions of the subscription.
        let from = owner.to_string();
        if item.subscription.has_to() || item.ask {
            let p = stanza::new_stanza(
                "presence",
                &[("type", "unsubscribe"), ("to", contact), ("from", &from)],
            );
            server.route(p, None).await;
        }
        if item.subscription.has_from() {
            let p = stanza::new_stanza(
                "presence",
                &[("type", "unsubscribed"), ("to", contact), ("from", &from)],
            );
            server.route(p, None).await;
            // §3.2.2: the contact no longer sees us; tell it we are gone.
            for s in server.available_resources(owner) {
                let full = s.jid.to_string();
                let p = stanza::new_stanza(
                    "presence",
                    &[("type", "unavailable"), ("to", contact), ("from", &full)],
                );
                server.route(p, None).await;
            }
        }
        Ok(None)
    }
}
