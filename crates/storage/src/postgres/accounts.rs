//! `AccountStore` on PostgreSQL: accounts and their SCRAM credentials, and
//! account deletion, which also removes everything else stored for the
//! user, in one transaction.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{AccountStore, ScramCredentials, ScramHash, StorageError, StorageResult};

use super::{Context, PostgresStore, archive, blocklist, oauth, offline, push, roster, to_unsigned};

/// Stores `creds`; a second entry for the same hash replaces the first.
async fn insert_credentials(
    tx: &Transaction<'_>,
    host: &str,
    user: &str,
    creds: &[ScramCredentials],
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO scram_credentials
                 (host, username, hash, salt, iterations, stored_key, server_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (host, username, hash) DO UPDATE SET
                 salt = EXCLUDED.salt,
                 iterations = EXCLUDED.iterations,
                 stored_key = EXCLUDED.stored_key,
                 server_key = EXCLUDED.server_key",
        )
        .await?;
    for c in creds {
        tx.execute(
            &stmt,
            &[
                &host,
                &user,
                &c.hash.name(),
                &c.salt,
                &i64::from(c.iterations),
                &c.stored_key,
                &c.server_key,
            ],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create(&self, host: &str, user: &str, creds: &[ScramCredentials]) -> StorageResult<()> {
        const OP: &str = "accounts.create";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        let inserted = tx
            .execute(
                "INSERT INTO accounts (host, username) VALUES ($1, $2)
                 ON CONFLICT (host, username) DO NOTHING",
                &[&host, &user],
            )
            .await
            .context(OP)?;
        if inserted == 0 {
            return Err(StorageError::Conflict(format!("account {user}@{host}")));
        }
        insert_credentials(&tx, host, user, creds).await.context(OP)?;
        tx.commit().await.context(OP)
    }

    async fn set_credentials(
        &self,
        host: &str,
        user: &str,
        creds: &[ScramCredentials],
    ) -> StorageResult<bool> {
        const OP: &str = "accounts.set_credentials";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // FOR UPDATE: a concurrent delete waits for us (or we see it gone).
        let exists = tx
            .query_opt(
                "SELECT 1 FROM accounts WHERE host = $1 AND username = $2 FOR UPDATE",
                &[&host, &user],
            )
            .await
            .context(OP)?
            .is_some();
        if !exists {
            return Ok(false);
        }
        // Replace all hashes, not just those given: a password change
        // must invalidate the old password under every mechanism.
        tx.execute(
            "DELETE FROM scram_credentials WHERE host = $1 AND username = $2",
            &[&host, &user],
        )
        .await
        .context(OP)?;
        insert_credentials(&tx, host, user, creds).await.context(OP)?;
        tx.commit().await.context(OP)?;
        Ok(true)
    }

    async fn credentials(
        &self,
        host: &str,
        user: &str,
        hash: ScramHash,
    ) -> StorageResult<Option<ScramCredentials>> {
        const OP: &str = "accounts.credentials";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(
                "SELECT salt, iterations, stored_key, server_key
                 FROM scram_credentials
                 WHERE host = $1 AND username = $2 AND hash = $3",
            )
            .await
            .context(OP)?;
        let row = client
            .query_opt(&stmt, &[&host, &user, &hash.name()])
            .await
            .context(OP)?;
        row.map(|r| {
            Ok(ScramCredentials {
                hash,
                salt: r.get(0),
                iterations: to_unsigned(r.get::<_, i64>(1), "SCRAM iteration count")?,
                stored_key: r.get(2),
                server_key: r.get(3),
            })
        })
        .transpose()
    }

    async fn exists(&self, host: &str, user: &str) -> StorageResult<bool> {
        const OP: &str = "accounts.exists";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE host = $1 AND username = $2)")
            .await
            .context(OP)?;
        Ok(client.query_one(&stmt, &[&host, &user]).await.context(OP)?.get(0))
    }

    async fn delete(&self, host: &str, user: &str) -> StorageResult<bool> {
        const OP: &str = "accounts.delete";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // Credentials go by ON DELETE CASCADE. The user's other data is
        // removed even when there is no account row (other authentication
        // backends, or a user left half-deleted), as on SQLite.
        let existed = tx
            .execute(
                "DELETE FROM accounts WHERE host = $1 AND username = $2",
                &[&host, &user],
            )
            .await
            .context(OP)?
            > 0;
        let jid = format!("{user}@{host}");
        roster::delete_user(&tx, host, user).await.context(OP)?;
        offline::delete_user(&tx, host, user).await.context(OP)?;
        archive::delete_user(&tx, &jid).await.context(OP)?;
        push::delete_user(&tx, &jid).await.context(OP)?;
        blocklist::delete_user(&tx, &jid).await.context(OP)?;
        oauth::delete_user(&tx, host, user).await.context(OP)?;
        tx.commit().await.context(OP)?;
        Ok(existed)
    }

    async fn list(&self, host: &str) -> StorageResult<Vec<String>> {
        const OP: &str = "accounts.list";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(r#"SELECT username FROM accounts WHERE host = $1 ORDER BY username COLLATE "C""#)
            .await
            .context(OP)?;
        let rows = client.query(&stmt, &[&host]).await.context(OP)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
