//! The HTTP listeners (Prosody's http_ports and https_ports): liveness
//! (`/health`), Prometheus metrics (`/metrics`), XMPP for web clients
//! (WebSocket at `/xmpp-websocket`, BOSH at `/http-bind`, XEP-0156
//! host-meta), and the routes modules mount per virtual host, chosen by the
//! request's `Host` header (or used directly when a single host mounts
//! routes, as with a bare `127.0.0.1:5280`).

mod caller;
mod host_meta;
mod origin;
pub mod tls_listener;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jackdaw_core::c2s::bosh::BoshSessions;
use jackdaw_core::server::Server;
use tower::ServiceExt;
use tracing::{info, warn};

pub use caller::Peer;
use caller::{Caller, TrustedProxies};
use origin::OriginPolicy;

#[derive(Clone)]
struct AppState {
    server: Arc<Server>,
    hosts: Arc<HashMap<String, Router>>,
    bosh: Arc<BoshSessions>,
    proxies: Arc<TrustedProxies>,
    websocket_origins: Arc<OriginPolicy>,
    bosh_origins: Arc<OriginPolicy>,
}

impl AppState {
    fn caller(&self, peer: Peer, headers: &HeaderMap) -> Caller {
        Caller::new(peer, headers, &self.proxies)
    }

    fn external_url(&self) -> Option<&str> {
        self.server.config.global.http_external_url.as_deref()
    }
}

pub fn router(
    server: Arc<Server>,
    bosh: Arc<BoshSessions>,
    host_routes: &HashMap<String, Router<Arc<Server>>>,
    global_routes: Router<Arc<Server>>,
) -> Router {
    let hosts: HashMap<String, Router> = host_routes
        .iter()
        .map(|(host, r)| (host.clone(), r.clone().with_state(server.clone())))
        .collect();
    let global = global_routes.with_state(server.clone());
    let g = &server.config.global;
    // A BOSH body holds stanzas: the stanza limit plus room for the wrapper.
    let bosh_limit = g.c2s_stanza_size_limit + 4096;
    let state = AppState {
        proxies: Arc::new(TrustedProxies::new(&g.trusted_proxies)),
        websocket_origins: Arc::new(OriginPolicy::for_endpoint(g, "websocket")),
        bosh_origins: Arc::new(OriginPolicy::for_endpoint(g, "bosh")),
        server: server.clone(),
        hosts: Arc::new(hosts),
        bosh,
    };
    Router::new()
        .merge(global)
        .route("/", get(|| async { "Jackdaw XMPP server\n" }))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/xmpp-websocket", get(websocket))
        .route(
            "/http-bind",
            get(bosh_info)
                .post(bosh_request)
                .options(bosh_preflight)
                .layer(DefaultBodyLimit::max(bosh_limit)),
        )
        .route("/.well-known/host-meta", get(host_meta_xrd))
        .route("/.well-known/host-meta.json", get(host_meta_json))
        .fallback(dispatch_to_host)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, client_address))
}

/// Gives every handler, modules' included, the client's real address as
/// `ConnectInfo<SocketAddr>` (after trusted proxies): a loopback-only API
/// must not take a request relayed by a local nginx for a local one.
async fn client_address(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let caller = state.caller(peer, request.headers());
    request.extensions_mut().insert(ConnectInfo(caller.addr));
    request
        .extensions_mut()
        .insert(jackdaw_core::http_request::ClientTransport {
            addr: caller.addr,
            secure: caller.secure,
        });
    next.run(request).await
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // prometheus-client writes the OpenMetrics text format.
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.server.metrics.render(),
    )
}

/// RFC 7395 upgrade, on Prosody's path, with the `xmpp` subprotocol.
async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let caller = state.caller(peer, &headers);
    let g = &state.server.config.global;
    // RFC 7395 §3.1: a client asking for subprotocols must ask for "xmpp".
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_ascii_lowercase()))
        .collect();
    if !offered.is_empty() && !offered.iter().any(|p| p == "xmpp") {
        info!(remote = %caller.addr, offered = ?offered, "WebSocket refused: no xmpp subprotocol");
        return (
            StatusCode::NOT_IMPLEMENTED,
            "only the xmpp subprotocol is served here\n",
        )
            .into_response();
    }
    if !state.websocket_origins.permits(&headers, state.external_url()) {
        return refuse_origin(&caller, &headers, "WebSocket", "cross_domain_websocket");
    }
    if g.c2s_require_encryption && !caller.secure && !g.consider_websocket_secure {
        warn!(
            remote = %caller.addr,
            "WebSocket refused: not encrypted; use https_ports (wss://), or put a TLS proxy in front (trusted_proxies, X-Forwarded-Proto) or set consider_websocket_secure = true"
        );
        return (
            StatusCode::FORBIDDEN,
            "XMPP over WebSocket needs TLS (wss://, or see consider_websocket_secure)\n",
        )
            .into_response();
    }
    let Ok(slot) = state.server.connection_slots.clone().try_acquire_owned() else {
        warn!(
            remote = %caller.addr,
            limit = g.c2s_max_connections,
            "WebSocket refused: connection limit reached (c2s_max_connections)"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again later\n",
        )
            .into_response();
    };
    let server = state.server.clone();
    upgrade
        .protocols(["xmpp"])
        .max_message_size(g.c2s_stanza_size_limit + 1024)
        .on_upgrade(move |socket| {
            // Tracked, so shutdown waits for the last frames to go out.
            let tasks = server.tasks.clone();
            tasks.track_future(jackdaw_core::c2s::websocket::serve(
                server,
                socket,
                caller.addr,
                slot,
            ))
        })
}

fn refuse_origin(caller: &Caller, headers: &HeaderMap, what: &str, option: &str) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("?");
    info!(remote = %caller.addr, origin, "{what} refused: origin not allowed (see {option})");
    (
        StatusCode::FORBIDDEN,
        format!("{what} from this origin is not allowed here\n"),
    )
        .into_response()
}

/// XEP-0124 over POST; the session logic is in `jackdaw_core::c2s::bosh`.
async fn bosh_request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = state.caller(peer, &headers);
    if !state.bosh_origins.permits(&headers, state.external_url()) {
        return refuse_origin(&caller, &headers, "BOSH", "cross_domain_bosh");
    }
    let g = &state.server.config.global;
    if g.c2s_require_encryption && !caller.secure && !g.consider_bosh_secure {
        warn!(
            remote = %caller.addr,
            "BOSH refused: not encrypted; use https_ports, or put a TLS proxy in front (trusted_proxies, X-Forwarded-Proto) or set consider_bosh_secure = true"
        );
        return (
            StatusCode::FORBIDDEN,
            "XMPP over BOSH needs TLS (https://, or see consider_bosh_secure)\n",
        )
            .into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "BOSH body is not UTF-8\n").into_response();
    };
    let reply = state.bosh.handle(&state.server, text, caller.addr).await;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        reply.body,
    )
        .into_response();
    for (name, value) in state.bosh_origins.cors_headers(&headers, false) {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn bosh_preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.bosh_origins.permits(&headers, state.external_url()) {
        // No CORS headers: the browser refuses the real request.
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for (name, value) in state.bosh_origins.cors_headers(&headers, true) {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn bosh_info() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Jackdaw BOSH endpoint (XEP-0124/XEP-0206): POST <body/> requests here.\n",
    )
}

async fn host_meta_xrd(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    host_meta::xrd(&state.caller(peer, &headers), &headers, state.external_url())
}

async fn host_meta_json(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    host_meta::json(&state.caller(peer, &headers), &headers, state.external_url())
}

async fn health(State(state): State<AppState>) -> String {
    format!(
        "ok sessions={} bosh_sessions={}\n",
        state.server.sessions.count(),
        state.bosh.count()
    )
}

async fn dispatch_to_host(State(state): State<AppState>, request: Request<Body>) -> Response {
    let named = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':')
                .map(|(name, _)| name)
                .unwrap_or(h)
                .to_ascii_lowercase()
        });
    let router = match named.as_deref().and_then(|h| state.hosts.get(h)) {
        Some(r) => Some(r.clone()),
        None if state.hosts.len() == 1 => state.hosts.values().next().cloned(),
        None => None,
    };
    match router {
        Some(r) => match r.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
