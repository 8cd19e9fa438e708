//! `modules_enabled = ["http_oauth2"]` (seed: mod_http_oauth2.md): an OAuth
//! 2.0 authorization server and OpenID Connect provider for the host's
//! accounts, with the OAUTHBEARER SASL mechanism (RFC 7628) for the tokens
//! it issues. `docs/oauth2.md` is the operator's guide.
//!
//! - `client.rs`: stateless dynamic client registration (the seed's design).
//! - `keys.rs`: id_token signing keys (ES256, JWKS) and the server's own
//!   symmetric key (web login cookie, consent requests, CSRF).
//! - `flows.rs`: codes and device authorizations between their steps;
//!   the token endpoint's rate limit.
//! - `pages.rs`: the HTML pages (templates, overridable) and their headers.
//! - `routes.rs`: the HTTP endpoints.
//!
//! Grants and token hashes are stored through `OAuthStore`; revoking a
//! grant or token closes the XMPP sessions opened with it.

mod client;
pub mod config;
mod flows;
pub mod keys;
mod pages;
mod routes;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jackdaw_core::auth::{AuthError, TokenLogin, TokenRefusal, TokenVerifier};
use jackdaw_core::hooks::{Event, EventKind, Handled, Hook};
use jackdaw_core::jid::BareJid;
use jackdaw_core::server::Server;
use jackdaw_core::storage::{OAuthGrant, OAuthStore, OAuthToken, OAuthTokenKind};
use jackdaw_core::stream::StreamError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::OnceCell;
use tracing::{error, info, warn};

pub use config::{Config, OPTIONS};

use self::client::{ClientMetadata, Registrar};
use self::flows::{Approval, Codes, Devices, RequestLimiter, hash_secret, new_secret};
use self::keys::Keys;
use self::pages::Pages;
use crate::ModuleContext;

/// Scopes this server knows; others a client asks for are dropped.
pub const SCOPE_XMPP: &str = "xmpp";
const KNOWN_SCOPES: &[&str] = &["xmpp", "openid", "profile", "jackdaw:user", "jackdaw:admin"];
/// Token and device endpoints: a burst, then a steady rate, per address.
const TOKEN_ENDPOINT_BURST: u32 = 30;
const TOKEN_ENDPOINT_PER_SECOND: u32 = 10;
/// How often expired tokens and empty grants are swept.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    let problems = config.validate(&ctx.host.name);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let registrar = config.oauth2_registration_key.as_deref().map(|key| {
        Registrar::new(
            key,
            &ctx.host.name,
            &config.oauth2_registration_algorithm,
            config.oauth2_registration_ttl,
        )
    });
    if registrar.is_none() {
        warn!(
            host = %ctx.host.name,
            "http_oauth2: no oauth2_registration_key, so no client can register and OAuth is unusable"
        );
    }
    let pages =
        Pages::load(config.oauth2_template_path.as_deref()).map_err(|e| format!("oauth2 templates: {e}"))?;
    let metric_host = ctx.host.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let oauth = Arc::new(OAuth2 {
        host: ctx.host.name.clone(),
        registrar,
        keys: OnceCell::new(),
        store: ctx.stores.oauth.clone(),
        codes: Codes::default(),
        devices: Devices::default(),
        limiter: RequestLimiter::new(TOKEN_ENDPOINT_BURST, TOKEN_ENDPOINT_PER_SECOND),
        pages,
        next_purge: Mutex::new(Instant::now()),
        events: Family::default(),
        config,
    });
    ctx.metrics.register(
        &format!("oauth2_events_{metric_host}"),
        "OAuth events: tokens issued, refused, revoked",
        oauth.events.clone(),
    );
    ctx.hooks
        .on(EventKind::Started, 0, Arc::new(LoadKeys(oauth.clone())));
    ctx.hooks.set_token_verifier(Arc::new(Verifier(oauth.clone())));
    ctx.hooks.add_http_routes(routes::router(oauth));
    Ok(())
}

/// Now in the signed seconds the OAuth store and JWT claims use.
pub(crate) fn unix_now() -> i64 {
    jackdaw_core::stanza::now_secs() as i64
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// The module's state for one host.
pub struct OAuth2 {
    host: String,
    config: Config,
    registrar: Option<Registrar>,
    keys: OnceCell<Arc<Keys>>,
    store: Arc<dyn OAuthStore>,
    codes: Codes,
    devices: Devices,
    limiter: RequestLimiter,
    pages: Pages,
    next_purge: Mutex<Instant>,
    events: Family<EventLabels, Counter>,
}

/// Tokens handed to a client.
#[derive(Debug, Serialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Not sent: which grant these belong to.
    #[serde(skip)]
    pub grant_id: String,
}

/// OpenID Connect id_token claims.
#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    iat: i64,
    exp: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

pub fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split_ascii_whitespace().any(|s| s == wanted)
}

impl OAuth2 {
    fn count(&self, event: &'static str) {
        self.events.get_or_create(&EventLabels { event }).inc();
    }

    async fn keys(&self) -> Option<Arc<Keys>> {
        self.keys
            .get_or_try_init(|| async {
                let config_secret = self.config.oauth2_registration_key.as_deref().unwrap_or_default();
                Keys::load_or_create(self.store.as_ref(), unix_now(), config_secret.as_bytes())
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e| error!(host = %self.host, error = %e, "OAuth keys unavailable"))
            .ok()
            .cloned()
    }

    fn client(&self, client_id: &str) -> Option<ClientMetadata> {
        self.registrar.as_ref()?.client(client_id)
    }

    fn account(&self, user: &str) -> String {
        format!("{user}@{}", self.host)
    }

    fn is_admin(&self, user: &str) -> bool {
        let jid = self.account(user);
        self.config.admins.iter().any(|a| a.eq_ignore_ascii_case(&jid))
    }

    /// The scope a request may get: what was asked (or the client's
    /// registered scope, or `xmpp`), limited to known scopes, to the
    /// client's registration and, once the user is known, to their roles.
    fn effective_scope(
        &self,
        requested: Option<&str>,
        client: &ClientMetadata,
        user: Option<&str>,
    ) -> String {
        let asked = requested
            .filter(|s| !s.trim().is_empty())
            .or(client.scope.as_deref())
            .unwrap_or(SCOPE_XMPP);
        let mut out: Vec<&str> = Vec::new();
        for s in asked.split_ascii_whitespace() {
            let known = KNOWN_SCOPES.contains(&s);
            let registered = client.scope.as_deref().is_none_or(|reg| has_scope(reg, s));
            let role_ok = s != "jackdaw:admin" || user.is_none_or(|u| self.is_admin(u));
            if known && registered && role_ok && !out.contains(&s) {
                out.push(s);
            }
        }
        out.join(" ")
    }

    /// Makes a grant and its first tokens.
    async fn issue(
        &self,
        approval: &Approval,
        client: &ClientMetadata,
        issuer: &str,
        with_refresh: bool,
    ) -> Option<IssuedTokens> {
        self.maybe_purge();
        let now = unix_now();
        let grant = OAuthGrant {
            id: jackdaw_core::stanza::random_hex(16),
            host: self.host.clone(),
            username: approval.user.clone(),
            client_hash: hash_secret(&approval.client_id),
            client_name: client.client_name.clone(),
            client_uri: client.client_uri.clone(),
            scope: approval.scope.clone(),
            created_at: now,
            last_used_at: now,
        };
        let (tokens, mut issued) = self.new_tokens(&grant.id, &approval.scope, with_refresh, now);
        if let Err(e) = self.store.create_grant(&grant, &tokens).await {
            error!(error = %e, "cannot store an OAuth grant");
            return None;
        }
        if has_scope(&approval.scope, "openid") {
            let algorithm = client
                .id_token_signed_response_alg
                .as_deref()
                .unwrap_or(keys::ALGORITHM);
            issued.id_token = self.id_token(approval, algorithm, issuer, now).await;
        }
        self.count("grant_issued");
        info!(user = %approval.user, client = %client.client_name, scope = %approval.scope, grant = %grant.id, "OAuth grant issued");
        Some(issued)
    }

    /// An access token (and refresh token) for a grant; what to store and
    /// what to hand out.
    fn new_tokens(
        &self,
        grant_id: &str,
        scope: &str,
        with_refresh: bool,
        now: i64,
    ) -> (Vec<OAuthToken>, IssuedTokens) {
        let access = new_secret();
        let refresh = with_refresh.then(new_secret);
        let mut stored = vec![OAuthToken {
            hash: hash_secret(&access),
            grant_id: grant_id.into(),
            kind: OAuthTokenKind::Access,
            scope: scope.into(),
            created_at: now,
            expires_at: now + self.config.oauth2_access_token_ttl as i64,
            used: false,
        }];
        if let Some(r) = &refresh {
            stored.push(OAuthToken {
                hash: hash_secret(r),
                grant_id: grant_id.into(),
                kind: OAuthTokenKind::Refresh,
                scope: scope.into(),
                created_at: now,
                expires_at: now + self.config.oauth2_refresh_token_ttl as i64,
                used: false,
            });
        }
        let issued = IssuedTokens {
            access_token: access,
            token_type: "bearer",
            expires_in: self.config.oauth2_access_token_ttl,
            scope: scope.into(),
            refresh_token: refresh,
            id_token: None,
            grant_id: grant_id.into(),
        };
        (stored, issued)
    }

    async fn id_token(&self, approval: &Approval, algorithm: &str, issuer: &str, now: i64) -> Option<String> {
        let keys = self.keys().await?;
        let profile = has_scope(&approval.scope, "profile");
        keys.sign(
            algorithm,
            &IdTokenClaims {
                iss: issuer,
                sub: format!("xmpp:{}", self.account(&approval.user)),
                aud: &approval.client_id,
                iat: now,
                exp: now + self.config.oauth2_access_token_ttl as i64,
                auth_time: approval.auth_time,
                nonce: approval.nonce.as_deref(),
                preferred_username: profile.then_some(approval.user.as_str()),
                name: profile.then_some(approval.user.as_str()),
            },
        )
    }

    /// An unexpired access token's record and grant.
    async fn access_token(&self, token: &str) -> Result<Option<(OAuthToken, OAuthGrant)>, AuthError> {
        match self.store.token(&hash_secret(token), unix_now()).await {
            Ok(Some((t, g))) if t.kind == OAuthTokenKind::Access && g.host == self.host => Ok(Some((t, g))),
            Ok(_) => Ok(None),
            Err(e) => Err(AuthError::Unavailable(e.to_string())),
        }
    }

    /// Whether the grant's account still exists in the host's backend (a
    /// web app behind auth_http may have removed it); a grant of a gone
    /// account is revoked.
    async fn account_exists(&self, server: &Server, grant: &OAuthGrant) -> Result<bool, AuthError> {
        let Some(host) = server.host(&self.host) else {
            return Ok(false);
        };
        match host.auth.user_exists(&self.host, &grant.username).await {
            Ok(true) => Ok(true),
            Ok(false) | Err(AuthError::NoSuchUser) => {
                self.revoke_grant(server, &grant.id, &grant.username, "the account no longer exists")
                    .await;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Revokes a grant and ends the sessions it opened.
    async fn revoke_grant(&self, server: &Server, grant_id: &str, username: &str, why: &str) {
        match self.store.delete_grant(grant_id).await {
            Ok(true) => {
                self.count("grant_revoked");
                info!(user = %username, grant = %grant_id, why, "OAuth grant revoked");
            }
            Ok(false) => {}
            Err(e) => error!(error = %e, "cannot revoke an OAuth grant"),
        }
        self.close_sessions(server, username, |login| login.grant_id == grant_id);
    }

    async fn revoke_access_token(&self, server: &Server, token: &OAuthToken, username: &str) {
        if let Err(e) = self.store.delete_token(&token.hash).await {
            error!(error = %e, "cannot revoke an OAuth token");
        }
        self.count("token_revoked");
        self.close_sessions(server, username, |login| login.token_hash == token.hash);
    }

    fn close_sessions(&self, server: &Server, username: &str, opened_with: impl Fn(&TokenLogin) -> bool) {
        let Ok(bare) = BareJid::new(&self.account(username)) else {
            return;
        };
        for session in server.sessions.resources(&bare) {
            if session.token_login.get().is_some_and(&opened_with) {
                info!(jid = %session.jid, "closing a session: its OAuth access was revoked");
                session.close(StreamError::NotAuthorized);
            }
        }
    }

    fn maybe_purge(&self) {
        {
            let mut next = self.next_purge.lock().unwrap_or_else(|p| p.into_inner());
            if Instant::now() < *next {
                return;
            }
            *next = Instant::now() + PURGE_INTERVAL;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            match store.purge_expired(unix_now()).await {
                Ok(0) => {}
                Ok(n) => info!(grants = n, "removed expired OAuth grants"),
                Err(e) => error!(error = %e, "cannot remove expired OAuth tokens"),
            }
        });
    }
}

/// Makes (on a new server) or loads the keys as the server starts, so a
/// broken key shows in the log at once; in the background, as making an
/// RSA key takes a while and listeners need not wait for it (the first
/// request that needs the keys does).
struct LoadKeys(Arc<OAuth2>);

#[async_trait]
impl Hook for LoadKeys {
    async fn handle(&self, _server: &Server, _event: &Event<'_>) -> Handled {
        let oauth = self.0.clone();
        tokio::spawn(async move { oauth.keys().await });
        Handled::No
    }
}

/// OAUTHBEARER's view of the module.
struct Verifier(Arc<OAuth2>);

#[async_trait]
impl TokenVerifier for Verifier {
    async fn verify(
        &self,
        server: &Server,
        host: &str,
        token: &str,
    ) -> Result<Result<TokenLogin, TokenRefusal>, AuthError> {
        let oauth = &self.0;
        if host != oauth.host {
            return Ok(Err(TokenRefusal::InvalidToken));
        }
        let Some((t, grant)) = oauth.access_token(token).await? else {
            oauth.count("xmpp_login_refused");
            return Ok(Err(TokenRefusal::InvalidToken));
        };
        if !oauth.account_exists(server, &grant).await? {
            oauth.count("xmpp_login_refused");
            return Ok(Err(TokenRefusal::InvalidToken));
        }
        if !has_scope(&t.scope, SCOPE_XMPP) {
            oauth.count("xmpp_login_refused");
            return Ok(Err(TokenRefusal::InsufficientScope));
        }
        if let Err(e) = oauth.store.touch_grant(&grant.id, unix_now()).await {
            warn!(error = %e, "cannot record the use of an OAuth grant");
        }
        oauth.count("xmpp_login");
        Ok(Ok(TokenLogin {
            user: grant.username,
            grant_id: grant.id,
            token_hash: t.hash,
        }))
    }
}
