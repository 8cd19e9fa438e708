//! XEP-0313 Message Archive Management (urn:xmpp:mam:2) for user accounts:
//! messages a user sends and receives are archived per XEP-0313 §5 (chat
//! and normal messages with a body, XEP-0334 store hints honoured), each
//! incoming one stamped with its archive id as a XEP-0359 stanza-id; the
//! user queries by `with`, `start`, `end`, `before-id`, `after-id` and
//! `ids` with XEP-0059 paging, sets preferences (§6: default
//! always/never/roster, always/never lists), and old messages expire after
//! `archive_expires_after` (Prosody's option names and defaults).

mod prefs;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jackdaw_core::archive_query;
use jackdaw_core::hooks::{IqHandler, IqRequest, IqType, MessageFilter};
use jackdaw_core::jid::{BareJid, Jid};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::session::Session;
use jackdaw_core::stanza::{self, StanzaError};
use jackdaw_core::storage::{ArchiveStore, ArchivedMessage};
use jackdaw_core::stream::{self, ns};
use serde::Deserialize;
use tracing::{error, info};

pub use prefs::{Mode, Prefs};

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &[
    "archive_expires_after",
    "default_archive_policy",
    "max_archive_query_results",
];

/// How often expired messages are swept.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);
/// Owners whose preferences are kept in memory; past it the cache restarts.
const PREFS_CACHE_MAX: usize = 100_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum Expiry {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Policy {
    Flag(bool),
    Text(String),
}

#[derive(Deserialize)]
struct Config {
    /// "1d", "2w", "6m", "1y", a number of seconds, or "never".
    #[serde(default = "default_expiry")]
    archive_expires_after: Expiry,
    /// true (always archive), false (never), or "roster" (contacts only),
    /// for users who set no preference.
    #[serde(default = "default_policy")]
    default_archive_policy: Policy,
    /// Largest page a query gets.
    #[serde(default = "default_max_results")]
    max_archive_query_results: usize,
}

fn default_expiry() -> Expiry {
    Expiry::Text("1w".into())
}
fn default_policy() -> Policy {
    Policy::Flag(true)
}
fn default_max_results() -> usize {
    50
}

/// Parses `archive_expires_after`; `None` means keep forever.
fn parse_expiry(e: &Expiry) -> Result<Option<Duration>, String> {
    let text = match e {
        Expiry::Seconds(s) => return Ok(Some(Duration::from_secs(*s))),
        Expiry::Text(t) => t.trim().to_ascii_lowercase(),
    };
    if text == "never" {
        return Ok(None);
    }
    let bad = || {
        format!(
            "archive_expires_after = {text:?}: expected \"never\", seconds, or a number with d, w, m or y"
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let day = 86_400;
    let secs = match unit {
        "" | "s" => n,
        "d" => n * day,
        "w" => n * 7 * day,
        "m" => n * 30 * day,
        "y" => n * 365 * day,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(secs)))
}

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    let default_mode = match &config.default_archive_policy {
        Policy::Flag(true) => Mode::Always,
        Policy::Flag(false) => Mode::Never,
        Policy::Text(t) if t == "roster" => Mode::Roster,
        Policy::Text(t) => {
            return Err(format!(
                "default_archive_policy = {t:?}: expected true, false or \"roster\""
            ));
        }
    };
    if config.max_archive_query_results == 0 {
        return Err("max_archive_query_results must be at least 1".into());
    }
    let mam = Arc::new(Mam {
        store: ctx.stores.archive.clone(),
        writer: writer::ArchiveWriter::new(ctx.stores.archive.clone()),
        default_mode,
        expires_after: parse_expiry(&config.archive_expires_after)?,
        max_results: config.max_archive_query_results,
        prefs_cache: Mutex::new(HashMap::new()),
        next_expiry: Mutex::new(Instant::now()),
    });
    ctx.hooks.add_account_feature(ns::MAM);
    // before-id, after-id and ids (XEP-0313 §7.1).
    ctx.hooks.add_account_feature("urn:xmpp:mam:2#extended");
    ctx.hooks.add_account_feature(ns::STANZA_ID);
    ctx.hooks.on_iq(ns::MAM, IqType::Get, mam.clone());
    ctx.hooks.on_iq(ns::MAM, IqType::Set, mam.clone());
    ctx.hooks.on_message(mam);
    Ok(())
}

pub struct Mam {
    store: Arc<dyn ArchiveStore>,
    writer: writer::ArchiveWriter,
    default_mode: Mode,
    expires_after: Option<Duration>,
    max_results: usize,
    prefs_cache: Mutex<HashMap<String, Arc<Prefs>>>,
    next_expiry: Mutex<Instant>,
}

/// XEP-0313 §5 with XEP-0334 hints: what goes into a user's archive.
pub fn worth_archiving(message: &Element) -> bool {
    if message.has_child("no-store", ns::HINTS) || message.has_child("no-permanent-store", ns::HINTS) {
        return false;
    }
    let kind = message.attr("type").unwrap_or("normal");
    if matches!(kind, "error" | "groupchat" | "headline") {
        return false;
    }
    message.has_child("body", ns::CLIENT) || message.has_child("store", ns::HINTS)
}

impl Mam {
    async fn prefs_of(&self, owner: &str) -> Arc<Prefs> {
        if let Some(p) = self.cache().get(owner) {
            return p.clone();
        }
        let prefs = match self.store.prefs(owner).await {
            Ok(Some(text)) => Prefs::parse_stored(&text).unwrap_or_else(|| Prefs::new(self.default_mode)),
            Ok(None) => Prefs::new(self.default_mode),
            Err(e) => {
                // Archiving with the server default beats losing history.
                error!(error = %e, "cannot read archive preferences");
                return Arc::new(Prefs::new(self.default_mode));
            }
        };
        let prefs = Arc::new(prefs);
        let mut cache = self.cache();
        if cache.len() >= PREFS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(owner.to_string(), prefs.clone());
        prefs
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Prefs>>> {
        self.prefs_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `owner`'s preferences archive a conversation with `with`.
    async fn wanted(&self, server: &Server, owner: &BareJid, with: &BareJid) -> bool {
        let prefs = self.prefs_of(owner.as_str()).await;
        match prefs.decide(with.as_str()) {
            Some(decision) => decision,
            None => {
                // Mode::Roster without a list entry: ask the roster.
                let host = owner.domain().as_str();
                let user = owner.node().map(|n| n.as_str()).unwrap_or_default();
                match server.host(host) {
                    Some(h) => matches!(h.rosters.item(host, user, with.as_str()).await, Ok(Some(_))),
                    None => false,
                }
            }
        }
    }

    async fn archive(&self, owner: &BareJid, with: &str, id: String, message: &Element) {
        let entry = ArchivedMessage {
            id,
            timestamp: archive_query::now_micros(),
            with: with.to_string(),
            stanza: stream::serialize(message),
        };
        self.writer.append(owner.as_str(), entry).await;
        self.maybe_expire();
    }

    /// Sweeps expired messages at most once per `EXPIRY_INTERVAL`, in the
    /// background.
    fn maybe_expire(&self) {
        let Some(keep) = self.expires_after else { return };
        {
            let mut next = self.next_expiry.lock().unwrap_or_else(|e| e.into_inner());
            if Instant::now() < *next {
                return;
            }
            *next = Instant::now() + EXPIRY_INTERVAL;
        }
        let store = self.store.clone();
        let cutoff = archive_query::now_micros() - keep.as_micros() as i64;
        tokio::spawn(async move {
            match store.expire(cutoff).await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "expired archived messages (archive_expires_after)"),
                Err(e) => error!(error = %e, "cannot expire archived messages"),
            }
        });
    }
}

#[async_trait]
impl MessageFilter for Mam {
    async fn outgoing(&self, server: &Server, session: &Arc<Session>, message: &mut Element) {
        if !worth_archiving(message) {
            return;
        }
        let Some(to) = message.attr("to").and_then(|t| Jid::new(t).ok()) else {
            return;
        };
        let owner = session.bare();
        if self.wanted(server, &owner, &to.to_bare()).await {
            // XEP-0313 §5.1.1: the sender's other resources learn the
            // archive id from the <sent/> carbon, which copies it from here
            // (carbons then strip it: it is not the recipient's business).
            strip_stanza_ids_by(message, owner.as_str());
            let id = archive_query::new_archive_id();
            let mut stamp = Element::bare("stanza-id", ns::STANZA_ID);
            stanza::set_attr(&mut stamp, "id", id.as_str());
            stanza::set_attr(&mut stamp, "by", owner.as_str());
            message.append_child(stamp);
            self.archive(&owner, to.as_str(), id, message).await;
        }
    }

    async fn incoming(&self, server: &Server, to: &BareJid, message: &mut Element) {
        // XEP-0359 §3.1: a stanza-id claiming to be ours is a forgery.
        strip_stanza_ids_by(message, to.as_str());
        if !worth_archiving(message) {
            return;
        }
        let Some(from) = message.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return;
        };
        // A note to self is in the archive once, as sent.
        if from.to_bare() == *to {
            return;
        }
        if !self.wanted(server, to, &from.to_bare()).await || !account_exists(server, to).await {
            return;
        }
        let id = archive_query::new_archive_id();
        let mut stamp = Element::bare("stanza-id", ns::STANZA_ID);
        stanza::set_attr(&mut stamp, "id", id.as_str());
        stanza::set_attr(&mut stamp, "by", to.as_str());
        message.append_child(stamp);
        self.archive(to, from.as_str(), id, message).await;
    }
}

/// An account with a session online exists; otherwise ask the backend, so
/// messages to nobody leave no archive behind.
async fn account_exists(server: &Server, account: &BareJid) -> bool {
    if server.sessions.is_online(account) {
        return true;
    }
    let host = account.domain().as_str();
    let user = account.node().map(|n| n.as_str()).unwrap_or_default();
    match server.host(host) {
        Some(h) => matches!(h.auth.user_exists(host, user).await, Ok(true)),
        None => false,
    }
}

fn strip_stanza_ids_by(message: &mut Element, by: &str) {
    stanza::remove_children_where(message, |c| {
        c.is("stanza-id", ns::STANZA_ID) && c.attr("by") == Some(by)
    });
}

impl Mam {
    /// XEP-0313 §7.2 (required with #extended): the archive's first and
    /// last message.
    async fn metadata(&self, owner: &str) -> Result<Element, StanzaError> {
        let failed = |e: jackdaw_core::storage::StorageError| {
            error!(error = %e, "archive metadata query failed");
            StanzaError::internal_server_error()
        };
        let ends = [
            (
                "start",
                jackdaw_core::storage::ArchiveQuery {
                    max: 1,
                    ..Default::default()
                },
            ),
            (
                "end",
                jackdaw_core::storage::ArchiveQuery {
                    max: 1,
                    page_before: Some(String::new()),
                    ..Default::default()
                },
            ),
        ];
        let mut metadata = Element::bare("metadata", ns::MAM);
        for (name, query) in ends {
            let page = self.store.query(owner, &query).await.map_err(failed)?;
            if let Some(m) = page.and_then(|p| p.messages.into_iter().next()) {
                let mut el = Element::bare(name, ns::MAM);
                stanza::set_attr(&mut el, "id", m.id.as_str());
                stanza::set_attr(&mut el, "timestamp", archive_query::format_micros(m.timestamp));
                metadata.append_child(el);
            }
        }
        Ok(metadata)
    }
}

#[async_trait]
impl IqHandler for Mam {
    async fn handle(&self, _: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        // Only the account's own archive, by the account itself.
        if !req.is_to_own_account() {
            return Err(StanzaError::forbidden());
        }
        let Some(from) = req.from else {
            return Err(StanzaError::not_allowed());
        };
        let owner = from.to_bare();
        let kind = if req.iq.attr("type") == Some("get") {
            IqType::Get
        } else {
            IqType::Set
        };
        match (req.payload.name(), kind) {
            ("query", IqType::Get) => Ok(Some(archive_query::form())),
            ("query", IqType::Set) => {
                let Some(session) = req.session else {
                    return Err(StanzaError::not_allowed());
                };
                self.writer.flush().await;
                let (results, fin) = archive_query::run(
                    self.store.as_ref(),
                    self.max_results,
                    owner.as_str(),
                    &session.jid.to_string(),
                    req.payload,
                )
                .await?;
                // The results reach the session before the IQ result.
                for r in results {
                    session.send(r);
                }
                Ok(Some(fin))
            }
            ("metadata", IqType::Get) => {
                self.writer.flush().await;
                self.metadata(owner.as_str()).await.map(Some)
            }
            ("prefs", IqType::Get) => Ok(Some(self.prefs_of(owner.as_str()).await.to_element())),
            ("prefs", IqType::Set) => {
                let prefs = Prefs::from_element(req.payload).ok_or_else(StanzaError::bad_request)?;
                self.store
                    .set_prefs(owner.as_str(), &stream::serialize(&prefs.to_element()))
                    .await
                    .map_err(|e| {
                        error!(error = %e, "cannot store archive preferences");
                        StanzaError::internal_server_error()
                    })?;
                let element = prefs.to_element();
                self.cache().insert(owner.to_string(), Arc::new(prefs));
                Ok(Some(element))
            }
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_units() {
        let t = |s: &str| parse_expiry(&Expiry::Text(s.into()));
        assert_eq!(t("never").unwrap(), None);
        assert_eq!(t("1w").unwrap(), Some(Duration::from_secs(604_800)));
        assert_eq!(t("2d").unwrap(), Some(Duration::from_secs(172_800)));
        assert_eq!(
            parse_expiry(&Expiry::Seconds(90)).unwrap(),
            Some(Duration::from_secs(90))
        );
        assert!(t("soon").is_err());
        assert!(t("3q").is_err());
    }

    #[test]
    fn archiving_rules() {
        let m = |xml: &str| xml.parse::<Element>().unwrap();
        assert!(worth_archiving(&m(
            "<message xmlns='jabber:client' type='chat'><body>x</body></message>"
        )));
        assert!(worth_archiving(&m(
            "<message xmlns='jabber:client'><body>x</body></message>"
        )));
        assert!(!worth_archiving(&m(
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(worth_archiving(&m(
            "<message xmlns='jabber:client' type='chat'><store xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(!worth_archiving(&m(
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
        )));
        assert!(!worth_archiving(&m(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
        )));
    }

    #[test]
    fn forged_stanza_ids_are_removed() {
        let mut m: Element = "<message xmlns='jabber:client'><body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='a@b' id='forged'/><stanza-id xmlns='urn:xmpp:sid:0' by='room@muc' id='ok'/></message>".parse().unwrap();
        strip_stanza_ids_by(&mut m, "a@b");
        let ids: Vec<_> = m.children().filter_map(|c| c.attr("id")).collect();
        assert_eq!(ids, ["ok"]);
        assert!(m.has_child("body", "jabber:client"));
    }
}
