//! `authentication = "http"`: users checked by the operator's web app, with
//! the protocol of Prosody's mod_auth_http (seed: mod_auth_http.md) so a web
//! app written for it works unchanged:
//! `GET {url}/check_password?user=&server=&pass=` and `GET {url}/user_exists`
//! answer `true`/`false`; `POST {url}/register` (201, 409 exists),
//! `POST {url}/set_password` and `POST {url}/remove_user` (200/201/204);
//! 501 means "not supported".
//!
//! Beyond the seed: one pooled client per host with timeouts
//! (`http_auth_timeout`), fail closed with `temporary-auth-failure` (never
//! `not-authorized`) when the web app is down or answers nonsense, a warning
//! once per outage, an optional positive cache keyed on a salted hash
//! (`http_auth_cache_ttl`), a bound on requests in flight
//! (`http_auth_max_inflight`), an optional POST mode for check_password
//! (`http_auth_check_method`), metrics, and passwords kept out of every log
//! line (the GET URL carries one: errors are logged without their URL).

mod cache;
pub mod config;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jackdaw_core::auth::{AuthError, Authenticator};
use jackdaw_core::config::HostConfig;
use jackdaw_core::http_client::{self, HttpClientOptions};
use jackdaw_core::metrics::Metrics;
use jackdaw_core::storage::{ScramCredentials, ScramHash};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use cache::PasswordCache;
pub use config::{CheckMethod, Config, OPTIONS};

type Labels = Vec<(&'static str, String)>;

struct AuthHttpMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
}

/// Shared by every host using auth_http (each request carries a `host`
/// label), registered once.
fn metrics(registry: &Metrics) -> &'static AuthHttpMetrics {
    static METRICS: OnceLock<AuthHttpMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = AuthHttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14))),
        };
        registry.register(
            "auth_http_requests",
            "Requests to the auth_http web app",
            m.requests.clone(),
        );
        registry.register(
            "auth_http_request_duration_seconds",
            "Latency of requests to the auth_http web app",
            m.duration.clone(),
        );
        m
    })
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How one call to the web app went, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Rejected,
    Error,
    Unreachable,
    Timeout,
    NotSupported,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
            Outcome::NotSupported => "not_supported",
        }
    }
}

pub struct HttpAuthenticator {
    host: String,
    client: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
    check_method: CheckMethod,
    timeout: Duration,
    cache: PasswordCache,
    inflight: Semaphore,
    /// True while the web app is failing, so an outage warns once.
    outage: AtomicBool,
    metrics: &'static AuthHttpMetrics,
}

impl HttpAuthenticator {
    pub fn new(host: &HostConfig, registry: &Metrics) -> Result<Self, String> {
        let config: Config = host.module_config()?;
        let problems = config.validate(&host.name);
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let timeout = Duration::from_secs_f64(config.http_auth_timeout);
        let client = http_client::build(&HttpClientOptions {
            timeout,
            insecure: config.http_auth_insecure,
            max_idle_per_host: config.http_auth_max_inflight,
        })
        .map_err(|e| format!("host {}: cannot build the HTTP client: {e}", host.name))?;
        if config.http_auth_insecure {
            warn!(host = %host.name, "http_auth_insecure: TLS certificates of the auth web app are not checked");
        }
        let credentials = config
            .http_auth_credentials
            .as_deref()
            .and_then(|c| c.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
        Ok(Self {
            host: host.name.clone(),
            client,
            base: config.base_url(&host.name),
            credentials,
            check_method: config.http_auth_check_method,
            timeout,
            cache: PasswordCache::new(Duration::from_secs(config.http_auth_cache_ttl)),
            inflight: Semaphore::new(config.http_auth_max_inflight),
            outage: AtomicBool::new(false),
            metrics: metrics(registry),
        })
    }

    fn record(&self, method: &'static str, outcome: Outcome, started: Instant) {
        let labels = vec![
            ("host", self.host.clone()),
            ("method", method.to_string()),
            ("outcome", outcome.label().to_string()),
        ];
        self.metrics.requests.get_or_create(&labels).inc();
        let labels = vec![("host", self.host.clone()), ("method", method.to_string())];
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// The web app failed: warn on the first failure of an outage only.
    fn backend_down(&self, method: &'static str, detail: &str) -> AuthError {
        if !self.outage.swap(true, Ordering::Relaxed) {
            warn!(host = %self.host, method, "auth web app failing; logins get temporary-auth-failure until it recovers: {detail}");
        } else {
            debug!(host = %self.host, method, "auth web app still failing: {detail}");
        }
        AuthError::Unavailable(detail.to_string())
    }

    fn backend_up(&self) {
        if self.outage.swap(false, Ordering::Relaxed) {
            info!(host = %self.host, "auth web app answering again");
        }
    }

    /// One call: `params` go in the query (GET) or a form (POST). Returns
    /// the status and body; transport failures are `Unavailable`.
    async fn call(
        &self,
        method: &'static str,
        post: bool,
        params: &[(&str, &str)],
    ) -> Result<(u16, String, Instant), AuthError> {
        let started = Instant::now();
        // One time budget for waiting for a slot and for the request, so a
        // login never waits longer than http_auth_timeout in all.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.inflight.acquire()).await else {
            self.record(method, Outcome::Timeout, started);
            return Err(self.backend_down(method, "too many requests in flight to the web app"));
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining < Duration::from_millis(50) {
            self.record(method, Outcome::Timeout, started);
            return Err(self.backend_down(method, "too many requests in flight to the web app"));
        }
        let url = format!("{}/{method}", self.base);
        let mut request = if post {
            self.client.post(&url).form(params)
        } else {
            self.client.get(&url).query(params)
        }
        .timeout(remaining);
        if let Some((user, pass)) = &self.credentials {
            request = request.basic_auth(user, Some(pass));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let outcome = if e.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::Unreachable
                };
                self.record(method, outcome, started);
                // The URL may carry the password: never log it.
                return Err(self.backend_down(method, &error_chain(e.without_url())));
            }
        };
        let status = response.status().as_u16();
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => {
                let outcome = if e.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::Error
                };
                self.record(method, outcome, started);
                return Err(self.backend_down(method, &error_chain(e.without_url())));
            }
        };
        Ok((status, body, started))
    }

    /// check_password and user_exists: 200 with `true` or `false`.
    async fn ask_boolean(
        &self,
        method: &'static str,
        post: bool,
        params: &[(&str, &str)],
    ) -> Result<bool, AuthError> {
        let (status, body, started) = self.call(method, post, params).await?;
        match (status, body.trim()) {
            (200, "true") => {
                self.record(method, Outcome::Ok, started);
                self.backend_up();
                Ok(true)
            }
            (200, "false") => {
                self.record(method, Outcome::Rejected, started);
                self.backend_up();
                Ok(false)
            }
            (401 | 403, _) => {
                self.record(method, Outcome::Error, started);
                Err(self.backend_down(
                    method,
                    &format!("HTTP {status}: the web app refused Jackdaw's credentials; check http_auth_credentials"),
                ))
            }
            (200, _) => {
                self.record(method, Outcome::Error, started);
                Err(self.backend_down(method, "HTTP 200 with a body other than true or false"))
            }
            _ => {
                self.record(method, Outcome::Error, started);
                Err(self.backend_down(method, &format!("unexpected HTTP status {status}")))
            }
        }
    }

    /// register, set_password, remove_user.
    async fn change(
        &self,
        method: &'static str,
        params: &[(&str, &str)],
        success: &[u16],
    ) -> Result<(), AuthError> {
        let (status, _, started) = self.call(method, true, params).await?;
        let result = match status {
            s if success.contains(&s) => Ok(Outcome::Ok),
            409 if method == "register" => Err((Outcome::Rejected, AuthError::Conflict)),
            501 => Err((Outcome::NotSupported, AuthError::NotSupported)),
            401 | 403 => Err((
                Outcome::Error,
                self.backend_down(method, &format!("HTTP {status}: check http_auth_credentials")),
            )),
            s => Err((
                Outcome::Error,
                self.backend_down(method, &format!("unexpected HTTP status {s}")),
            )),
        };
        match result {
            Ok(outcome) => {
                self.record(method, outcome, started);
                self.backend_up();
                Ok(())
            }
            Err((outcome, e)) => {
                self.record(method, outcome, started);
                if matches!(outcome, Outcome::Rejected | Outcome::NotSupported) {
                    self.backend_up();
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Authenticator for HttpAuthenticator {
    fn name(&self) -> &'static str {
        "http"
    }

    /// The web app holds the passwords: only PLAIN (over TLS) can work.
    fn supports_scram(&self) -> bool {
        false
    }

    async fn check_password(&self, host: &str, user: &str, password: &str) -> Result<bool, AuthError> {
        if self.cache.check(host, user, password) {
            return Ok(true);
        }
        let params = [("user", user), ("server", host), ("pass", password)];
        let ok = self
            .ask_boolean("check_password", self.check_method == CheckMethod::Post, &params)
            .await?;
        if ok {
            self.cache.remember(host, user, password);
        }
        Ok(ok)
    }

    async fn scram_credentials(
        &self,
        _: &str,
        _: &str,
        _: ScramHash,
    ) -> Result<Option<ScramCredentials>, AuthError> {
        Err(AuthError::NotSupported)
    }

    async fn user_exists(&self, host: &str, user: &str) -> Result<bool, AuthError> {
        self.ask_boolean("user_exists", false, &[("user", user), ("server", host)])
            .await
    }

    async fn create_user(&self, host: &str, user: &str, password: &str) -> Result<(), AuthError> {
        self.change(
            "register",
            &[("user", user), ("server", host), ("pass", password)],
            &[200, 201, 204],
        )
        .await
    }

    async fn set_password(&self, host: &str, user: &str, password: &str) -> Result<(), AuthError> {
        self.cache.forget(host, user);
        self.change(
            "set_password",
            &[("user", user), ("server", host), ("pass", password)],
            &[200, 201, 204],
        )
        .await
    }

    async fn delete_user(&self, host: &str, user: &str) -> Result<(), AuthError> {
        self.cache.forget(host, user);
        self.change(
            "remove_user",
            &[("user", user), ("server", host)],
            &[200, 201, 204],
        )
        .await
    }

    async fn list_users(&self, _: &str) -> Result<Vec<String>, AuthError> {
        Err(AuthError::NotSupported)
    }

    fn forget(&self, host: &str, user: &str) {
        self.cache.forget(host, user);
    }
}
