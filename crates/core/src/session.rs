//! The session registry: who is online, keyed by bare JID, and the handle
//! through which the router reaches a session (its bounded outbox).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jid::{BareJid, FullJid};
use minidom::Element;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::stream::StreamError;

/// What the router hands to a session's writer.
#[derive(Debug)]
pub enum Outbound {
    Stanza(Element),
    /// Close the stream with this error.
    Close(StreamError),
}

/// Presence-related state of one session (RFC 6121 §4).
#[derive(Debug, Default)]
pub struct PresenceState {
    /// The session has sent initial presence and not gone unavailable.
    pub available: bool,
    pub priority: i8,
    /// The last available presence broadcast, to answer probes.
    pub last_presence: Option<Element>,
    /// The client requested the roster (RFC 6121 §2.1.6 "interested").
    pub interested: bool,
    /// Entities this session sent directed presence to (§4.6), who must
    /// get unavailable presence when it goes offline.
    pub directed: HashSet<String>,
}

pub struct Session {
    pub id: u64,
    pub jid: FullJid,
    outbox: mpsc::Sender<Outbound>,
    /// Cancelled to end the session from outside (a slow peer, a conflict).
    pub kill: CancellationToken,
    pub presence: Mutex<PresenceState>,
    /// Seconds a XEP-0198 hibernation may last while nothing arrives for
    /// it (0: the usual smacks_hibernation_time); set by push (XEP-0357),
    /// which can wake the device when something does.
    hibernation_extension: AtomicU64,
    /// Set when the session logged in with an OAuth token (OAUTHBEARER):
    /// revoking that token or its grant ends the session.
    pub token_login: std::sync::OnceLock<crate::auth::TokenLogin>,
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

impl Session {
    pub fn new(jid: FullJid, outbox: mpsc::Sender<Outbound>, kill: CancellationToken) -> Self {
        Self {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            jid,
            outbox,
            kill,
            presence: Mutex::new(PresenceState::default()),
            hibernation_extension: AtomicU64::new(0),
            token_login: std::sync::OnceLock::new(),
        }
    }

    pub fn set_hibernation_extension(&self, seconds: u64) {
        self.hibernation_extension.store(seconds, Ordering::Relaxed);
    }

    pub fn hibernation_extension(&self) -> u64 {
        self.hibernation_extension.load(Ordering::Relaxed)
    }

    pub fn bare(&self) -> BareJid {
        self.jid.to_bare()
    }

    /// Queues a stanza for this session. A full outbox means the peer does
    /// not read: it is disconnected rather than buffered without bound.
    pub fn send(&self, stanza: Element) -> bool {
        match self.outbox.try_send(Outbound::Stanza(stanza)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Once per session, not once per stanza that finds it full.
                if !self.kill.is_cancelled() {
                    tracing::warn!(jid = %self.jid, "outbox full, disconnecting slow client");
                    self.kill.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ends the session with a stream error.
    pub fn close(&self, err: StreamError) {
        if self.outbox.try_send(Outbound::Close(err)).is_err() {
            self.kill.cancel();
        }
    }

    pub fn with_presence<R>(&self, f: impl FnOnce(&mut PresenceState) -> R) -> R {
        let mut guard = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn is_available(&self) -> bool {
        self.with_presence(|p| p.available)
    }

    pub fn priority(&self) -> i8 {
        self.with_presence(|p| p.priority)
    }

    pub fn is_interested(&self) -> bool {
        self.with_presence(|p| p.interested)
    }
}

/// Bound resources by bare JID. Lock sections are short and never await.
#[derive(Default)]
pub struct SessionRegistry {
    by_bare: RwLock<HashMap<BareJid, Vec<Arc<Session>>>>,
}

impl SessionRegistry {
    /// Registers a bound session; returns the session it replaces when the
    /// same full JID was already bound (RFC 6120 §7.7.2.2, "conflict").
    pub fn insert(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let mut map = self.by_bare.write().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(session.bare()).or_default();
        let replaced = list
            .iter()
            .position(|s| s.jid == session.jid)
            .map(|i| list.remove(i));
        list.push(session);
        replaced
    }

    /// Removes a session by id (a replaced session must not remove its
    /// successor, which has the same JID).
    pub fn remove(&self, session: &Session) {
        let mut map = self.by_bare.write().unwrap_or_else(|p| p.into_inner());
        let bare = session.bare();
        if let Some(list) = map.get_mut(&bare) {
            list.retain(|s| s.id != session.id);
            if list.is_empty() {
                map.remove(&bare);
            }
        }
    }

    pub fn resources(&self, bare: &BareJid) -> Vec<Arc<Session>> {
        let map = self.by_bare.read().unwrap_or_else(|p| p.into_inner());
        map.get(bare).cloned().unwrap_or_default()
    }

    pub fn get(&self, full: &FullJid) -> Option<Arc<Session>> {
        let map = self.by_bare.read().unwrap_or_else(|p| p.into_inner());
        map.get(&full.to_bare())
            .and_then(|l| l.iter().find(|s| &s.jid == full).cloned())
    }

    pub fn is_online(&self, bare: &BareJid) -> bool {
        let map = self.by_bare.read().unwrap_or_else(|p| p.into_inner());
        map.contains_key(bare)
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        let map = self.by_bare.read().unwrap_or_else(|p| p.into_inner());
        map.values().flatten().cloned().collect()
    }

    pub fn count(&self) -> usize {
        let map = self.by_bare.read().unwrap_or_else(|p| p.into_inner());
        map.values().map(Vec::len).sum()
    }
}
