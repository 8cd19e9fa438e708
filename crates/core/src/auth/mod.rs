//! The `Authenticator` seam: how a virtual host checks passwords and
//! manages accounts. The built-in store (`internal_hashed`) keeps only salted
//! SCRAM keys; `auth_http` (later) asks the operator's web app.

pub mod internal;
pub mod rate_limit;

use async_trait::async_trait;

use crate::storage::{ScramCredentials, ScramHash};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The backend could not answer (database down, web app unreachable):
    /// the user gets `temporary-auth-failure`, never `not-authorized`.
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
    /// The backend does not support this operation (HTTP 501, or a backend
    /// with no way to change passwords).
    #[error("operation not supported by the authentication backend")]
    NotSupported,
    #[error("account already exists")]
    Conflict,
    #[error("no such account")]
    NoSuchUser,
}

/// What SASL may ask of a host's authentication backend.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// A short name for logs (`internal_hashed`, `http`).
    fn name(&self) -> &'static str;
    /// True when the backend can hand out SCRAM keys, so SCRAM mechanisms
    /// are offered; otherwise only PLAIN (over TLS).
    fn supports_scram(&self) -> bool;
    async fn check_password(&self, host: &str, user: &str, password: &str) -> Result<bool, AuthError>;
    /// SCRAM keys for the user, or None if there is no such user.
    async fn scram_credentials(
        &self,
        host: &str,
        user: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AuthError>;
    async fn user_exists(&self, host: &str, user: &str) -> Result<bool, AuthError>;
    async fn create_user(&self, host: &str, user: &str, password: &str) -> Result<(), AuthError>;
    async fn set_password(&self, host: &str, user: &str, password: &str) -> Result<(), AuthError>;
    async fn delete_user(&self, host: &str, user: &str) -> Result<(), AuthError>;
    async fn list_users(&self, host: &str) -> Result<Vec<String>, AuthError>;
    /// Drops what the backend remembers of the account (a cached password)
    /// after a change made outside the server.
    fn forget(&self, _host: &str, _user: &str) {}
}

/// Who an OAuth access token speaks for, as a SASL mechanism needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLogin {
    /// The account's localpart.
    pub user: String,
    /// The grant the token belongs to: revoking it ends the sessions.
    pub grant_id: String,
    /// The token's SHA-256 (hex), as the store keys it (not usable as
    /// the token): revoking that access token ends the sessions it opened.
    pub token_hash: String,
}

/// Why a bearer token was refused (RFC 7628 §3.2.2 `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Unknown, expired or revoked.
    InvalidToken,
    /// Valid, but without the scope XMPP login needs.
    InsufficientScope,
}

impl TokenRefusal {
    pub fn status(&self) -> &'static str {
        match self {
            TokenRefusal::InvalidToken => "invalid_token",
            TokenRefusal::InsufficientScope => "insufficient_scope",
        }
    }
}

/// Checks OAuth access tokens for the OAUTHBEARER mechanism (RFC 7628);
/// set on a host's hooks by the module that issues them (`http_oauth2`).
#[async_trait]
pub trait TokenVerifier: Send + Sync {
    /// The account a token with the `xmpp` scope logs into.
    async fn verify(
        &self,
        server: &crate::server::Server,
        host: &str,
        token: &str,
    ) -> Result<Result<TokenLogin, TokenRefusal>, AuthError>;
    /// The scope a client should ask for, for the RFC 7628 error message.
    fn required_scope(&self) -> &'static str {
        "xmpp"
    }
}
