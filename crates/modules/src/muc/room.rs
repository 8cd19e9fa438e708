//! A room's state: what persists (configuration, affiliations, subject)
//! and what lives only while people are in it (occupants, history).

use std::collections::{BTreeMap, VecDeque};

use jackdaw_core::jid::FullJid;
use jackdaw_core::minidom::Element;
use jackdaw_core::stanza;
use serde::{Deserialize, Serialize};

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// The muc#roomconfig fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub password: Option<String>,
    /// Real JIDs visible to everyone (non-anonymous) rather than to
    /// moderators only (semi-anonymous).
    pub whois_anyone: bool,
    /// 0 = no limit beyond the service's.
    pub max_users: usize,
    pub history_length: usize,
    pub allow_invites: bool,
    pub change_subject: bool,
}

/// What is written to storage for a persistent room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub config: RoomConfig,
    /// Bare JID → affiliation (none is not stored).
    pub affiliations: BTreeMap<String, Affiliation>,
    /// (nick, text) of the current subject.
    pub subject: Option<(String, String)>,
    /// Nicknames reserved by registration (§7.10), bare JID → nick.
    #[serde(default)]
    pub nicks: BTreeMap<String, String>,
}

pub struct Occupant {
    pub nick: String,
    /// Real JIDs of the sessions joined under this nick (one bare JID).
    pub sessions: Vec<FullJid>,
    pub role: Role,
    /// The user's presence as broadcast (children such as show/status).
    pub presence: Element,
}

impl Occupant {
    pub fn bare(&self) -> String {
        self.sessions
            .first()
            .map(|s| s.to_bare().to_string())
            .unwrap_or_default()
    }
}

pub struct HistoryEntry {
    /// The message as sent to occupants, without `to`.
    pub message: Element,
    pub stamp_secs: u64,
    pub chars: usize,
}

pub struct Room {
    pub jid: String,
    pub stored: Stored,
    pub locked: bool,
    pub occupants: Vec<Occupant>,
    pub history: VecDeque<HistoryEntry>,
}

impl Room {
    pub fn affiliation(&self, bare: &str) -> Affiliation {
        self.stored
            .affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub fn set_affiliation(&mut self, bare: &str, a: Affiliation) {
        if a == Affiliation::None {
            self.stored.affiliations.remove(bare);
        } else {
            self.stored.affiliations.insert(bare.to_string(), a);
        }
    }

    /// The role a user gets on joining (XEP-0045 §5.1.2).
    pub fn default_role(&self, a: Affiliation) -> Role {
        match a {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.stored.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// The bare JID that registered `nick`, if any.
    pub fn nick_owner(&self, nick: &str) -> Option<&str> {
        self.stored
            .nicks
            .iter()
            .find(|(_, n)| n.as_str() == nick)
            .map(|(j, _)| j.as_str())
    }

    pub fn occupant_by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }

    pub fn occupant_by_session(&self, jid: &str) -> Option<&Occupant> {
        self.occupants
            .iter()
            .find(|o| o.sessions.iter().any(|s| s.as_str() == jid))
    }

    pub fn occupant_by_bare(&self, bare: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.bare() == bare)
    }

    pub fn occupant_jid(&self, nick: &str) -> String {
        format!("{}/{nick}", self.jid)
    }

    /// The `<presence/>` of an occupant as `viewer_is_moderator` sees it.
    pub fn presence_of(
        &self,
        o: &Occupant,
        to: &str,
        show_jid: bool,
        codes: &[u16],
        extra_item: Option<(&str, &str)>,
    ) -> Element {
        let mut p = stanza::new_stanza("presence", &[("from", &self.occupant_jid(&o.nick)), ("to", to)]);
        if o.role == Role::None {
            stanza::set_attr(&mut p, "type", "unavailable");
        } else {
            for child in o.presence.children() {
                if child.ns() == jackdaw_core::stream::ns::CLIENT {
                    p.append_child(child.clone());
                }
            }
        }
        p.append_child(self.user_x(o, show_jid, codes, extra_item));
        p
    }

    /// The muc#user `<x/>` describing an occupant.
    pub fn user_x(
        &self,
        o: &Occupant,
        show_jid: bool,
        codes: &[u16],
        extra_item: Option<(&str, &str)>,
    ) -> Element {
        let mut x = Element::bare("x", NS_USER);
        let mut item = Element::bare("item", NS_USER);
        stanza::set_attr(&mut item, "affiliation", self.affiliation(&o.bare()).as_str());
        stanza::set_attr(&mut item, "role", o.role.as_str());
        if show_jid && let Some(s) = o.sessions.first() {
            stanza::set_attr(&mut item, "jid", s.to_string());
        }
        if let Some((k, v)) = extra_item {
            stanza::set_attr(&mut item, k, v);
        }
        x.append_child(item);
        for c in codes {
            let mut status = Element::bare("status", NS_USER);
            stanza::set_attr(&mut status, "code", c.to_string());
            x.append_child(status);
        }
        x
    }

    /// Whether `viewer` may see real JIDs.
    pub fn shows_jids_to(&self, viewer: &Occupant) -> bool {
        self.stored.config.whois_anyone || viewer.role == Role::Moderator
    }

    pub fn is_full(&self, service_max: usize) -> bool {
        let max = match self.stored.config.max_users {
            0 => service_max,
            n => n.min(service_max),
        };
        self.occupants.len() >= max
    }

    /// Adds a message to the discussion history, bounded by the room's
    /// history length.
    pub fn remember(&mut self, message: Element, stamp_secs: u64) {
        let chars = jackdaw_core::stream::serialize(&message).chars().count();
        self.history.push_back(HistoryEntry {
            message,
            stamp_secs,
            chars,
        });
        while self.history.len() > self.stored.config.history_length {
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(moderated: bool) -> Room {
        Room {
            jid: "r@rooms.example".into(),
            stored: Stored {
                config: RoomConfig {
                    name: "r".into(),
                    description: String::new(),
                    persistent: false,
                    public: true,
                    members_only: false,
                    moderated,
                    password: None,
                    whois_anyone: false,
                    max_users: 2,
                    history_length: 2,
                    allow_invites: false,
                    change_subject: false,
                },
                affiliations: BTreeMap::new(),
                subject: None,
                nicks: BTreeMap::new(),
            },
            locked: false,
            occupants: Vec::new(),
            history: VecDeque::new(),
        }
    }

    #[test]
    fn roles_follow_affiliation_and_moderation() {
        let r = room(true);
        assert_eq!(r.default_role(Affiliation::Owner), Role::Moderator);
        assert_eq!(r.default_role(Affiliation::Member), Role::Participant);
        assert_eq!(r.default_role(Affiliation::None), Role::Visitor);
        assert_eq!(room(false).default_role(Affiliation::None), Role::Participant);
    }

    #[test]
    fn history_is_bounded() {
        let mut r = room(false);
        for i in 0..5 {
            r.remember(stanza::new_stanza("message", &[("id", &i.to_string())]), i);
        }
        assert_eq!(r.history.len(), 2);
        assert_eq!(r.history[0].message.attr("id"), Some("3"));
    }

    #[test]
    fn affiliations_round_trip_through_json() {
        let mut r = room(false);
        r.set_affiliation("a@x", Affiliation::Outcast);
        r.set_affiliation("b@x", Affiliation::Owner);
        r.set_affiliation("b@x", Affiliation::None);
        let json = serde_json::to_string(&r.stored).unwrap();
        let back: Stored = serde_json::from_str(&json).unwrap();
        assert_eq!(back.affiliations.get("a@x"), Some(&Affiliation::Outcast));
        assert!(!back.affiliations.contains_key("b@x"));
    }
}
