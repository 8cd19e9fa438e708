//! The HTTP listener (Prosody's http_ports): liveness (`/health`),
//! Prometheus metrics (`/metrics`), and the routes modules mount per
//! virtual host, chosen by the request's `Host` header (or used directly
//! when a single host mounts routes, as with a bare `127.0.0.1:5280`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
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
