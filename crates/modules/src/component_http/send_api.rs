//! `POST /component/{domain}/send`: the web app sends a stanza as the bot
//! whenever it likes (a notification, a reminder), not only in reply.
//! Same JSON shape as a reply; `to` required, `from` defaults to the
//! component's domain. Bearer `component_post_token`; 202 when routed.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jackdaw_core::server::Server;
use jackdaw_core::stanza;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::warn;

use super::ComponentHttp;
use super::reply::build_reply;

pub fn router(component: Arc<ComponentHttp>) -> Router<Arc<Server>> {
    let path = format!("/component/{}/send", component.domain());
    Router::new().route(
        &path,
        post(
            move |State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes| {
                let component = component.clone();
                async move { send(&component, &server, &headers, &body).await }
            },
        ),
    )
}

fn answer(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": status.as_u16(), "message": message}).to_string(),
    )
        .into_response()
}

async fn send(component: &ComponentHttp, server: &Server, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(token) = &component.token else {
        return answer(
            StatusCode::NOT_FOUND,
            "the send API is off for this component (no component_post_token)",
        );
    };
    let given = jackdaw_core::http_client::bearer_token(
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
    )
    .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        warn!(component = component.domain(), "send API: wrong or missing token");
        return answer(StatusCode::UNAUTHORIZED, "wrong or missing Bearer token");
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return answer(StatusCode::BAD_REQUEST, "body is not UTF-8");
    };
    let parsed: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return answer(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    if parsed.get("to").and_then(|t| t.as_str()).is_none() && parsed.get("stanza").is_none() {
        return answer(StatusCode::BAD_REQUEST, "\"to\" is required");
    }
    // As if answering a stanza the component's domain received from `to`.
    let to = parsed.get("to").and_then(|t| t.as_str()).unwrap_or_default();
    let origin = stanza::new_stanza("message", &[("from", to), ("to", component.domain())]);
    match build_reply(component.domain(), &origin, text) {
        Ok(Some(el)) => {
            server.route(el, None).await;
            answer(StatusCode::ACCEPTED, "sent")
        }
        Ok(None) => answer(
            StatusCode::BAD_REQUEST,
            "nothing to send (a message needs a body)",
        ),
        Err(e) => answer(StatusCode::BAD_REQUEST, &e),
    }
}
