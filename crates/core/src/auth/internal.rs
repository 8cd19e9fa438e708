//! `authentication = "internal_hashed"`: accounts in Jackdaw's own store,
//! kept as salted SCRAM-SHA-1 and SCRAM-SHA-256 keys only (as Prosody's
//! mod_auth_internal_hashed), so a stolen database yields no passwords.

use std::sync::Arc;

use async_trait::async_trait;

use super::{AuthError, Authenticator};
use crate::sasl::scram;
use crate::storage::{AccountStore, ScramCredentials, ScramHash, StorageError};

/// PBKDF2 iterations for new keys; RFC 7677 recommends at least 4096.
pub const SCRAM_ITERATIONS: u32 = 4096;

pub struct InternalAuthenticator {
    accounts: Arc<dyn AccountStore>,
}

impl InternalAuthenticator {
    pub fn new(accounts: Arc<dyn AccountStore>) -> Self {
        Self { accounts }
    }

    /// PBKDF2 is deliberately slow: it runs on the blocking pool, not on a
    /// runtime thread that other connections share.
    async fn derive_all(password: &str) -> Result<Vec<ScramCredentials>, AuthError> {
        let password = password.to_string();
        tokio::task::spawn_blocking(move || {
            [ScramHash::Sha1, ScramHash::Sha256]
                .into_iter()
                .map(|hash| scram::derive_credentials(password.as_bytes(), hash, SCRAM_ITERATIONS))
                .collect()
        })
        .await
        .map_err(|e| AuthError::Unavailable(format!("key derivation failed: {e}")))
    }
}

fn unavailable(e: StorageError) -> AuthError {
    tracing::error!(error = %e, "account storage failed");
    AuthError::Unavailable(e.to_string())
}

#[async_trait]
impl Authenticator for InternalAuthenticator {
    fn name(&self) -> &'static str {
        "internal_hashed"
    }

    fn supports_scram(&self) -> bool {
        true
    }

    async fn check_password(&self, host: &str, user: &str, password: &str) -> Result<bool, AuthError> {
        let creds = self
            .accounts
            .credentials(host, user, ScramHash::Sha256)
            .await
            .map_err(unavailable)?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || match creds {
            Some(creds) => scram::verify_password(&creds, password.as_bytes()),
            None => {
                // Same work for an unknown user, so timing does not reveal
                // which accounts exist.
                scram::derive_credentials(password.as_bytes(), ScramHash::Sha256, SCRAM_ITERATIONS);
                false
            }
        })
        .await
        .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))
    }

    async fn scram_credentials(
        &self,
        host: &str,
        user: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, AuthError> {
        self.accounts
            .credentials(host, user, hash)
            .await
            .map_err(unavailable)
    }

    async fn user_exists(&self, host: &str, user: &str) -> Result<bool, AuthError> {
        self.accounts.exists(host, user).await.map_err(unavailable)
    }

    async fn create_user(&self, host: &str, user: &str, password: &str) -> Result<(), AuthError> {
        let creds = Self::derive_all(password).await?;
        match self.accounts.create(host, user, &creds).await {
            Ok(()) => Ok(()),
            Err(StorageError::Conflict(_)) => Err(AuthError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn set_password(&self, host: &str, user: &str, password: &str) -> Result<(), AuthError> {
        let creds = Self::derive_all(password).await?;
        match self.accounts.set_credentials(host, user, &creds).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::NoSuchUser),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete_user(&self, host: &str, user: &str) -> Result<(), AuthError> {
        match self.accounts.delete(host, user).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::NoSuchUser),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list_users(&self, host: &str) -> Result<Vec<String>, AuthError> {
        self.accounts.list(host).await.map_err(unavailable)
    }
}
