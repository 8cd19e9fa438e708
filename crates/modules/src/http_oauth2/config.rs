//! http_oauth2 options: Prosody's mod_http_oauth2 names and defaults.

use serde::Deserialize;

pub const OPTIONS: &[&str] = &[
    "oauth2_registration_key",
    "oauth2_registration_algorithm",
    "oauth2_registration_ttl",
    "oauth2_access_token_ttl",
    "oauth2_refresh_token_ttl",
    "allowed_oauth2_grant_types",
    "allowed_oauth2_response_types",
    "oauth2_require_code_challenge",
    "allowed_oauth2_code_challenge_methods",
    "oauth2_expect_username_jid",
    "oauth2_terms_url",
    "oauth2_policy_url",
    "site_name",
    "oauth2_template_path",
    "oauth2_security_policy",
];

/// The grant type names of the `allowed_oauth2_grant_types` option, and
/// the URN RFC 8628 gives the device grant on the wire.
pub const DEVICE_CODE_URN: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Clone, Deserialize)]
pub struct Config {
    /// Without it, dynamic registration is off (and so is every client).
    pub oauth2_registration_key: Option<String>,
    #[serde(default = "default_registration_algorithm")]
    pub oauth2_registration_algorithm: String,
    /// Seconds a registration stays valid; forever when unset.
    pub oauth2_registration_ttl: Option<u64>,
    #[serde(default = "default_access_ttl")]
    pub oauth2_access_token_ttl: u64,
    #[serde(default = "default_refresh_ttl")]
    pub oauth2_refresh_token_ttl: u64,
    #[serde(default = "default_grant_types")]
    pub allowed_oauth2_grant_types: Vec<String>,
    #[serde(default = "default_response_types")]
    pub allowed_oauth2_response_types: Vec<String>,
    #[serde(default = "yes")]
    pub oauth2_require_code_challenge: bool,
    #[serde(default = "default_challenge_methods")]
    pub allowed_oauth2_code_challenge_methods: Vec<String>,
    #[serde(default)]
    pub oauth2_expect_username_jid: bool,
    pub oauth2_terms_url: Option<String>,
    pub oauth2_policy_url: Option<String>,
    pub site_name: Option<String>,
    pub oauth2_template_path: Option<std::path::PathBuf>,
    #[serde(default = "default_security_policy")]
    pub oauth2_security_policy: String,
    /// Inherited from the global options: who gets the admin role scope.
    #[serde(default)]
    pub admins: Vec<String>,
}

// The registration key is a secret: never printed.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "oauth2_registration_key",
                &self.oauth2_registration_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allowed_oauth2_grant_types", &self.allowed_oauth2_grant_types)
            .field(
                "allowed_oauth2_response_types",
                &self.allowed_oauth2_response_types,
            )
            .finish_non_exhaustive()
    }
}

fn default_registration_algorithm() -> String {
    "HS256".into()
}
fn default_access_ttl() -> u64 {
    3600
}
fn default_refresh_ttl() -> u64 {
    604_800
}
fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into(), "device_code".into()]
}
fn default_response_types() -> Vec<String> {
    vec!["code".into()]
}
fn default_challenge_methods() -> Vec<String> {
    vec!["S256".into()]
}
fn default_security_policy() -> String {
    "default-src 'self'".into()
}
fn yes() -> bool {
    true
}

impl Config {
    pub fn validate(&self, host: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bad = |what: String| problems.push(format!("host {host}: {what}"));
        if !matches!(
            self.oauth2_registration_algorithm.as_str(),
            "HS256" | "HS384" | "HS512"
        ) {
            bad(format!(
                "oauth2_registration_algorithm {:?}: use HS256, HS384 or HS512",
                self.oauth2_registration_algorithm
            ));
        }
        if self
            .oauth2_registration_key
            .as_deref()
            .is_some_and(|k| k.len() < 16)
        {
            bad(
                "oauth2_registration_key is too short (at least 16 characters; 32 random bytes are best)"
                    .into(),
            );
        }
        for g in &self.allowed_oauth2_grant_types {
            if !matches!(
                g.as_str(),
                "authorization_code" | "device_code" | "password" | "refresh_token"
            ) {
                bad(format!(
                    "allowed_oauth2_grant_types: unknown grant type {g:?} (authorization_code, device_code, password)"
                ));
            }
        }
        for r in &self.allowed_oauth2_response_types {
            if !matches!(r.as_str(), "code" | "token") {
                bad(format!(
                    "allowed_oauth2_response_types: unknown response type {r:?} (code, token)"
                ));
            }
        }
        for m in &self.allowed_oauth2_code_challenge_methods {
            if !matches!(m.as_str(), "S256" | "plain") {
                bad(format!(
                    "allowed_oauth2_code_challenge_methods: unknown method {m:?} (S256, plain)"
                ));
            }
        }
        if self.oauth2_access_token_ttl == 0 || self.oauth2_refresh_token_ttl == 0 {
            bad("oauth2_access_token_ttl and oauth2_refresh_token_ttl must be positive".into());
        }
        if let Some(dir) = self.oauth2_template_path.as_ref().filter(|d| !d.is_dir()) {
            bad(format!(
                "oauth2_template_path {} is not a directory",
                dir.display()
            ));
        }
        problems
    }

    pub fn allows_grant(&self, name: &str) -> bool {
        self.allowed_oauth2_grant_types.iter().any(|g| g == name)
    }

    pub fn allows_response(&self, name: &str) -> bool {
        self.allowed_oauth2_response_types.iter().any(|r| r == name)
    }

    pub fn allows_challenge_method(&self, name: &str) -> bool {
        self.allowed_oauth2_code_challenge_methods
            .iter()
            .any(|m| m == name)
    }

    /// Grant types as they appear in metadata (the device grant by URN),
    /// with refresh_token, which every code or device grant may use.
    pub fn grant_types_supported(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .allowed_oauth2_grant_types
            .iter()
            .filter(|g| *g != "refresh_token")
            .map(|g| {
                if g == "device_code" {
                    DEVICE_CODE_URN.into()
                } else {
                    g.clone()
                }
            })
            .collect();
        if self.allows_response("token") {
            out.push("implicit".into());
        }
        out.push("refresh_token".into());
        out
    }
}
