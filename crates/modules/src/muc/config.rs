//! MUC service options (Prosody's names where it has them).

use serde::Deserialize;

pub const OPTIONS: &[&str] = &[
    "muc_history_length",
    "muc_max_history_length",
    "muc_room_default_persistent",
    "muc_room_default_public",
    "muc_room_default_members_only",
    "muc_room_default_moderated",
    "muc_room_locking",
    "muc_max_occupants",
    "restrict_room_creation",
    "max_archive_query_results",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Default muc#roomconfig_historylength of new rooms.
    #[serde(default = "default_history")]
    pub muc_history_length: usize,
    /// Upper bound an owner may set.
    #[serde(default = "default_max_history")]
    pub muc_max_history_length: usize,
    #[serde(default)]
    pub muc_room_default_persistent: bool,
    #[serde(default = "yes")]
    pub muc_room_default_public: bool,
    #[serde(default)]
    pub muc_room_default_members_only: bool,
    #[serde(default)]
    pub muc_room_default_moderated: bool,
    /// XEP-0045 §10.1: a new room stays locked until its owner configures
    /// it (instant or reserved).
    #[serde(default = "yes")]
    pub muc_room_locking: bool,
    /// Occupants per room at most, whatever the room's maxusers says.
    #[serde(default = "default_max_occupants")]
    pub muc_max_occupants: usize,
    /// `false` (anyone), or `"local"`: only users of this server's hosts
    /// may create rooms.
    #[serde(default)]
    pub restrict_room_creation: Option<toml::Value>,
    /// Largest page of a room archive query (XEP-0313).
    #[serde(default = "default_max_archive_results")]
    pub max_archive_query_results: usize,
}

fn default_max_archive_results() -> usize {
    50
}

fn default_history() -> usize {
    20
}
fn default_max_history() -> usize {
    50
}
fn default_max_occupants() -> usize {
    1000
}
fn yes() -> bool {
    true
}

impl Config {
    pub fn validate(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.muc_history_length > self.muc_max_history_length {
            problems.push(format!(
                "component {name}: muc_history_length is above muc_max_history_length"
            ));
        }
        if self.muc_max_occupants == 0 {
            problems.push(format!("component {name}: muc_max_occupants must be at least 1"));
        }
        match &self.restrict_room_creation {
            None | Some(toml::Value::Boolean(_)) => {}
            Some(toml::Value::String(s)) if s == "local" => {}
            Some(other) => problems.push(format!(
                "component {name}: restrict_room_creation must be true, false or \"local\", not {other}"
            )),
        }
        problems
    }

    /// Who may create rooms: everyone, local users, or nobody.
    pub fn may_create(&self, user_domain_is_local: bool) -> bool {
        match &self.restrict_room_creation {
            None | Some(toml::Value::Boolean(false)) => true,
            Some(toml::Value::String(_)) => user_domain_is_local,
            Some(_) => false,
        }
    }
}
