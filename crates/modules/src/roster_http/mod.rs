//! `modules_enabled = ["http_roster_admin"]` (seed: mod_http_roster_admin.md):
//! rosters owned by the operator's web app.
//!
//! At login the user's roster is fetched from `http_roster_url` and cached
//! while they are online (see `source.rs`). The web app announces changes
//! with `POST /roster_admin/refresh` (a JSON array of usernames) or
//! `GET /roster_admin/refresh/USERNAME`; each online user's roster is
//! fetched again, diffed, and pushed, with presence sent both ways as a real
//! "became contacts" looks. The answer is the seed's
//! `{"status","message","updated","errors"}`. Beyond the seed: a JSON push
//! form (`{"user": {roster}}`) that skips the fetch, a Bearer secret
//! (`http_roster_admin_secret`) or loopback-only access by default, bounded
//! concurrency, metrics, and a login that survives a web app outage (empty
//! roster, retried with backoff) unless `http_roster_required = true`.
//!
//! While this module is on, clients cannot change rosters (`not-allowed`)
//! and subscription stanzas are refused (the seed's block_subscriptions);
//! the presence and roster modules see this through `RosterSource`.

pub mod config;
mod routes;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jackdaw_core::hooks::{Event, EventKind, Handled, Hook};
use jackdaw_core::http_client::{self, HttpClientOptions};
use jackdaw_core::jid::BareJid;
use jackdaw_core::roster;
use jackdaw_core::server::Server;
use jackdaw_core::stanza;
use jackdaw_core::stream::StreamError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::{info, warn};

pub use config::{Config, OPTIONS};
use source::{HttpRosters, Items, version_of};

use crate::ModuleContext;

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    let problems = config.validate(&ctx.host.name);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let client = http_client::build(&HttpClientOptions {
        timeout: Duration::from_secs_f64(config.http_roster_timeout),
        insecure: config.http_roster_insecure,
        max_idle_per_host: config.http_roster_max_concurrent_refreshes,
    })
    .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let rosters = Arc::new(HttpRosters::new(
        client,
        config.http_roster_url.clone().unwrap_or_default(),
    ));
    let admin = Arc::new(RosterAdmin {
        host: ctx.host.name.clone(),
        rosters: rosters.clone(),
        config,
        refreshes: Family::default(),
    });
    ctx.metrics.register(
        &format!("roster_http_fetches_{}", metric_host(&ctx.host.name)),
        "Roster fetches from the web app",
        rosters.fetches.clone(),
    );
    ctx.metrics.register(
        &format!("roster_http_refreshes_{}", metric_host(&ctx.host.name)),
        "Users refreshed through /roster_admin/refresh",
        admin.refreshes.clone(),
    );
    ctx.hooks.set_roster_source(rosters);
    let hook = Arc::new(SessionHook(admin.clone()));
    ctx.hooks.on(EventKind::SessionBound, 10, hook.clone());
    ctx.hooks.on(EventKind::SessionClosed, -10, hook);
    ctx.hooks.add_http_routes(routes::router(admin));
    Ok(())
}

/// Metric names per host (Prometheus names allow `[a-zA-Z0-9_]`).
fn metric_host(host: &str) -> String {
    host.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

pub struct RosterAdmin {
    host: String,
    rosters: Arc<HttpRosters>,
    config: Config,
    refreshes: Family<Vec<(&'static str, String)>, Counter>,
}

/// Why one user's refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("{0:?} is not a valid username")]
    BadUser(String),
    #[error(transparent)]
    Fetch(#[from] source::FetchError),
}

impl RosterAdmin {
    fn owner(&self, user: &str) -> Result<BareJid, RefreshError> {
        BareJid::new(&format!("{user}@{}", self.host))
            .ok()
            .filter(|j| j.node().is_some())
            .ok_or_else(|| RefreshError::BadUser(user.to_string()))
    }

    /// Refreshes one user: fetched again (or given, in the push form),
    /// diffed against the cache, pushed. Offline users have nothing to do:
    /// their roster is fetched at their next login.
    pub async fn refresh_user(
        &self,
        server: &Server,
        user: &str,
        given: Option<Items>,
    ) -> Result<(), RefreshError> {
        let owner = self.owner(user)?;
        let node = owner.node().map(|n| n.as_str().to_string()).unwrap_or_default();
        if !server.sessions.is_online(&owner) {
            self.count("offline");
            return Ok(());
        }
        let fresh = match given {
            Some(items) => items,
            None => match self.rosters.fetch(&node).await {
                Ok(items) => items,
                Err(e) => {
                    self.count("error");
                    warn!(user = %owner, error = %e, "roster refresh failed; keeping the cached roster");
                    return Err(e.into());
                }
            },
        };
        let old = self.rosters.replace(&self.host, &node, fresh.clone()).await;
        apply_changes(server, &owner, &old, &fresh).await;
        self.count("updated");
        Ok(())
    }

    fn count(&self, outcome: &str) {
        self.refreshes
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    /// Retries a failed login fetch with backoff while the user is online.
    async fn retry_fetch(self: Arc<Self>, server: Arc<Server>, owner: BareJid) {
        let node = owner.node().map(|n| n.as_str().to_string()).unwrap_or_default();
        let mut delay = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = server.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if !server.sessions.is_online(&owner) {
                return;
            }
            match self.rosters.fetch(&node).await {
                Ok(items) => {
                    let old = self.rosters.replace(&self.host, &node, items.clone()).await;
                    apply_changes(&server, &owner, &old, &items).await;
                    info!(user = %owner, "roster fetched after an earlier failure");
                    return;
                }
                Err(e) => {
                    warn!(user = %owner, error = %e, retry_in = ?delay, "roster still unavailable");
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// Login and logout: fetch at login, forget when the last session ends.
struct SessionHook(Arc<RosterAdmin>);

#[async_trait]
impl Hook for SessionHook {
    async fn handle(&self, server: &Server, event: &Event<'_>) -> Handled {
        match event {
            Event::SessionBound { session } => {
                let owner = session.bare();
                let node = owner.node().map(|n| n.as_str().to_string()).unwrap_or_default();
                let admin = &self.0;
                if let Err(e) = admin.rosters.login(&admin.host, &node).await {
                    if admin.config.http_roster_required {
                        warn!(user = %owner, error = %e, "login refused: the contact list is unavailable");
                        session.close(StreamError::InternalServerError(
                            "Your contact list is unavailable; try again later".into(),
                        ));
                    } else {
                        warn!(user = %owner, error = %e, "roster unavailable at login; empty until a retry works");
                        admin.rosters.mark_stale(&admin.host, &node).await;
                        if let Some(server) = server.arc() {
                            tokio::spawn(admin.clone().retry_fetch(server, owner));
                        }
                    }
                }
                Handled::No
            }
            Event::SessionClosed { session } => {
                let owner = session.bare();
                if !server.sessions.is_online(&owner) {
                    let node = owner.node().map(|n| n.as_str()).unwrap_or_default();
                    self.0.rosters.evict(&self.0.host, node);
                }
                Handled::No
            }
            _ => Handled::No,
        }
    }
}

/// Pushes the differences between `old` and `new` to the user's
/// interested resources and sends presence both ways for added and removed
/// contacts (RFC 6121 §3: what a completed or cancelled subscription shows).
/// Local contacts get it directly, since their own roster may not list the
/// user yet (the web app refreshes both sides in any order).
pub async fn apply_changes(server: &Server, owner: &BareJid, old: &Items, new: &Items) {
    let version = version_of(new);
    for (jid, item) in new {
        if old.get(jid) != Some(item) {
            roster::push(server, owner, item, false, version);
        }
    }
    for (jid, item) in old {
        if !new.contains_key(jid) {
            roster::push(server, owner, item, true, version);
        }
    }
    let added = new.keys().filter(|j| !old.contains_key(*j));
    let removed = old.keys().filter(|j| !new.contains_key(*j));
    for (jid, available) in added.map(|j| (j, true)).chain(removed.map(|j| (j, false))) {
        let Ok(contact) = BareJid::new(jid) else { continue };
        exchange_presence(server, owner, &contact, available).await;
        exchange_presence(server, &contact, owner, available).await;
    }
}

/// Shows `from`'s current presence (or unavailable) to `to`.
async fn exchange_presence(server: &Server, from: &BareJid, to: &BareJid, available: bool) {
    let local = server.is_local_domain(to.domain().as_str());
    for r in server.available_resources(from) {
        let presence = if available {
            match r.with_presence(|p| p.last_presence.clone()) {
                Some(p) => p,
                None => continue,
            }
        } else {
            stanza::new_stanza("presence", &[("type", "unavailable")])
        };
        if local {
            for target in server.available_resources(to) {
                let mut p = presence.clone();
                stanza::set_attr(&mut p, "from", r.jid.to_string());
                stanza::set_attr(&mut p, "to", target.jid.to_string());
                target.send(p);
            }
        } else {
            let mut p = presence;
            stanza::set_attr(&mut p, "from", r.jid.to_string());
            stanza::set_attr(&mut p, "to", to.to_string());
            server.route(p, None).await;
        }
    }
}
