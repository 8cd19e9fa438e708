//! Stateless dynamic client registration (RFC 7591, OpenID Connect
//! Registration), as in Prosody:
//!
//! ```text
//! per_host_key  := HMAC(oauth2_registration_key, hostname)
//! client_id     := JWT { client metadata, nonce } signed with per_host_key
//! client_secret := HMAC(per_host_key, client_id)
//! ```
//!
//! Everything needed to check a client is inside its client_id, so an
//! unauthenticated registration writes nothing; the nonce keeps two equal
//! registrations from getting the same secret.

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use url::Url;

use super::config::Config;

pub const OOB_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

/// The metadata a client registered with, as carried in its client_id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientMetadata {
    pub client_name: String,
    pub client_uri: String,
    pub redirect_uris: Vec<String>,
    pub application_type: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    /// OpenID Connect Registration: how id_tokens for this client are
    /// signed (ES256 unless it asks for RS256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
}

impl ClientMetadata {
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }

    pub fn allows_grant(&self, grant_type: &str) -> bool {
        // Every grant that has a refresh token may use it.
        grant_type == "refresh_token" || self.grant_types.iter().any(|g| g == grant_type)
    }

    pub fn allows_response(&self, response_type: &str) -> bool {
        self.response_types.iter().any(|r| r == response_type)
    }

    /// The registered redirect URI that `given` names: equal, or for a
    /// loopback one, equal but for the port (RFC 8252 §7.3: a native app
    /// takes whatever port is free when it starts).
    pub fn redirect_uri_for(&self, given: &str) -> Option<&str> {
        self.redirect_uris
            .iter()
            .find(|r| *r == given || same_but_loopback_port(r, given))
            .map(String::as_str)
    }
}

fn same_but_loopback_port(registered: &str, given: &str) -> bool {
    let (Ok(mut a), Ok(mut b)) = (Url::parse(registered), Url::parse(given)) else {
        return false;
    };
    if a.scheme() != "http" || !is_loopback_host(&a) {
        return false;
    }
    let _ = a.set_port(None);
    let _ = b.set_port(None);
    a == b
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The claims of a client_id JWT.
#[derive(Debug, Serialize, Deserialize)]
struct ClientClaims {
    #[serde(flatten)]
    metadata: ClientMetadata,
    /// Random: equal registrations get different ids and secrets.
    nonce: String,
    iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

/// A refused registration: RFC 7591 §3.2.2's `error` and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    pub error: &'static str,
    pub description: String,
}

fn invalid_metadata(description: impl Into<String>) -> RegistrationError {
    RegistrationError {
        error: "invalid_client_metadata",
        description: description.into(),
    }
}

fn invalid_redirect(description: impl Into<String>) -> RegistrationError {
    RegistrationError {
        error: "invalid_redirect_uri",
        description: description.into(),
    }
}

/// A registered client, as answered to the registration request.
pub struct Registered {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub issued_at: i64,
    pub expires_at: Option<i64>,
    pub metadata: ClientMetadata,
}

/// Signs and checks client_ids and secrets for one host.
pub struct Registrar {
    per_host_key: Vec<u8>,
    algorithm: Algorithm,
    ttl: Option<u64>,
}

impl Registrar {
    pub fn new(registration_key: &str, host: &str, algorithm: &str, ttl: Option<u64>) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(registration_key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(host.as_bytes());
        Self {
            per_host_key: mac.finalize().into_bytes().to_vec(),
            algorithm: match algorithm {
                "HS384" => Algorithm::HS384,
                "HS512" => Algorithm::HS512,
                _ => Algorithm::HS256,
            },
            ttl,
        }
    }

    /// Validates a registration request and issues the client's id and
    /// secret.
    pub fn register(
        &self,
        request: &Value,
        config: &Config,
        now: i64,
    ) -> Result<Registered, RegistrationError> {
        let metadata = validate(request, config)?;
        let expires_at = self.ttl.map(|ttl| now + ttl as i64);
        let claims = ClientClaims {
            metadata: metadata.clone(),
            nonce: jackdaw_core::stanza::random_hex(16),
            iat: now,
            exp: expires_at,
        };
        let client_id = jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            &EncodingKey::from_secret(&self.per_host_key),
        )
        .map_err(|e| invalid_metadata(format!("cannot encode the registration: {e}")))?;
        if client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(invalid_metadata("the registration is too large"));
        }
        let client_secret = (!metadata.is_public()).then(|| self.secret_for(&client_id));
        Ok(Registered {
            client_id,
            client_secret,
            issued_at: now,
            expires_at,
            metadata,
        })
    }

    /// The client a client_id names, if we signed it and it has not expired.
    pub fn client(&self, client_id: &str) -> Option<ClientMetadata> {
        let mut validation = Validation::new(self.algorithm);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<ClientClaims>(
            client_id,
            &DecodingKey::from_secret(&self.per_host_key),
            &validation,
        )
        .ok()
        .map(|data| data.claims.metadata)
    }

    /// Checks a client secret without leaking, through timing, how much
    /// of it matched.
    pub fn secret_matches(&self, client_id: &str, secret: &str) -> bool {
        let expected = self.secret_for(client_id);
        bool::from(expected.as_bytes().ct_eq(secret.as_bytes()))
    }

    fn secret_for(&self, client_id: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.per_host_key).expect("HMAC takes keys of any length");
        mac.update(client_id.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn string_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, RegistrationError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_metadata(format!("{name} must be a string"))),
    }
}

fn string_list(obj: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, RegistrationError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid_metadata(format!("{name} must be an array of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid_metadata(format!("{name} must be an array of strings"))),
    }
}

/// Values past these sizes are not metadata anyone needs, and every
/// client_id is held in memory while its flows are pending.
const MAX_FIELD_LEN: usize = 512;
const MAX_LIST_LEN: usize = 16;
const MAX_REDIRECT_URIS: usize = 16;
pub const MAX_CLIENT_ID_LEN: usize = 4096;

/// Applies RFC 7591 and the seed's rules to a registration request.
pub fn validate(request: &Value, config: &Config) -> Result<ClientMetadata, RegistrationError> {
    let obj = request
        .as_object()
        .ok_or_else(|| invalid_metadata("the registration must be a JSON object"))?;
    for (k, v) in obj {
        let texts: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) if items.len() > MAX_LIST_LEN => {
                return Err(invalid_metadata(format!("{k} has too many items")));
            }
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for text in texts {
            if text.len() > MAX_FIELD_LEN {
                return Err(invalid_metadata(format!("{k} is too long")));
            }
            // Shown on pages and written to logs: no control characters.
            if text.chars().any(char::is_control) {
                return Err(invalid_metadata(format!("{k} contains control characters")));
            }
        }
    }
    let client_name = string_field(obj, "client_name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid_metadata("client_name is required"))?;
    let client_uri_text =
        string_field(obj, "client_uri")?.ok_or_else(|| invalid_metadata("client_uri is required"))?;
    let client_uri = Url::parse(&client_uri_text)
        .ok()
        .filter(|u| u.scheme() == "https" && u.host_str().is_some())
        .ok_or_else(|| invalid_metadata("client_uri must be an https:// URL"))?;
    let application_type = string_field(obj, "application_type")?.unwrap_or_else(|| "web".into());
    if !matches!(application_type.as_str(), "web" | "native") {
        return Err(invalid_metadata("application_type must be web or native"));
    }
    let redirect_uris = string_list(obj, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(invalid_redirect("redirect_uris must name at least one URI"));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(invalid_redirect("too many redirect_uris"));
    }
    for uri in &redirect_uris {
        check_redirect_uri(uri, &application_type, &client_uri)?;
    }
    for name in ["tos_uri", "policy_uri", "logo_uri"] {
        if let Some(text) = string_field(obj, name)? {
            let same_origin = Url::parse(&text)
                .is_ok_and(|u| u.scheme() == client_uri.scheme() && u.host_str() == client_uri.host_str());
            if !same_origin {
                return Err(invalid_metadata(format!(
                    "{name} must use the scheme and host of client_uri"
                )));
            }
        }
    }
    let token_endpoint_auth_method =
        string_field(obj, "token_endpoint_auth_method")?.unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        token_endpoint_auth_method.as_str(),
        "client_secret_basic" | "client_secret_post" | "none"
    ) {
        return Err(invalid_metadata(
            "token_endpoint_auth_method must be client_secret_basic, client_secret_post or none",
        ));
    }
    let grant_types = string_list(obj, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".into()]);
    // Unsaid, the response types are those the grant types need (RFC 7591
    // says "code", which a device-only client has no use for).
    let response_types = string_list(obj, "response_types")?.unwrap_or_else(|| {
        let mut implied = Vec::new();
        if grant_types.iter().any(|g| g == "authorization_code") {
            implied.push("code".to_string());
        }
        if grant_types.iter().any(|g| g == "implicit") {
            implied.push("token".to_string());
        }
        implied
    });
    let supported = config.grant_types_supported();
    for g in &grant_types {
        if !supported.contains(g) {
            return Err(invalid_metadata(format!("grant type {g} is not allowed here")));
        }
    }
    for r in &response_types {
        if !config.allows_response(r) {
            return Err(invalid_metadata(format!("response type {r} is not allowed here")));
        }
    }
    // RFC 7591 §2.1: the two lists must agree.
    let has_grant = |g: &str| grant_types.iter().any(|x| x == g);
    let has_response = |r: &str| response_types.iter().any(|x| x == r);
    if has_grant("authorization_code") != has_response("code")
        || has_grant("implicit") != has_response("token")
    {
        return Err(invalid_metadata(
            "grant_types and response_types disagree (authorization_code goes with code, implicit with token)",
        ));
    }
    let contacts = string_list(obj, "contacts")?.unwrap_or_default();
    let id_token_signed_response_alg = string_field(obj, "id_token_signed_response_alg")?;
    if id_token_signed_response_alg
        .as_deref()
        .is_some_and(|alg| !super::keys::ALGORITHMS.contains(&alg))
    {
        return Err(invalid_metadata(
            "id_token_signed_response_alg must be ES256 or RS256",
        ));
    }
    Ok(ClientMetadata {
        client_name,
        client_uri: client_uri_text,
        redirect_uris,
        application_type,
        grant_types,
        response_types,
        token_endpoint_auth_method,
        scope: string_field(obj, "scope")?,
        logo_uri: string_field(obj, "logo_uri")?,
        tos_uri: string_field(obj, "tos_uri")?,
        policy_uri: string_field(obj, "policy_uri")?,
        contacts,
        software_id: string_field(obj, "software_id")?,
        software_version: string_field(obj, "software_version")?,
        id_token_signed_response_alg,
    })
}

fn check_redirect_uri(uri: &str, application_type: &str, client_uri: &Url) -> Result<(), RegistrationError> {
    if uri == OOB_URI {
        return if application_type == "native" {
            Ok(())
        } else {
            Err(invalid_redirect(
                "urn:ietf:wg:oauth:2.0:oob is for native clients",
            ))
        };
    }
    let url = Url::parse(uri).map_err(|_| invalid_redirect(format!("{uri} is not a URI")))?;
    if url.fragment().is_some() {
        return Err(invalid_redirect(format!(
            "{uri}: redirect URIs must not have a fragment"
        )));
    }
    if application_type == "web" {
        if url.scheme() != "https" || url.host_str() != client_uri.host_str() {
            return Err(invalid_redirect(format!(
                "{uri}: a web client's redirect URIs must be https:// on the host of client_uri"
            )));
        }
        return Ok(());
    }
    match url.scheme() {
        "http" if is_loopback_host(&url) => Ok(()),
        "http" | "https" => Err(invalid_redirect(format!(
            "{uri}: a native client redirects to loopback http, a private-use scheme, or {OOB_URI}"
        ))),
        // RFC 8252 §7.1: private-use schemes are reverse domain names;
        // this also keeps out javascript:, data:, file: and the like.
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(invalid_redirect(format!(
            "{uri}: a private-use scheme must be a reverse domain name (com.example.app:/cb)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::DEVICE_CODE_URN;
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        toml::from_str("oauth2_registration_key = 'k0123456789abcdef'").unwrap()
    }

    fn registrar() -> Registrar {
        Registrar::new("k0123456789abcdef", "example.org", "HS256", None)
    }

    #[test]
    fn registers_and_checks_a_web_client() {
        let r = registrar();
        let req = json!({"client_name": "App", "client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb"]});
        let a = r.register(&req, &config(), 10).unwrap();
        let b = r.register(&req, &config(), 10).unwrap();
        assert_ne!(a.client_id, b.client_id, "the nonce differs");
        let secret = a.client_secret.clone().unwrap();
        assert_ne!(Some(secret.clone()), b.client_secret);
        assert!(r.secret_matches(&a.client_id, &secret));
        assert!(!r.secret_matches(&b.client_id, &secret));
        let m = r.client(&a.client_id).unwrap();
        assert_eq!(m.client_name, "App");
        assert_eq!(
            m.redirect_uri_for("https://app.example/cb"),
            Some("https://app.example/cb")
        );
        assert_eq!(m.redirect_uri_for("https://app.example/cb2"), None);
        // Another host's key, or a changed payload, is refused.
        let other = Registrar::new("k0123456789abcdef", "other.org", "HS256", None);
        assert!(other.client(&a.client_id).is_none());
        let mut parts: Vec<String> = a.client_id.split('.').map(str::to_owned).collect();
        let swap = if &parts[1][5..6] == "A" { "B" } else { "A" };
        parts[1].replace_range(5..6, swap);
        assert!(r.client(&parts.join(".")).is_none());
    }

    #[test]
    fn registrations_expire_with_a_ttl() {
        let r = Registrar::new("k0123456789abcdef", "h", "HS256", Some(60));
        let req = json!({"client_name": "App", "client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb"]});
        let now = super::super::unix_now();
        let fresh = r.register(&req, &config(), now).unwrap();
        assert!(r.client(&fresh.client_id).is_some());
        let old = r.register(&req, &config(), now - 120).unwrap();
        assert!(r.client(&old.client_id).is_none());
    }

    #[test]
    fn native_redirect_rules() {
        let ok = json!({"client_name": "N", "client_uri": "https://app.example/", "application_type": "native",
            "redirect_uris": ["http://127.0.0.1:8080/cb", "http://[::1]/cb", "http://localhost:1/x", "org.example.app:/cb", OOB_URI]});
        let m = validate(&ok, &config()).unwrap();
        assert_eq!(
            m.redirect_uri_for("http://127.0.0.1:5555/cb"),
            Some("http://127.0.0.1:8080/cb")
        );
        assert_eq!(m.redirect_uri_for("http://127.0.0.1:5555/other"), None);
        for bad in [
            "http://example.com/cb",
            "https://app.example/cb",
            "javascript:alert(1)",
            "myapp:/cb",
        ] {
            let req = json!({"client_name": "N", "client_uri": "https://app.example/", "application_type": "native", "redirect_uris": [bad]});
            assert_eq!(
                validate(&req, &config()).unwrap_err().error,
                "invalid_redirect_uri",
                "{bad}"
            );
        }
    }

    #[test]
    fn seed_rules_are_enforced() {
        let base = json!({"client_name": "A", "client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb"]});
        let with = |k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            validate(&r, &config())
        };
        let without = |k: &str| {
            let mut r = base.clone();
            r.as_object_mut().unwrap().remove(k);
            validate(&r, &config())
        };
        assert!(validate(&base, &config()).is_ok());
        assert_eq!(
            without("client_name").unwrap_err().error,
            "invalid_client_metadata"
        );
        assert_eq!(
            without("client_uri").unwrap_err().error,
            "invalid_client_metadata"
        );
        assert_eq!(
            without("redirect_uris").unwrap_err().error,
            "invalid_redirect_uri"
        );
        assert!(with("client_uri", json!("http://app.example/")).is_err());
        assert_eq!(
            with("redirect_uris", json!(["http://app.example/cb"]))
                .unwrap_err()
                .error,
            "invalid_redirect_uri"
        );
        assert_eq!(
            with("redirect_uris", json!(["https://evil.example/cb"]))
                .unwrap_err()
                .error,
            "invalid_redirect_uri"
        );
        assert!(with("tos_uri", json!("https://evil.example/tos")).is_err());
        assert!(with("policy_uri", json!("http://app.example/policy")).is_err());
        assert!(with("tos_uri", json!("https://app.example/tos")).is_ok());
        assert!(
            with("grant_types", json!(["password"])).is_err(),
            "password grant off by default"
        );
        assert!(
            with("response_types", json!(["token"])).is_err(),
            "implicit off by default"
        );
        assert!(with("token_endpoint_auth_method", json!("private_key_jwt")).is_err());
        assert!(with("application_type", json!("desktop")).is_err());
        assert!(with("client_name", json!(5)).is_err());
        assert!(
            with(
                "grant_types",
                json!(["authorization_code", DEVICE_CODE_URN, "refresh_token"])
            )
            .is_ok()
        );
        let device_only = with("grant_types", json!([DEVICE_CODE_URN])).unwrap();
        assert!(
            device_only.response_types.is_empty(),
            "response types follow the grant types"
        );
        let mut r = base.clone();
        r["grant_types"] = json!([DEVICE_CODE_URN]);
        r["response_types"] = json!(["code"]);
        assert!(
            validate(&r, &config()).is_err(),
            "code response type without the code grant"
        );
        assert!(validate(&json!([1]), &config()).is_err());
        assert!(with("id_token_signed_response_alg", json!("RS256")).is_ok());
        assert!(with("id_token_signed_response_alg", json!("none")).is_err());
        assert!(
            with("client_name", json!("App\u{1b}[31m")).is_err(),
            "control characters"
        );
        assert!(
            with("contacts", json!(vec!["a@b"; 17])).is_err(),
            "too many items"
        );
        assert!(
            with("contacts", json!(["x".repeat(600)])).is_err(),
            "an item too long"
        );
        let long_uris: Vec<String> = (0..16)
            .map(|i| format!("https://app.example/{i}/{}", "p".repeat(400)))
            .collect();
        let big =
            json!({"client_name": "A", "client_uri": "https://app.example/", "redirect_uris": long_uris});
        assert!(
            registrar().register(&big, &config(), 1).is_err(),
            "client_id too large"
        );
    }
}
