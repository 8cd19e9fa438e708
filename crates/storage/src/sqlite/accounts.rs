//! `AccountStore` on SQLite: accounts of the built-in authentication
//! backend and their SCRAM credentials (one row per hash), and account
//! deletion, which also removes everything else stored for the user.

use async_trait::async_trait;
use jackdaw_core::storage::{AccountStore, ScramCredentials, ScramHash, StorageError, StorageResult};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Context, SqliteStore, archive, blocklist, oauth, offline, push, roster, to_unsigned, write_tx};

/// Stores `creds`; a second entry for the same hash replaces the first.
fn insert_credentials(
    tx: &Transaction<'_>,
    host: &str,
    user: &str,
    creds: &[ScramCredentials],
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO scram_credentials
             (host, username, hash, salt, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (host, username, hash) DO UPDATE SET
             salt = excluded.salt,
             iterations = excluded.iterations,
             stored_key = excluded.stored_key,
             server_key = excluded.server_key",
    )?;
    for c in creds {
        stmt.execute(params![
            host,
            user,
            c.hash.name(),
            c.salt,
            i64::from(c.iterations),
            c.stored_key,
            c.server_key,
        ])?;
    }
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create(&self, host: &str, user: &str, creds: &[ScramCredentials]) -> StorageResult<()> {
        const OP: &str = "accounts.create";
        let (host, user, creds) = (host.to_owned(), user.to_owned(), creds.to_vec());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            let inserted = tx
                .execute(
                    "INSERT INTO accounts (host, username) VALUES (?1, ?2)
                     ON CONFLICT (host, username) DO NOTHING",
                    params![host, user],
                )
                .context(OP)?;
            if inserted == 0 {
                return Err(StorageError::Conflict(format!("account {user}@{host}")));
            }
            insert_credentials(&tx, &host, &user, &creds).context(OP)?;
            tx.commit().context(OP)
        })
        .await
    }

    async fn set_credentials(
        &self,
        host: &str,
        user: &str,
        creds: &[ScramCredentials],
    ) -> StorageResult<bool> {
        const OP: &str = "accounts.set_credentials";
        let (host, user, creds) = (host.to_owned(), user.to_owned(), creds.to_vec());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            if !account_exists(&tx, &host, &user).context(OP)? {
                return Ok(false);
            }
            // Replace all hashes, not just those given: a password change
            // must invalidate the old password under every mechanism.
            tx.execute(
                "DELETE FROM scram_credentials WHERE host = ?1 AND username = ?2",
                params![host, user],
            )
            .context(OP)?;
            insert_credentials(&tx, &host, &user, &creds).context(OP)?;
            tx.commit().context(OP)?;
            Ok(true)
        })
        .await
    }

    async fn credentials(
        &self,
        host: &str,
        user: &str,
        hash: ScramHash,
    ) -> StorageResult<Option<ScramCredentials>> {
        const OP: &str = "accounts.credentials";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT salt, iterations, stored_key, server_key
                     FROM scram_credentials
                     WHERE host = ?1 AND username = ?2 AND hash = ?3",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![host, user, hash.name()], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                        ))
                    })
                    .optional()
                })
                .context(OP)?;
            row.map(|(salt, iterations, stored_key, server_key)| {
                Ok(ScramCredentials {
                    hash,
                    salt,
                    iterations: to_unsigned(iterations, "SCRAM iteration count")?,
                    stored_key,
                    server_key,
                })
            })
            .transpose()
        })
        .await
    }

    async fn exists(&self, host: &str, user: &str) -> StorageResult<bool> {
        const OP: &str = "accounts.exists";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| account_exists(conn, &host, &user).context(OP))
            .await
    }

    async fn delete(&self, host: &str, user: &str) -> StorageResult<bool> {
        const OP: &str = "accounts.delete";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            // Credentials go by ON DELETE CASCADE. The user's other data is
            // removed even when there is no account row, so a user left
            // half-deleted by an older bug or by switching authentication
            // backend can still be cleaned up.
            let existed = tx
                .execute(
                    "DELETE FROM accounts WHERE host = ?1 AND username = ?2",
                    params![host, user],
                )
                .context(OP)?
                > 0;
            roster::delete_user(&tx, &host, &user).context(OP)?;
            offline::delete_user(&tx, &host, &user).context(OP)?;
            archive::delete_user(&tx, &format!("{user}@{host}")).context(OP)?;
            push::delete_user(&tx, &format!("{user}@{host}")).context(OP)?;
            blocklist::delete_user(&tx, &format!("{user}@{host}")).context(OP)?;
            oauth::delete_user(&tx, &host, &user).context(OP)?;
            tx.commit().context(OP)?;
            Ok(existed)
        })
        .await
    }

    async fn list(&self, host: &str) -> StorageResult<Vec<String>> {
        const OP: &str = "accounts.list";
        let host = host.to_owned();
        self.run(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT username FROM accounts WHERE host = ?1 ORDER BY username")
                .context(OP)?;
            stmt.query_map([host], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .context(OP)
        })
        .await
    }
}

fn account_exists(conn: &rusqlite::Connection, host: &str, user: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE host = ?1 AND username = ?2)")?
        .query_row(params![host, user], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn creds(hash: ScramHash, seed: u8) -> ScramCredentials {
        ScramCredentials {
            hash,
            salt: vec![seed; 16],
            iterations: 4096 + u32::from(seed),
            stored_key: vec![seed.wrapping_add(1); 32],
            server_key: vec![seed.wrapping_add(2); 32],
        }
    }

    #[tokio::test]
    async fn create_without_credentials_for_a_hash() {
        let (_dir, store) = temp_store();
        store
            .create("h", "u", &[creds(ScramHash::Sha256, 3)])
            .await
            .unwrap();
        assert_eq!(store.credentials("h", "u", ScramHash::Sha1).await.unwrap(), None);
    }
}
