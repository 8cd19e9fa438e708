//! auth_http options, named as in Prosody's mod_auth_http plus Jackdaw's
//! additions (timeout, cache, in-flight limit, check method, insecure).

use serde::Deserialize;

pub const OPTIONS: &[&str] = &[
    "http_auth_url",
    "http_auth_credentials",
    "http_auth_timeout",
    "http_auth_insecure",
    "http_auth_cache_ttl",
    "http_auth_max_inflight",
    "http_auth_check_method",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CheckMethod {
    #[serde(rename = "GET")]
    Get,
    /// Keeps passwords out of the web app's access logs.
    #[serde(rename = "POST")]
    Post,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Base URL; `$host` is replaced by the virtual host's name.
    pub http_auth_url: Option<String>,
    /// `user:pass`, sent as HTTP Basic on every request.
    #[serde(default)]
    pub http_auth_credentials: Option<String>,
    /// Seconds for connect and for the whole request.
    #[serde(default = "default_timeout")]
    pub http_auth_timeout: f64,
    /// Skip TLS verification of the web app (development only).
    #[serde(default)]
    pub http_auth_insecure: bool,
    /// Seconds a successful password check is remembered; 0 = never.
    #[serde(default)]
    pub http_auth_cache_ttl: u64,
    /// Requests in flight to the web app at once; more wait.
    #[serde(default = "default_max_inflight")]
    pub http_auth_max_inflight: usize,
    #[serde(default = "default_check_method")]
    pub http_auth_check_method: CheckMethod,
}

fn default_timeout() -> f64 {
    5.0
}
fn default_max_inflight() -> usize {
    64
}
fn default_check_method() -> CheckMethod {
    CheckMethod::Get
}

impl Config {
    /// Every problem, for the config check at start-up.
    pub fn validate(&self, host: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.http_auth_url {
            None => problems.push(format!(
                "host {host}: authentication = \"http\" needs http_auth_url"
            )),
            Some(url) => {
                let url = url.replace("$host", host);
                if !jackdaw_core::http_client::is_http_url(&url) {
                    problems.push(format!(
                        "host {host}: http_auth_url {url:?} is not an http(s) URL"
                    ));
                }
            }
        }
        if let Some(c) = &self.http_auth_credentials
            && !c.contains(':')
        {
            problems.push(format!(
                "host {host}: http_auth_credentials must be \"user:password\""
            ));
        }
        if !(self.http_auth_timeout > 0.0 && self.http_auth_timeout <= 300.0) {
            problems.push(format!(
                "host {host}: http_auth_timeout must be between 0 and 300 seconds"
            ));
        }
        if self.http_auth_max_inflight == 0 {
            problems.push(format!("host {host}: http_auth_max_inflight must be at least 1"));
        }
        problems
    }

    /// The base URL for `host`, without a trailing slash.
    pub fn base_url(&self, host: &str) -> String {
        self.http_auth_url
            .clone()
            .unwrap_or_default()
            .replace("$host", host)
            .trim_end_matches('/')
            .to_string()
    }
}
