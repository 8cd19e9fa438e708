//! The endpoints (table in `docs/oauth2.md`). JSON endpoints answer RFC
//! 6749 §5.2 errors; the pages answer HTML. Everything refuses plain HTTP
//! from non-loopback clients (RFC 9700 §2.6: TLS everywhere but loopback).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jackdaw_core::auth::AuthError;
use jackdaw_core::http_request::ClientTransport;
use jackdaw_core::server::Server;
use jackdaw_core::storage::{OAuthTokenKind, RefreshRotation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::client::{ClientMetadata, OOB_URI};
use super::config::DEVICE_CODE_URN;
use super::flows::{
    Approval, CodeLookup, DEVICE_CODE_TTL, DEVICE_POLL_INTERVAL, DevicePoll, DeviceState, PendingCode,
    hash_secret, normalize_user_code,
};
use super::keys::{ALGORITHMS, Keys};
use super::pages::WebSession;
use super::{IssuedTokens, KNOWN_SCOPES, OAuth2, has_scope, unix_now};

/// Registration requests and forms are small.
const BODY_LIMIT: usize = 64 * 1024;
/// How long the consent form stays valid.
const CONSENT_TTL: i64 = 600;
const CONSENT_PURPOSE: &str = "consent";

pub fn router(oauth: Arc<OAuth2>) -> Router<Arc<Server>> {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery).options(preflight),
        )
        // RFC 8414 §3: for an issuer with a path, the path follows the
        // well-known name.
        .route(
            "/.well-known/oauth-authorization-server/{*issuer_path}",
            get(discovery).options(preflight),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery).options(preflight),
        )
        .route("/oauth2/jwks", get(jwks).options(preflight))
        .route("/oauth2/authorize", get(authorize))
        .route("/oauth2/login", post(login))
        .route("/oauth2/logout", post(logout))
        .route("/oauth2/consent", post(consent))
        .route("/oauth2/token", post(token).options(preflight))
        .route("/oauth2/revoke", post(revoke).options(preflight))
        .route("/oauth2/introspect", post(introspect).options(preflight))
        .route("/oauth2/register", post(register).options(preflight))
        .route(
            "/oauth2/userinfo",
            get(userinfo).post(userinfo).options(preflight),
        )
        .route(
            "/oauth2/device",
            get(device_page).post(device_authorization).options(preflight),
        )
        .route("/oauth2/grants", get(grants_page))
        .route("/oauth2/grants/revoke", post(revoke_grant_form))
        .route("/oauth2/style.css", get(stylesheet))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(oauth))
}

/// What every handler starts from.
struct Web {
    server: Arc<Server>,
    oauth: Arc<OAuth2>,
    transport: ClientTransport,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Server>> for Web {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, Self::Rejection> {
        let oauth = parts
            .extensions
            .get::<Arc<OAuth2>>()
            .cloned()
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        // The HTTP listener always inserts it; a missing one is a bug, and
        // refusing is the safe reading of "don't know".
        let transport = parts
            .extensions
            .get::<ClientTransport>()
            .copied()
            .ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())?;
        Ok(Web {
            server: server.clone(),
            oauth,
            transport,
            headers: parts.headers.clone(),
        })
    }
}

impl Web {
    /// Plain HTTP from anywhere but loopback.
    fn insecure(&self) -> bool {
        !self.transport.secure && !self.transport.addr.ip().is_loopback()
    }

    /// `http_external_url`, or the scheme and Host of this request.
    fn issuer(&self) -> String {
        if let Some(url) = &self.server.config.global.http_external_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = self
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&self.oauth.host);
        let scheme = if self.transport.secure { "https" } else { "http" };
        format!("{scheme}://{host}")
    }

    /// The path prefix of the public URL (behind a proxy at `/xmpp/`).
    fn base_path(&self) -> String {
        self.server
            .config
            .global
            .http_external_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    async fn keys(&self) -> Result<Arc<Keys>, Response> {
        match self.oauth.keys().await {
            Some(k) => Ok(k),
            None => Err(self.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server cannot sign in anyone right now.",
            )),
        }
    }

    /// The browser's session and, when it is new, the cookie to set.
    fn browser(&self, keys: &Keys) -> (WebSession, Option<HeaderValue>) {
        match WebSession::from_headers(keys, &self.oauth.host, &self.headers) {
            Some(s) => (s, None),
            None => {
                let s = WebSession::anonymous(unix_now());
                let cookie = self.cookie(keys, &s);
                (s, Some(cookie))
            }
        }
    }

    fn cookie(&self, keys: &Keys, session: &WebSession) -> HeaderValue {
        session.set_cookie(
            keys,
            &self.oauth.host,
            self.transport.secure,
            &format!("{}/oauth2", self.base_path()),
        )
    }

    fn page_context(&self, extra: Value) -> Value {
        let c = &self.oauth.config;
        let mut ctx = json!({
            "site_name": c.site_name.clone().unwrap_or_else(|| self.oauth.host.clone()),
            "base": self.base_path(),
            "terms_url": c.oauth2_terms_url,
            "policy_url": c.oauth2_policy_url,
        });
        if let (Some(ctx), Value::Object(extra)) = (ctx.as_object_mut(), extra) {
            ctx.extend(extra);
        }
        ctx
    }

    fn page(&self, name: &str, status: StatusCode, extra: Value) -> Response {
        self.oauth.pages.render(
            name,
            self.page_context(extra),
            status,
            &self.oauth.config.oauth2_security_policy,
        )
    }

    fn error_page(&self, status: StatusCode, message: &str) -> Response {
        self.page("error.html", status, json!({ "error": message }))
    }

    fn https_required_page(&self) -> Response {
        info!(remote = %self.transport.addr, "OAuth page refused: plain HTTP from a remote client");
        self.error_page(StatusCode::BAD_REQUEST, "This page is only served over HTTPS.")
    }

    fn login_page(
        &self,
        keys: &Keys,
        session: &WebSession,
        next: &str,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response {
        self.page(
            "login.html",
            status,
            json!({
                "csrf": keys.csrf_token(&self.oauth.host, &session.nonce),
                "next": next,
                "client_name": self.client_waiting_at(next),
                "username": username,
                "error": error,
            }),
        )
    }

    /// The name of the application the login page leads back to, from its
    /// `next` address (an authorization request or a device code).
    fn client_waiting_at(&self, next: &str) -> Option<String> {
        let query = next.split_once('?')?.1;
        let q = params(query.as_bytes()).ok()?;
        let client_id = match q.get("user_code") {
            Some(code) => {
                self.oauth
                    .devices
                    .by_user_code(&normalize_user_code(code))?
                    .client_id
            }
            None => q.get("client_id")?.clone(),
        };
        self.oauth.client(&client_id).map(|c| c.client_name)
    }

    fn account(&self, user: &str) -> String {
        self.oauth.account(user)
    }
}

fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Form or query parameters; RFC 6749 §3.1: none may repeat.
fn params(encoded: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(encoded) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter {k} appears more than once"));
        }
    }
    Ok(out)
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut r = (
        status,
        serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    cors(h);
    r
}

/// The token, revocation, registration and metadata endpoints are for
/// browser-based clients too.
fn cors(h: &mut HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
}

async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    r
}

/// RFC 6749 §5.2.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn https_required(web: &Web) -> Response {
    info!(remote = %web.transport.addr, "OAuth request refused: plain HTTP from a remote client");
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "HTTPS is required")
}

fn rate_limited(web: &Web) -> Option<Response> {
    let wait = web.oauth.limiter.check(web.transport.addr.ip()).err()?;
    web.oauth.count("rate_limited");
    warn!(remote = %web.transport.addr, "OAuth token/device requests over the rate limit");
    let mut r = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
        "too many requests; slow down",
    );
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(r)
}

// --- metadata -----------------------------------------------------------------

async fn discovery(web: Web) -> Response {
    let c = &web.oauth.config;
    let mut scopes: Vec<&str> = KNOWN_SCOPES.to_vec();
    scopes.sort_unstable();
    let mut doc = json!({
        "issuer": web.issuer(),
        "authorization_endpoint": web.endpoint("/oauth2/authorize"),
        "token_endpoint": web.endpoint("/oauth2/token"),
        "jwks_uri": web.endpoint("/oauth2/jwks"),
        "userinfo_endpoint": web.endpoint("/oauth2/userinfo"),
        "revocation_endpoint": web.endpoint("/oauth2/revoke"),
        "introspection_endpoint": web.endpoint("/oauth2/introspect"),
        "scopes_supported": scopes,
        "response_types_supported": c.allowed_oauth2_response_types,
        "response_modes_supported": if c.allows_response("token") { json!(["query", "fragment"]) } else { json!(["query"]) },
        "grant_types_supported": c.grant_types_supported(),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": c.allowed_oauth2_code_challenge_methods,
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ALGORITHMS,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "name"],
    });
    let obj = doc.as_object_mut().expect("a JSON object");
    if web.oauth.registrar.is_some() {
        obj.insert(
            "registration_endpoint".into(),
            json!(web.endpoint("/oauth2/register")),
        );
    }
    if c.allows_grant("device_code") {
        obj.insert(
            "device_authorization_endpoint".into(),
            json!(web.endpoint("/oauth2/device")),
        );
    }
    if let Some(u) = &c.oauth2_terms_url {
        obj.insert("op_tos_uri".into(), json!(u));
    }
    if let Some(u) = &c.oauth2_policy_url {
        obj.insert("op_policy_uri".into(), json!(u));
    }
    let mut r = json_response(StatusCode::OK, &doc);
    // Public and stable: caches may keep it a while, per Host (which the
    // issuer comes from when http_external_url is unset).
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Host"));
    r.headers_mut().remove(header::PRAGMA);
    r
}

async fn jwks(web: Web) -> Response {
    let Some(keys) = web.oauth.keys().await else {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "keys unavailable",
        );
    };
    let mut r = json_response(StatusCode::OK, &keys.jwks());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r.headers_mut().remove(header::PRAGMA);
    r
}

async fn stylesheet(Extension(oauth): Extension<Arc<OAuth2>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        oauth.pages.stylesheet().to_string(),
    )
        .into_response()
}

// --- registration -------------------------------------------------------------

async fn register(web: Web, body: Bytes) -> Response {
    if web.insecure() {
        return https_required(&web);
    }
    let Some(registrar) = &web.oauth.registrar else {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "dynamic client registration is not enabled on this server",
        );
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                "the registration must be a JSON object",
            );
        }
    };
    match registrar.register(&request, &web.oauth.config, unix_now()) {
        Ok(reg) => {
            let mut out = serde_json::to_value(&reg.metadata).unwrap_or_else(|_| json!({}));
            let obj = out.as_object_mut().expect("metadata is an object");
            obj.insert("client_id".into(), json!(reg.client_id));
            obj.insert("client_id_issued_at".into(), json!(reg.issued_at));
            if let Some(secret) = reg.client_secret {
                obj.insert("client_secret".into(), json!(secret));
                obj.insert(
                    "client_secret_expires_at".into(),
                    json!(reg.expires_at.unwrap_or(0)),
                );
            }
            web.oauth.count("client_registered");
            info!(client = %reg.metadata.client_name, uri = %reg.metadata.client_uri, "OAuth client registered");
            json_response(StatusCode::CREATED, &out)
        }
        Err(e) => {
            info!(error = e.error, description = %e.description, "OAuth client registration refused");
            oauth_error(StatusCode::BAD_REQUEST, e.error, &e.description)
        }
    }
}

// --- client authentication ------------------------------------------------------

/// RFC 6749 §2.3.1: HTTP Basic (form-encoded id and secret) or the
/// `client_id`/`client_secret` parameters, never both; public clients
/// send only their id.
fn authenticate_client(
    web: &Web,
    form: &HashMap<String, String>,
) -> Result<(String, ClientMetadata), Box<Response>> {
    let invalid = |basic: bool| {
        web.oauth.count("client_auth_failed");
        let mut r = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        if basic {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth2\""),
            );
        }
        r
    };
    let basic = web
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .map(|b| {
            STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|s| {
                    let (id, secret) = s.split_once(':')?;
                    Some((form_decode(id), form_decode(secret)))
                })
        });
    let (client_id, secret, via_basic) = match basic {
        Some(None) => return Err(Box::new(invalid(true))),
        Some(Some(_)) if form.contains_key("client_secret") => {
            return Err(Box::new(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method, not two",
            )));
        }
        Some(Some((id, secret))) => {
            if form.get("client_id").is_some_and(|f| *f != id) {
                return Err(Box::new(invalid(true)));
            }
            // A public client may send `id:` with no secret (Go's
            // x/oauth2 tries that first).
            (id, Some(secret).filter(|s| !s.is_empty()), true)
        }
        None => match form.get("client_id") {
            Some(id) => (
                id.clone(),
                form.get("client_secret").filter(|s| !s.is_empty()).cloned(),
                false,
            ),
            None => {
                return Err(Box::new(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_id is missing",
                )));
            }
        },
    };
    let Some(client) = web.oauth.client(&client_id) else {
        info!(remote = %web.transport.addr, "OAuth client refused: unknown or tampered client_id");
        return Err(Box::new(invalid(via_basic)));
    };
    let registrar = web
        .oauth
        .registrar
        .as_ref()
        .expect("a client implies a registrar");
    let ok = match (&secret, client.is_public()) {
        (None, true) => true,
        (Some(s), false) => registrar.secret_matches(&client_id, s),
        _ => false,
    };
    if !ok {
        info!(remote = %web.transport.addr, client = %client.client_name, "OAuth client refused: wrong client secret");
        return Err(Box::new(invalid(via_basic)));
    }
    Ok((client_id, client))
}

/// What every client-authenticated endpoint starts with: the rate limit
/// (guessing secrets must be slow), HTTPS (or loopback), the form, the
/// client.
async fn client_request(
    web: &Web,
    body: &[u8],
) -> Result<(HashMap<String, String>, String, ClientMetadata), Box<Response>> {
    if let Some(r) = rate_limited(web) {
        return Err(Box::new(r));
    }
    if web.insecure() {
        return Err(Box::new(https_required(web)));
    }
    let form =
        params(body).map_err(|e| Box::new(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e)))?;
    let (client_id, client) = authenticate_client(web, &form)?;
    Ok((form, client_id, client))
}

fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

// --- authorization endpoint ---------------------------------------------------------

/// What the consent form carries, sealed: the checked authorization
/// request, bound to the user who saw it.
#[derive(Debug, Serialize, Deserialize)]
struct ConsentRequest {
    /// `code`, `token` or `device`.
    kind: String,
    user: String,
    client_id: String,
    scope: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    redirect_uri_given: bool,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    user_code: String,
    exp: i64,
}

/// An authorization response: to the redirect URI (query, or fragment for
/// the implicit flow) with `state` and `iss` (RFC 9207).
fn redirect_with(
    redirect_uri: &str,
    fragment: bool,
    pairs: &[(&str, &str)],
    state: Option<&str>,
    issuer: &str,
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return (StatusCode::BAD_REQUEST, "bad redirect URI\n").into_response();
    };
    let mut all: Vec<(&str, &str)> = pairs.to_vec();
    if let Some(s) = state {
        all.push(("state", s));
    }
    all.push(("iss", issuer));
    if fragment {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(all)
            .finish();
        url.set_fragment(Some(&encoded));
    } else {
        url.query_pairs_mut().extend_pairs(all);
    }
    see_other(url.as_str())
}

fn pkce_challenge_ok(challenge: &str) -> bool {
    // RFC 7636 §4.2: 43 to 128 unreserved characters.
    (43..=128).contains(&challenge.len())
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

async fn authorize(web: Web, uri: Uri) -> Response {
    if web.insecure() {
        return web.https_required_page();
    }
    let q = match params(uri.query().unwrap_or("").as_bytes()) {
        Ok(q) => q,
        Err(e) => return web.error_page(StatusCode::BAD_REQUEST, &e),
    };
    let Some(client_id) = q.get("client_id") else {
        return web.error_page(
            StatusCode::BAD_REQUEST,
            "The application did not say who it is (no client_id).",
        );
    };
    let Some(client) = web.oauth.client(client_id) else {
        info!(remote = %web.transport.addr, "authorization refused: unknown or tampered client_id");
        return web.error_page(
            StatusCode::BAD_REQUEST,
            "This application is not registered here, or its registration has expired.",
        );
    };
    let redirect_uri = match q.get("redirect_uri") {
        Some(given) if client.redirect_uri_for(given).is_some() => given.clone(),
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        _ => {
            info!(client = %client.client_name, "authorization refused: redirect_uri not registered");
            return web.error_page(
                StatusCode::BAD_REQUEST,
                "The application asked to send you somewhere it did not register (redirect_uri).",
            );
        }
    };
    let state = q.get("state").map(String::as_str);
    let issuer = web.issuer();
    let response_type = q.get("response_type").map(String::as_str).unwrap_or("");
    let fragment = response_type == "token";
    if fragment && redirect_uri == OOB_URI {
        // The token would be shown in a Location header nobody follows.
        return web.error_page(
            StatusCode::BAD_REQUEST,
            "The implicit flow cannot be used with an out-of-band redirect.",
        );
    }
    let fail = |error: &str, description: &str| -> Response {
        if redirect_uri == OOB_URI {
            return web.error_page(StatusCode::BAD_REQUEST, description);
        }
        redirect_with(
            &redirect_uri,
            fragment,
            &[("error", error), ("error_description", description)],
            state,
            &issuer,
        )
    };
    let c = &web.oauth.config;
    if !matches!(response_type, "code" | "token") || !c.allows_response(response_type) {
        return fail(
            "unsupported_response_type",
            "this response_type is not supported here",
        );
    }
    if !client.allows_response(response_type) {
        return fail(
            "unauthorized_client",
            "the client did not register this response_type",
        );
    }
    let mut code_challenge = None;
    let mut method = String::new();
    if response_type == "code" {
        match q.get("code_challenge") {
            Some(ch) => {
                // RFC 7636 §4.3: no method means plain.
                method = q
                    .get("code_challenge_method")
                    .cloned()
                    .unwrap_or_else(|| "plain".into());
                if !c.allows_challenge_method(&method) {
                    return fail(
                        "invalid_request",
                        "code_challenge_method not supported (use S256)",
                    );
                }
                if !pkce_challenge_ok(ch) {
                    return fail("invalid_request", "malformed code_challenge");
                }
                code_challenge = Some(ch.clone());
            }
            None if c.oauth2_require_code_challenge => {
                return fail("invalid_request", "PKCE is required: send code_challenge (S256)");
            }
            None => {}
        }
    }
    if web
        .oauth
        .effective_scope(q.get("scope").map(String::as_str), &client, None)
        .is_empty()
    {
        return fail("invalid_scope", "none of the requested scopes is available");
    }
    let keys = match web.keys().await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (session, cookie) = web.browser(&keys);
    // OpenID Connect Core §3.1.2.1: `prompt` and `max_age`.
    let prompts: Vec<&str> = q
        .get("prompt")
        .map(|p| p.split_ascii_whitespace().collect())
        .unwrap_or_default();
    if prompts.contains(&"none") {
        // Consent is always asked here, so nothing can happen silently;
        // the same answer whether or not the user is signed in, which a
        // site must not learn this way.
        return fail("interaction_required", "this server always asks the user");
    }
    let too_old = q
        .get("max_age")
        .and_then(|m| m.parse::<i64>().ok())
        .is_some_and(|max_age| unix_now() - session.auth_time > max_age);
    let must_sign_in = prompts.contains(&"login") || too_old;
    let Some(user) = session.sub.clone().filter(|_| !must_sign_in) else {
        // Back to this request after the login, without `prompt=login` or
        // `max_age` (which would ask again, for ever).
        let again: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q.iter().filter(|(k, _)| *k != "prompt" && *k != "max_age"))
            .finish();
        let next = format!("{}{}?{again}", web.base_path(), uri.path());
        return with_cookie(
            web.login_page(&keys, &session, &next, "", None, StatusCode::OK),
            cookie,
        );
    };
    let scope = web
        .oauth
        .effective_scope(q.get("scope").map(String::as_str), &client, Some(&user));
    if scope.is_empty() {
        return fail(
            "invalid_scope",
            "none of the requested scopes is available to this account",
        );
    }
    let request = ConsentRequest {
        kind: response_type.to_string(),
        user,
        client_id: client_id.clone(),
        scope,
        redirect_uri_given: q.contains_key("redirect_uri"),
        redirect_uri,
        state: state.map(str::to_owned),
        code_challenge,
        code_challenge_method: method,
        nonce: q.get("nonce").cloned(),
        user_code: String::new(),
        exp: unix_now() + CONSENT_TTL,
    };
    with_cookie(consent_page(&web, &keys, &session, &client, &request), cookie)
}

fn scope_description(scope: &str) -> &'static str {
    match scope {
        "xmpp" => {
            "Full use of your chat account: send and read messages, manage contacts and groups, as your chat app can."
        }
        "openid" => "Confirm your identity (your chat address) to the application.",
        "profile" => "See your username.",
        "jackdaw:user" => "Know that you are a user of this server.",
        "jackdaw:admin" => "Act with your administrator rights on this server.",
        _ => "",
    }
}

fn consent_page(
    web: &Web,
    keys: &Keys,
    session: &WebSession,
    client: &ClientMetadata,
    request: &ConsentRequest,
) -> Response {
    let scopes: Vec<Value> = request
        .scope
        .split_ascii_whitespace()
        .map(|s| json!({"name": s, "description": scope_description(s)}))
        .collect();
    web.page(
        "consent.html",
        StatusCode::OK,
        json!({
            "csrf": keys.csrf_token(&web.oauth.host, &session.nonce),
            "request": keys.seal(&web.oauth.host, CONSENT_PURPOSE, request),
            "client_name": client.client_name,
            "client_uri": client.client_uri,
            "client_tos_uri": client.tos_uri,
            "client_policy_uri": client.policy_uri,
            "account": web.account(request.user.as_str()),
            "scopes": scopes,
        }),
    )
}

/// What a form POST starts with: HTTPS (or loopback), the keys, and a
/// CSRF token that belongs to this browser's cookie.
async fn posted_form(
    web: &Web,
    body: &[u8],
) -> Result<(Arc<Keys>, WebSession, HashMap<String, String>), Box<Response>> {
    if web.insecure() {
        return Err(Box::new(web.https_required_page()));
    }
    let keys = web.keys().await.map_err(Box::new)?;
    let form = params(body).map_err(|e| Box::new(web.error_page(StatusCode::BAD_REQUEST, &e)))?;
    let session = WebSession::from_headers(&keys, &web.oauth.host, &web.headers);
    match (session, form.get("csrf")) {
        (Some(s), Some(csrf)) if keys.csrf_matches(&web.oauth.host, &s.nonce, csrf) => Ok((keys, s, form)),
        _ => {
            warn!(remote = %web.transport.addr, "OAuth form refused: missing or wrong CSRF token");
            Err(Box::new(web.error_page(
                StatusCode::FORBIDDEN,
                "This form expired or did not come from this site. Go back, reload the page and try again.",
            )))
        }
    }
}

async fn login(web: Web, body: Bytes) -> Response {
    let (keys, session, form) = match posted_form(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let base = web.base_path();
    // Only back into our own pages: an open redirect would help phishing.
    let next = form
        .get("next")
        .filter(|n| n.starts_with(&format!("{base}/oauth2/")) && !n.contains("//") && !n.contains('\\'))
        .cloned()
        .unwrap_or_else(|| format!("{base}/oauth2/grants"));
    let typed = form.get("username").map(|u| u.trim()).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let retry =
        |error: &str, status: StatusCode| web.login_page(&keys, &session, &next, typed, Some(error), status);
    let Some(user) = localpart(typed, &web.oauth.host) else {
        return retry("Wrong username or password.", StatusCode::UNAUTHORIZED);
    };
    let Some(host) = web.server.host(&web.oauth.host) else {
        return web.error_page(StatusCode::INTERNAL_SERVER_ERROR, "This host is not configured.");
    };
    let Some(attempt) = web.server.auth_limiter.begin(web.transport.addr.ip()) else {
        warn!(remote = %web.transport.addr, "OAuth login refused: too many failed attempts from this address");
        return retry(
            "Too many failed attempts. Wait a while, then try again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    };
    match host.auth.check_password(&web.oauth.host, &user, password).await {
        Ok(true) => {
            attempt.succeeded();
            info!(user = %user, remote = %web.transport.addr, "signed in to the OAuth pages");
            let signed_in = WebSession::signed_in(&user, unix_now());
            with_cookie(see_other(&next), Some(web.cookie(&keys, &signed_in)))
        }
        Ok(false) => {
            attempt.failed();
            info!(remote = %web.transport.addr, "OAuth page sign-in failed");
            retry("Wrong username or password.", StatusCode::UNAUTHORIZED)
        }
        Err(AuthError::Unavailable(e)) => {
            warn!(error = %e, "OAuth sign-in: authentication backend unavailable");
            retry(
                "Signing in is not possible right now. Try again in a moment.",
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
        Err(_) => {
            attempt.failed();
            retry("Wrong username or password.", StatusCode::UNAUTHORIZED)
        }
    }
}

/// The account's localpart from `user` or `user@host`; None for another
/// host or a name no JID can have.
fn localpart(typed: &str, host: &str) -> Option<String> {
    let full = if typed.contains('@') {
        typed.to_string()
    } else {
        format!("{typed}@{host}")
    };
    let jid = jackdaw_core::jid::BareJid::new(&full).ok()?;
    if jid.domain().as_str() != host {
        return None;
    }
    jid.node().map(|n| n.as_str().to_string())
}

async fn logout(web: Web, body: Bytes) -> Response {
    let keys = match posted_form(&web, &body).await {
        Ok((keys, ..)) => keys,
        Err(r) => return *r,
    };
    let anonymous = WebSession::anonymous(unix_now());
    with_cookie(
        see_other(&format!("{}/oauth2/grants", web.base_path())),
        Some(web.cookie(&keys, &anonymous)),
    )
}

async fn consent(web: Web, body: Bytes) -> Response {
    // Each answer may make a code: a signed-in user cannot make them
    // faster than a client could exchange them.
    if web.oauth.limiter.check(web.transport.addr.ip()).is_err() {
        return web.error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests. Wait a minute, then try again.",
        );
    }
    let (keys, session, form) = match posted_form(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(request) = form
        .get("request")
        .and_then(|r| keys.open::<ConsentRequest>(&web.oauth.host, CONSENT_PURPOSE, r))
    else {
        return web.error_page(
            StatusCode::BAD_REQUEST,
            "This request has expired. Start again from the application.",
        );
    };
    if session.sub.as_deref() != Some(request.user.as_str()) {
        return web.error_page(
            StatusCode::FORBIDDEN,
            "You are no longer signed in as the user who saw this request.",
        );
    }
    let Some(client) = web.oauth.client(&request.client_id) else {
        return web.error_page(
            StatusCode::BAD_REQUEST,
            "This application's registration has expired.",
        );
    };
    let allow = match form.get("decision").map(String::as_str) {
        Some("allow") => true,
        Some("deny") => false,
        _ => return web.error_page(StatusCode::BAD_REQUEST, "Choose Allow or Deny."),
    };
    let issuer = web.issuer();
    let approval = Approval {
        user: request.user.clone(),
        client_id: request.client_id.clone(),
        scope: request.scope.clone(),
        nonce: request.nonce.clone(),
        auth_time: session.auth_time,
    };
    match request.kind.as_str() {
        "device" => {
            let (decision, title, message) = if allow {
                (
                    DeviceState::Approved(approval),
                    "Device connected",
                    format!(
                        "{} can now use your account. You can close this page.",
                        client.client_name
                    ),
                )
            } else {
                (
                    DeviceState::Denied,
                    "Access denied",
                    format!("{} was not given access.", client.client_name),
                )
            };
            if !web.oauth.devices.decide(&request.user_code, decision) {
                return web.error_page(
                    StatusCode::BAD_REQUEST,
                    "This code has expired or was already used.",
                );
            }
            info!(user = %request.user, client = %client.client_name, allow, "device authorization decided");
            web.page(
                "done.html",
                StatusCode::OK,
                json!({"title": title, "message": message}),
            )
        }
        "code" | "token" => {
            let fragment = request.kind == "token";
            if !allow {
                info!(user = %request.user, client = %client.client_name, "authorization denied by the user");
                if request.redirect_uri == OOB_URI {
                    return web.page(
                        "done.html",
                        StatusCode::OK,
                        json!({"title": "Access denied", "message": format!("{} was not given access.", client.client_name)}),
                    );
                }
                return redirect_with(
                    &request.redirect_uri,
                    fragment,
                    &[
                        ("error", "access_denied"),
                        ("error_description", "the user denied access"),
                    ],
                    request.state.as_deref(),
                    &issuer,
                );
            }
            if fragment {
                let Some(tokens) = web.oauth.issue(&approval, &client, &issuer, false).await else {
                    return web.error_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The server could not grant access right now.",
                    );
                };
                let expires = tokens.expires_in.to_string();
                return redirect_with(
                    &request.redirect_uri,
                    true,
                    &[
                        ("access_token", &tokens.access_token),
                        ("token_type", tokens.token_type),
                        ("expires_in", &expires),
                        ("scope", &tokens.scope),
                    ],
                    request.state.as_deref(),
                    &issuer,
                );
            }
            let Some(code) = web.oauth.codes.issue(PendingCode {
                approval,
                redirect_uri: request.redirect_uri.clone(),
                redirect_uri_given: request.redirect_uri_given,
                code_challenge: request.code_challenge.clone(),
                code_challenge_method: request.code_challenge_method.clone(),
            }) else {
                warn!("too many authorization codes pending: refusing new ones");
                return web.error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is busy. Try again in a minute.",
                );
            };
            info!(user = %request.user, client = %client.client_name, "authorization code issued");
            if request.redirect_uri == OOB_URI {
                return web.page(
                    "oob.html",
                    StatusCode::OK,
                    json!({"code": code, "client_name": client.client_name}),
                );
            }
            redirect_with(
                &request.redirect_uri,
                false,
                &[("code", &code)],
                request.state.as_deref(),
                &issuer,
            )
        }
        _ => web.error_page(StatusCode::BAD_REQUEST, "Unknown request."),
    }
}

// --- token endpoint --------------------------------------------------------------------

fn token_response(tokens: &IssuedTokens) -> Response {
    json_response(StatusCode::OK, tokens)
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

async fn token(web: Web, body: Bytes) -> Response {
    let (form, client_id, client) = match client_request(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(grant_type) = form.get("grant_type").cloned() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        );
    };
    let c = &web.oauth.config;
    let allowed = match grant_type.as_str() {
        "authorization_code" => c.allows_grant("authorization_code"),
        "password" => c.allows_grant("password"),
        DEVICE_CODE_URN => c.allows_grant("device_code"),
        "refresh_token" => true,
        _ => false,
    };
    if !allowed {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this grant type is not supported here",
        );
    }
    if !client.allows_grant(&grant_type) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the client did not register this grant type",
        );
    }
    match grant_type.as_str() {
        "authorization_code" => code_grant(&web, &form, &client_id, &client).await,
        "refresh_token" => refresh_grant(&web, &form, &client_id).await,
        DEVICE_CODE_URN => device_grant(&web, &form, &client_id, &client).await,
        _ => password_grant(&web, &form, &client_id, &client).await,
    }
}

async fn revoke_grant_by_id(web: &Web, grant_id: &str, why: &str) {
    if let Ok(Some(grant)) = web.oauth.store.grant(grant_id).await {
        web.oauth
            .revoke_grant(&web.server, &grant.id, &grant.username, why)
            .await;
    }
}

async fn code_grant(
    web: &Web,
    form: &HashMap<String, String>,
    client_id: &str,
    client: &ClientMetadata,
) -> Response {
    let Some(code) = form.get("code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code is missing");
    };
    let pending = match web.oauth.codes.take(code, client_id) {
        CodeLookup::Pending(p) => p,
        CodeLookup::Unknown => return invalid_grant("unknown or expired code"),
        CodeLookup::Reused(grant_id) => {
            warn!(remote = %web.transport.addr, client = %client.client_name, "authorization code presented twice: revoking what it granted");
            web.oauth.count("code_reused");
            // While the first exchange is still running there is no grant
            // yet: that exchange sees the reuse and revokes its own.
            if let Some(grant_id) = grant_id {
                revoke_grant_by_id(web, &grant_id, "authorization code reused").await;
            }
            return invalid_grant("this code was already used; the tokens issued from it are revoked");
        }
    };
    let redirect_ok = match form.get("redirect_uri") {
        Some(given) => *given == pending.redirect_uri,
        None => !pending.redirect_uri_given,
    };
    if !redirect_ok {
        return invalid_grant("redirect_uri does not match the authorization request");
    }
    match (&pending.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            let computed = match pending.code_challenge_method.as_str() {
                "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
                _ => verifier.clone(),
            };
            if !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                return invalid_grant("code_verifier does not match the code_challenge");
            }
        }
        (Some(_), None) => return invalid_grant("code_verifier is missing"),
        (None, Some(_)) => return invalid_grant("no code_challenge was sent with the authorization request"),
        (None, None) => {}
    }
    match web
        .oauth
        .issue(&pending.approval, client, &web.issuer(), true)
        .await
    {
        Some(tokens) => {
            if web.oauth.codes.mark_used(code, &tokens.grant_id) {
                token_response(&tokens)
            } else {
                revoke_grant_by_id(web, &tokens.grant_id, "authorization code reused").await;
                invalid_grant("this code was used twice; the tokens issued from it are revoked")
            }
        }
        None => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot store the grant",
        ),
    }
}

async fn refresh_grant(web: &Web, form: &HashMap<String, String>, client_id: &str) -> Response {
    let Some(refresh) = form.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is missing",
        );
    };
    let hash = hash_secret(refresh);
    let found = match web.oauth.store.token(&hash, unix_now()).await {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot look up a refresh token");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
    };
    let Some((old, grant)) =
        found.filter(|(t, g)| t.kind == OAuthTokenKind::Refresh && g.host == web.oauth.host)
    else {
        return invalid_grant("unknown, expired or revoked refresh token");
    };
    if grant.client_hash != hash_secret(client_id) {
        return invalid_grant("the refresh token was issued to another client");
    }
    if old.used {
        return refresh_reused(web, &grant.id, &grant.username).await;
    }
    match web.oauth.account_exists(&web.server, &grant).await {
        Ok(true) => {}
        Ok(false) => return invalid_grant("the account no longer exists"),
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
    }
    let scope = match form.get("scope") {
        Some(asked) => {
            if asked.split_ascii_whitespace().any(|s| !has_scope(&old.scope, s)) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a refresh cannot widen the scope",
                );
            }
            asked.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
        }
        None => old.scope.clone(),
    };
    // A role the user lost since (no longer in `admins`) goes with it.
    let scope: String = scope
        .split_ascii_whitespace()
        .filter(|s| *s != "jackdaw:admin" || web.oauth.is_admin(&grant.username))
        .collect::<Vec<_>>()
        .join(" ");
    let now = unix_now();
    let (stored, issued) = web.oauth.new_tokens(&grant.id, &scope, true, now);
    match web.oauth.store.rotate_refresh(&hash, &stored, now).await {
        Ok(RefreshRotation::Rotated) => {
            web.oauth.count("token_refreshed");
            token_response(&issued)
        }
        Ok(RefreshRotation::AlreadyUsed) => refresh_reused(web, &grant.id, &grant.username).await,
        Ok(RefreshRotation::Unknown) => invalid_grant("unknown, expired or revoked refresh token"),
        Err(e) => {
            warn!(error = %e, "cannot rotate a refresh token");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            )
        }
    }
}

/// RFC 9700 §4.14.2: a rotated-out refresh token came back, so either the
/// client or an attacker holds a stolen copy; end the whole grant.
async fn refresh_reused(web: &Web, grant_id: &str, username: &str) -> Response {
    warn!(user = %username, grant = %grant_id, remote = %web.transport.addr, "refresh token reused: revoking the grant");
    web.oauth.count("refresh_reused");
    web.oauth
        .revoke_grant(&web.server, grant_id, username, "refresh token reused")
        .await;
    invalid_grant("this refresh token was already used; the grant is revoked")
}

async fn device_grant(
    web: &Web,
    form: &HashMap<String, String>,
    client_id: &str,
    client: &ClientMetadata,
) -> Response {
    let Some(device_code) = form.get("device_code") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "device_code is missing",
        );
    };
    match web.oauth.devices.poll(device_code, client_id) {
        DevicePoll::Pending => oauth_error(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            "the user has not decided yet",
        ),
        DevicePoll::SlowDown => oauth_error(StatusCode::BAD_REQUEST, "slow_down", "poll less often"),
        DevicePoll::Denied => oauth_error(StatusCode::BAD_REQUEST, "access_denied", "the user denied access"),
        DevicePoll::Expired => oauth_error(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "the device code has expired",
        ),
        DevicePoll::Unknown => invalid_grant("unknown device code"),
        DevicePoll::Approved(approval) => match web.oauth.issue(&approval, client, &web.issuer(), true).await
        {
            Some(tokens) => token_response(&tokens),
            None => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "cannot store the grant",
            ),
        },
    }
}

async fn password_grant(
    web: &Web,
    form: &HashMap<String, String>,
    client_id: &str,
    client: &ClientMetadata,
) -> Response {
    let (Some(username), Some(password)) = (form.get("username"), form.get("password")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "username and password are required",
        );
    };
    let host = &web.oauth.host;
    // oauth2_expect_username_jid: the full JID, else the localpart only.
    let user = if web.oauth.config.oauth2_expect_username_jid {
        username
            .strip_suffix(&format!("@{host}"))
            .filter(|u| !u.contains('@'))
            .and_then(|u| localpart(u, host))
    } else if username.contains('@') {
        None
    } else {
        localpart(username, host)
    };
    let Some(user) = user else {
        return invalid_grant("wrong username or password");
    };
    let Some(h) = web.server.host(host) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "host not configured",
        );
    };
    let Some(attempt) = web.server.auth_limiter.begin(web.transport.addr.ip()) else {
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many failed attempts",
        );
    };
    match h.auth.check_password(host, &user, password).await {
        Ok(true) => attempt.succeeded(),
        Ok(false) | Err(AuthError::NoSuchUser) => {
            attempt.failed();
            return invalid_grant("wrong username or password");
        }
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
    }
    let scope = web
        .oauth
        .effective_scope(form.get("scope").map(String::as_str), client, Some(&user));
    if scope.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "no requested scope is available",
        );
    }
    let approval = Approval {
        user,
        client_id: client_id.to_string(),
        scope,
        nonce: None,
        auth_time: unix_now(),
    };
    match web.oauth.issue(&approval, client, &web.issuer(), true).await {
        Some(tokens) => token_response(&tokens),
        None => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot store the grant",
        ),
    }
}

// --- revocation, introspection, userinfo -----------------------------------------------------

async fn revoke(web: Web, body: Bytes) -> Response {
    let (form, client_id, _) = match client_request(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is missing");
    };
    if let Ok(Some((t, grant))) = web.oauth.store.token(&hash_secret(token), unix_now()).await {
        // RFC 7009 §2.1: only the client the token was issued to; others
        // learn nothing (the same 200).
        if grant.client_hash == hash_secret(&client_id) && grant.host == web.oauth.host {
            match t.kind {
                OAuthTokenKind::Refresh => {
                    web.oauth
                        .revoke_grant(
                            &web.server,
                            &grant.id,
                            &grant.username,
                            "refresh token revoked by the client",
                        )
                        .await;
                }
                OAuthTokenKind::Access => {
                    web.oauth
                        .revoke_access_token(&web.server, &t, &grant.username)
                        .await;
                    info!(user = %grant.username, grant = %grant.id, "OAuth access token revoked by the client");
                }
            }
        }
    }
    json_response(StatusCode::OK, &json!({}))
}

async fn introspect(web: Web, body: Bytes) -> Response {
    let (form, client_id, client) = match client_request(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if client.is_public() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "introspection needs client credentials",
        );
    }
    let Some(token) = form.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is missing");
    };
    let found = web
        .oauth
        .store
        .token(&hash_secret(token), unix_now())
        .await
        .ok()
        .flatten();
    let Some((t, grant)) = found
        .filter(|(t, g)| g.client_hash == hash_secret(&client_id) && g.host == web.oauth.host && !t.used)
    else {
        return json_response(StatusCode::OK, &json!({"active": false}));
    };
    let mut out = json!({
        "active": true,
        "scope": t.scope,
        "client_id": client_id,
        "username": grant.username,
        "sub": format!("xmpp:{}", web.account(&grant.username)),
        "iss": web.issuer(),
        "iat": t.created_at,
        "exp": t.expires_at,
    });
    if t.kind == OAuthTokenKind::Access {
        out["token_type"] = json!("bearer");
    }
    json_response(StatusCode::OK, &out)
}

async fn userinfo(web: Web, method: Method, body: Bytes) -> Response {
    if web.insecure() {
        return https_required(&web);
    }
    let from_header = jackdaw_core::http_client::bearer_token(
        web.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .map(str::to_owned);
    // RFC 6750 §2.2: a POST may carry the token in the form instead.
    let token = from_header.or_else(|| {
        (method == Method::POST)
            .then(|| params(&body).ok()?.get("access_token").cloned())
            .flatten()
    });
    let unauthorized = |error: &'static str, status: StatusCode| {
        let mut r = oauth_error(
            status,
            error,
            "a valid access token with the openid scope is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!("Bearer error=\"{error}\"")).expect("ASCII"),
        );
        r
    };
    let Some(token) = token else {
        return unauthorized("invalid_token", StatusCode::UNAUTHORIZED);
    };
    let (t, grant) = match web.oauth.access_token(&token).await {
        Ok(Some(found)) => found,
        Ok(None) => return unauthorized("invalid_token", StatusCode::UNAUTHORIZED),
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again later",
            );
        }
    };
    if !has_scope(&t.scope, "openid") {
        return unauthorized("insufficient_scope", StatusCode::FORBIDDEN);
    }
    let mut out = json!({ "sub": format!("xmpp:{}", web.account(&grant.username)) });
    if has_scope(&t.scope, "profile") {
        out["preferred_username"] = json!(grant.username);
        out["name"] = json!(grant.username);
    }
    json_response(StatusCode::OK, &out)
}

// --- device authorization (RFC 8628) -------------------------------------------------------

async fn device_authorization(web: Web, body: Bytes) -> Response {
    let (form, client_id, client) = match client_request(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !web.oauth.config.allows_grant("device_code") || !client.allows_grant(DEVICE_CODE_URN) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the device grant is not enabled for this client",
        );
    }
    let scope = web
        .oauth
        .effective_scope(form.get("scope").map(String::as_str), &client, None);
    if scope.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "no requested scope is available",
        );
    }
    let Some((device_code, user_code)) = web.oauth.devices.start(&client_id, &scope) else {
        warn!(client = %client.client_name, "too many device authorizations pending: refusing new ones");
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many device authorizations are pending; try again later",
        );
    };
    info!(client = %client.client_name, "device authorization started");
    let verification_uri = web.endpoint("/oauth2/device");
    let complete = format!(
        "{verification_uri}?user_code={}",
        url::form_urlencoded::byte_serialize(user_code.as_bytes()).collect::<String>()
    );
    json_response(
        StatusCode::OK,
        &json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": complete,
            "expires_in": DEVICE_CODE_TTL.as_secs(),
            "interval": DEVICE_POLL_INTERVAL.as_secs(),
        }),
    )
}

async fn device_page(web: Web, uri: Uri) -> Response {
    if web.insecure() {
        return web.https_required_page();
    }
    let q = params(uri.query().unwrap_or("").as_bytes()).unwrap_or_default();
    let Some(typed) = q.get("user_code").filter(|c| !c.trim().is_empty()) else {
        return web.page("device.html", StatusCode::OK, json!({}));
    };
    let user_code = normalize_user_code(typed);
    let unknown = |web: &Web| {
        web.page(
            "device.html",
            StatusCode::BAD_REQUEST,
            json!({"error": "This code is not valid, or has expired. Check your device and try again.", "user_code": user_code}),
        )
    };
    // RFC 8628 §5.1: guessing user codes must be slow.
    if web.oauth.limiter.check(web.transport.addr.ip()).is_err() {
        warn!(remote = %web.transport.addr, "device code entries over the rate limit");
        return web.page(
            "device.html",
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "Too many attempts. Wait a minute, then try again."}),
        );
    }
    let Some(request) = web.oauth.devices.by_user_code(&user_code) else {
        return unknown(&web);
    };
    let Some(client) = web.oauth.client(&request.client_id) else {
        return unknown(&web);
    };
    let keys = match web.keys().await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (session, cookie) = web.browser(&keys);
    let Some(user) = session.sub.clone() else {
        let next = format!(
            "{}/oauth2/device?user_code={}",
            web.base_path(),
            url::form_urlencoded::byte_serialize(user_code.as_bytes()).collect::<String>()
        );
        return with_cookie(
            web.login_page(&keys, &session, &next, "", None, StatusCode::OK),
            cookie,
        );
    };
    let scope = web
        .oauth
        .effective_scope(Some(&request.scope), &client, Some(&user));
    let consent = ConsentRequest {
        kind: "device".into(),
        user,
        client_id: request.client_id.clone(),
        scope,
        redirect_uri: String::new(),
        redirect_uri_given: false,
        state: None,
        code_challenge: None,
        code_challenge_method: String::new(),
        nonce: None,
        user_code,
        exp: unix_now() + CONSENT_TTL,
    };
    with_cookie(consent_page(&web, &keys, &session, &client, &consent), cookie)
}

// --- grant management ----------------------------------------------------------------------

/// The day of a Unix time, `YYYY-MM-DD`: all this page needs of it.
fn date(unix: i64) -> String {
    let mut stamp = jackdaw_core::stanza::format_stamp(unix.max(0) as u64);
    stamp.truncate("YYYY-MM-DD".len());
    stamp
}

async fn grants_page(web: Web) -> Response {
    if web.insecure() {
        return web.https_required_page();
    }
    let keys = match web.keys().await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (session, cookie) = web.browser(&keys);
    let Some(user) = session.sub.clone() else {
        let next = format!("{}/oauth2/grants", web.base_path());
        return with_cookie(
            web.login_page(&keys, &session, &next, "", None, StatusCode::OK),
            cookie,
        );
    };
    let grants = match web.oauth.store.grants(&web.oauth.host, &user).await {
        Ok(g) => g,
        Err(e) => {
            warn!(error = %e, "cannot list OAuth grants");
            return web.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your applications cannot be listed right now.",
            );
        }
    };
    let list: Vec<Value> = grants
        .iter()
        .map(|g| {
            json!({
                "id": g.id,
                "client_name": g.client_name,
                "client_uri": g.client_uri,
                "scope": g.scope,
                "created": date(g.created_at),
                "last_used": date(g.last_used_at),
            })
        })
        .collect();
    with_cookie(
        web.page(
            "grants.html",
            StatusCode::OK,
            json!({
                "csrf": keys.csrf_token(&web.oauth.host, &session.nonce),
                "account": web.account(&user),
                "grants": list,
            }),
        ),
        cookie,
    )
}

async fn revoke_grant_form(web: Web, body: Bytes) -> Response {
    let (_, session, form) = match posted_form(&web, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(user) = session.sub else {
        return web.error_page(StatusCode::FORBIDDEN, "Sign in first.");
    };
    let grant = match form.get("grant") {
        Some(id) => web.oauth.store.grant(id).await.ok().flatten(),
        None => None,
    };
    match grant {
        Some(g) if g.host == web.oauth.host && g.username == user => {
            web.oauth
                .revoke_grant(&web.server, &g.id, &user, "revoked by the user")
                .await;
            see_other(&format!("{}/oauth2/grants", web.base_path()))
        }
        _ => web.error_page(StatusCode::NOT_FOUND, "No such authorization."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_795_996_800), "2026-11-30");
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(params(b"a=1&b=2").is_ok());
        assert!(params(b"a=1&a=2").is_err());
        assert_eq!(params(b"x=a%20b+c").unwrap()["x"], "a b c");
    }

    #[test]
    fn pkce_challenges_are_checked() {
        assert!(pkce_challenge_ok(&"a".repeat(43)));
        assert!(!pkce_challenge_ok(&"a".repeat(42)));
        assert!(!pkce_challenge_ok(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn localparts() {
        assert_eq!(localpart("Alice", "h").as_deref(), Some("alice"));
        assert_eq!(localpart("alice@h", "h").as_deref(), Some("alice"));
        assert_eq!(localpart("alice@other", "h"), None);
        assert_eq!(localpart("", "h"), None);
    }
}
