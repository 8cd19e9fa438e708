//! Which web origins may use the WebSocket and BOSH endpoints
//! (`cross_domain_websocket`, `cross_domain_bosh`, `http_cors_override`).
//! Default: only pages from the server's own origin. Browsers always send
//! `Origin` on WebSocket upgrades and cross-origin POSTs; clients that are
//! not browsers send none and are not concerned.

use axum::http::{HeaderMap, HeaderValue, header};
use jackdaw_core::config::{CorsOverride, CrossDomain, GlobalConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct OriginPolicy {
    allowed: Allowed,
    /// Send Access-Control-Allow-Credentials (only with `credentials = true`).
    credentials: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Allowed {
    SameOrigin,
    Any,
    Listed(Vec<String>),
}

impl OriginPolicy {
    /// The policy of endpoint `name` ("bosh" or "websocket").
    pub fn for_endpoint(g: &GlobalConfig, name: &str) -> Self {
        let cross_domain = match name {
            "bosh" => &g.cross_domain_bosh,
            _ => &g.cross_domain_websocket,
        };
        let mut policy = OriginPolicy {
            allowed: match cross_domain {
                None | Some(CrossDomain::Any(false)) => Allowed::SameOrigin,
                Some(CrossDomain::Any(true)) => Allowed::Any,
                Some(CrossDomain::Origins(list)) => Allowed::Listed(normalized(list)),
            },
            credentials: false,
        };
        if let Some(CorsOverride {
            enabled,
            origins,
            credentials,
        }) = g.http_cors_override.get(name)
        {
            policy.allowed = match (enabled, origins) {
                (Some(false), _) => Allowed::SameOrigin,
                (_, Some(list)) => Allowed::Listed(normalized(list)),
                (Some(true), None) => Allowed::Any,
                (None, None) => policy.allowed,
            };
            policy.credentials = *credentials;
        }
        policy
    }

    /// Whether a request with these headers may proceed: no `Origin`, the
    /// server's own origin (the `Host` it was sent to, or
    /// `http_external_url`), or an allowed one.
    pub fn permits(&self, headers: &HeaderMap, external_url: Option<&str>) -> bool {
        let Some(origin) = origin_of(headers) else {
            return true;
        };
        if same_origin(&origin, headers, external_url) {
            return true;
        }
        match &self.allowed {
            Allowed::SameOrigin => false,
            Allowed::Any => true,
            Allowed::Listed(list) => list.contains(&origin),
        }
    }

    /// CORS response headers for an allowed cross-origin request; none for
    /// same-origin or origin-less ones. The origin is echoed (never `*`
    /// with credentials) and `Vary: Origin` keeps caches apart.
    pub fn cors_headers(
        &self,
        headers: &HeaderMap,
        preflight: bool,
    ) -> Vec<(header::HeaderName, HeaderValue)> {
        let Some(origin) = headers.get(header::ORIGIN).cloned() else {
            return Vec::new();
        };
        let mut out = vec![
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
            (header::VARY, HeaderValue::from_static("Origin")),
        ];
        if self.credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if preflight {
            out.push((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            ));
            out.push((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type"),
            ));
            out.push((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("7200")));
        }
        out
    }
}

fn normalized(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect()
}

fn origin_of(headers: &HeaderMap) -> Option<String> {
    headers.get(header::ORIGIN).map(|o| {
        o.to_str()
            .unwrap_or("null")
            .trim_end_matches('/')
            .to_ascii_lowercase()
    })
}

/// `scheme://host[:port]` of the origin against the request's `Host`, or
/// against `http_external_url`.
fn same_origin(origin: &str, headers: &HeaderMap, external_url: Option<&str>) -> bool {
    let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    if host.as_deref().is_some_and(|h| !h.is_empty() && h == authority) {
        return true;
    }
    external_url.is_some_and(|url| {
        let url = url.to_ascii_lowercase();
        let base = match url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
            None => url,
        };
        base == origin
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> GlobalConfig {
        toml::from_str(toml).unwrap()
    }

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn default_allows_only_own_origin_and_non_browsers() {
        let p = OriginPolicy::for_endpoint(&config(""), "websocket");
        assert!(p.permits(&request(None, "chat.example:5280"), None));
        assert!(p.permits(
            &request(Some("http://chat.example:5280"), "chat.example:5280"),
            None
        ));
        assert!(!p.permits(&request(Some("https://evil.example"), "chat.example:5280"), None));
        assert!(!p.permits(&request(Some("null"), "chat.example:5280"), None));
        assert!(p.permits(
            &request(Some("https://chat.example"), "127.0.0.1:5280"),
            Some("https://chat.example/")
        ));
    }

    #[test]
    fn cross_domain_lists_and_overrides() {
        let listed =
            OriginPolicy::for_endpoint(&config("cross_domain_bosh = [\"https://app.example/\"]"), "bosh");
        assert!(listed.permits(&request(Some("https://APP.example"), "x"), None));
        assert!(!listed.permits(&request(Some("https://other.example"), "x"), None));
        let any = OriginPolicy::for_endpoint(&config("cross_domain_websocket = true"), "websocket");
        assert!(any.permits(&request(Some("https://other.example"), "x"), None));
        let off = OriginPolicy::for_endpoint(
            &config("cross_domain_bosh = true\n[http_cors_override.bosh]\nenabled = false"),
            "bosh",
        );
        assert!(!off.permits(&request(Some("https://other.example"), "x"), None));
    }

    #[test]
    fn credentials_only_when_asked() {
        let h = request(Some("https://app.example"), "x");
        let plain = OriginPolicy::for_endpoint(&config("cross_domain_bosh = true"), "bosh");
        assert!(
            !plain
                .cors_headers(&h, true)
                .iter()
                .any(|(n, _)| n == header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
        let with = OriginPolicy::for_endpoint(
            &config("[http_cors_override.bosh]\norigins = [\"https://app.example\"]\ncredentials = true"),
            "bosh",
        );
        assert!(with.permits(&h, None));
        assert!(
            with.cors_headers(&h, false)
                .iter()
                .any(|(n, _)| n == header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
    }
}
