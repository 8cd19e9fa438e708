//! XEP-0191 Blocking Command, as Prosody's mod_blocklist: each account keeps
//! a list of JIDs (full, bare or domain) it wants nothing from and sends
//! nothing to. The router enforces it for every stanza (see
//! `Server::refused_by_blocking`); this module keeps the lists (stored,
//! cached in memory), answers the protocol, pushes changes to the
//! account's resources and tells newly blocked contacts the user went
//! offline.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jackdaw_core::hooks::{BlockList, Event, EventKind, Handled, Hook, IqHandler, IqRequest, IqType};
use jackdaw_core::jid::{BareJid, Jid};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::storage::BlocklistStore;
use tracing::error;

use crate::ModuleContext;

pub const NS_BLOCKING: &str = "urn:xmpp:blocking";

pub const OPTIONS: &[&str] = &[];

/// Accounts whose lists are kept in memory; past it the cache restarts.
const CACHE_MAX: usize = 100_000;

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let lists = Arc::new(Blocklists {
        store: ctx.stores.blocklist.clone(),
        cache: Mutex::new(HashMap::new()),
        interested: Mutex::new(HashSet::new()),
    });
    ctx.hooks.add_feature(NS_BLOCKING);
    ctx.hooks.on_iq(NS_BLOCKING, IqType::Get, lists.clone());
    ctx.hooks.on_iq(NS_BLOCKING, IqType::Set, lists.clone());
    ctx.hooks.on(EventKind::SessionClosed, 0, lists.clone());
    ctx.hooks.set_block_list(lists);
    Ok(())
}

struct Blocklists {
    store: Arc<dyn BlocklistStore>,
    cache: Mutex<HashMap<String, Arc<BTreeSet<String>>>>,
    /// Sessions that asked for the list, which get its changes (§3.2).
    interested: Mutex<HashSet<u64>>,
}

/// XEP-0191 §3.3 with XEP-0016's matching: an item blocks that exact JID,
/// a bare JID every resource of it, a domain everyone there.
fn matches(list: &BTreeSet<String>, other: &Jid) -> bool {
    let domain = other.domain().as_str();
    list.contains(other.as_str())
        || list.contains(other.to_bare().as_str())
        || list.contains(domain)
        || other
            .resource()
            .is_some_and(|r| list.contains(&format!("{domain}/{}", r.as_str())))
}

impl Blocklists {
    async fn list(&self, owner: &str) -> Arc<BTreeSet<String>> {
        if let Some(list) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(owner) {
            return list.clone();
        }
        let list = match self.store.blocked(owner).await {
            Ok(jids) => Arc::new(jids.into_iter().collect::<BTreeSet<_>>()),
            Err(e) => {
                // Not cached: the next stanza asks the store again.
                error!(error = %e, "cannot read a blocklist");
                return Arc::new(BTreeSet::new());
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(owner.to_string(), list.clone());
        list
    }

    fn forget(&self, owner: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(owner);
    }

    /// The change, to every resource that asked for the list (§3.3.1).
    fn push(&self, server: &Server, owner: &BareJid, change: &Element) {
        let interested = self.interested.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for session in server.sessions.resources(owner) {
            if interested.contains(&session.id) {
                let mut iq = stanza::new_stanza(
                    "iq",
                    &[
                        ("type", "set"),
                        ("id", &format!("block-push-{}", session.id)),
                        ("to", &session.jid.to_string()),
                    ],
                );
                iq.append_child(change.clone());
                session.send(iq);
            }
        }
    }
}

/// The `<item jid/>` children, each a valid JID; `bad-request` or
/// `jid-malformed` otherwise.
fn items(payload: &Element) -> Result<Vec<String>, StanzaError> {
    payload
        .children()
        .filter(|c| c.is("item", NS_BLOCKING))
        .map(|item| {
            let jid = item
                .attr("jid")
                .ok_or_else(|| StanzaError::bad_request().with_text("item without 'jid'"))?;
            Jid::new(jid.trim())
                .map(|j| j.to_string())
                .map_err(|_| StanzaError::jid_malformed())
        })
        .collect()
}

fn with_items(name: &str, jids: &[String]) -> Element {
    let mut el = Element::bare(name, NS_BLOCKING);
    for jid in jids {
        let mut item = Element::bare("item", NS_BLOCKING);
        stanza::set_attr(&mut item, "jid", jid.as_str());
        el.append_child(item);
    }
    el
}

/// §3.4: contacts subscribed to the user's presence see it again once
/// unblocked (local contacts; remote ones need federation).
async fn show_presence_again(server: &Server, owner: &BareJid, freed: &[String]) {
    let Some(host) = server.host(owner.domain().as_str()) else {
        return;
    };
    let user = owner.node().map(|n| n.as_str()).unwrap_or_default();
    for jid in freed {
        let Ok(contact) = BareJid::new(jid) else { continue };
        let subscribed = matches!(
            host.rosters.item(owner.domain().as_str(), user, contact.as_str()).await,
            Ok(Some(item)) if item.subscription.has_from()
        );
        if !subscribed {
            continue;
        }
        for resource in server.available_resources(owner) {
            let Some(mut presence) = resource.with_presence(|p| p.last_presence.clone()) else {
                continue;
            };
            stanza::set_attr(&mut presence, "from", resource.jid.to_string());
            stanza::set_attr(&mut presence, "to", contact.as_str());
            server.route(presence, None).await;
        }
    }
}

#[async_trait]
impl BlockList for Blocklists {
    async fn blocks(&self, owner: &BareJid, other: &Jid) -> bool {
        let list = self.list(owner.as_str()).await;
        !list.is_empty() && matches(&list, other)
    }
}

#[async_trait]
impl IqHandler for Blocklists {
    async fn handle(&self, server: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        let (Some(session), true) = (req.session, req.is_to_own_account() || req.is_to_host()) else {
            return Err(StanzaError::not_allowed());
        };
        let owner = session.bare();
        let failed = |e: jackdaw_core::storage::StorageError| {
            error!(error = %e, "blocklist storage failed");
            StanzaError::internal_server_error()
        };
        match (req.iq.attr("type"), req.payload.name()) {
            (Some("get"), "blocklist") => {
                self.interested
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(session.id);
                let list = self.list(owner.as_str()).await;
                let jids: Vec<String> = list.iter().cloned().collect();
                Ok(Some(with_items("blocklist", &jids)))
            }
            (Some("set"), "block") => {
                let jids = items(req.payload)?;
                if jids.is_empty() {
                    return Err(StanzaError::bad_request().with_text("block needs at least one item"));
                }
                self.store.block(owner.as_str(), &jids).await.map_err(failed)?;
                self.forget(owner.as_str());
                // §3.3.1: blocked contacts see the user go offline.
                for jid in &jids {
                    let Ok(contact) = Jid::new(jid) else { continue };
                    for resource in server.available_resources(&owner) {
                        let unavailable = stanza::new_stanza(
                            "presence",
                            &[
                                ("type", "unavailable"),
                                ("from", &resource.jid.to_string()),
                                ("to", contact.as_str()),
                            ],
                        );
                        for target in server.sessions.resources(&contact.to_bare()) {
                            if matches(&BTreeSet::from([jid.clone()]), &Jid::from(target.jid.clone())) {
                                target.send(unavailable.clone());
                            }
                        }
                    }
                }
                self.push(server, &owner, &with_items("block", &jids));
                Ok(None)
            }
            (Some("set"), "unblock") => {
                let jids = items(req.payload)?;
                let all = jids.is_empty();
                let before = self.list(owner.as_str()).await;
                let unblocked: Option<&[String]> = if all { None } else { Some(&jids) };
                self.store
                    .unblock(owner.as_str(), unblocked)
                    .await
                    .map_err(failed)?;
                self.forget(owner.as_str());
                self.push(server, &owner, &with_items("unblock", &jids));
                let freed: Vec<String> = if all {
                    before.iter().cloned().collect()
                } else {
                    jids
                };
                show_presence_again(server, &owner, &freed).await;
                Ok(None)
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

#[async_trait]
impl Hook for Blocklists {
    async fn handle(&self, _: &Server, event: &Event<'_>) -> Handled {
        if let Event::SessionClosed { session } = event {
            self.interested
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&session.id);
        }
        Handled::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_match_exact_bare_and_domain() {
        let list: BTreeSet<String> = ["bob@x", "evil.example", "carol@y/phone", "z.example/bot"]
            .into_iter()
            .map(String::from)
            .collect();
        let j = |s: &str| Jid::new(s).unwrap();
        assert!(matches(&list, &j("bob@x")));
        assert!(matches(&list, &j("bob@x/desk")));
        assert!(matches(&list, &j("anyone@evil.example/r")));
        assert!(matches(&list, &j("evil.example")));
        assert!(matches(&list, &j("carol@y/phone")));
        assert!(!matches(&list, &j("carol@y/desk")));
        assert!(!matches(&list, &j("carol@y")));
        assert!(matches(&list, &j("z.example/bot")));
        assert!(!matches(&list, &j("dave@x")));
    }
}
