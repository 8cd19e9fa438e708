//! roster_http options: Prosody's `http_roster_url`, plus Jackdaw's.

use serde::Deserialize;

pub const OPTIONS: &[&str] = &[
    "http_roster_url",
    "http_roster_timeout",
    "http_roster_insecure",
    "http_roster_required",
    "http_roster_admin_secret",
    "http_roster_max_concurrent_refreshes",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// `%s` is replaced by the URL-encoded username.
    pub http_roster_url: Option<String>,
    /// Seconds for connect and for each whole request.
    #[serde(default = "default_timeout")]
    pub http_roster_timeout: f64,
    #[serde(default)]
    pub http_roster_insecure: bool,
    /// Refuse the session when the roster cannot be fetched at login. Off
    /// by default: the user gets an empty roster, fetched again with backoff.
    #[serde(default)]
    pub http_roster_required: bool,
    /// Bearer token the web app must send to the refresh endpoint. Without
    /// it the endpoint only answers requests from loopback addresses.
    #[serde(default)]
    pub http_roster_admin_secret: Option<String>,
    /// Rosters fetched at once while serving one refresh request.
    #[serde(default = "default_concurrency")]
    pub http_roster_max_concurrent_refreshes: usize,
}

fn default_timeout() -> f64 {
    5.0
}
fn default_concurrency() -> usize {
    16
}

impl Config {
    pub fn validate(&self, host: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.http_roster_url {
            None => problems.push(format!("host {host}: http_roster_admin needs http_roster_url")),
            Some(url) => {
                let url = url.replace("%s", "user");
                if !jackdaw_core::http_client::is_http_url(&url) {
                    problems.push(format!(
                        "host {host}: http_roster_url {url:?} is not an http(s) URL"
                    ));
                }
            }
        }
        if !(self.http_roster_timeout > 0.0 && self.http_roster_timeout <= 300.0) {
            problems.push(format!(
                "host {host}: http_roster_timeout must be between 0 and 300 seconds"
            ));
        }
        if self.http_roster_max_concurrent_refreshes == 0 {
            problems.push(format!(
                "host {host}: http_roster_max_concurrent_refreshes must be at least 1"
            ));
        }
        if self
            .http_roster_admin_secret
            .as_deref()
            .is_some_and(str::is_empty)
        {
            problems.push(format!("host {host}: http_roster_admin_secret must not be empty"));
        }
        problems
    }
}
