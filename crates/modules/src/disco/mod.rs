//! XEP-0030 Service Discovery for the host and for accounts: the host's
//! identity and exactly the features its loaded modules registered.

use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::hooks::{IqHandler, IqRequest, IqType};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::stream::ns;

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &[];

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    ctx.hooks.on_iq(ns::DISCO_INFO, IqType::Get, Arc::new(DiscoInfo));
    ctx.hooks
        .on_iq(ns::DISCO_ITEMS, IqType::Get, Arc::new(DiscoItems));
    Ok(())
}

fn identity(category: &str, kind: &str, name: Option<&str>) -> Element {
    let mut el = Element::bare("identity", ns::DISCO_INFO);
    stanza::set_attr(&mut el, "category", category);
    stanza::set_attr(&mut el, "type", kind);
    if let Some(name) = name {
        stanza::set_attr(&mut el, "name", name);
    }
    el
}

struct DiscoInfo;

#[async_trait]
impl IqHandler for DiscoInfo {
    async fn handle(&self, server: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        if req.payload.attr("node").is_some() {
            return Err(StanzaError::item_not_found());
        }
        let mut query = Element::bare("query", ns::DISCO_INFO);
        if req.is_to_host() {
            query.append_child(identity("server", "im", Some("Jackdaw")));
            for f in server.features(req.host) {
                let mut el = Element::bare("feature", ns::DISCO_INFO);
                stanza::set_attr(&mut el, "var", f);
                query.append_child(el);
            }
        } else if req.is_to_own_account() {
            // XEP-0030 §3.1 accounts: the user's own account.
            query.append_child(identity("account", "registered", None));
            let account_features = server
                .host(req.host)
                .map(|h| h.hooks.account_features().to_vec())
                .unwrap_or_default();
            for f in std::iter::once(ns::DISCO_INFO.to_string()).chain(account_features) {
                let mut el = Element::bare("feature", ns::DISCO_INFO);
                stanza::set_attr(&mut el, "var", f);
                query.append_child(el);
            }
        } else {
            // Other users' accounts are not disclosed (RFC 6121 §8.5.1).
            return Err(StanzaError::service_unavailable());
        }
        Ok(Some(query))
    }
}

struct DiscoItems;

#[async_trait]
impl IqHandler for DiscoItems {
    async fn handle(&self, server: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        if req.payload.attr("node").is_some() {
            return Err(StanzaError::item_not_found());
        }
        if !req.is_to_host() && !req.is_to_own_account() {
            return Err(StanzaError::service_unavailable());
        }
        let mut query = Element::bare("query", ns::DISCO_ITEMS);
        if req.is_to_host() {
            // XEP-0030 §4: the host's services are its components.
            for domain in server.components.domains() {
                let mut item = Element::bare("item", ns::DISCO_ITEMS);
                stanza::set_attr(&mut item, "jid", domain);
                query.append_child(item);
            }
        }
        Ok(Some(query))
    }
}
