//! The HTTP listener (Prosody's http_ports): modules will mount their
//! routes here; it serves liveness (`/health`) and Prometheus metrics
//! (`/metrics`).

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use jackdaw_core::server::Server;

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(|| async { "Jackdaw XMPP server\n" }))
        .route(
            "/metrics",
            get({
                let server = server.clone();
                move || {
                    let server = server.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            server.metrics.render(),
                        )
                    }
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let server = server.clone();
                async move { format!("ok sessions={}\n", server.sessions.count()) }
            }),
        )
}
