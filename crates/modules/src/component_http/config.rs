//! component_http options: the seed's names (`component_post_url`,
//! `component_post_stanzas`, also read as `post_stanza_types` like the
//! reference code) plus Jackdaw's.

use std::collections::BTreeMap;

use serde::Deserialize;

pub const OPTIONS: &[&str] = &[
    "component_post_url",
    "component_post_stanzas",
    "post_stanza_types",
    "component_post_timeout",
    "component_post_secret",
    "component_post_headers",
    "component_post_token",
    "component_post_max_inflight",
    "component_post_insecure",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub component_post_url: Option<String>,
    /// Stanza kinds POSTed to the web app; default `["message"]`.
    #[serde(default)]
    pub component_post_stanzas: Option<Vec<String>>,
    #[serde(default)]
    pub post_stanza_types: Option<Vec<String>>,
    /// Seconds for connect and for each whole request.
    #[serde(default = "default_timeout")]
    pub component_post_timeout: f64,
    /// Signs each POST (X-Jackdaw-Timestamp, X-Jackdaw-Signature).
    #[serde(default)]
    pub component_post_secret: Option<String>,
    /// Static headers on every POST (e.g. Authorization).
    #[serde(default)]
    pub component_post_headers: BTreeMap<String, String>,
    /// Bearer token for `POST /component/{domain}/send`; the API is off
    /// without it.
    #[serde(default)]
    pub component_post_token: Option<String>,
    /// POSTs in flight at once for this component.
    #[serde(default = "default_inflight")]
    pub component_post_max_inflight: usize,
    #[serde(default)]
    pub component_post_insecure: bool,
}

fn default_timeout() -> f64 {
    5.0
}
fn default_inflight() -> usize {
    32
}

impl Config {
    pub fn kinds(&self) -> Vec<String> {
        self.component_post_stanzas
            .clone()
            .or_else(|| self.post_stanza_types.clone())
            .unwrap_or_else(|| vec!["message".to_string()])
    }

    pub fn validate(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.component_post_url {
            None => problems.push(format!(
                "component {name}: component_http needs component_post_url"
            )),
            Some(url) => {
                if !jackdaw_core::http_client::is_http_url(url) {
                    problems.push(format!(
                        "component {name}: component_post_url {url:?} is not an http(s) URL"
                    ));
                }
            }
        }
        for k in self.kinds() {
            if !matches!(k.as_str(), "message" | "presence" | "iq") {
                problems.push(format!(
                    "component {name}: component_post_stanzas: {k:?} is not message, presence or iq"
                ));
            }
        }
        if !(self.component_post_timeout > 0.0 && self.component_post_timeout <= 300.0) {
            problems.push(format!(
                "component {name}: component_post_timeout must be between 0 and 300 seconds"
            ));
        }
        if self.component_post_max_inflight == 0 {
            problems.push(format!(
                "component {name}: component_post_max_inflight must be at least 1"
            ));
        }
        for (h, v) in &self.component_post_headers {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                problems.push(format!(
                    "component {name}: component_post_headers: invalid header {h:?}"
                ));
            }
        }
        problems
    }
}
