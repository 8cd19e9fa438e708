//! `OfflineStore` on PostgreSQL: messages kept for offline users
//! (XEP-0160), oldest first, with the per-user quota enforced in the
//! inserting transaction.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{OfflineMessage, OfflineStore, StorageError, StorageResult};

use super::{Context, LOCK_OFFLINE, PostgresStore, lock_user, to_unsigned};

/// Removes the user's offline messages, for `AccountStore::delete`.
pub(super) async fn delete_user(
    tx: &Transaction<'_>,
    host: &str,
    user: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM offline_messages WHERE host = $1 AND username = $2",
        &[&host, &user],
    )
    .await?;
    Ok(())
}

const COUNT: &str = "SELECT COUNT(*) FROM offline_messages WHERE host = $1 AND username = $2";

#[async_trait]
impl OfflineStore for PostgresStore {
    async fn push(&self, host: &str, user: &str, stanza: &str, quota: usize) -> StorageResult<()> {
        const OP: &str = "offline.push";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // Count and insert under the user's lock, so concurrent pushes
        // cannot both see room for one more message (SQLite gets this from
        // its single writer).
        lock_user(&tx, LOCK_OFFLINE, &format!("{user}@{host}"), OP).await?;
        let n: i64 = tx.query_one(COUNT, &[&host, &user]).await.context(OP)?.get(0);
        if to_unsigned::<usize>(n, "offline message count")? >= quota {
            return Err(StorageError::QuotaExceeded);
        }
        tx.execute(
            "INSERT INTO offline_messages (host, username, stanza) VALUES ($1, $2, $3)",
            &[&host, &user, &stanza],
        )
        .await
        .context(OP)?;
        tx.commit().await.context(OP)
    }

    async fn list(&self, host: &str, user: &str) -> StorageResult<Vec<OfflineMessage>> {
        const OP: &str = "offline.list";
        let client = self.client(OP).await?;
        // Ids come from a sequence, so id order is arrival order.
        let stmt = client
            .prepare_cached(
                "SELECT id, stanza FROM offline_messages
                 WHERE host = $1 AND username = $2 ORDER BY id",
            )
            .await
            .context(OP)?;
        let rows = client.query(&stmt, &[&host, &user]).await.context(OP)?;
        Ok(rows
            .iter()
            .map(|r| OfflineMessage {
                id: r.get(0),
                stanza: r.get(1),
            })
            .collect())
    }

    async fn remove_up_to(&self, host: &str, user: &str, up_to_id: i64) -> StorageResult<()> {
        const OP: &str = "offline.remove_up_to";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached("DELETE FROM offline_messages WHERE host = $1 AND username = $2 AND id <= $3")
            .await
            .context(OP)?;
        client
            .execute(&stmt, &[&host, &user, &up_to_id])
            .await
            .context(OP)?;
        Ok(())
    }

    async fn count(&self, host: &str, user: &str) -> StorageResult<usize> {
        const OP: &str = "offline.count";
        let client = self.client(OP).await?;
        let stmt = client.prepare_cached(COUNT).await.context(OP)?;
        let n: i64 = client.query_one(&stmt, &[&host, &user]).await.context(OP)?.get(0);
        to_unsigned(n, "offline message count")
    }
}
