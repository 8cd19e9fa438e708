//! `BlocklistStore` on PostgreSQL (XEP-0191).

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{BlocklistStore, StorageResult};

use super::{Context, PostgresStore};

/// Removes an account's blocklist, for `AccountStore::delete`.
pub(super) async fn delete_user(tx: &Transaction<'_>, owner: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("DELETE FROM blocklist WHERE owner = $1", &[&owner])
        .await?;
    Ok(())
}

#[async_trait]
impl BlocklistStore for PostgresStore {
    async fn blocked(&self, owner: &str) -> StorageResult<Vec<String>> {
        const OP: &str = "blocklist.blocked";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(r#"SELECT jid FROM blocklist WHERE owner = $1 ORDER BY jid COLLATE "C""#)
            .await
            .context(OP)?;
        let rows = client.query(&stmt, &[&owner]).await.context(OP)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn block(&self, owner: &str, jids: &[String]) -> StorageResult<()> {
        const OP: &str = "blocklist.block";
        let client = self.client(OP).await?;
        // One statement for the whole list; duplicates in it are fine.
        client
            .execute(
                "INSERT INTO blocklist (owner, jid) SELECT DISTINCT $1, unnest($2::TEXT[])
                 ON CONFLICT (owner, jid) DO NOTHING",
                &[&owner, &jids],
            )
            .await
            .context(OP)?;
        Ok(())
    }

    async fn unblock(&self, owner: &str, jids: Option<&[String]>) -> StorageResult<()> {
        const OP: &str = "blocklist.unblock";
        let client = self.client(OP).await?;
        match jids {
            None => client
                .execute("DELETE FROM blocklist WHERE owner = $1", &[&owner])
                .await
                .context(OP)?,
            Some(jids) => client
                .execute(
                    "DELETE FROM blocklist WHERE owner = $1 AND jid = ANY($2)",
                    &[&owner, &jids],
                )
                .await
                .context(OP)?,
        };
        Ok(())
    }
}
