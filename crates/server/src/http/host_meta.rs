//! XEP-0156 discovery for web clients: `/.well-known/host-meta` (XRD) and
//! `/.well-known/host-meta.json` name the WebSocket and BOSH URLs. The
//! URLs are under `http_external_url` when set, else the scheme and `Host`
//! the request came in on. Public information, so any origin may read it.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::caller::Caller;

pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
pub const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// `(websocket, bosh)` URLs for this request.
pub fn endpoints(caller: &Caller, headers: &HeaderMap, external_url: Option<&str>) -> (String, String) {
    let base = match external_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let scheme = if caller.secure { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
    };
    let ws_base = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| base.strip_prefix("http://").map(|rest| format!("ws://{rest}")))
        .unwrap_or_else(|| base.clone());
    (format!("{ws_base}/xmpp-websocket"), format!("{base}/http-bind"))
}

pub fn xrd(caller: &Caller, headers: &HeaderMap, external_url: Option<&str>) -> Response {
    let (ws, bosh) = endpoints(caller, headers, external_url);
    let esc = jackdaw_core::stream::escape;
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='{REL_BOSH}' href='{}'/>\n  <Link rel='{REL_WEBSOCKET}' href='{}'/>\n</XRD>\n",
        esc(&bosh),
        esc(&ws)
    );
    public(body, "application/xrd+xml; charset=utf-8")
}

pub fn json(caller: &Caller, headers: &HeaderMap, external_url: Option<&str>) -> Response {
    let (ws, bosh) = endpoints(caller, headers, external_url);
    let body = serde_json::json!({
        "links": [
            {"rel": REL_BOSH, "href": bosh},
            {"rel": REL_WEBSOCKET, "href": ws},
        ]
    })
    .to_string();
    public(body, "application/json")
}

fn public(body: String, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_request_or_the_external_url() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "chat.example:5281".parse().unwrap());
        let secure = Caller {
            addr: "127.0.0.1:1".parse().unwrap(),
            secure: true,
        };
        assert_eq!(
            endpoints(&secure, &h, None),
            (
                "wss://chat.example:5281/xmpp-websocket".into(),
                "https://chat.example:5281/http-bind".into()
            )
        );
        assert_eq!(
            endpoints(&secure, &h, Some("https://chat.example/xmpp/")).0,
            "wss://chat.example/xmpp/xmpp-websocket"
        );
    }
}
