//! `module = "component_http"` (seed: mod_component_http.md): a component
//! whose stanzas are POSTed to the operator's web app as JSON
//! `{to, from, kind, stanza, body}`; a 200 JSON answer becomes the reply
//! (`to`/`from` swapped by default, `kind` message, `body`, or a whole
//! `stanza`), other 2xx mean no reply, and errors map to XMPP errors.
//! Unless "presence" is forwarded, the component is an always-online
//! contact that accepts subscriptions.
//!
//! Beyond the seed: signed webhooks (`component_post_secret`:
//! `X-Jackdaw-Timestamp` and `X-Jackdaw-Signature: sha256=HEX`, the HMAC of
//! `timestamp + "." + body`), static headers (`component_post_headers`), an
//! inbound API `POST /component/{domain}/send` (Bearer
//! `component_post_token`), bounded concurrency with each sender's stanzas
//! posted in order, and IQs always answered.

pub mod config;
mod reply;
mod send_api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use jackdaw_core::component::Component;
use jackdaw_core::config::ComponentConfig;
use jackdaw_core::http_client::{self, HttpClientOptions};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::{self, ErrorType, StanzaError};
use jackdaw_core::stream;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

pub use config::{Config, OPTIONS};

/// Stanzas waiting per sender before the sender gets resource-constraint.
const SENDER_QUEUE: usize = 256;
/// A sender's worker exits after this long without stanzas.
const WORKER_IDLE: Duration = Duration::from_secs(30);

pub struct ComponentHttp {
    domain: String,
    client: reqwest::Client,
    url: String,
    kinds: Vec<String>,
    secret: Option<String>,
    headers: reqwest::header::HeaderMap,
    token: Option<String>,
    inflight: Arc<Semaphore>,
    /// One queue per sender so its stanzas are posted in order, while
    /// different senders proceed in parallel.
    queues: Mutex<HashMap<String, mpsc::Sender<Element>>>,
    me: Weak<ComponentHttp>,
}

impl ComponentHttp {
    pub fn new(component: &ComponentConfig) -> Result<Arc<Self>, String> {
        let config: Config = component.module_config()?;
        let problems = config.validate(&component.name);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let client = http_client::build(&HttpClientOptions {
            timeout: Duration::from_secs_f64(config.component_post_timeout),
            insecure: config.component_post_insecure,
            max_idle_per_host: config.component_post_max_inflight,
        })
        .map_err(|e| format!("component {}: cannot build the HTTP client: {e}", component.name))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.component_post_headers {
            // Validated in Config::validate.
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        Ok(Arc::new_cyclic(|me| Self {
            domain: component.name.clone(),
            client,
            url: config.component_post_url.clone().unwrap_or_default(),
            kinds: config.kinds(),
            secret: config.component_post_secret.clone(),
            headers,
            token: config.component_post_token.clone(),
            inflight: Arc::new(Semaphore::new(config.component_post_max_inflight)),
            queues: Mutex::new(HashMap::new()),
            me: me.clone(),
        }))
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The inbound send API's routes, mounted on the HTTP listener.
    pub fn routes(self: &Arc<Self>) -> axum::Router<Arc<Server>> {
        send_api::router(self.clone())
    }

    /// The seed's presence behaviour: always online, accepts everyone.
    async fn handle_presence(&self, server: &Server, p: &Element) {
        let Some(from) = p.attr("from").and_then(|f| jackdaw_core::jid::Jid::new(f).ok()) else {
            return;
        };
        let to = p.attr("to").unwrap_or(&self.domain).to_string();
        let user = from.to_bare().to_string();
        let send = |kind: Option<&str>, to_jid: &str| {
            let mut attrs = vec![("from", to.as_str()), ("to", to_jid)];
            if let Some(k) = kind {
                attrs.push(("type", k));
            }
            stanza::new_stanza("presence", &attrs)
        };
        match p.attr("type") {
            Some("subscribe") => {
                server.route(send(Some("subscribed"), &user), None).await;
                server.route(send(None, &user), None).await;
            }
            Some("probe") => server.route(send(None, from.as_str()), None).await,
            Some("unsubscribe") => {
                server.route(send(Some("unsubscribed"), &user), None).await;
                server.route(send(Some("unavailable"), &user), None).await;
            }
            _ => {}
        }
    }

    fn enqueue(&self, server: &Server, stanza: Element) {
        let sender = stanza.attr("from").unwrap_or("").to_string();
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let tx = match queues.get(&sender) {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(SENDER_QUEUE);
                if let (Some(me), Some(server)) = (self.me.upgrade(), server.arc()) {
                    tokio::spawn(me.worker(server, sender.clone(), rx));
                }
                queues.insert(sender.clone(), tx.clone());
                tx
            }
        };
        drop(queues);
        if let Err(e) = tx.try_send(stanza) {
            let stanza = match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
            };
            server.bounce(
                &stanza,
                StanzaError::resource_constraint().with_text("The bot is busy"),
            );
        }
    }

    /// Posts one sender's stanzas in order; exits when idle.
    async fn worker(self: Arc<Self>, server: Arc<Server>, sender: String, mut rx: mpsc::Receiver<Element>) {
        loop {
            let stanza = match tokio::time::timeout(WORKER_IDLE, rx.recv()).await {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(_) => {
                    // Idle: leave the map first, then drain what raced in.
                    self.queues
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&sender);
                    rx.close();
                    while let Ok(s) = rx.try_recv() {
                        self.post(&server, s).await;
                    }
                    return;
                }
            };
            self.post(&server, stanza).await;
        }
    }

    fn sign(&self, body: &str) -> Option<(String, String)> {
        let secret = self.secret.as_ref()?;
        let timestamp = jackdaw_core::stanza::now_secs().to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some((timestamp, format!("sha256={hex}")))
    }

    /// POSTs one stanza and acts on the answer.
    async fn post(&self, server: &Server, stanza: Element) {
        let kind = stanza.name().to_string();
        let mut payload = serde_json::json!({
            "to": stanza.attr("to").unwrap_or(""),
            "from": stanza.attr("from").unwrap_or(""),
            "kind": kind,
            "stanza": stream::serialize(&stanza),
        });
        if kind == "message"
            && let Some(body) = stanza.get_child("body", stream::ns::CLIENT)
        {
            payload["body"] = serde_json::Value::String(body.text());
        }
        let body = payload.to_string();
        let Ok(_permit) = self.inflight.acquire().await else {
            return;
        };
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some((timestamp, signature)) = self.sign(&body) {
            request = request
                .header("X-Jackdaw-Timestamp", timestamp)
                .header("X-Jackdaw-Signature", signature);
        }
        let outcome = match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let json_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| {
                        v.split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .eq_ignore_ascii_case("application/json")
                    });
                match response.text().await {
                    Ok(text) => reply::Outcome::Answer {
                        status,
                        json_type,
                        body: text,
                    },
                    Err(e) => reply::Outcome::Failed(e.without_url().to_string()),
                }
            }
            Err(e) => reply::Outcome::Failed(e.without_url().to_string()),
        };
        reply::act(server, &self.domain, &stanza, outcome).await;
    }
}

#[async_trait]
impl Component for ComponentHttp {
    async fn deliver(&self, server: &Server, stanza: Element) {
        let kind = stanza.name();
        debug!(component = %self.domain, kind, "stanza for component_http");
        if !self.kinds.iter().any(|k| k == kind) {
            match kind {
                "presence" => self.handle_presence(server, &stanza).await,
                "iq" if matches!(stanza.attr("type"), Some("get" | "set")) => {
                    server.bounce(&stanza, StanzaError::service_unavailable());
                }
                _ => {}
            }
            return;
        }
        if kind == "iq" && matches!(stanza.attr("type"), Some("result" | "error")) {
            return; // answers to nothing the component asked
        }
        self.enqueue(server, stanza);
    }
}

/// XMPP error for an HTTP status from the web app.
pub fn error_for_status(status: u16) -> StanzaError {
    match status {
        400 => StanzaError::bad_request(),
        401 => StanzaError::not_authorized(),
        403 => StanzaError::forbidden(),
        404 => StanzaError::item_not_found(),
        410 => StanzaError::new(ErrorType::Cancel, "gone"),
        501 => StanzaError::feature_not_implemented(),
        502..=504 => StanzaError::new(ErrorType::Wait, "remote-server-timeout"),
        500..=599 => StanzaError::internal_server_error(),
        _ => {
            warn!(status, "unexpected HTTP status from component_http web app");
            StanzaError::new(ErrorType::Cancel, "undefined-condition")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_conditions() {
        assert_eq!(error_for_status(400).condition, "bad-request");
        assert_eq!(error_for_status(401).condition, "not-authorized");
        assert_eq!(error_for_status(403).condition, "forbidden");
        assert_eq!(error_for_status(404).condition, "item-not-found");
        assert_eq!(error_for_status(410).condition, "gone");
        assert_eq!(error_for_status(500).condition, "internal-server-error");
        assert_eq!(error_for_status(501).condition, "feature-not-implemented");
        assert_eq!(error_for_status(503).condition, "remote-server-timeout");
        assert_eq!(error_for_status(503).kind, ErrorType::Wait);
    }
}
