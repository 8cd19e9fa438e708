//! `OAuthStore` on SQLite: grants, token hashes, signing keys, secrets.

use async_trait::async_trait;
use jackdaw_core::storage::{
    OAuthGrant, OAuthStore, OAuthToken, OAuthTokenKind, RefreshRotation, SigningKey, StorageResult,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::{Context, SqliteStore, write_tx};

/// Removes an account's grants (tokens go by cascade), for
/// `AccountStore::delete`.
pub(super) fn delete_user(tx: &Transaction<'_>, host: &str, user: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM oauth2_grants WHERE host = ?1 AND username = ?2",
        params![host, user],
    )?;
    Ok(())
}

const GRANT_COLUMNS: &str = "g.id, g.host, g.username, g.client_hash, g.client_name, g.client_uri, g.scope, g.created_at, g.last_used_at";

fn grant_from(row: &Row<'_>, first: usize) -> rusqlite::Result<OAuthGrant> {
    Ok(OAuthGrant {
        id: row.get(first)?,
        host: row.get(first + 1)?,
        username: row.get(first + 2)?,
        client_hash: row.get(first + 3)?,
        client_name: row.get(first + 4)?,
        client_uri: row.get(first + 5)?,
        scope: row.get(first + 6)?,
        created_at: row.get(first + 7)?,
        last_used_at: row.get(first + 8)?,
    })
}

fn insert_token(tx: &Transaction<'_>, t: &OAuthToken) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO oauth2_tokens (hash, grant_id, kind, scope, created_at, expires_at, used)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            t.hash,
            t.grant_id,
            t.kind.as_str(),
            t.scope,
            t.created_at,
            t.expires_at,
            t.used
        ],
    )?;
    Ok(())
}

#[async_trait]
impl OAuthStore for SqliteStore {
    async fn signing_keys(&self) -> StorageResult<Vec<SigningKey>> {
        const OP: &str = "oauth.signing_keys";
        self.run(OP, move |conn| {
            conn.prepare_cached(
                "SELECT kid, algorithm, private_key, created_at FROM oauth2_signing_keys ORDER BY created_at, rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(SigningKey {
                        kid: r.get(0)?,
                        algorithm: r.get(1)?,
                        private_key: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })?
                .collect()
            })
            .context(OP)
        })
        .await
    }

    async fn add_signing_key(&self, key: &SigningKey) -> StorageResult<()> {
        const OP: &str = "oauth.add_signing_key";
        let key = key.clone();
        self.run(OP, move |conn| {
            conn.execute(
                "INSERT INTO oauth2_signing_keys (kid, algorithm, private_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![key.kid, key.algorithm, key.private_key, key.created_at],
            )
            .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn delete_signing_key(&self, kid: &str) -> StorageResult<()> {
        const OP: &str = "oauth.delete_signing_key";
        let kid = kid.to_owned();
        self.run(OP, move |conn| {
            conn.execute("DELETE FROM oauth2_signing_keys WHERE kid = ?1", params![kid])
                .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn secret(&self, name: &str, fresh: &[u8]) -> StorageResult<Vec<u8>> {
        const OP: &str = "oauth.secret";
        let (name, fresh) = (name.to_owned(), fresh.to_vec());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            tx.execute(
                "INSERT OR IGNORE INTO oauth2_secrets (name, value) VALUES (?1, ?2)",
                params![name, fresh],
            )
            .context(OP)?;
            let value: Vec<u8> = tx
                .query_row(
                    "SELECT value FROM oauth2_secrets WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .context(OP)?;
            tx.commit().context(OP)?;
            Ok(value)
        })
        .await
    }

    async fn create_grant(&self, grant: &OAuthGrant, tokens: &[OAuthToken]) -> StorageResult<()> {
        const OP: &str = "oauth.create_grant";
        let (g, tokens) = (grant.clone(), tokens.to_vec());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            tx.execute(
                "INSERT INTO oauth2_grants (id, host, username, client_hash, client_name, client_uri, scope, created_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    g.id,
                    g.host,
                    g.username,
                    g.client_hash,
                    g.client_name,
                    g.client_uri,
                    g.scope,
                    g.created_at,
                    g.last_used_at
                ],
            )
            .context(OP)?;
            for t in &tokens {
                insert_token(&tx, t).context(OP)?;
            }
            tx.commit().context(OP)
        })
        .await
    }

    async fn token(&self, hash: &str, now: i64) -> StorageResult<Option<(OAuthToken, OAuthGrant)>> {
        const OP: &str = "oauth.token";
        let hash = hash.to_owned();
        self.run(OP, move |conn| {
            conn.prepare_cached(&format!(
                "SELECT t.hash, t.grant_id, t.kind, t.scope, t.created_at, t.expires_at, t.used, {GRANT_COLUMNS}
                 FROM oauth2_tokens t JOIN oauth2_grants g ON g.id = t.grant_id
                 WHERE t.hash = ?1 AND t.expires_at > ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![hash, now], |r| {
                    let kind: String = r.get(2)?;
                    let token = OAuthToken {
                        hash: r.get(0)?,
                        grant_id: r.get(1)?,
                        kind: if kind == "refresh" {
                            OAuthTokenKind::Refresh
                        } else {
                            OAuthTokenKind::Access
                        },
                        scope: r.get(3)?,
                        created_at: r.get(4)?,
                        expires_at: r.get(5)?,
                        used: r.get(6)?,
                    };
                    Ok((token, grant_from(r, 7)?))
                })
                .optional()
            })
            .context(OP)
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &[OAuthToken],
        now: i64,
    ) -> StorageResult<RefreshRotation> {
        const OP: &str = "oauth.rotate_refresh";
        let (old, new) = (old_hash.to_owned(), new.to_vec());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            let found: Option<(String, bool)> = tx
                .query_row(
                    "SELECT grant_id, used FROM oauth2_tokens WHERE hash = ?1 AND kind = 'refresh' AND expires_at > ?2",
                    params![old, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .context(OP)?;
            let outcome = match found {
                None => RefreshRotation::Unknown,
                Some((_, true)) => RefreshRotation::AlreadyUsed,
                Some((grant_id, false)) => {
                    tx.execute("UPDATE oauth2_tokens SET used = 1 WHERE hash = ?1", params![old])
                        .context(OP)?;
                    for t in new.iter().filter(|t| t.grant_id == grant_id) {
                        insert_token(&tx, t).context(OP)?;
                    }
                    tx.execute(
                        "UPDATE oauth2_grants SET last_used_at = ?2 WHERE id = ?1",
                        params![grant_id, now],
                    )
                    .context(OP)?;
                    RefreshRotation::Rotated
                }
            };
            tx.commit().context(OP)?;
            Ok(outcome)
        })
        .await
    }

    async fn delete_token(&self, hash: &str) -> StorageResult<bool> {
        const OP: &str = "oauth.delete_token";
        let hash = hash.to_owned();
        self.run(OP, move |conn| {
            Ok(conn
                .execute("DELETE FROM oauth2_tokens WHERE hash = ?1", params![hash])
                .context(OP)?
                > 0)
        })
        .await
    }

    async fn delete_grant(&self, id: &str) -> StorageResult<bool> {
        const OP: &str = "oauth.delete_grant";
        let id = id.to_owned();
        self.run(OP, move |conn| {
            Ok(conn
                .execute("DELETE FROM oauth2_grants WHERE id = ?1", params![id])
                .context(OP)?
                > 0)
        })
        .await
    }

    async fn grant(&self, id: &str) -> StorageResult<Option<OAuthGrant>> {
        const OP: &str = "oauth.grant";
        let id = id.to_owned();
        self.run(OP, move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM oauth2_grants g WHERE g.id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row(params![id], |r| grant_from(r, 0)).optional())
            .context(OP)
        })
        .await
    }

    async fn grants(&self, host: &str, username: &str) -> StorageResult<Vec<OAuthGrant>> {
        const OP: &str = "oauth.grants";
        let (host, username) = (host.to_owned(), username.to_owned());
        self.run(OP, move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM oauth2_grants g WHERE g.host = ?1 AND g.username = ?2
                 ORDER BY g.created_at DESC, g.id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![host, username], |r| grant_from(r, 0))?
                    .collect()
            })
            .context(OP)
        })
        .await
    }

    async fn touch_grant(&self, id: &str, now: i64) -> StorageResult<()> {
        const OP: &str = "oauth.touch_grant";
        let id = id.to_owned();
        self.run(OP, move |conn| {
            conn.execute(
                "UPDATE oauth2_grants SET last_used_at = ?2 WHERE id = ?1 AND last_used_at < ?2",
                params![id, now],
            )
            .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn purge_expired(&self, now: i64) -> StorageResult<usize> {
        const OP: &str = "oauth.purge_expired";
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            tx.execute("DELETE FROM oauth2_tokens WHERE expires_at <= ?1", params![now])
                .context(OP)?;
            let grants = tx
                .execute(
                    "DELETE FROM oauth2_grants WHERE NOT EXISTS
                     (SELECT 1 FROM oauth2_tokens t WHERE t.grant_id = oauth2_grants.id)",
                    [],
                )
                .context(OP)?;
            tx.commit().context(OP)?;
            Ok(grants)
        })
        .await
    }
}
