//! Outbound HTTP to the operator's web app: pooled keep-alive clients
//! (HTTP/1.1 and HTTP/2) with connect and total timeouts, built the same way
//! for every module that calls out.

use std::time::Duration;

/// How a module wants its client.
#[derive(Debug, Clone)]
pub struct HttpClientOptions {
    /// Connect and total time allowed per request.
    pub timeout: Duration,
    /// Skip TLS certificate verification (development only).
    pub insecure: bool,
    /// Most idle pooled connections kept per web app host.
    pub max_idle_per_host: usize,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            insecure: false,
            max_idle_per_host: 32,
        }
    }
}

pub fn build(options: &HttpClientOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("Jackdaw/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(options.timeout)
        .timeout(options.timeout)
        .pool_max_idle_per_host(options.max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .tls_danger_accept_invalid_certs(options.insecure)
        .build()
}

/// True for an absolute http or https URL (what every `*_url` option takes).
pub fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme name
/// is case-insensitive (RFC 7235 §2.1).
pub fn bearer_token(value: Option<&str>) -> Option<&str> {
    let (scheme, token) = value?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }
}
