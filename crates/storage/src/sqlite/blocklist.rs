//! `BlocklistStore` on SQLite (XEP-0191).

use async_trait::async_trait;
use jackdaw_core::storage::{BlocklistStore, StorageResult};
use rusqlite::{Transaction, params};

use super::{Context, SqliteStore, write_tx};

/// Removes an account's blocklist, for `AccountStore::delete`.
pub(super) fn delete_user(tx: &Transaction<'_>, owner: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM blocklist WHERE owner = ?1", params![owner])?;
    Ok(())
}

#[async_trait]
impl BlocklistStore for SqliteStore {
    async fn blocked(&self, owner: &str) -> StorageResult<Vec<String>> {
        const OP: &str = "blocklist.blocked";
        let owner = owner.to_owned();
        self.run(OP, move |conn| {
            conn.prepare_cached("SELECT jid FROM blocklist WHERE owner = ?1 ORDER BY jid")
                .and_then(|mut stmt| stmt.query_map(params![owner], |r| r.get(0))?.collect())
                .context(OP)
        })
        .await
    }

    async fn block(&self, owner: &str, jids: &[String]) -> StorageResult<()> {
        const OP: &str = "blocklist.block";
        let (owner, jids) = (owner.to_owned(), jids.to_vec());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            for jid in &jids {
                tx.execute(
                    "INSERT OR IGNORE INTO blocklist (owner, jid) VALUES (?1, ?2)",
                    params![owner, jid],
                )
                .context(OP)?;
            }
            tx.commit().context(OP)
        })
        .await
    }

    async fn unblock(&self, owner: &str, jids: Option<&[String]>) -> StorageResult<()> {
        const OP: &str = "blocklist.unblock";
        let (owner, jids) = (owner.to_owned(), jids.map(<[String]>::to_vec));
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            match jids {
                None => {
                    tx.execute("DELETE FROM blocklist WHERE owner = ?1", params![owner])
                        .context(OP)?;
                }
                Some(jids) => {
                    for jid in &jids {
                        tx.execute(
                            "DELETE FROM blocklist WHERE owner = ?1 AND jid = ?2",
                            params![owner, jid],
                        )
                        .context(OP)?;
                    }
                }
            }
            tx.commit().context(OP)
        })
        .await
    }
}
