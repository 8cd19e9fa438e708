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
    use super::super::test_support::temp_store;
    use super::*;

    fn stanzas(messages: &[OfflineMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.stanza.as_str()).collect()
    }

    #[tokio::test]
    async fn push_keeps_arrival_order() {
        let (_dir, store) = temp_store();
        assert!(store.list("h", "u").await.unwrap().is_empty());
        for i in 0..5 {
            store
                .push("h", "u", &format!("<message id='{i}'/>"), 100)
                .await
                .unwrap();
        }
        store.push("h", "other", "<message/>", 100).await.unwrap();
        let messages = store.list("h", "u").await.unwrap();
        assert_eq!(
            stanzas(&messages),
            (0..5).map(|i| format!("<message id='{i}'/>")).collect::<Vec<_>>()
        );
        assert!(messages.windows(2).all(|w| w[0].id < w[1].id));
        // Listing does not consume.
        assert_eq!(store.count("h", "u").await.unwrap(), 5);
        assert_eq!(store.count("h", "other").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn quota_is_enforced_per_user() {
        let (_dir, store) = temp_store();
        for _ in 0..3 {
            store.push("h", "u", "<message/>", 3).await.unwrap();
        }
        let err = store.push("h", "u", "<message/>", 3).await.unwrap_err();
        assert!(matches!(err, StorageError::QuotaExceeded), "{err:?}");
        assert_eq!(store.count("h", "u").await.unwrap(), 3);
        // A lower quota than the stored count also refuses.
        assert!(matches!(
            store.push("h", "u", "<message/>", 1).await,
            Err(StorageError::QuotaExceeded)
        ));
        // Quota 0 stores nothing.
        assert!(matches!(
            store.push("h", "v", "<message/>", 0).await,
            Err(StorageError::QuotaExceeded)
        ));
        // Another user is unaffected.
        store.push("h", "w", "<message/>", 3).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_respect_quota() {
        let (_dir, store) = temp_store();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.push("h", "u", &format!("<message id='{i}'/>"), 7).await })
            })
            .collect();
        let mut stored = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => stored += 1,
                Err(StorageError::QuotaExceeded) => {}
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        assert_eq!(stored, 7);
        assert_eq!(store.count("h", "u").await.unwrap(), 7);
    }

    #[tokio::test]
    async fn remove_up_to_removes_delivered_only() {
        let (_dir, store) = temp_store();
        for i in 0..4 {
            store
                .push("h", "u", &format!("<message id='{i}'/>"), 100)
                .await
                .unwrap();
        }
        store.push("h", "other", "<message/>", 100).await.unwrap();
        let messages = store.list("h", "u").await.unwrap();
        store.remove_up_to("h", "u", messages[1].id).await.unwrap();
        assert_eq!(store.list("h", "u").await.unwrap(), messages[2..]);
        assert_eq!(store.count("h", "u").await.unwrap(), 2);
        // Someone else's messages are untouched, whatever their ids.
        assert_eq!(store.count("h", "other").await.unwrap(), 1);

        store.remove_up_to("h", "u", messages[3].id).await.unwrap();
        assert_eq!(store.count("h", "u").await.unwrap(), 0);
        // Ids are not reused once freed, so a late remove_up_to for the old
        // batch cannot delete a newer message.
        store.push("h", "u", "<message id='new'/>", 100).await.unwrap();
        store.remove_up_to("h", "u", messages[3].id).await.unwrap();
        let left = store.list("h", "u").await.unwrap();
        assert_eq!(stanzas(&left), ["<message id='new'/>"]);
        assert!(left[0].id > messages[3].id);
    }

    #[tokio::test]
    async fn messages_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jackdaw.sqlite");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.push("h", "u", "<message id='a'/>", 10).await.unwrap();
            store.push("h", "u", "<message id='b'/>", 10).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let messages = store.list("h", "u").await.unwrap();
        assert_eq!(stanzas(&messages), ["<message id='a'/>", "<message id='b'/>"]);
        store.remove_up_to("h", "u", messages[0].id).await.unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            stanzas(&store.list("h", "u").await.unwrap()),
            ["<message id='b'/>"]
        );
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
