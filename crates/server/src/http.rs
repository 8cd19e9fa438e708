//! The HTTP listener (Prosody's http_ports): modules will mount their
//! routes here; for now it reports liveness.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use jackdaw_core::server::Server;

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(|| async { "Jackdaw XMPP server\n" }))
        .route(
            "/health",
            get(move || {
                let server = server.clone();
                async move { format!("ok sessions={}\n", server.sessions.count()) }
            }),
        )
}
