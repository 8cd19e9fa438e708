//! XEP-0280 Message Carbons: a resource that enables carbons gets a copy
//! of every eligible message its account sends from, or receives on,
//! another resource, so a conversation reads the same on the phone and on
//! the desktop. Eligibility follows XEP-0280 §6 with the XEP-0334 hints.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jackdaw_core::hooks::{Event, EventKind, Handled, Hook, IqHandler, IqRequest, IqType, MessageFilter};
use jackdaw_core::jid::BareJid;
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::session::Session;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::stream::ns;

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &[];

const RECEIPTS: &str = "urn:xmpp:receipts";
const MARKERS: &str = "urn:xmpp:chat-markers:0";

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let carbons = Arc::new(Carbons::default());
    ctx.hooks.add_feature(ns::CARBONS);
    ctx.hooks.on_iq(ns::CARBONS, IqType::Set, carbons.clone());
    ctx.hooks.on(EventKind::SessionClosed, 0, carbons.clone());
    ctx.hooks.on_message(carbons);
    Ok(())
}

/// Which sessions (by id) enabled carbons.
#[derive(Default)]
struct Carbons {
    enabled: Mutex<HashSet<u64>>,
}

impl Carbons {
    fn is_enabled(&self, session: &Session) -> bool {
        self.enabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&session.id)
    }

    /// Sends `<sent/>` or `<received/>` copies of `message` to the account's
    /// carbons-enabled resources, except those in `skip`.
    fn copy_to(&self, server: &Server, owner: &BareJid, message: &Element, direction: &str, skip: &[u64]) {
        for session in server.sessions.resources(owner) {
            if skip.contains(&session.id) || !self.is_enabled(&session) {
                continue;
            }
            let mut wrapper = stanza::new_stanza(
                "message",
                &[
                    ("from", owner.as_str()),
                    ("to", &session.jid.to_string()),
                    ("type", message.attr("type").unwrap_or("normal")),
                ],
            );
            let mut forwarded = Element::bare("forwarded", ns::FORWARD);
            forwarded.append_child(message.clone());
            let mut carbon = Element::bare(direction, ns::CARBONS);
            carbon.append_child(forwarded);
            wrapper.append_child(carbon);
            session.send(wrapper);
        }
    }
}

/// XEP-0280 §6: what is worth copying.
fn eligible(message: &Element) -> bool {
    if message.has_child("private", ns::CARBONS)
        || message.has_child("no-copy", ns::HINTS)
        || message.has_child("sent", ns::CARBONS)
        || message.has_child("received", ns::CARBONS)
        // Archive query results belong to the querying resource only.
        || message.has_child("result", ns::MAM)
    {
        return false;
    }
    match message.attr("type").unwrap_or("normal") {
        "chat" => true,
        "normal" => {
            message.has_child("body", ns::CLIENT)
                || message
                    .children()
                    .any(|c| c.ns() == RECEIPTS || c.ns() == MARKERS)
        }
        // groupchat reaches every joined resource anyway; headline and
        // error are not conversation.
        _ => false,
    }
}

#[async_trait]
impl IqHandler for Carbons {
    async fn handle(&self, _: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        let Some(session) = req
            .session
            .filter(|_| req.is_to_own_account() || req.is_to_host())
        else {
            return Err(StanzaError::not_allowed());
        };
        let mut enabled = self.enabled.lock().unwrap_or_else(|e| e.into_inner());
        match req.payload.name() {
            "enable" => enabled.insert(session.id),
            "disable" => enabled.remove(&session.id),
            _ => return Err(StanzaError::bad_request()),
        };
        Ok(None)
    }
}

#[async_trait]
impl Hook for Carbons {
    async fn handle(&self, _: &Server, event: &Event<'_>) -> Handled {
        if let Event::SessionClosed { session } = event {
            self.enabled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&session.id);
        }
        Handled::No
    }
}

#[async_trait]
impl MessageFilter for Carbons {
    async fn outgoing(&self, server: &Server, session: &Arc<Session>, message: &mut Element) {
        // `<private/>` stays on until delivery, so the recipient's side
        // (this server too) does not copy it either.
        let owner = session.bare();
        if eligible(message) {
            self.copy_to(server, &owner, message, "sent", &[session.id]);
        }
        // The sender's archive id (from mam) was for the copies only.
        stanza::remove_children_where(message, |c| {
            c.is("stanza-id", ns::STANZA_ID) && c.attr("by") == Some(owner.as_str())
        });
    }

    fn delivered(&self, server: &Server, to: &BareJid, message: &mut Element, sessions: &[Arc<Session>]) {
        if eligible(message) {
            let skip: Vec<u64> = sessions.iter().map(|s| s.id).collect();
            self.copy_to(server, to, message, "received", &skip);
        }
        // §6: the hint is for the servers; the recipient does not see it.
        if message.has_child("private", ns::CARBONS) {
            stanza::remove_children(message, "private", ns::CARBONS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn eligibility_follows_xep_0280() {
        assert!(eligible(&msg("<message xmlns='jabber:client' type='chat'/>")));
        assert!(eligible(&msg(
            "<message xmlns='jabber:client'><body>hi</body></message>"
        )));
        assert!(eligible(&msg(
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>"
        )));
        assert!(!eligible(&msg("<message xmlns='jabber:client'/>")));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
        )));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='chat'><private xmlns='urn:xmpp:carbons:2'/></message>"
        )));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='chat'><no-copy xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(!eligible(&msg(
            "<message xmlns='jabber:client' type='error'><body>x</body></message>"
        )));
    }
}
