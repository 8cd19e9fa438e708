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

/// One archived message (XEP-0313).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive id, also the message's XEP-0359 stanza-id.
    pub id: String,
    /// Microseconds since the Unix epoch.
    pub timestamp: i64,
    /// The bare JID of the other party (or the room's occupant JID).
    pub with: String,
    pub stanza: String,
}

/// What a MAM query asks for: filters, then the page (XEP-0059 RSM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// A bare JID matches every resource of it; a full JID only itself.
    pub with: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Only messages after / before the one with this id (XEP-0313 filters).
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    /// Only these ids (empty: no such filter).
    pub ids: Vec<String>,
    /// Page size; 0 asks only for the count.
    pub max: usize,
    /// RSM `<after>`: the page following this id.
    pub page_after: Option<String>,
    /// RSM `<before>`: the page preceding this id, or with `Some("")`
    /// the last page.
    pub page_before: Option<String>,
}
/// One page of results, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivePage {
    pub messages: Vec<ArchivedMessage>,
    /// The whole result set holds no message beyond this page in the
    /// direction of paging.
    pub complete: bool,
    /// Messages matching the query's filters, regardless of paging.
    pub count: usize,
    /// Position of the page's first message among them.
    pub first_index: usize,
}

/// Message archives (XEP-0313) of users and of rooms, keyed by the owner's
/// bare JID.
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Appends a message; the id must be unique.
    async fn append(&self, owner: &str, message: &ArchivedMessage) -> StorageResult<()>;
    /// Appends many messages, `(owner, message)`, in one transaction.
    async fn append_many(&self, entries: &[(String, ArchivedMessage)]) -> StorageResult<()>;
    /// `Ok(None)` when `after_id`, `before_id`, a page cursor or one of
    /// `ids` names no message of the owner.
    async fn query(&self, owner: &str, query: &ArchiveQuery) -> StorageResult<Option<ArchivePage>>;
    /// The owner's preferences document (opaque to the store).
    async fn prefs(&self, owner: &str) -> StorageResult<Option<String>>;
    async fn set_prefs(&self, owner: &str, prefs: &str) -> StorageResult<()>;
    /// Deletes every owner's messages older than `before` (microseconds);
    /// returns how many went.
    async fn expire(&self, before: i64) -> StorageResult<usize>;
    /// Deletes one owner's archive (account deleted, room destroyed).
    async fn delete_owner(&self, owner: &str) -> StorageResult<()>;
}

/// One device's XEP-0357 push registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The app server's JID.
    pub service: String,
    pub node: String,
    /// The publish-options form the client gave (XML), or empty.
    pub options: String,
    /// Consecutive errors from the app server.
    pub errors: u32,
}

/// Push registrations (XEP-0357), per account.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Adds or replaces a registration; past `max_devices` the oldest go,
    /// and are returned.
    async fn register(
        &self,
        owner: &str,
        registration: &PushRegistration,
        max_devices: usize,
    ) -> StorageResult<Vec<PushRegistration>>;
    /// Removes the service's registration for `node`, or all of the
    /// service's without one; returns how many went.
    async fn unregister(&self, owner: &str, service: &str, node: Option<&str>) -> StorageResult<usize>;
    /// Oldest first.
    async fn registrations(&self, owner: &str) -> StorageResult<Vec<PushRegistration>>;
    /// Counts an error; returns the new count.
    async fn record_error(&self, owner: &str, service: &str, node: &str) -> StorageResult<u32>;
    async fn clear_errors(&self, owner: &str, service: &str, node: &str) -> StorageResult<()>;
}

/// Blocklists (XEP-0191): the JIDs each account blocks.
#[async_trait]
pub trait BlocklistStore: Send + Sync {
    async fn blocked(&self, owner: &str) -> StorageResult<Vec<String>>;
    async fn block(&self, owner: &str, jids: &[String]) -> StorageResult<()>;
    /// Unblocks these JIDs, or everyone with `None`.
    async fn unblock(&self, owner: &str, jids: Option<&[String]>) -> StorageResult<()>;
}

/// What one user allowed one OAuth client (module `http_oauth2`): the
/// tokens issued from one authorization belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    pub id: String,
    pub host: String,
    pub username: String,
    /// SHA-256 (hex) of the client_id, which is too long to key on.
    pub client_hash: String,
    pub client_name: String,
    pub client_uri: String,
    pub scope: String,
    /// Unix seconds.
    pub created_at: i64,
    pub last_used_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthTokenKind {
    Access,
    Refresh,
}

impl OAuthTokenKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            OAuthTokenKind::Access => "access",
            OAuthTokenKind::Refresh => "refresh",
        }
    }
}

/// A token as stored: only its SHA-256 (hex), never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthToken {
    pub hash: String,
    pub grant_id: String,
    pub kind: OAuthTokenKind,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// A refresh token already exchanged, kept until it expires so that a
    /// second use is recognised as theft (RFC 9700 §4.14.2).
    pub used: bool,
}

/// A key that signs id_tokens; the private key is PKCS#8 DER.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// How exchanging a refresh token went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRotation {
    /// Marked used; the new tokens are stored.
    Rotated,
    /// It had been exchanged before: someone replays it.
    AlreadyUsed,
    /// No such (unexpired) refresh token.
    Unknown,
}

/// OAuth grants, tokens and the server's signing keys (`http_oauth2`).
#[async_trait]
pub trait OAuthStore: Send + Sync {
    /// Every stored signing key, oldest first.
    async fn signing_keys(&self) -> StorageResult<Vec<SigningKey>>;
    async fn add_signing_key(&self, key: &SigningKey) -> StorageResult<()>;
    async fn delete_signing_key(&self, kid: &str) -> StorageResult<()>;
    /// The server secret called `name`, stored as `fresh` if there is none.
    async fn secret(&self, name: &str, fresh: &[u8]) -> StorageResult<Vec<u8>>;
    async fn create_grant(&self, grant: &OAuthGrant, tokens: &[OAuthToken]) -> StorageResult<()>;
    /// An unexpired token by hash, with its grant.
    async fn token(&self, hash: &str, now: i64) -> StorageResult<Option<(OAuthToken, OAuthGrant)>>;
    /// Exchanges the refresh token `old_hash` for `new` tokens of the same
    /// grant, in one transaction; marks the grant used at `now`.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &[OAuthToken],
        now: i64,
    ) -> StorageResult<RefreshRotation>;
    /// Deletes one token (its grant stays).
    async fn delete_token(&self, hash: &str) -> StorageResult<bool>;
    /// Deletes a grant and every token issued from it.
    async fn delete_grant(&self, id: &str) -> StorageResult<bool>;
    async fn grant(&self, id: &str) -> StorageResult<Option<OAuthGrant>>;
    /// The account's grants, newest first.
    async fn grants(&self, host: &str, username: &str) -> StorageResult<Vec<OAuthGrant>>;
    async fn touch_grant(&self, id: &str, now: i64) -> StorageResult<()>;
    /// Drops expired tokens, and grants left without tokens; returns how
    /// many grants went.
    async fn purge_expired(&self, now: i64) -> StorageResult<usize>;
}

/// Every store the core and the modules use, chosen once by the server.
#[derive(Clone)]
pub struct Stores {
    pub accounts: std::sync::Arc<dyn AccountStore>,
    pub rosters: std::sync::Arc<dyn RosterStore>,
    pub offline: std::sync::Arc<dyn OfflineStore>,
    pub muc: std::sync::Arc<dyn MucStore>,
    pub archive: std::sync::Arc<dyn ArchiveStore>,
    pub push: std::sync::Arc<dyn PushStore>,
    pub blocklist: std::sync::Arc<dyn BlocklistStore>,
    pub oauth: std::sync::Arc<dyn OAuthStore>,
}
