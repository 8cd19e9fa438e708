//! `module = "muc"`: multi-user chat (XEP-0045) as a component.
//!
//! Rooms live in memory; persistent ones (configuration, affiliations,
//! subject) are written to the `MucStore` on every change and loaded at
//! start. Each stanza is handled under the rooms lock, which only computes
//! what to send (no await inside); the stanzas then go out through the
//! router in order. `form.rs` holds the configuration form, `room.rs` the
//! state and presence building.

pub mod config;
mod form;
mod room;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jackdaw_core::archive_query;
use jackdaw_core::component::Component;
use jackdaw_core::config::ComponentConfig;
use jackdaw_core::jid::{BareJid, FullJid, Jid};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{self, ErrorType, StanzaError};
use jackdaw_core::storage::{ArchiveStore, ArchivedMessage, MucStore};
use jackdaw_core::stream::ns;
use tracing::{debug, error, info};

pub use config::{Config, OPTIONS};
use room::{Affiliation, NS_ADMIN, NS_MUC, NS_OWNER, NS_USER, Occupant, Role, Room, RoomConfig, Stored};

/// Decides whether a user may join a room under a nickname, before any
/// room state changes (muc_http_auth provides one).
#[async_trait]
pub trait JoinPolicy: Send + Sync {
    async fn check(&self, user: &BareJid, room: &BareJid, nick: &str) -> Result<(), StanzaError>;
    /// Whether room registrations (§7.10) are decided too.
    fn checks_registration(&self) -> bool {
        false
    }
}

/// Work decided under the lock, carried out after it.
#[derive(Default)]
struct Out {
    stanzas: Vec<Element>,
    /// Messages for the room archive (XEP-0313), by room JID.
    archived: Vec<(String, ArchivedMessage)>,
    /// Some(Some(json)) = save the room, Some(None) = delete it.
    persist: Option<(String, Option<String>)>,
}

impl Out {
    fn send(&mut self, el: Element) {
        self.stanzas.push(el);
    }
}

pub struct MucService {
    domain: String,
    config: Config,
    store: Arc<dyn MucStore>,
    archive: Arc<dyn ArchiveStore>,
    rooms: Mutex<HashMap<String, Room>>,
    join_policy: Option<Arc<dyn JoinPolicy>>,
    /// Own handle, so a join waiting for the web app runs in its own task.
    me: std::sync::Weak<MucService>,
}

fn cond(kind: ErrorType, condition: &'static str) -> StanzaError {
    StanzaError::new(kind, condition)
}

/// An error presence for a join or nick change (XEP-0045 §7.2.x).
fn presence_error(original: &Element, err: StanzaError) -> Option<Element> {
    let mut reply = stanza::error_reply(original, &err)?;
    let mut clean = stanza::new_stanza("presence", &[]);
    for (k, v) in [
        ("from", reply.attr("from")),
        ("to", reply.attr("to")),
        ("type", Some("error")),
    ] {
        if let Some(v) = v {
            stanza::set_attr(&mut clean, k, v);
        }
    }
    clean.append_child(Element::bare("x", NS_MUC));
    if let Some(e) = reply.remove_child("error", ns::CLIENT) {
        clean.append_child(e);
    }
    Some(clean)
}

/// Seconds since the epoch of an XEP-0082 date-time (`Z` or an offset).
fn parse_stamp(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let pos = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(pos);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let clock = clock.split('.').next()?;
    let mut t = clock.split(':').map(|p| p.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant), the inverse of stanza::format_stamp.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + h * 3600 + mi * 60 + sec - offset_secs).ok()
}

impl MucService {
    pub async fn new(
        component: &ComponentConfig,
        store: Arc<dyn MucStore>,
        archive: Arc<dyn ArchiveStore>,
        join_policy: Option<Arc<dyn JoinPolicy>>,
    ) -> Result<Arc<Self>, String> {
        let config: Config = component.module_config()?;
        let problems = config.validate(&component.name);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let mut rooms = HashMap::new();
        let stored = store
            .rooms(&component.name)
            .await
            .map_err(|e| format!("component {}: cannot load rooms: {e}", component.name))?;
        for (node, data) in stored {
            match serde_json::from_str::<Stored>(&data) {
                Ok(stored) => {
                    let jid = format!("{node}@{}", component.name);
                    rooms.insert(
                        node,
                        Room {
                            jid,
                            stored,
                            locked: false,
                            occupants: Vec::new(),
                            history: VecDeque::new(),
                        },
                    );
                }
                Err(e) => error!(room = %node, error = %e, "stored room unreadable; skipped"),
            }
        }
        info!(service = %component.name, rooms = rooms.len(), "MUC service ready");
        Ok(Arc::new_cyclic(|me| Self {
            domain: component.name.clone(),
            config,
            store,
            archive,
            rooms: Mutex::new(rooms),
            join_policy,
            me: me.clone(),
        }))
    }

    fn default_room_config(&self, node: &str) -> RoomConfig {
        RoomConfig {
            name: node.to_string(),
            description: String::new(),
            persistent: self.config.muc_room_default_persistent,
            public: self.config.muc_room_default_public,
            members_only: self.config.muc_room_default_members_only,
            moderated: self.config.muc_room_default_moderated,
            password: None,
            whois_anyone: false,
            max_users: 0,
            history_length: self.config.muc_history_length,
            allow_invites: false,
            change_subject: false,
        }
    }

    fn snapshot(room: &Room) -> (String, Option<String>) {
        let node = room.jid.split('@').next().unwrap_or_default().to_string();
        if room.stored.config.persistent {
            (node, serde_json::to_string(&room.stored).ok())
        } else {
            (node, None)
        }
    }

    async fn finish(&self, server: &Server, out: Out) {
        for (owner, message) in &out.archived {
            if let Err(e) = self.archive.append(owner, message).await {
                error!(room = %owner, error = %e, "cannot archive a room message");
            }
        }
        for el in out.stanzas {
            server.route(el, None).await;
        }
        if let Some((node, data)) = out.persist {
            let result = match data {
                Some(json) => self.store.save_room(&self.domain, &node, &json).await,
                None => self.store.delete_room(&self.domain, &node).await,
            };
            if let Err(e) = result {
                error!(room = %node, error = %e, "cannot store room");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Component for MucService {
    /// Status 332: everyone is told the service is going away (§15).
    async fn shutdown(&self, server: &Server) {
        let mut out = Out::default();
        for room in self.lock().values_mut() {
            for o in std::mem::take(&mut room.occupants) {
                let gone = Occupant {
                    role: Role::None,
                    ..o
                };
                for s in &gone.sessions {
                    out.send(room.presence_of(&gone, s.as_str(), true, &[332, 110], None));
                }
            }
        }
        self.finish(server, out).await;
    }

    async fn deliver(&self, server: &Server, stanza: Element) {
        let Some(to) = stanza::to_jid(&stanza) else { return };
        let Some(from) = stanza::from_jid(&stanza) else {
            return;
        };
        let mut out = Out::default();
        let node = to.node().map(|n| n.as_str().to_string());
        let nick = to.resource().map(|r| r.as_str().to_string());
        match (stanza.name(), node, nick) {
            ("iq", None, _) => self.service_iq(&stanza, &mut out),
            ("iq", Some(node), None)
                if stanza::iq_payload(&stanza).is_some_and(|p| p.is("query", ns::REGISTER)) =>
            {
                self.register(&stanza, &from, &node, &mut out).await
            }
            ("iq", Some(node), None)
                if stanza::iq_payload(&stanza).is_some_and(|p| p.is("query", ns::MAM)) =>
            {
                self.room_archive_query(&stanza, &from, &node, &mut out).await
            }
            ("iq", Some(node), None) => self.room_iq(&stanza, &from, &node, &mut out),
            ("iq", Some(node), Some(nick)) => self.occupant_iq(&stanza, &from, &node, &nick, &mut out),
            ("presence", Some(node), Some(nick)) => {
                let Ok(full) = from.try_into_full() else { return };
                if self.needs_policy(&stanza, &full, &node, &nick) {
                    // The web app's answer may take seconds: wait for it in a
                    // task of its own, so the user's other stanzas (chat, other
                    // rooms) are not held behind it.
                    if let (Some(me), Some(server)) = (self.me.upgrade(), server.arc()) {
                        tokio::spawn(
                            async move { me.decided_presence(&server, stanza, full, node, nick).await },
                        );
                    }
                    return;
                }
                self.handle_presence(server, &stanza, &full, &node, &nick, &mut out);
            }
            ("message", Some(node), None) => self.room_message(&stanza, &from, &node, &mut out),
            ("message", Some(node), Some(nick)) => {
                self.private_message(&stanza, &from, &node, &nick, &mut out)
            }
            ("message", _, _) if !stanza::is_error(&stanza) => {
                if let Some(r) = stanza::error_reply(&stanza, &StanzaError::service_unavailable()) {
                    out.send(r);
                }
            }
            _ => {}
        }
        self.finish(server, out).await;
    }
}

impl MucService {
    /// True for a join or a nick change while a join policy is set (not a
    /// presence update under the same nick, nor a leave).
    fn needs_policy(&self, p: &Element, from: &FullJid, node: &str, nick: &str) -> bool {
        if self.join_policy.is_none() || p.attr("type").is_some() {
            return false;
        }
        let same_nick = self
            .lock()
            .get(node)
            .and_then(|r| r.occupant_by_session(from.as_str()))
            .is_some_and(|o| o.nick == nick);
        !same_nick
    }

    /// A join or nick change once the policy has answered.
    async fn decided_presence(&self, server: &Server, p: Element, from: FullJid, node: String, nick: String) {
        let Some(policy) = &self.join_policy else { return };
        let mut out = Out::default();
        let decision = match BareJid::new(&format!("{node}@{}", self.domain)) {
            Ok(room) => policy.check(&from.to_bare(), &room, &nick).await,
            Err(_) => Err(StanzaError::jid_malformed()),
        };
        match decision {
            Ok(()) => self.handle_presence(server, &p, &from, &node, &nick, &mut out),
            Err(err) => out.stanzas.extend(presence_error(&p, err)),
        }
        self.finish(server, out).await;
    }

    /// XEP-0045 §7.10: registering with a room makes the user a member
    /// with a reserved nickname (asked of the join policy too when it says
    /// so, as `muc_http_auth_authorize_registration`).
    async fn register(&self, iq: &Element, from: &Jid, node: &str, out: &mut Out) {
        let bare = from.to_bare();
        let bare_str = bare.to_string();
        let is_get = match iq.attr("type") {
            Some("get") => true,
            Some("set") => false,
            _ => return,
        };
        let form_nick = stanza::iq_payload(iq)
            .and_then(|q| q.get_child("x", ns::DATA_FORMS))
            .and_then(|x| {
                x.children()
                    .filter(|f| {
                        f.is("field", ns::DATA_FORMS) && f.attr("var") == Some("muc#register_roomnick")
                    })
                    .find_map(|f| f.get_child("value", ns::DATA_FORMS).map(|v| v.text()))
            })
            .filter(|n| !n.trim().is_empty());
        // The room's own refusals come before asking the web app.
        let precheck = match self.lock().get(node) {
            None => Some(StanzaError::item_not_found()),
            Some(room) if room.affiliation(&bare_str) == Affiliation::Outcast => {
                Some(StanzaError::forbidden())
            }
            Some(_) => None,
        };
        if let Some(err) = precheck {
            Self::reply(out, iq, Err(err));
            return;
        }
        if !is_get
            && let (Some(policy), Some(nick)) = (&self.join_policy, &form_nick)
            && policy.checks_registration()
        {
            let room = BareJid::new(&format!("{node}@{}", self.domain));
            let decision = match room {
                Ok(room) => policy.check(&bare, &room, nick).await,
                Err(_) => Err(StanzaError::jid_malformed()),
            };
            if let Err(e) = decision {
                Self::reply(out, iq, Err(e));
                return;
            }
        }
        let mut rooms = self.lock();
        let result = match rooms.get_mut(node) {
            None => Err(StanzaError::item_not_found()),
            Some(room) if room.affiliation(&bare_str) == Affiliation::Outcast => {
                Err(StanzaError::forbidden())
            }
            Some(room) if is_get => {
                let mut q = Element::bare("query", ns::REGISTER);
                match room.stored.nicks.get(&bare_str) {
                    Some(nick) if room.affiliation(&bare_str) >= Affiliation::Member => {
                        q.append_child(Element::bare("registered", ns::REGISTER));
                        let mut u = Element::bare("username", ns::REGISTER);
                        u.append_text(nick.clone());
                        q.append_child(u);
                    }
                    _ => {
                        let mut instructions = Element::bare("instructions", ns::REGISTER);
                        instructions.append_text("Choose the nickname to reserve in this room.");
                        q.append_child(instructions);
                        q.append_child(form::register_form());
                    }
                }
                Ok(Some(q))
            }
            Some(room) => match form_nick {
                None => Err(StanzaError::bad_request().with_text("muc#register_roomnick is required")),
                Some(nick) if room.nick_owner(&nick).is_some_and(|o| o != bare_str) => {
                    Err(StanzaError::conflict())
                }
                Some(nick) => {
                    if room.affiliation(&bare_str) < Affiliation::Member {
                        room.set_affiliation(&bare_str, Affiliation::Member);
                    }
                    room.stored.nicks.insert(bare_str.clone(), nick);
                    out.persist = Some(Self::snapshot(room));
                    Ok(None)
                }
            },
        };
        drop(rooms);
        Self::reply(out, iq, result);
    }

    // ---------------------------------------------------------------- iq

    fn reply(out: &mut Out, iq: &Element, result: Result<Option<Element>, StanzaError>) {
        match result {
            Ok(payload) => out.send(stanza::iq_result(iq, payload)),
            Err(e) => {
                if let Some(r) = stanza::error_reply(iq, &e) {
                    out.send(r);
                }
            }
        }
    }

    fn service_iq(&self, iq: &Element, out: &mut Out) {
        let result = match (iq.attr("type"), stanza::iq_payload(iq)) {
            (Some("get"), Some(q)) if q.is("query", ns::DISCO_INFO) => {
                let mut query = Element::bare("query", ns::DISCO_INFO);
                let mut identity = Element::bare("identity", ns::DISCO_INFO);
                stanza::set_attr(&mut identity, "category", "conference");
                stanza::set_attr(&mut identity, "type", "text");
                stanza::set_attr(&mut identity, "name", "Chat rooms");
                query.append_child(identity);
                for f in [ns::DISCO_INFO, ns::DISCO_ITEMS, NS_MUC, ns::PING] {
                    let mut el = Element::bare("feature", ns::DISCO_INFO);
                    stanza::set_attr(&mut el, "var", f);
                    query.append_child(el);
                }
                Ok(Some(query))
            }
            (Some("get"), Some(q)) if q.is("query", ns::DISCO_ITEMS) => {
                let mut query = Element::bare("query", ns::DISCO_ITEMS);
                for room in self
                    .lock()
                    .values()
                    .filter(|r| r.stored.config.public && !r.locked)
                {
                    let mut item = Element::bare("item", ns::DISCO_ITEMS);
                    stanza::set_attr(&mut item, "jid", room.jid.as_str());
                    stanza::set_attr(&mut item, "name", room.stored.config.name.as_str());
                    query.append_child(item);
                }
                Ok(Some(query))
            }
            (Some("get"), Some(q)) if q.is("ping", ns::PING) => Ok(None),
            (Some("get" | "set"), _) => Err(StanzaError::service_unavailable()),
            _ => return,
        };
        Self::reply(out, iq, result);
    }

    fn occupant_iq(&self, iq: &Element, from: &Jid, node: &str, nick: &str, out: &mut Out) {
        if !matches!(iq.attr("type"), Some("get" | "set")) {
            return;
        }
        let rooms = self.lock();
        let is_ping = stanza::iq_payload(iq).is_some_and(|p| p.is("ping", ns::PING));
        let result = match rooms.get(node) {
            None => Err(StanzaError::item_not_found()),
            // XEP-0410 self-ping: answered for the occupant itself.
            Some(room) if is_ping => match room.occupant_by_session(from.as_str()) {
                Some(o) if o.nick == nick => Ok(None),
                _ => Err(cond(ErrorType::Modify, "not-acceptable")),
            },
            Some(_) => Err(StanzaError::service_unavailable()),
        };
        drop(rooms);
        Self::reply(out, iq, result);
    }

    /// XEP-0313 queries on the room archive: anyone not banned may read
    /// an open room's history, only members a members-only room's.
    async fn room_archive_query(&self, iq: &Element, from: &Jid, node: &str, out: &mut Out) {
        let bare = from.to_bare().to_string();
        let allowed = match self.lock().get(node) {
            None => Err(StanzaError::item_not_found()),
            Some(room) => {
                let affiliation = room.affiliation(&bare);
                if affiliation == Affiliation::Outcast
                    || (room.stored.config.members_only && affiliation < Affiliation::Member)
                {
                    Err(StanzaError::forbidden())
                } else {
                    Ok(room.jid.clone())
                }
            }
        };
        let result = match (allowed, iq.attr("type"), stanza::iq_payload(iq)) {
            (Err(e), _, _) => Err(e),
            (Ok(_), Some("get"), _) => Ok(Some(archive_query::form())),
            (Ok(room_jid), Some("set"), Some(query)) => {
                match archive_query::run(
                    self.archive.as_ref(),
                    self.config.max_archive_query_results,
                    &room_jid,
                    from.as_str(),
                    query,
                )
                .await
                {
                    Ok((results, fin)) => {
                        out.stanzas.extend(results);
                        Ok(Some(fin))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Err(StanzaError::bad_request()),
        };
        Self::reply(out, iq, result);
    }

    fn room_iq(&self, iq: &Element, from: &Jid, node: &str, out: &mut Out) {
        let Some(kind) = iq.attr("type").filter(|t| matches!(*t, "get" | "set")) else {
            return;
        };
        let Some(payload) = stanza::iq_payload(iq) else {
            Self::reply(out, iq, Err(StanzaError::bad_request()));
            return;
        };
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(node) else {
            drop(rooms);
            Self::reply(out, iq, Err(StanzaError::item_not_found()));
            return;
        };
        let bare = from.to_bare().to_string();
        let result = match (kind, payload.name(), payload.ns().as_str()) {
            ("get", "query", ns::DISCO_INFO) => Ok(Some(room_info(room))),
            ("get", "query", ns::DISCO_ITEMS) => Ok(Some(Element::bare("query", ns::DISCO_ITEMS))),
            ("get", "ping", ns::PING) => Ok(None),
            (_, "query", NS_OWNER) => {
                if room.affiliation(&bare) != Affiliation::Owner {
                    Err(StanzaError::forbidden())
                } else if kind == "get" {
                    let mut q = Element::bare("query", NS_OWNER);
                    q.append_child(form::config_form(&room.stored.config));
                    Ok(Some(q))
                } else {
                    let r = self.owner_set(room, payload, out);
                    if matches!(r, Ok(OwnerOutcome::Destroyed)) {
                        rooms.remove(node);
                    }
                    r.map(|_| None)
                }
            }
            ("get", "query", NS_ADMIN) => admin_get(room, &bare, from.as_str(), payload),
            ("set", "query", NS_ADMIN) => self.admin_set(room, &bare, from.as_str(), payload, out),
            _ => Err(StanzaError::service_unavailable()),
        };
        drop(rooms);
        Self::reply(out, iq, result);
    }

    fn owner_set(
        &self,
        room: &mut Room,
        query: &Element,
        out: &mut Out,
    ) -> Result<OwnerOutcome, StanzaError> {
        if let Some(destroy) = query.get_child("destroy", NS_OWNER) {
            let mut d = Element::bare("destroy", NS_USER);
            if let Some(alt) = destroy.attr("jid") {
                stanza::set_attr(&mut d, "jid", alt);
            }
            if let Some(reason) = destroy.get_child("reason", NS_OWNER) {
                let mut r = Element::bare("reason", NS_USER);
                r.append_text(reason.text());
                d.append_child(r);
            }
            for o in &room.occupants {
                for s in &o.sessions {
                    let mut p = stanza::new_stanza(
                        "presence",
                        &[
                            ("from", &room.occupant_jid(&o.nick)),
                            ("to", s.as_str()),
                            ("type", "unavailable"),
                        ],
                    );
                    let mut x = Element::bare("x", NS_USER);
                    let mut item = Element::bare("item", NS_USER);
                    stanza::set_attr(&mut item, "affiliation", "none");
                    stanza::set_attr(&mut item, "role", "none");
                    x.append_child(item);
                    x.append_child(d.clone());
                    p.append_child(x);
                    out.send(p);
                }
            }
            let (node, _) = Self::snapshot(room);
            out.persist = Some((node, None));
            info!(room = %room.jid, "room destroyed");
            return Ok(OwnerOutcome::Destroyed);
        }
        let Some(x) = query.get_child("x", ns::DATA_FORMS) else {
            return Err(StanzaError::bad_request());
        };
        match x.attr("type") {
            Some("cancel") => {
                if room.locked {
                    // Cancelling the initial configuration destroys the room
                    // (XEP-0045 §10.1.3).
                    for o in &room.occupants {
                        for s in &o.sessions {
                            let p = room.presence_of(
                                &Occupant {
                                    role: Role::None,
                                    ..clone_occupant(o)
                                },
                                s.as_str(),
                                true,
                                &[110],
                                None,
                            );
                            out.send(p);
                        }
                    }
                    return Ok(OwnerOutcome::Destroyed);
                }
                Ok(OwnerOutcome::Kept)
            }
            Some("submit") => {
                let mut config = room.stored.config.clone();
                form::apply(x, &mut config, self.config.muc_max_history_length)?;
                let changed = config != room.stored.config;
                let anonymity_changed = config.whois_anyone != room.stored.config.whois_anyone;
                let now_members_only = config.members_only && !room.stored.config.members_only;
                room.stored.config = config;
                while room.history.len() > room.stored.config.history_length {
                    room.history.pop_front();
                }
                let was_locked = room.locked;
                room.locked = false;
                if changed && !was_locked {
                    // Status 104: configuration changed; 172/173: the room
                    // became non-anonymous / semi-anonymous (§10.2.1).
                    let mut codes = vec!["104"];
                    if anonymity_changed {
                        codes.push(if room.stored.config.whois_anyone {
                            "172"
                        } else {
                            "173"
                        });
                    }
                    for o in &room.occupants {
                        for s in &o.sessions {
                            let mut m = stanza::new_stanza(
                                "message",
                                &[("from", &room.jid), ("to", s.as_str()), ("type", "groupchat")],
                            );
                            let mut xu = Element::bare("x", NS_USER);
                            for code in &codes {
                                let mut st = Element::bare("status", NS_USER);
                                stanza::set_attr(&mut st, "code", *code);
                                xu.append_child(st);
                            }
                            m.append_child(xu);
                            out.send(m);
                        }
                    }
                }
                if now_members_only {
                    // §10.2: non-members leave a room that became members-only
                    // (status 322).
                    let (stay, gone): (Vec<Occupant>, Vec<Occupant>) =
                        std::mem::take(&mut room.occupants).into_iter().partition(|o| {
                            room.stored
                                .affiliations
                                .get(&o.bare())
                                .is_some_and(|a| *a >= Affiliation::Member)
                        });
                    room.occupants = stay;
                    for o in gone {
                        self.announce_removal(room, o, 322, None, out);
                    }
                }
                out.persist = Some(Self::snapshot(room));
                Ok(OwnerOutcome::Kept)
            }
            _ => Err(StanzaError::bad_request()),
        }
    }

    fn admin_set(
        &self,
        room: &mut Room,
        actor_bare: &str,
        actor_full: &str,
        query: &Element,
        out: &mut Out,
    ) -> Result<Option<Element>, StanzaError> {
        let actor_aff = room.affiliation(actor_bare);
        let actor_role = room
            .occupant_by_session(actor_full)
            .map(|o| o.role)
            .unwrap_or(Role::None);
        for item in query.children().filter(|c| c.is("item", NS_ADMIN)) {
            let reason = item.get_child("reason", NS_ADMIN).map(|r| r.text());
            if let Some(role) = item.attr("role") {
                let role = Role::parse(role).ok_or_else(StanzaError::bad_request)?;
                let nick = item.attr("nick").ok_or_else(StanzaError::bad_request)?;
                if actor_role != Role::Moderator {
                    return Err(StanzaError::forbidden());
                }
                let Some(idx) = room.occupants.iter().position(|o| o.nick == nick) else {
                    return Err(StanzaError::item_not_found());
                };
                let target_aff = room.affiliation(&room.occupants[idx].bare());
                if target_aff >= Affiliation::Admin && role < Role::Moderator
                    || target_aff > actor_aff && role == Role::None
                {
                    return Err(StanzaError::not_allowed());
                }
                if role == Role::Moderator && actor_aff < Affiliation::Admin {
                    return Err(StanzaError::not_allowed());
                }
                if role == Role::None {
                    let kicked = room.occupants.remove(idx);
                    self.announce_removal(room, kicked, 307, reason.as_deref(), out);
                } else {
                    room.occupants[idx].role = role;
                    self.broadcast_presence(room, idx, &[], out);
                }
                continue;
            }
            let Some(aff) = item.attr("affiliation") else {
                return Err(StanzaError::bad_request());
            };
            let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
            let target = item
                .attr("jid")
                .and_then(|j| BareJid::new(j).ok())
                .map(|j| j.to_string())
                .or_else(|| {
                    item.attr("nick")
                        .and_then(|n| room.occupant_by_nick(n))
                        .map(|o| o.bare())
                })
                .ok_or_else(StanzaError::bad_request)?;
            let current = room.affiliation(&target);
            // Admins manage members and outcasts below them; owners all
            // (§9.1: an admin acting on an admin or owner is not-allowed,
            // one banning himself is a conflict).
            match actor_aff {
                Affiliation::Owner => {}
                Affiliation::Admin if target == actor_bare && aff == Affiliation::Outcast => {
                    return Err(StanzaError::conflict());
                }
                Affiliation::Admin if current >= Affiliation::Admin || aff >= Affiliation::Admin => {
                    return Err(StanzaError::not_allowed());
                }
                Affiliation::Admin => {}
                _ => return Err(StanzaError::forbidden()),
            }
            if current == Affiliation::Owner
                && aff != Affiliation::Owner
                && room
                    .stored
                    .affiliations
                    .values()
                    .filter(|a| **a == Affiliation::Owner)
                    .count()
                    == 1
            {
                return Err(StanzaError::conflict().with_text("a room needs an owner"));
            }
            room.set_affiliation(&target, aff);
            // A reserved nickname goes with the membership (§7.10).
            if aff < Affiliation::Member {
                room.stored.nicks.remove(&target);
            }
            out.persist = Some(Self::snapshot(room));
            if let Some(idx) = room.occupants.iter().position(|o| o.bare() == target) {
                let code = match aff {
                    Affiliation::Outcast => Some(301),
                    Affiliation::None if room.stored.config.members_only => Some(321),
                    _ => None,
                };
                match code {
                    Some(code) => {
                        let removed = room.occupants.remove(idx);
                        self.announce_removal(room, removed, code, reason.as_deref(), out);
                    }
                    None => {
                        room.occupants[idx].role =
                            room.default_role(aff).max(match room.occupants[idx].role {
                                Role::Moderator if aff >= Affiliation::Admin => Role::Moderator,
                                _ => Role::None,
                            });
                        self.broadcast_presence(room, idx, &[], out);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Tells everyone an occupant left by force (kick 307, ban 301,
    /// membership removed 321); the occupant's own copy carries 110.
    fn announce_removal(
        &self,
        room: &Room,
        mut gone: Occupant,
        code: u16,
        reason: Option<&str>,
        out: &mut Out,
    ) {
        gone.role = Role::None;
        for s in &gone.sessions {
            let mut p = room.presence_of(&gone, s.as_str(), true, &[code, 110], None);
            add_reason(&mut p, reason);
            out.send(p);
        }
        for o in &room.occupants {
            for s in &o.sessions {
                let mut p = room.presence_of(&gone, s.as_str(), room.shows_jids_to(o), &[code], None);
                add_reason(&mut p, reason);
                out.send(p);
            }
        }
    }

    /// Sends occupant `idx`'s current presence to everyone in the room.
    fn broadcast_presence(&self, room: &Room, idx: usize, codes: &[u16], out: &mut Out) {
        let subject = &room.occupants[idx];
        for o in &room.occupants {
            for s in &o.sessions {
                let mut c: Vec<u16> = codes.to_vec();
                if o.nick == subject.nick {
                    c.push(110);
                }
                out.send(room.presence_of(subject, s.as_str(), room.shows_jids_to(o), &c, None));
            }
        }
    }

    // ------------------------------------------------------------ presence

    fn handle_presence(
        &self,
        server: &Server,
        p: &Element,
        from: &FullJid,
        node: &str,
        nick: &str,
        out: &mut Out,
    ) {
        match p.attr("type") {
            None => self.join_or_update(server, p, from, node, nick, out),
            Some("unavailable") | Some("error") => self.leave(p, from, node, out),
            _ => {}
        }
    }

    fn join_or_update(
        &self,
        server: &Server,
        p: &Element,
        from: &FullJid,
        node: &str,
        nick: &str,
        out: &mut Out,
    ) {
        let mut rooms = self.lock();
        let bare = from.to_bare().to_string();
        // Already in the room: a presence update or a nick change.
        if let Some(room) = rooms.get_mut(node)
            && let Some(idx) = room
                .occupants
                .iter()
                .position(|o| o.sessions.iter().any(|s| s == from))
        {
            if room.occupants[idx].nick == nick {
                room.occupants[idx].presence = p.clone();
                self.broadcast_presence(room, idx, &[], out);
            } else if room.occupant_by_nick(nick).is_some_and(|o| o.bare() != bare)
                || room.nick_owner(nick).is_some_and(|owner| owner != bare)
            {
                out.stanzas.extend(presence_error(p, StanzaError::conflict()));
            } else {
                // §7.6: unavailable with 303 and the new nick, then available.
                let old = clone_occupant(&room.occupants[idx]);
                let gone = Occupant {
                    role: Role::None,
                    ..clone_occupant(&old)
                };
                for o in &room.occupants {
                    for s in &o.sessions {
                        let mut codes = vec![303];
                        if o.nick == old.nick {
                            codes.push(110);
                        }
                        out.send(room.presence_of(
                            &gone,
                            s.as_str(),
                            room.shows_jids_to(o),
                            &codes,
                            Some(("nick", nick)),
                        ));
                    }
                }
                room.occupants[idx].nick = nick.to_string();
                room.occupants[idx].presence = p.clone();
                self.broadcast_presence(room, idx, &[], out);
            }
            return;
        }
        let muc_x = p.get_child("x", NS_MUC);
        let mut created = false;
        if !rooms.contains_key(node) {
            let local_user = server.is_local_domain(from.domain().as_str());
            if !self.config.may_create(local_user) {
                out.stanzas.extend(presence_error(
                    p,
                    StanzaError::not_allowed().with_text("Room creation is restricted"),
                ));
                return;
            }
            let mut stored = Stored {
                config: self.default_room_config(node),
                affiliations: BTreeMap::new(),
                subject: None,
                nicks: BTreeMap::new(),
            };
            stored.affiliations.insert(bare.clone(), Affiliation::Owner);
            rooms.insert(
                node.to_string(),
                Room {
                    jid: format!("{node}@{}", self.domain),
                    stored,
                    locked: self.config.muc_room_locking,
                    occupants: Vec::new(),
                    history: VecDeque::new(),
                },
            );
            created = true;
            info!(room = %format!("{node}@{}", self.domain), creator = %bare, "room created");
        }
        let Some(room) = rooms.get_mut(node) else { return };
        let aff = room.affiliation(&bare);
        let refusal = if room.locked && aff != Affiliation::Owner {
            Some(StanzaError::item_not_found().with_text("This room is locked until its owner configures it"))
        } else if aff == Affiliation::Outcast {
            Some(StanzaError::forbidden().with_text("You are banned from this room"))
        } else if room.stored.config.members_only && aff < Affiliation::Member {
            Some(cond(ErrorType::Auth, "registration-required").with_text("This room is for members only"))
        } else if room.occupant_by_nick(nick).is_some_and(|o| o.bare() != bare)
            || room.nick_owner(nick).is_some_and(|owner| owner != bare)
        {
            Some(StanzaError::conflict().with_text("That nickname is in use"))
        } else if room.is_full(self.config.muc_max_occupants) && aff < Affiliation::Admin {
            Some(cond(ErrorType::Wait, "service-unavailable").with_text("The room is full"))
        } else if let Some(secret) = &room.stored.config.password {
            let given = muc_x
                .and_then(|x| x.get_child("password", NS_MUC))
                .map(|p| p.text());
            (given.as_deref() != Some(secret.as_str()))
                .then(|| StanzaError::not_authorized().with_text("A password is required"))
        } else {
            None
        };
        if let Some(err) = refusal {
            debug!(room = %room.jid, user = %from, condition = err.condition, "join refused");
            out.stanzas.extend(presence_error(p, err));
            return;
        }
        let role = room.default_role(aff);
        let idx = match room.occupants.iter().position(|o| o.nick == nick) {
            // Another session of the same user under the same nick.
            Some(i) => {
                room.occupants[i].sessions.push(from.clone());
                i
            }
            None => {
                room.occupants.push(Occupant {
                    nick: nick.to_string(),
                    sessions: vec![from.clone()],
                    role,
                    presence: p.clone(),
                });
                room.occupants.len() - 1
            }
        };
        let me = from.as_str();
        // Existing occupants to the newcomer...
        let sees_jids = room.shows_jids_to(&room.occupants[idx]);
        for (i, o) in room.occupants.iter().enumerate() {
            if i != idx {
                out.send(room.presence_of(o, me, sees_jids, &[], None));
            }
        }
        // ...the newcomer to the others, and to itself last.
        let newcomer = &room.occupants[idx];
        for (i, o) in room.occupants.iter().enumerate() {
            if i != idx {
                for s in &o.sessions {
                    out.send(room.presence_of(newcomer, s.as_str(), room.shows_jids_to(o), &[], None));
                }
            }
        }
        let mut codes = vec![110];
        if room.stored.config.whois_anyone {
            codes.push(100);
        }
        if created {
            codes.push(201);
        }
        out.send(room.presence_of(newcomer, me, true, &codes, None));
        self.send_history(room, muc_x, me, out);
        let mut subject = stanza::new_stanza("message", &[("to", me), ("type", "groupchat")]);
        let (subject_from, text) = match &room.stored.subject {
            Some((nick, text)) => (room.occupant_jid(nick), text.clone()),
            None => (room.jid.clone(), String::new()),
        };
        stanza::set_attr(&mut subject, "from", subject_from);
        let mut s = Element::bare("subject", ns::CLIENT);
        s.append_text(text);
        subject.append_child(s);
        out.send(subject);
        info!(room = %room.jid, user = %from, nick, "joined");
    }

    /// Discussion history on join, as `<history/>` asks (§7.2.15).
    fn send_history(&self, room: &Room, muc_x: Option<&Element>, to: &str, out: &mut Out) {
        let h = muc_x.and_then(|x| x.get_child("history", NS_MUC));
        let attr = |name: &'static str| h.and_then(|h| h.attr(name));
        let max_stanzas = attr("maxstanzas")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let max_chars = attr("maxchars")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let now = stanza::now_secs();
        let oldest = attr("seconds")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| now.saturating_sub(s))
            .max(attr("since").and_then(parse_stamp));
        let mut picked: Vec<&room::HistoryEntry> = Vec::new();
        let mut chars = 0usize;
        for entry in room.history.iter().rev() {
            if picked.len() >= max_stanzas || oldest.is_some_and(|o| entry.stamp_secs < o) {
                break;
            }
            if chars + entry.chars > max_chars {
                break;
            }
            chars += entry.chars;
            picked.push(entry);
        }
        for entry in picked.into_iter().rev() {
            let mut m = entry.message.clone();
            stanza::set_attr(&mut m, "to", to);
            m.append_child(stanza::delay(&room.jid, &stanza::format_stamp(entry.stamp_secs)));
            out.send(m);
        }
    }

    fn leave(&self, p: &Element, from: &FullJid, node: &str, out: &mut Out) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(node) else { return };
        let Some(idx) = room
            .occupants
            .iter()
            .position(|o| o.sessions.iter().any(|s| s == from))
        else {
            return;
        };
        let status = p.get_child("status", ns::CLIENT).map(|s| s.text());
        room.occupants[idx].sessions.retain(|s| s != from);
        let mut gone = if room.occupants[idx].sessions.is_empty() {
            room.occupants.remove(idx)
        } else {
            clone_occupant(&room.occupants[idx])
        };
        gone.role = Role::None;
        let mut own = room.presence_of(&gone, from.as_str(), true, &[110], None);
        if let Some(status) = &status {
            let mut s = Element::bare("status", ns::CLIENT);
            s.append_text(status.clone());
            own.append_child(s);
        }
        out.send(own);
        if room.occupant_by_nick(&gone.nick).is_none() {
            for o in &room.occupants {
                for s in &o.sessions {
                    out.send(room.presence_of(&gone, s.as_str(), room.shows_jids_to(o), &[], None));
                }
            }
        }
        debug!(room = %room.jid, user = %from, "left");
        // Temporary rooms end with their last occupant (§10.9 for locked
        // rooms never configured, too).
        if room.occupants.is_empty() && (!room.stored.config.persistent || room.locked) {
            info!(room = %room.jid, "room removed: last occupant left");
            rooms.remove(node);
        }
    }

    // ------------------------------------------------------------ messages

    fn room_message(&self, m: &Element, from: &Jid, node: &str, out: &mut Out) {
        if stanza::is_error(m) {
            return;
        }
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(node) else {
            drop(rooms);
            out.stanzas
                .extend(stanza::error_reply(m, &StanzaError::item_not_found()));
            return;
        };
        // §7.8.2: a declined invitation goes back to the inviter; the
        // invitee is not an occupant.
        if let Some(decline) = m
            .get_child("x", NS_USER)
            .and_then(|x| x.get_child("decline", NS_USER))
        {
            if let Some(to) = decline.attr("to") {
                let mut msg = stanza::new_stanza("message", &[("from", &room.jid), ("to", to)]);
                let mut x = Element::bare("x", NS_USER);
                let mut d = Element::bare("decline", NS_USER);
                stanza::set_attr(&mut d, "from", from.to_bare().to_string());
                if let Some(reason) = decline.get_child("reason", NS_USER) {
                    d.append_child(reason.clone());
                }
                x.append_child(d);
                msg.append_child(x);
                out.send(msg);
            }
            return;
        }
        let Some(sender) = room.occupant_by_session(from.as_str()) else {
            drop(rooms);
            out.stanzas.extend(stanza::error_reply(
                m,
                &cond(ErrorType::Modify, "not-acceptable").with_text("You are not in this room"),
            ));
            return;
        };
        let (nick, role) = (sender.nick.clone(), sender.role);
        if let Some(x) = m.get_child("x", NS_USER)
            && x.has_child("invite", NS_USER)
        {
            self.invite(room, m, from, x, role, out);
            return;
        }
        if m.attr("type") != Some("groupchat") {
            out.stanzas
                .extend(stanza::error_reply(m, &cond(ErrorType::Modify, "not-acceptable")));
            return;
        }
        let subject = m.get_child("subject", ns::CLIENT).map(|s| s.text());
        if let Some(text) = subject.filter(|_| !m.has_child("body", ns::CLIENT)) {
            if role != Role::Moderator && !(room.stored.config.change_subject && role >= Role::Participant) {
                out.stanzas
                    .extend(stanza::error_reply(m, &StanzaError::forbidden()));
                return;
            }
            room.stored.subject = Some((nick.clone(), text));
            out.persist = Some(Self::snapshot(room));
        } else if role < Role::Participant {
            out.stanzas.extend(stanza::error_reply(
                m,
                &StanzaError::forbidden().with_text("Visitors may not speak in this moderated room"),
            ));
            return;
        }
        let mut message = m.clone();
        stanza::set_attr(&mut message, "from", room.occupant_jid(&nick));
        stanza::remove_attr(&mut message, "to");
        if m.has_child("body", ns::CLIENT) {
            // The room archive (XEP-0313 §5.1.2): its id reaches every
            // occupant as a stanza-id by the room (XEP-0359); a sender's
            // claim to one is dropped.
            stanza::remove_children(&mut message, "stanza-id", ns::STANZA_ID);
            let id = archive_query::new_archive_id();
            let mut stamp = Element::bare("stanza-id", ns::STANZA_ID);
            stanza::set_attr(&mut stamp, "id", id.as_str());
            stanza::set_attr(&mut stamp, "by", room.jid.as_str());
            message.append_child(stamp);
            out.archived.push((
                room.jid.clone(),
                ArchivedMessage {
                    id,
                    timestamp: archive_query::now_micros(),
                    with: room.occupant_jid(&nick),
                    stanza: jackdaw_core::stream::serialize(&message),
                },
            ));
            room.remember(message.clone(), stanza::now_secs());
        }
        for o in &room.occupants {
            for s in &o.sessions {
                let mut copy = message.clone();
                stanza::set_attr(&mut copy, "to", s.as_str());
                out.send(copy);
            }
        }
    }

    /// Mediated invitations (§7.8.2).
    fn invite(&self, room: &mut Room, m: &Element, from: &Jid, x: &Element, role: Role, out: &mut Out) {
        let inviter = from.to_bare().to_string();
        let inviter_aff = room.affiliation(&inviter);
        if !room.stored.config.allow_invites && role != Role::Moderator && inviter_aff < Affiliation::Admin {
            out.stanzas
                .extend(stanza::error_reply(m, &StanzaError::forbidden()));
            return;
        }
        for invite in x.children().filter(|c| c.is("invite", NS_USER)) {
            let Some(to) = invite.attr("to").and_then(|t| Jid::new(t).ok()) else {
                continue;
            };
            if room.stored.config.members_only
                && room.affiliation(to.to_bare().as_str()) < Affiliation::Member
            {
                room.set_affiliation(to.to_bare().as_str(), Affiliation::Member);
                out.persist = Some(Self::snapshot(room));
            }
            let mut msg = stanza::new_stanza("message", &[("from", &room.jid), ("to", to.as_str())]);
            let mut xu = Element::bare("x", NS_USER);
            let mut inv = Element::bare("invite", NS_USER);
            stanza::set_attr(&mut inv, "from", inviter.as_str());
            if let Some(reason) = invite.get_child("reason", NS_USER) {
                inv.append_child(reason.clone());
            }
            xu.append_child(inv);
            if let Some(secret) = &room.stored.config.password {
                let mut pw = Element::bare("password", NS_USER);
                pw.append_text(secret.clone());
                xu.append_child(pw);
            }
            msg.append_child(xu);
            let mut body = Element::bare("body", ns::CLIENT);
            body.append_text(format!("{inviter} invites you to the room {}", room.jid));
            msg.append_child(body);
            out.send(msg);
        }
    }

    /// Private messages between occupants (§7.5).
    fn private_message(&self, m: &Element, from: &Jid, node: &str, nick: &str, out: &mut Out) {
        if stanza::is_error(m) {
            return;
        }
        let rooms = self.lock();
        let result = match rooms.get(node) {
            None => Err(StanzaError::item_not_found()),
            Some(_) if m.attr("type") == Some("groupchat") => Err(StanzaError::bad_request()),
            Some(room) => match (
                room.occupant_by_session(from.as_str()),
                room.occupant_by_nick(nick),
            ) {
                (None, _) => Err(cond(ErrorType::Modify, "not-acceptable")),
                (Some(_), None) => Err(StanzaError::item_not_found()),
                (Some(sender), Some(target)) => {
                    for s in &target.sessions {
                        let mut copy = m.clone();
                        stanza::set_attr(&mut copy, "from", room.occupant_jid(&sender.nick));
                        stanza::set_attr(&mut copy, "to", s.as_str());
                        // §7.5: an empty muc#user <x/> marks a MUC private message.
                        copy.append_child(Element::bare("x", NS_USER));
                        out.send(copy);
                    }
                    Ok(())
                }
            },
        };
        if let Err(e) = result {
            out.stanzas.extend(stanza::error_reply(m, &e));
        }
    }
}

enum OwnerOutcome {
    Kept,
    Destroyed,
}

fn clone_occupant(o: &Occupant) -> Occupant {
    Occupant {
        nick: o.nick.clone(),
        sessions: o.sessions.clone(),
        role: o.role,
        presence: o.presence.clone(),
    }
}

fn add_reason(p: &mut Element, reason: Option<&str>) {
    let Some(reason) = reason else { return };
    if let Some(x) = p.get_child_mut("x", NS_USER)
        && let Some(item) = x.get_child_mut("item", NS_USER)
    {
        let mut r = Element::bare("reason", NS_USER);
        r.append_text(reason);
        item.append_child(r);
    }
}

fn room_info(room: &Room) -> Element {
    let c = &room.stored.config;
    let mut q = Element::bare("query", ns::DISCO_INFO);
    let mut identity = Element::bare("identity", ns::DISCO_INFO);
    stanza::set_attr(&mut identity, "category", "conference");
    stanza::set_attr(&mut identity, "type", "text");
    stanza::set_attr(&mut identity, "name", c.name.as_str());
    q.append_child(identity);
    let features = [
        NS_MUC,
        ns::PING,
        ns::REGISTER,
        ns::MAM,
        ns::STANZA_ID,
        if c.persistent {
            "muc_persistent"
        } else {
            "muc_temporary"
        },
        if c.public { "muc_public" } else { "muc_hidden" },
        if c.members_only {
            "muc_membersonly"
        } else {
            "muc_open"
        },
        if c.moderated {
            "muc_moderated"
        } else {
            "muc_unmoderated"
        },
        if c.password.is_some() {
            "muc_passwordprotected"
        } else {
            "muc_unsecured"
        },
        if c.whois_anyone {
            "muc_nonanonymous"
        } else {
            "muc_semianonymous"
        },
    ];
    for f in features {
        let mut el = Element::bare("feature", ns::DISCO_INFO);
        stanza::set_attr(&mut el, "var", f);
        q.append_child(el);
    }
    q
}

/// Lists by affiliation (admins) or by role (moderators), §9 and §8.
fn admin_get(
    room: &Room,
    actor_bare: &str,
    actor_full: &str,
    query: &Element,
) -> Result<Option<Element>, StanzaError> {
    let item = query
        .get_child("item", NS_ADMIN)
        .ok_or_else(StanzaError::bad_request)?;
    let mut q = Element::bare("query", NS_ADMIN);
    if let Some(aff) = item.attr("affiliation") {
        let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
        if room.affiliation(actor_bare) < Affiliation::Admin {
            return Err(StanzaError::forbidden());
        }
        for (jid, a) in &room.stored.affiliations {
            if *a == aff {
                let mut i = Element::bare("item", NS_ADMIN);
                stanza::set_attr(&mut i, "affiliation", a.as_str());
                stanza::set_attr(&mut i, "jid", jid.as_str());
                if let Some(o) = room.occupant_by_bare(jid) {
                    stanza::set_attr(&mut i, "nick", o.nick.as_str());
                }
                q.append_child(i);
            }
        }
        return Ok(Some(q));
    }
    let role = item
        .attr("role")
        .and_then(Role::parse)
        .ok_or_else(StanzaError::bad_request)?;
    if room.occupant_by_session(actor_full).map(|o| o.role) != Some(Role::Moderator) {
        return Err(StanzaError::forbidden());
    }
    for o in room.occupants.iter().filter(|o| o.role == role) {
        let mut i = Element::bare("item", NS_ADMIN);
        stanza::set_attr(&mut i, "role", o.role.as_str());
        stanza::set_attr(&mut i, "nick", o.nick.as_str());
        stanza::set_attr(&mut i, "affiliation", room.affiliation(&o.bare()).as_str());
        stanza::set_attr(&mut i, "jid", o.bare());
        q.append_child(i);
    }
    Ok(Some(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_parse_back() {
        for secs in [0u64, 951_782_400, 1_700_000_000] {
            assert_eq!(parse_stamp(&stanza::format_stamp(secs)), Some(secs));
        }
        assert_eq!(parse_stamp("2023-11-14T23:13:20.123+01:00"), Some(1_700_000_000));
        assert_eq!(parse_stamp("yesterday"), None);
    }
}
