//! The HTTP listener (Prosody's http_ports): liveness (`/health`),
//! Prometheus metrics (`/metrics`), and the routes modules mount per
//! virtual host, chosen by the request's `Host` header (or used directly
//! when a single host mounts routes, as with a bare `127.0.0.1:5280`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jackdaw_core::server::Server;
use tower::ServiceExt;

#[derive(Clone)]
struct AppState {
    server: Arc<Server>,
    hosts: Arc<HashMap<String, Router>>,
}

pub fn router(
    server: Arc<Server>,
    host_routes: &HashMap<String, Router<Arc<Server>>>,
    global_routes: Router<Arc<Server>>,
) -> Router {
    let hosts: HashMap<String, Router> = host_routes
        .iter()
        .map(|(host, r)| (host.clone(), r.clone().with_state(server.clone())))
        .collect();
    let global = global_routes.with_state(server.clone());
    let state = AppState {
        server,
        hosts: Arc::new(hosts),
    };
    Router::new()
        .merge(global)
        .route("/", get(|| async { "Jackdaw XMPP server\n" }))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/xmpp-websocket", get(websocket))
        .fallback(dispatch_to_host)
        .with_state(state)
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let g = &state.server.config.global;
    // RFC 7395 §3.1: a client asking for subprotocols must ask for "xmpp".
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_ascii_lowercase()))
        .collect();
    if !offered.is_empty() && !offered.iter().any(|p| p == "xmpp") {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "only the xmpp subprotocol is served here\n",
        )
            .into_response();
    }
    if g.c2s_require_encryption && !g.consider_websocket_secure {
        tracing::warn!(
            remote = %peer,
            "WebSocket refused: the HTTP port is not encrypted; put a TLS proxy in front and set consider_websocket_secure = true"
        );
        return (
            StatusCode::FORBIDDEN,
            "XMPP over WebSocket needs TLS (see consider_websocket_secure)\n",
        )
            .into_response();
    }
    let server = state.server.clone();
    upgrade
        .protocols(["xmpp"])
        .max_message_size(g.c2s_stanza_size_limit + 1024)
        .on_upgrade(move |socket| {
            // Tracked, so shutdown waits for the last frames to go out.
            let tasks = server.tasks.clone();
            tasks.track_future(jackdaw_core::c2s::websocket::serve(server, socket, peer))
        })
}

async fn health(State(state): State<AppState>) -> String {
    format!("ok sessions={}\n", state.server.sessions.count())
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
