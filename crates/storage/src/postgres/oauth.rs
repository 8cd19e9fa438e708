//! `OAuthStore` on PostgreSQL: grants, token hashes, signing keys, secrets.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{
    OAuthGrant, OAuthStore, OAuthToken, OAuthTokenKind, RefreshRotation, SigningKey, StorageResult,
};
use tokio_postgres::Row;

use super::{Context, PostgresStore};

/// Removes an account's grants (tokens go by cascade), for
/// `AccountStore::delete`.
pub(super) async fn delete_user(
    tx: &Transaction<'_>,
    host: &str,
    user: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM oauth2_grants WHERE host = $1 AND username = $2",
        &[&host, &user],
    )
    .await?;
    Ok(())
}

const GRANT_COLUMNS: &str = "g.id, g.host, g.username, g.client_hash, g.client_name, g.client_uri, g.scope, g.created_at, g.last_used_at";

fn grant_from(row: &Row, first: usize) -> OAuthGrant {
    OAuthGrant {
        id: row.get(first),
        host: row.get(first + 1),
        username: row.get(first + 2),
        client_hash: row.get(first + 3),
        client_name: row.get(first + 4),
        client_uri: row.get(first + 5),
        scope: row.get(first + 6),
        created_at: row.get(first + 7),
        last_used_at: row.get(first + 8),
    }
}

async fn insert_token(tx: &Transaction<'_>, t: &OAuthToken) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO oauth2_tokens (hash, grant_id, kind, scope, created_at, expires_at, used)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &t.hash,
            &t.grant_id,
            &t.kind.as_str(),
            &t.scope,
            &t.created_at,
            &t.expires_at,
            &t.used,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl OAuthStore for PostgresStore {
    async fn signing_keys(&self) -> StorageResult<Vec<SigningKey>> {
        const OP: &str = "oauth.signing_keys";
        let client = self.client(OP).await?;
        let rows = client
            .query(
                "SELECT kid, algorithm, private_key, created_at FROM oauth2_signing_keys
                 ORDER BY created_at, seq",
                &[],
            )
            .await
            .context(OP)?;
        Ok(rows
            .iter()
            .map(|r| SigningKey {
                kid: r.get(0),
                algorithm: r.get(1),
                private_key: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    async fn add_signing_key(&self, key: &SigningKey) -> StorageResult<()> {
        const OP: &str = "oauth.add_signing_key";
        let client = self.client(OP).await?;
        client
            .execute(
                "INSERT INTO oauth2_signing_keys (kid, algorithm, private_key, created_at)
                 VALUES ($1, $2, $3, $4)",
                &[&key.kid, &key.algorithm, &key.private_key, &key.created_at],
            )
            .await
            .context(OP)?;
        Ok(())
    }

    async fn delete_signing_key(&self, kid: &str) -> StorageResult<()> {
        const OP: &str = "oauth.delete_signing_key";
        let client = self.client(OP).await?;
        client
            .execute("DELETE FROM oauth2_signing_keys WHERE kid = $1", &[&kid])
            .await
            .context(OP)?;
        Ok(())
    }

    async fn secret(&self, name: &str, fresh: &[u8]) -> StorageResult<Vec<u8>> {
        const OP: &str = "oauth.secret";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // A concurrent first call waits on the conflict, then reads the
        // winner's value: everyone gets the same secret.
        tx.execute(
            "INSERT INTO oauth2_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &fresh],
        )
        .await
        .context(OP)?;
        let value: Vec<u8> = tx
            .query_one("SELECT value FROM oauth2_secrets WHERE name = $1", &[&name])
            .await
            .context(OP)?
            .get(0);
        tx.commit().await.context(OP)?;
        Ok(value)
    }

    async fn create_grant(&self, g: &OAuthGrant, tokens: &[OAuthToken]) -> StorageResult<()> {
        const OP: &str = "oauth.create_grant";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        tx.execute(
            "INSERT INTO oauth2_grants (id, host, username, client_hash, client_name, client_uri, scope, created_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &g.id,
                &g.host,
                &g.username,
                &g.client_hash,
                &g.client_name,
                &g.client_uri,
                &g.scope,
                &g.created_at,
                &g.last_used_at,
            ],
        )
        .await
        .context(OP)?;
        for t in tokens {
            insert_token(&tx, t).await.context(OP)?;
        }
        tx.commit().await.context(OP)
    }

    async fn token(&self, hash: &str, now: i64) -> StorageResult<Option<(OAuthToken, OAuthGrant)>> {
        const OP: &str = "oauth.token";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT t.hash, t.grant_id, t.kind, t.scope, t.created_at, t.expires_at, t.used, {GRANT_COLUMNS}
                 FROM oauth2_tokens t JOIN oauth2_grants g ON g.id = t.grant_id
                 WHERE t.hash = $1 AND t.expires_at > $2"
            ))
            .await
            .context(OP)?;
        let row = client.query_opt(&stmt, &[&hash, &now]).await.context(OP)?;
        Ok(row.map(|r| {
            let kind: String = r.get(2);
            let token = OAuthToken {
                hash: r.get(0),
                grant_id: r.get(1),
                kind: if kind == "refresh" {
                    OAuthTokenKind::Refresh
                } else {
                    OAuthTokenKind::Access
                },
                scope: r.get(3),
                created_at: r.get(4),
                expires_at: r.get(5),
                used: r.get(6),
            };
            (token, grant_from(&r, 7))
        }))
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &[OAuthToken],
        now: i64,
    ) -> StorageResult<RefreshRotation> {
        const OP: &str = "oauth.rotate_refresh";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // FOR UPDATE: a second exchange of the same token waits for this
        // one, then sees it used (READ COMMITTED re-reads the locked row),
        // so exactly one of two concurrent exchanges rotates.
        let found: Option<(String, bool)> = tx
            .query_opt(
                "SELECT grant_id, used FROM oauth2_tokens
                 WHERE hash = $1 AND kind = 'refresh' AND expires_at > $2
                 FOR UPDATE",
                &[&old_hash, &now],
            )
            .await
            .context(OP)?
            .map(|r| (r.get(0), r.get(1)));
        let outcome = match found {
            None => RefreshRotation::Unknown,
            Some((_, true)) => RefreshRotation::AlreadyUsed,
            Some((grant_id, false)) => {
                tx.execute(
                    "UPDATE oauth2_tokens SET used = TRUE WHERE hash = $1",
                    &[&old_hash],
                )
                .await
                .context(OP)?;
                for t in new.iter().filter(|t| t.grant_id == grant_id) {
                    insert_token(&tx, t).await.context(OP)?;
                }
                tx.execute(
                    "UPDATE oauth2_grants SET last_used_at = $2 WHERE id = $1",
                    &[&grant_id, &now],
                )
                .await
                .context(OP)?;
                RefreshRotation::Rotated
            }
        };
        tx.commit().await.context(OP)?;
        Ok(outcome)
    }

    async fn delete_token(&self, hash: &str) -> StorageResult<bool> {
        const OP: &str = "oauth.delete_token";
        let client = self.client(OP).await?;
        Ok(client
            .execute("DELETE FROM oauth2_tokens WHERE hash = $1", &[&hash])
            .await
            .context(OP)?
            > 0)
    }

    async fn delete_grant(&self, id: &str) -> StorageResult<bool> {
        const OP: &str = "oauth.delete_grant";
        let client = self.client(OP).await?;
        Ok(client
            .execute("DELETE FROM oauth2_grants WHERE id = $1", &[&id])
            .await
            .context(OP)?
            > 0)
    }

    async fn grant(&self, id: &str) -> StorageResult<Option<OAuthGrant>> {
        const OP: &str = "oauth.grant";
        let client = self.client(OP).await?;
        let row = client
            .query_opt(
                &format!("SELECT {GRANT_COLUMNS} FROM oauth2_grants g WHERE g.id = $1"),
                &[&id],
            )
            .await
            .context(OP)?;
        Ok(row.map(|r| grant_from(&r, 0)))
    }

    async fn grants(&self, host: &str, username: &str) -> StorageResult<Vec<OAuthGrant>> {
        const OP: &str = "oauth.grants";
        let client = self.client(OP).await?;
        let rows = client
            .query(
                &format!(
                    r#"SELECT {GRANT_COLUMNS} FROM oauth2_grants g WHERE g.host = $1 AND g.username = $2
                       ORDER BY g.created_at DESC, g.id COLLATE "C""#
                ),
                &[&host, &username],
            )
            .await
            .context(OP)?;
        Ok(rows.iter().map(|r| grant_from(r, 0)).collect())
    }

    async fn touch_grant(&self, id: &str, now: i64) -> StorageResult<()> {
        const OP: &str = "oauth.touch_grant";
        let client = self.client(OP).await?;
        client
            .execute(
                "UPDATE oauth2_grants SET last_used_at = $2 WHERE id = $1 AND last_used_at < $2",
                &[&id, &now],
            )
            .await
            .context(OP)?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64) -> StorageResult<usize> {
        const OP: &str = "oauth.purge_expired";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        tx.execute("DELETE FROM oauth2_tokens WHERE expires_at <= $1", &[&now])
            .await
            .context(OP)?;
        let grants = tx
            .execute(
                "DELETE FROM oauth2_grants WHERE NOT EXISTS
                 (SELECT 1 FROM oauth2_tokens t WHERE t.grant_id = oauth2_grants.id)",
                &[],
            )
            .await
            .context(OP)?;
        tx.commit().await.context(OP)?;
        Ok(grants as usize)
    }
}
