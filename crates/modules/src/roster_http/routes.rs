//! The web app's side door: `POST /roster_admin/refresh` with a JSON array
//! of usernames (the seed's protocol) or a JSON object `{"user": {roster}}`
//! (push form: no fetch needed), and `GET /roster_admin/refresh/USERNAME`.
//! Answers `{"status","message","updated","errors"}` as the seed documents.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jackdaw_core::server::Server;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::RosterAdmin;
use super::source::{Items, parse_roster};

pub fn router(admin: Arc<RosterAdmin>) -> Router<Arc<Server>> {
    let for_post = admin.clone();
    Router::new()
        .route(
            "/roster_admin/refresh",
            post(
                move |State(server): State<Arc<Server>>,
                      ConnectInfo(peer): ConnectInfo<SocketAddr>,
                      headers: HeaderMap,
                      body: Bytes| {
                    let admin = for_post.clone();
                    async move { handle_refresh(admin, server, peer, &headers, &body).await }
                },
            ),
        )
        .route(
            "/roster_admin/refresh/{user}",
            get(
                move |State(server): State<Arc<Server>>,
                      ConnectInfo(peer): ConnectInfo<SocketAddr>,
                      headers: HeaderMap,
                      Path(user): Path<String>| {
                    let admin = admin.clone();
                    async move {
                        if let Some(denied) = check_access(&admin, peer, &headers) {
                            return denied;
                        }
                        run(admin, server, vec![(user, None)]).await
                    }
                },
            ),
        )
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"status": "error", "message": message, "updated": 0, "errors": 0}),
    )
}

/// With `http_roster_admin_secret`, a matching Bearer token; without,
/// loopback callers only (the web app usually runs beside Jackdaw).
fn check_access(admin: &RosterAdmin, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    match &admin.config.http_roster_admin_secret {
        Some(secret) => {
            let given = jackdaw_core::http_client::bearer_token(
                headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
            )
            .unwrap_or("");
            if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
                None
            } else {
                warn!(remote = %peer, "roster refresh refused: wrong or missing Bearer token");
                Some(reply(
                    StatusCode::UNAUTHORIZED,
                    json!({"status": "error", "message": "authorization required", "updated": 0, "errors": 0}),
                ))
            }
        }
        None if peer.ip().is_loopback() => None,
        None => {
            warn!(remote = %peer, "roster refresh refused: not from loopback and no http_roster_admin_secret set");
            Some(reply(
                StatusCode::FORBIDDEN,
                json!({"status": "error", "message": "forbidden", "updated": 0, "errors": 0}),
            ))
        }
    }
}

async fn handle_refresh(
    admin: Arc<RosterAdmin>,
    server: Arc<Server>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(denied) = check_access(&admin, peer, headers) {
        return denied;
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(&format!("body is not JSON: {e}")),
    };
    let work: Vec<(String, Option<Items>)> = match value {
        serde_json::Value::Array(users) => {
            let mut list = Vec::with_capacity(users.len());
            for u in users {
                match u {
                    serde_json::Value::String(s) => list.push((s, None)),
                    _ => return bad_request("expected an array of usernames (strings)"),
                }
            }
            list
        }
        serde_json::Value::Object(map) => {
            let mut list = Vec::with_capacity(map.len());
            for (user, roster) in map {
                match parse_roster(&roster.to_string()) {
                    Ok(items) => list.push((user, Some(items))),
                    Err(e) => return bad_request(&format!("roster for {user:?}: {e}")),
                }
            }
            list
        }
        _ => return bad_request("expected an array of usernames or an object of rosters"),
    };
    run(admin, server, work).await
}

/// Refreshes every user concurrently, bounded; one user's failure counts
/// in `errors` without failing the others.
async fn run(admin: Arc<RosterAdmin>, server: Arc<Server>, work: Vec<(String, Option<Items>)>) -> Response {
    let total = work.len();
    let limit = Arc::new(Semaphore::new(admin.config.http_roster_max_concurrent_refreshes));
    let mut tasks = tokio::task::JoinSet::new();
    for (user, given) in work {
        let (admin, server, limit) = (admin.clone(), server.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            admin.refresh_user(&server, &user, given).await
        });
    }
    let (mut updated, mut errors) = (0usize, 0usize);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => updated += 1,
            _ => errors += 1,
        }
    }
    info!(updated, errors, "roster refresh done");
    let status = if errors > 0 && updated == 0 && total > 0 {
        "error"
    } else {
        "ok"
    };
    let message = if status == "ok" {
        "roster update complete"
    } else {
        "roster update failed"
    };
    reply(
        StatusCode::OK,
        json!({"status": status, "message": message, "updated": updated, "errors": errors}),
    )
}
