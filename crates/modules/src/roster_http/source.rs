//! The web app as roster source: `GET http_roster_url` (with `%s` the
//! URL-encoded username) returns a JSON object keyed by contact JID, each
//! value with optional `name` and `groups`. Rosters are cached per user
//! while they are online; concurrent logins of one user share one fetch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jackdaw_core::jid::BareJid;
use jackdaw_core::roster::RosterSource;
use jackdaw_core::storage::{RosterItem, StorageError, Subscription};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::{Digest, Sha256};

/// A user's roster as last fetched, by contact bare JID.
pub type Items = BTreeMap<String, RosterItem>;

#[derive(Debug, Clone, Default)]
pub struct CachedRoster {
    pub items: Items,
    /// Fetching failed at login: the roster is empty until a retry works.
    pub stale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("web app unreachable: {0}")]
    Unreachable(String),
    #[error("web app answered HTTP {0}")]
    Status(u16),
    #[error("web app answered something other than a JSON object: {0}")]
    BadBody(String),
}

/// One slot per online user; the async mutex makes concurrent logins wait
/// for the first one's fetch instead of fetching again.
type Slot = Arc<tokio::sync::Mutex<Option<CachedRoster>>>;

pub struct HttpRosters {
    client: reqwest::Client,
    url: String,
    slots: Mutex<HashMap<(String, String), Slot>>,
    pub(super) fetches: Family<Vec<(&'static str, String)>, Counter>,
}

/// Roster version from its content, so it stays the same across logins
/// and changes whenever the web app's answer does (RFC 6121 §2.6).
pub fn version_of(items: &Items) -> u64 {
    let mut h = Sha256::new();
    for item in items.values() {
        h.update(item.jid.as_bytes());
        h.update([0]);
        h.update(item.name.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        for g in &item.groups {
            h.update(g.as_bytes());
            h.update([1]);
        }
        h.update([2]);
    }
    let digest = h.finalize();
    // 53 bits keep the number exact in JSON-minded clients.
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 11
}

/// Parses the web app's answer. Entries whose key is not a JID are
/// skipped with a warning rather than failing the whole roster.
pub fn parse_roster(body: &str) -> Result<Items, FetchError> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| FetchError::BadBody(e.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(FetchError::BadBody("not a JSON object".into()));
    };
    let mut items = Items::new();
    for (jid, data) in map {
        let Ok(bare) = BareJid::new(&jid) else {
            tracing::warn!(contact = %jid, "roster entry skipped: not a JID");
            continue;
        };
        let name = data
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let mut groups: Vec<String> = Vec::new();
        if let Some(list) = data.get("groups").and_then(|g| g.as_array()) {
            for g in list.iter().filter_map(|g| g.as_str()) {
                if !g.is_empty() && !groups.iter().any(|x| x == g) {
                    groups.push(g.to_string());
                }
            }
        }
        let jid = bare.to_string();
        items.insert(
            jid.clone(),
            RosterItem {
                jid,
                name,
                subscription: Subscription::Both,
                ask: false,
                approved: false,
                groups,
            },
        );
    }
    Ok(items)
}

impl HttpRosters {
    pub fn new(client: reqwest::Client, url: String) -> Self {
        Self {
            client,
            url,
            slots: Mutex::new(HashMap::new()),
            fetches: Family::default(),
        }
    }

    fn slot(&self, host: &str, user: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry((host.to_string(), user.to_string()))
            .or_default()
            .clone()
    }

    /// Forgets a user's roster (their last session ended).
    pub fn evict(&self, host: &str, user: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(&(host.to_string(), user.to_string()));
    }

    pub fn is_cached(&self, host: &str, user: &str) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.contains_key(&(host.to_string(), user.to_string()))
    }

    fn count(&self, outcome: &str) {
        self.fetches
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// GETs the user's roster from the web app.
    pub async fn fetch(&self, user: &str) -> Result<Items, FetchError> {
        let encoded: String = url_encode(user);
        let url = self.url.replace("%s", &encoded);
        let response = match self
            .client
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.count("unreachable");
                return Err(FetchError::Unreachable(e.without_url().to_string()));
            }
        };
        let status = response.status().as_u16();
        if status != 200 {
            self.count("error");
            return Err(FetchError::Status(status));
        }
        let body = response.text().await.map_err(|e| {
            self.count("unreachable");
            FetchError::Unreachable(e.without_url().to_string())
        })?;
        let parsed = parse_roster(&body);
        self.count(if parsed.is_ok() { "ok" } else { "error" });
        parsed
    }

    /// At login: the cached roster, fetched first if this is the first of
    /// the user's sessions. A failed fetch is not cached.
    pub async fn login(&self, host: &str, user: &str) -> Result<CachedRoster, FetchError> {
        self.load_slot(self.slot(host, user), user).await
    }

    /// The roster of a logged-in user. Users with no session get an empty
    /// roster without asking the web app: nothing is delivered to them, and
    /// caching their roster would keep it past the web app's next change.
    pub async fn load(&self, host: &str, user: &str) -> Result<CachedRoster, FetchError> {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.get(&(host.to_string(), user.to_string())).cloned()
        };
        match slot {
            Some(slot) => self.load_slot(slot, user).await,
            None => Ok(CachedRoster::default()),
        }
    }

    async fn load_slot(&self, slot: Slot, user: &str) -> Result<CachedRoster, FetchError> {
        let mut guard = slot.lock().await;
        if let Some(cached) = guard.as_ref() {
            return Ok(cached.clone());
        }
        let items = self.fetch(user).await?;
        let cached = CachedRoster { items, stale: false };
        *guard = Some(cached.clone());
        Ok(cached)
    }

    /// Caches an empty roster marked stale after a failed login fetch.
    pub async fn mark_stale(&self, host: &str, user: &str) {
        let slot = self.slot(host, user);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(CachedRoster {
                items: Items::new(),
                stale: true,
            });
        }
    }

    /// Replaces the cached roster, returning the previous one (empty if
    /// none). `fresh` runs under the slot's lock so refreshes of one user
    /// apply in order.
    pub async fn replace(&self, host: &str, user: &str, fresh: Items) -> Items {
        let slot = self.slot(host, user);
        let mut guard = slot.lock().await;
        let old = guard.take().map(|c| c.items).unwrap_or_default();
        *guard = Some(CachedRoster {
            items: fresh,
            stale: false,
        });
        old
    }
}

/// Percent-encodes a username for the URL path (RFC 3986 unreserved kept).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn unavailable(e: FetchError) -> StorageError {
    StorageError::Backend(format!("roster web app: {e}"))
}

#[async_trait]
impl RosterSource for HttpRosters {
    fn is_managed(&self) -> bool {
        true
    }

    async fn roster(&self, host: &str, user: &str) -> Result<(u64, Vec<RosterItem>), StorageError> {
        let cached = self.load(host, user).await.map_err(unavailable)?;
        Ok((version_of(&cached.items), cached.items.into_values().collect()))
    }

    async fn item(&self, host: &str, user: &str, contact: &str) -> Result<Option<RosterItem>, StorageError> {
        let cached = self.load(host, user).await.map_err(unavailable)?;
        Ok(cached.items.get(contact).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_format() {
        let items = parse_roster(
            r#"{"marie@example.com": {"name": "Marie", "groups": ["Friends", "Friends", ""]},
                "Michael@Example.com": {}, "not a jid@@": {"name": "x"}}"#,
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        let marie = &items["marie@example.com"];
        assert_eq!(marie.name.as_deref(), Some("Marie"));
        assert_eq!(marie.groups, vec!["Friends".to_string()]);
        assert_eq!(marie.subscription, Subscription::Both);
        assert!(items.contains_key("michael@example.com"));
    }

    #[test]
    fn rejects_non_objects() {
        assert!(matches!(parse_roster("[1,2]"), Err(FetchError::BadBody(_))));
        assert!(matches!(parse_roster("<html>"), Err(FetchError::BadBody(_))));
    }

    #[test]
    fn version_follows_content() {
        let a = parse_roster(r#"{"a@b": {"name": "A"}}"#).unwrap();
        let b = parse_roster(r#"{"a@b": {"name": "B"}}"#).unwrap();
        assert_eq!(version_of(&a), version_of(&a.clone()));
        assert_ne!(version_of(&a), version_of(&b));
    }

    #[test]
    fn usernames_are_percent_encoded() {
        assert_eq!(url_encode("jo hn&x/y"), "jo%20hn%26x%2Fy");
    }
}
