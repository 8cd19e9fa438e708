//! The HTML side: templates (built in, each replaceable by a file of the
//! same name in `oauth2_template_path`), the security headers every page
//! carries, and the browser's login cookie.
//!
//! The cookie holds a sealed `{nonce, sub, exp}`: the nonce binds the CSRF
//! token of every form to this browser, `sub` is the signed-in user. It is
//! HttpOnly and SameSite=Lax (the first visit arrives by a cross-site
//! redirect from the client), Secure over https.

use std::path::Path;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::Keys;

pub const COOKIE: &str = "jackdaw_oauth2";
/// How long a web sign-in lasts.
pub const LOGIN_TTL: i64 = 3600;
/// How long an anonymous cookie (CSRF nonce only) lasts.
const ANONYMOUS_TTL: i64 = 86_400;
const SEAL_PURPOSE: &str = "web-session";

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("consent.html", include_str!("templates/consent.html")),
    ("device.html", include_str!("templates/device.html")),
    ("oob.html", include_str!("templates/oob.html")),
    ("done.html", include_str!("templates/done.html")),
    ("error.html", include_str!("templates/error.html")),
    ("grants.html", include_str!("templates/grants.html")),
];
pub const STYLESHEET: &str = include_str!("templates/style.css");

pub struct Pages {
    env: Environment<'static>,
    stylesheet: String,
}

impl Pages {
    /// The built-in templates, with the operator's where present.
    pub fn load(override_dir: Option<&Path>) -> Result<Pages, String> {
        let mut env = Environment::new();
        for (name, builtin) in TEMPLATES {
            let source = match override_dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => {
                    tracing::info!(template = %path.display(), "using a custom OAuth template");
                    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => (*builtin).to_string(),
            };
            env.add_template_owned(*name, source)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let stylesheet = override_dir
            .map(|d| d.join("style.css"))
            .filter(|p| p.is_file())
            .map(std::fs::read_to_string)
            .transpose()
            .map_err(|e| format!("style.css: {e}"))?
            .unwrap_or_else(|| STYLESHEET.to_string());
        Ok(Pages { env, stylesheet })
    }

    pub fn stylesheet(&self) -> &str {
        &self.stylesheet
    }

    /// Renders a page with the headers every page needs.
    pub fn render(&self, name: &str, context: Value, status: StatusCode, policy: &str) -> Response {
        let body = match self.env.get_template(name).and_then(|t| t.render(&context)) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(template = name, error = %e, "cannot render an OAuth page");
                return (StatusCode::INTERNAL_SERVER_ERROR, "cannot render this page\n").into_response();
            }
        };
        let mut response = (status, body).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        security_headers(h, policy);
        response
    }
}

/// CSP (the operator's policy, with framing forbidden unless the policy
/// says otherwise), no framing, no caching, no referrer (URLs carry codes).
pub fn security_headers(h: &mut HeaderMap, policy: &str) {
    let csp = if policy.contains("frame-ancestors") {
        policy.to_string()
    } else {
        format!("{}; frame-ancestors 'none'", policy.trim_end_matches([';', ' ']))
    };
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The browser's state, from its cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebSession {
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default)]
    pub auth_time: i64,
    pub exp: i64,
}

impl WebSession {
    pub fn anonymous(now: i64) -> WebSession {
        WebSession {
            nonce: jackdaw_core::stanza::random_hex(16),
            sub: None,
            auth_time: 0,
            exp: now + ANONYMOUS_TTL,
        }
    }

    /// A fresh session for a user who just signed in (a new nonce, so a
    /// CSRF token seen before the login is worthless after it).
    pub fn signed_in(user: &str, now: i64) -> WebSession {
        WebSession {
            nonce: jackdaw_core::stanza::random_hex(16),
            sub: Some(user.to_string()),
            auth_time: now,
            exp: now + LOGIN_TTL,
        }
    }

    /// The session in the request's cookie, if it is ours and current.
    pub fn from_headers(keys: &Keys, host: &str, headers: &HeaderMap) -> Option<WebSession> {
        let value = cookie(headers, COOKIE)?;
        keys.open(host, SEAL_PURPOSE, value)
    }

    pub fn set_cookie(&self, keys: &Keys, host: &str, secure: bool, path: &str) -> HeaderValue {
        let sealed = keys.seal(host, SEAL_PURPOSE, self);
        let max_age = (self.exp - super::unix_now()).max(0);
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={sealed}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .expect("a JWT and these attributes are valid header text")
    }
}

/// A cookie's value by name.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_templates_render_and_escape() {
        let pages = Pages::load(None).unwrap();
        let ctx = json!({"site_name": "S", "base": "", "client_name": "<script>x</script>", "csrf": "c", "next": "/n", "error": "bad"});
        let r = pages.render("login.html", ctx, StatusCode::UNAUTHORIZED, "default-src 'self'");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert_eq!(csp, "default-src 'self'; frame-ancestors 'none'");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        for name in [
            "consent.html",
            "device.html",
            "oob.html",
            "done.html",
            "error.html",
            "grants.html",
        ] {
            let r = pages.render(
                name,
                json!({"site_name": "S", "scopes": [], "grants": []}),
                StatusCode::OK,
                "x",
            );
            assert_eq!(r.status(), StatusCode::OK, "{name}");
        }
    }

    #[test]
    fn escaping_in_rendered_text() {
        let pages = Pages::load(None).unwrap();
        let html = pages
            .env
            .get_template("login.html")
            .unwrap()
            .render(json!({"site_name": "S", "client_name": "<b>x</b>"}))
            .unwrap();
        assert!(
            html.contains("&lt;b&gt;x&lt;&#x2f;b&gt;") || html.contains("&lt;b&gt;x&lt;/b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script"), "no inline script");
    }

    #[test]
    fn operator_templates_replace_builtin_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("login.html"), "custom {{ site_name }}").unwrap();
        let pages = Pages::load(Some(dir.path())).unwrap();
        let html = pages
            .env
            .get_template("login.html")
            .unwrap()
            .render(json!({"site_name": "S"}))
            .unwrap();
        assert_eq!(html, "custom S");
        assert!(
            Pages::load(Some(dir.path()))
                .unwrap()
                .stylesheet()
                .contains("Jackdaw")
        );
        std::fs::write(dir.path().join("error.html"), "{% broken").unwrap();
        assert!(Pages::load(Some(dir.path())).is_err());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; jackdaw_oauth2=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
