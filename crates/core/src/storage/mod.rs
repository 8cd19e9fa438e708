//! Storage traits: one per kind of data, so a module opens the store it
//! needs (as Prosody's `module:open_store`) and never the database.
//! Implementations live in the `jackdaw-storage` crate (SQLite default).

use async_trait::async_trait;

/// Errors from a storage backend; the detail goes to the log, the peer
/// sees `internal-server-error` or `temporary-auth-failure`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Backend(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("quota exceeded")]
    QuotaExceeded,
}

impl std::fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// Which hash a set of SCRAM credentials uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }
}

/// Salted SCRAM keys (RFC 5802 §3): all the server keeps of a password.
/// Debug omits the keys, which are secret-equivalent.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Accounts of the built-in (`internal_hashed`) authentication backend.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account; `StorageError::Conflict` if it exists.
    async fn create(&self, host: &str, user: &str, creds: &[ScramCredentials]) -> StorageResult<()>;
    /// Replaces the credentials of an existing account; false if no such account.
    async fn set_credentials(
        &self,
        host: &str,
        user: &str,
        creds: &[ScramCredentials],
    ) -> StorageResult<bool>;
    async fn credentials(
        &self,
        host: &str,
        user: &str,
        hash: ScramHash,
    ) -> StorageResult<Option<ScramCredentials>>;
    async fn exists(&self, host: &str, user: &str) -> StorageResult<bool>;
    /// Deletes the account and everything stored for it (roster, offline
    /// messages); false if there was no such account.
    async fn delete(&self, host: &str, user: &str) -> StorageResult<bool>;
    async fn list(&self, host: &str) -> StorageResult<Vec<String>>;
}

/// Subscription state of a roster item (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }
    /// The contact may see the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
    /// The user sees the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }
}

/// One contact in a user's roster. `jid` is a bare JID string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    pub jid: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// An outbound subscription request is pending (`ask='subscribe'`).
    pub ask: bool,
    /// The user pre-approved the contact's subscription (RFC 6121 §3.4).
    pub approved: bool,
    pub groups: Vec<String>,
}

/// Rosters and pending inbound subscription requests. Every change bumps
/// the roster version (RFC 6121 §2.6), returned by the writing calls.
#[async_trait]
pub trait RosterStore: Send + Sync {
    /// The roster and its current version.
    async fn roster(&self, host: &str, user: &str) -> StorageResult<(u64, Vec<RosterItem>)>;
    async fn item(&self, host: &str, user: &str, contact: &str) -> StorageResult<Option<RosterItem>>;
    /// Inserts or replaces an item; returns the new roster version.
    async fn put_item(&self, host: &str, user: &str, item: &RosterItem) -> StorageResult<u64>;
    /// Removes an item; returns the new version, or None if it was absent.
    async fn remove_item(&self, host: &str, user: &str, contact: &str) -> StorageResult<Option<u64>>;
    /// Stores an inbound subscription request (the stanza as XML) to be
    /// re-delivered at each login until answered (RFC 6121 §3.1.3).
    async fn add_pending_in(&self, host: &str, user: &str, contact: &str, stanza: &str) -> StorageResult<()>;
    async fn remove_pending_in(&self, host: &str, user: &str, contact: &str) -> StorageResult<bool>;
    /// (contact, stanza XML) of every pending inbound request.
    async fn pending_in(&self, host: &str, user: &str) -> StorageResult<Vec<(String, String)>>;
}

/// A message kept for a user who was offline (XEP-0160).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    /// The stanza as XML, already stamped with its XEP-0203 delay.
    pub stanza: String,
}

#[async_trait]
pub trait OfflineStore: Send + Sync {
    /// Stores a message unless the user already has `quota` messages,
    /// in which case `StorageError::QuotaExceeded`.
    async fn push(&self, host: &str, user: &str, stanza: &str, quota: usize) -> StorageResult<()>;
    /// All stored messages, oldest first, without removing them.
    async fn list(&self, host: &str, user: &str) -> StorageResult<Vec<OfflineMessage>>;
    /// Removes messages up to and including `up_to_id` once delivered.
    async fn remove_up_to(&self, host: &str, user: &str, up_to_id: i64) -> StorageResult<()>;
    async fn count(&self, host: &str, user: &str) -> StorageResult<usize>;
}

/// Persistent MUC rooms (XEP-0045), one opaque document per room.
#[async_trait]
pub trait MucStore: Send + Sync {
    async fn save_room(&self, service: &str, room: &str, data: &str) -> StorageResult<()>;
    async fn delete_room(&self, service: &str, room: &str) -> StorageResult<()>;
    /// (room node, document) of every stored room of a service.
    async fn rooms(&self, service: &str) -> StorageResult<Vec<(String, String)>>;
}

/// Every store the core and the modules use, chosen once by the server.
#[derive(Clone)]
pub struct Stores {
    pub accounts: std::sync::Arc<dyn AccountStore>,
    pub rosters: std::sync::Arc<dyn RosterStore>,
    pub offline: std::sync::Arc<dyn OfflineStore>,
    pub muc: std::sync::Arc<dyn MucStore>,
}
