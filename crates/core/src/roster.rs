//! The roster as it travels (RFC 6121 §2): item elements and roster
//! pushes. Shared by the roster and presence modules, since subscription
//! state lives in the roster and both must push its changes.

use jid::BareJid;
use minidom::Element;

use crate::server::Server;
use crate::stanza;
use crate::storage::{RosterItem, RosterStore, StorageError};
use crate::stream::ns;

/// `<item/>` for a roster result or push.
pub fn item_element(item: &RosterItem) -> Element {
    let mut el = Element::bare("item", ns::ROSTER);
    stanza::set_attr(&mut el, "jid", item.jid.as_str());
    if let Some(name) = &item.name {
        stanza::set_attr(&mut el, "name", name.as_str());
    }
    stanza::set_attr(&mut el, "subscription", item.subscription.as_str());
    if item.ask {
        stanza::set_attr(&mut el, "ask", "subscribe");
    }
    if item.approved {
        stanza::set_attr(&mut el, "approved", "true");
    }
    for g in &item.groups {
        let mut group = Element::bare("group", ns::ROSTER);
        group.append_text(g.clone());
        el.append_child(group);
    }
    el
}

/// Pushes a changed item (or its removal) to every interested resource
/// of `owner` (RFC 6121 §2.1.6).
pub fn push(server: &Server, owner: &BareJid, item: &RosterItem, removed: bool, version: u64) {
    let mut el = item_element(item);
    if removed {
        el = Element::bare("item", ns::ROSTER);
        stanza::set_attr(&mut el, "jid", item.jid.as_str());
        stanza::set_attr(&mut el, "subscription", "remove");
    }
    let mut query = Element::bare("query", ns::ROSTER);
    stanza::set_attr(&mut query, "ver", version.to_string());
    query.append_child(el);
    // Ids unique per push: a batch of pushes shares one version.
    static NEXT_PUSH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = format!(
        "push{}",
        NEXT_PUSH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut iq = stanza::new_stanza("iq", &[("type", "set"), ("id", &id)]);
    iq.append_child(query);
    server.push_to_interested(owner, &iq);
}

/// Where a host's rosters come from: the built-in store (clients edit
/// them, subscriptions change them) or the operator's web app (managed:
/// read-only for clients, subscriptions blocked, every item `both`).
#[async_trait::async_trait]
pub trait RosterSource: Send + Sync {
    /// True when rosters are owned elsewhere and clients may not change them.
    fn is_managed(&self) -> bool;
    /// The roster and its version.
    async fn roster(&self, host: &str, user: &str) -> Result<(u64, Vec<RosterItem>), StorageError>;
    async fn item(&self, host: &str, user: &str, contact: &str) -> Result<Option<RosterItem>, StorageError>;
}

/// Rosters in Jackdaw's own store (the default source).
pub struct StoredRosters(pub std::sync::Arc<dyn RosterStore>);

#[async_trait::async_trait]
impl RosterSource for StoredRosters {
    fn is_managed(&self) -> bool {
        false
    }

    async fn roster(&self, host: &str, user: &str) -> Result<(u64, Vec<RosterItem>), StorageError> {
        self.0.roster(host, user).await
    }

    async fn item(&self, host: &str, user: &str, contact: &str) -> Result<Option<RosterItem>, StorageError> {
        self.0.item(host, user, contact).await
    }
}
