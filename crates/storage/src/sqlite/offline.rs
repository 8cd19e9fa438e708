//! `OfflineStore` on SQLite: messages kept for offline users (XEP-0160),
//! oldest first, with the per-user quota enforced in the inserting
//! transaction.

use async_trait::async_trait;
use jackdaw_core::storage::{OfflineMessage, OfflineStore, StorageError, StorageResult};
use rusqlite::{Transaction, params};

use super::{Context, SqliteStore, to_unsigned, write_tx};

/// Removes the user's offline messages, for `AccountStore::delete`.
pub(super) fn delete_user(tx: &Transaction<'_>, host: &str, user: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM offline_messages WHERE host = ?1 AND username = ?2",
        params![host, user],
    )?;
    Ok(())
}

fn count(conn: &rusqlite::Connection, host: &str, user: &str) -> StorageResult<usize> {
    const OP: &str = "offline.count";
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM offline_messages WHERE host = ?1 AND username = ?2")
        .and_then(|mut stmt| stmt.query_row(params![host, user], |r| r.get(0)))
        .context(OP)?;
    to_unsigned(n, "offline message count")
}

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push(&self, host: &str, user: &str, stanza: &str, quota: usize) -> StorageResult<()> {
        const OP: &str = "offline.push";
        let (host, user, stanza) = (host.to_owned(), user.to_owned(), stanza.to_owned());
        self.run(OP, move |conn| {
            // Count and insert in one write transaction, so concurrent
            // pushes cannot both see room for one more message.
            let tx = write_tx(conn, OP)?;
            if count(&tx, &host, &user)? >= quota {
                return Err(StorageError::QuotaExceeded);
            }
            tx.prepare_cached("INSERT INTO offline_messages (host, username, stanza) VALUES (?1, ?2, ?3)")
                .and_then(|mut stmt| stmt.execute(params![host, user, stanza]))
                .context(OP)?;
            tx.commit().context(OP)
        })
        .await
    }

    async fn list(&self, host: &str, user: &str) -> StorageResult<Vec<OfflineMessage>> {
        const OP: &str = "offline.list";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| {
            // Ids grow with insertion (AUTOINCREMENT), so id order is
            // arrival order.
            conn.prepare_cached(
                "SELECT id, stanza FROM offline_messages
                 WHERE host = ?1 AND username = ?2 ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![host, user], |r| {
                    Ok(OfflineMessage {
                        id: r.get(0)?,
                        stanza: r.get(1)?,
                    })
                })?
                .collect()
            })
            .context(OP)
        })
        .await
    }

    async fn remove_up_to(&self, host: &str, user: &str, up_to_id: i64) -> StorageResult<()> {
        const OP: &str = "offline.remove_up_to";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| {
            conn.prepare_cached(
                "DELETE FROM offline_messages WHERE host = ?1 AND username = ?2 AND id <= ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![host, user, up_to_id]))
            .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn count(&self, host: &str, user: &str) -> StorageResult<usize> {
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run("offline.count", move |conn| count(conn, &host, &user))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanzas(messages: &[OfflineMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.stanza.as_str()).collect()
    }

    #[tokio::test]
    async fn committed_messages_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jackdaw.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        store.push("h", "u", "<message id='a'/>", 10).await.unwrap();
        store.push("h", "u", "<message id='b'/>", 10).await.unwrap();
        // Simulate a crash: copy the files as they are while the store is
        // still open (no checkpoint, no close: the commits are only in the
        // WAL), then open the copy, as a restarted server would.
        let crashed = dir.path().join("crashed");
        std::fs::create_dir(&crashed).unwrap();
        for suffix in ["", "-wal"] {
            std::fs::copy(
                dir.path().join(format!("jackdaw.sqlite{suffix}")),
                crashed.join(format!("jackdaw.sqlite{suffix}")),
            )
            .unwrap();
        }
        // The main file alone lacks the messages: they really are in the WAL.
        let main_only = dir.path().join("main-only");
        std::fs::create_dir(&main_only).unwrap();
        std::fs::copy(&path, main_only.join("jackdaw.sqlite")).unwrap();
        let without_wal = SqliteStore::open(&main_only.join("jackdaw.sqlite")).unwrap();
        assert_eq!(without_wal.count("h", "u").await.unwrap(), 0);

        let recovered = SqliteStore::open(&crashed.join("jackdaw.sqlite")).unwrap();
        assert_eq!(
            stanzas(&recovered.list("h", "u").await.unwrap()),
            ["<message id='a'/>", "<message id='b'/>"]
        );
        drop(store);
    }
}
