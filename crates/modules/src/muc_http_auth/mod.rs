//! `modules_enabled = ["muc_http_auth"]` in a MUC component's table (seed:
//! mod_muc_http_auth.md): the operator's web app decides every join with
//! `GET muc_http_auth_url?userJID=&mucJID=&nickname=` answering
//! `{"allowed": bool, "error": string}`.
//!
//! Beyond the seed: nick changes are decided again (the reference module
//! lets a user admitted under one nick take a refused one); the web app's
//! `error` is shown to the user (`muc_http_auth_show_error`, default on);
//! timeouts and one pooled client; fail closed when the web app is down,
//! answers non-200, non-JSON or lacks `allowed` (`service-unavailable` or
//! `internal-server-error`, warned once per outage); an optional decision
//! cache (`muc_http_auth_cache_ttl`). The decision is taken before any room
//! state changes, so a refused user sees nothing of the room.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jackdaw_core::config::ComponentConfig;
use jackdaw_core::http_client::{self, HttpClientOptions, is_http_url};
use jackdaw_core::jid::BareJid;
use jackdaw_core::stanza::{ErrorType, StanzaError};
use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::muc::JoinPolicy;

pub const OPTIONS: &[&str] = &[
    "muc_http_auth_url",
    "muc_http_auth_enabled_for",
    "muc_http_auth_disabled_for",
    "muc_http_auth_insecure",
    "muc_http_auth_authorization_header",
    "muc_http_auth_authorize_registration",
    "muc_http_auth_show_error",
    "muc_http_auth_timeout",
    "muc_http_auth_cache_ttl",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub muc_http_auth_url: Option<String>,
    /// User host (or "all") → room nodes the check applies to.
    #[serde(default)]
    pub muc_http_auth_enabled_for: Option<BTreeMap<String, Vec<String>>>,
    /// User host (or "all") → room nodes the check does not apply to.
    #[serde(default)]
    pub muc_http_auth_disabled_for: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub muc_http_auth_insecure: bool,
    #[serde(default)]
    pub muc_http_auth_authorization_header: Option<String>,
    /// Also decide XEP-0045 §7.10 room registrations (the reference code
    /// checks registration IQs).
    #[serde(default)]
    pub muc_http_auth_authorize_registration: bool,
    #[serde(default = "yes")]
    pub muc_http_auth_show_error: bool,
    #[serde(default = "default_timeout")]
    pub muc_http_auth_timeout: f64,
    #[serde(default)]
    pub muc_http_auth_cache_ttl: u64,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> f64 {
    5.0
}

impl Config {
    pub fn validate(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.muc_http_auth_url {
            Some(url) if is_http_url(url) => {}
            Some(url) => problems.push(format!(
                "component {name}: muc_http_auth_url {url:?} is not an http(s) URL"
            )),
            None => problems.push(format!("component {name}: muc_http_auth needs muc_http_auth_url")),
        }
        if self.muc_http_auth_enabled_for.is_some() && self.muc_http_auth_disabled_for.is_some() {
            problems.push(format!(
                "component {name}: set only one of muc_http_auth_enabled_for and muc_http_auth_disabled_for"
            ));
        }
        if !(self.muc_http_auth_timeout > 0.0 && self.muc_http_auth_timeout <= 300.0) {
            problems.push(format!(
                "component {name}: muc_http_auth_timeout must be between 0 and 300 seconds"
            ));
        }
        if let Some(h) = &self.muc_http_auth_authorization_header
            && reqwest::header::HeaderValue::from_str(h).is_err()
        {
            problems.push(format!(
                "component {name}: muc_http_auth_authorization_header is not a valid header value"
            ));
        }
        problems
    }

    /// Whether joins of a user from `user_host` to room `node` are checked.
    pub fn applies(&self, user_host: &str, node: &str) -> bool {
        let listed = |map: &BTreeMap<String, Vec<String>>| {
            [user_host, "all"]
                .iter()
                .any(|h| map.get(*h).is_some_and(|rooms| rooms.iter().any(|r| r == node)))
        };
        match (&self.muc_http_auth_enabled_for, &self.muc_http_auth_disabled_for) {
            (Some(enabled), _) => listed(enabled),
            (None, Some(disabled)) => !listed(disabled),
            (None, None) => true,
        }
    }
}

#[derive(Deserialize)]
struct Decision {
    allowed: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

/// (user, room, nick) → the decision and when it was made.
type Decisions = HashMap<(String, String, String), (Result<(), StanzaError>, Instant)>;

pub struct MucHttpAuth {
    config: Config,
    client: reqwest::Client,
    outage: AtomicBool,
    cache: Mutex<Decisions>,
}

impl MucHttpAuth {
    pub fn new(component: &ComponentConfig) -> Result<Self, String> {
        let name = component.name.as_str();
        let config: Config = component.module_config()?;
        let problems = config.validate(name);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let client = http_client::build(&HttpClientOptions {
            timeout: Duration::from_secs_f64(config.muc_http_auth_timeout),
            insecure: config.muc_http_auth_insecure,
            max_idle_per_host: 32,
        })
        .map_err(|e| format!("component {name}: cannot build the HTTP client: {e}"))?;
        Ok(Self {
            config,
            client,
            outage: AtomicBool::new(false),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn down(&self, detail: &str, err: StanzaError) -> Result<(), StanzaError> {
        if !self.outage.swap(true, Ordering::Relaxed) {
            warn!("muc_http_auth web app failing; joins are refused until it recovers: {detail}");
        } else {
            debug!("muc_http_auth web app still failing: {detail}");
        }
        Err(err.with_text("Joining rooms is not possible right now; try again later"))
    }

    async fn ask(&self, user: &str, room: &str, nick: &str) -> Result<(), StanzaError> {
        let url = self.config.muc_http_auth_url.clone().unwrap_or_default();
        let mut request =
            self.client
                .get(&url)
                .query(&[("userJID", user), ("mucJID", room), ("nickname", nick)]);
        if let Some(h) = &self.config.muc_http_auth_authorization_header {
            request = request.header(reqwest::header::AUTHORIZATION, h);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return self.down(
                    &e.without_url().to_string(),
                    StanzaError::new(ErrorType::Wait, "service-unavailable"),
                );
            }
        };
        let status = response.status().as_u16();
        if status != 200 {
            return self.down(&format!("HTTP {status}"), StanzaError::internal_server_error());
        }
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => {
                return self.down(
                    &e.without_url().to_string(),
                    StanzaError::new(ErrorType::Wait, "service-unavailable"),
                );
            }
        };
        let decision = match serde_json::from_str::<Decision>(&body) {
            Ok(Decision {
                allowed: Some(a),
                error,
            }) => (a, error),
            _ => {
                return self.down(
                    "answer is not {\"allowed\": bool}",
                    StanzaError::internal_server_error(),
                );
            }
        };
        if self.outage.swap(false, Ordering::Relaxed) {
            info!("muc_http_auth web app answering again");
        }
        match decision {
            (true, _) => Ok(()),
            (false, error) => {
                let reason = error.filter(|e| !e.is_empty());
                info!(
                    user,
                    room,
                    nick,
                    reason = reason.as_deref().unwrap_or(""),
                    "join refused by the web app"
                );
                let err = StanzaError::not_authorized();
                Err(match reason.filter(|_| self.config.muc_http_auth_show_error) {
                    Some(text) => err.with_text(text),
                    None => err,
                })
            }
        }
    }
}

#[async_trait]
impl JoinPolicy for MucHttpAuth {
    fn checks_registration(&self) -> bool {
        self.config.muc_http_auth_authorize_registration
    }

    async fn check(&self, user: &BareJid, room: &BareJid, nick: &str) -> Result<(), StanzaError> {
        let node = room.node().map(|n| n.as_str()).unwrap_or_default();
        if !self.config.applies(user.domain().as_str(), node) {
            return Ok(());
        }
        let key = (user.to_string(), room.to_string(), nick.to_string());
        let ttl = Duration::from_secs(self.config.muc_http_auth_cache_ttl);
        if !ttl.is_zero() {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((decision, at)) = cache.get(&key)
                && at.elapsed() < ttl
            {
                return decision.clone();
            }
        }
        let decision = self.ask(user.as_str(), room.as_str(), nick).await;
        // Only answers are cached, never outages.
        let answered = decision.is_ok() || decision.as_ref().is_err_and(|e| e.condition == "not-authorized");
        if !ttl.is_zero() && answered {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 100_000 {
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            cache.insert(key, (decision.clone(), Instant::now()));
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: Option<&str>, disabled: Option<&str>) -> Config {
        let parse = |s: &str| toml::from_str::<BTreeMap<String, Vec<String>>>(s).unwrap();
        Config {
            muc_http_auth_url: Some("http://127.0.0.1/".into()),
            muc_http_auth_enabled_for: enabled.map(parse),
            muc_http_auth_disabled_for: disabled.map(parse),
            muc_http_auth_insecure: false,
            muc_http_auth_authorization_header: None,
            muc_http_auth_authorize_registration: false,
            muc_http_auth_show_error: true,
            muc_http_auth_timeout: 5.0,
            muc_http_auth_cache_ttl: 0,
        }
    }

    #[test]
    fn enabled_and_disabled_lists() {
        let c = config(None, None);
        assert!(c.applies("a.example", "any"));
        let c = config(Some("all = [\"tea\"]\n\"a.example\" = [\"orchard\"]"), None);
        assert!(c.applies("b.example", "tea"));
        assert!(c.applies("a.example", "orchard"));
        assert!(!c.applies("b.example", "orchard"));
        let c = config(None, Some("\"a.example\" = [\"tea\"]"));
        assert!(!c.applies("a.example", "tea"));
        assert!(c.applies("b.example", "tea"));
    }

    #[test]
    fn both_lists_is_a_config_error() {
        let c = config(Some("all = []"), Some("all = []"));
        assert!(!c.validate("rooms.example").is_empty());
    }
}
