//! `PushStore` on SQLite: XEP-0357 push registrations per account.

use async_trait::async_trait;
use jackdaw_core::storage::{PushRegistration, PushStore, StorageResult};
use rusqlite::{Transaction, params};

use super::{Context, SqliteStore, to_unsigned, write_tx};

/// Removes an account's registrations, for `AccountStore::delete`.
pub(super) fn delete_user(tx: &Transaction<'_>, owner: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM push_registrations WHERE owner = ?1", params![owner])?;
    Ok(())
}

fn list(conn: &rusqlite::Connection, owner: &str) -> StorageResult<Vec<PushRegistration>> {
    const OP: &str = "push.registrations";
    let rows: Vec<(String, String, String, i64)> = conn
        .prepare_cached(
            "SELECT service, node, options, errors FROM push_registrations WHERE owner = ?1 ORDER BY seq",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![owner], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .context(OP)?;
    rows.into_iter()
        .map(|(service, node, options, errors)| {
            Ok(PushRegistration {
                service,
                node,
                options,
                errors: to_unsigned(errors, "push error count")?,
            })
        })
        .collect()
}

#[async_trait]
impl PushStore for SqliteStore {
    async fn register(
        &self,
        owner: &str,
        registration: &PushRegistration,
        max_devices: usize,
    ) -> StorageResult<Vec<PushRegistration>> {
        const OP: &str = "push.register";
        let (owner, r) = (owner.to_owned(), registration.clone());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            // A re-registration counts as the newest device.
            tx.execute(
                "DELETE FROM push_registrations WHERE owner = ?1 AND service = ?2 AND node = ?3",
                params![owner, r.service, r.node],
            )
            .context(OP)?;
            tx.execute(
                "INSERT INTO push_registrations (owner, service, node, options, errors) VALUES (?1, ?2, ?3, ?4, 0)",
                params![owner, r.service, r.node, r.options],
            )
            .context(OP)?;
            let all = list(&tx, &owner)?;
            let excess = all.len().saturating_sub(max_devices.max(1));
            let evicted: Vec<PushRegistration> = all.into_iter().take(excess).collect();
            for old in &evicted {
                tx.execute(
                    "DELETE FROM push_registrations WHERE owner = ?1 AND service = ?2 AND node = ?3",
                    params![owner, old.service, old.node],
                )
                .context(OP)?;
            }
            tx.commit().context(OP)?;
            Ok(evicted)
        })
        .await
    }

    async fn unregister(&self, owner: &str, service: &str, node: Option<&str>) -> StorageResult<usize> {
        const OP: &str = "push.unregister";
        let (owner, service, node) = (owner.to_owned(), service.to_owned(), node.map(str::to_owned));
        self.run(OP, move |conn| {
            let n = match node {
                Some(node) => conn.execute(
                    "DELETE FROM push_registrations WHERE owner = ?1 AND service = ?2 AND node = ?3",
                    params![owner, service, node],
                ),
                None => conn.execute(
                    "DELETE FROM push_registrations WHERE owner = ?1 AND service = ?2",
                    params![owner, service],
                ),
            }
            .context(OP)?;
            Ok(n)
        })
        .await
    }

    async fn registrations(&self, owner: &str) -> StorageResult<Vec<PushRegistration>> {
        let owner = owner.to_owned();
        self.run("push.registrations", move |conn| list(conn, &owner))
            .await
    }

    async fn record_error(&self, owner: &str, service: &str, node: &str) -> StorageResult<u32> {
        const OP: &str = "push.record_error";
        let (owner, service, node) = (owner.to_owned(), service.to_owned(), node.to_owned());
        self.run(OP, move |conn| {
            conn.execute(
                "UPDATE push_registrations SET errors = errors + 1 WHERE owner = ?1 AND service = ?2 AND node = ?3",
                params![owner, service, node],
            )
            .context(OP)?;
            let errors: i64 = conn
                .query_row(
                    "SELECT COALESCE(MAX(errors), 0) FROM push_registrations
                     WHERE owner = ?1 AND service = ?2 AND node = ?3",
                    params![owner, service, node],
                    |r| r.get(0),
                )
                .context(OP)?;
            to_unsigned(errors, "push error count")
        })
        .await
    }

    async fn clear_errors(&self, owner: &str, service: &str, node: &str) -> StorageResult<()> {
        const OP: &str = "push.clear_errors";
        let (owner, service, node) = (owner.to_owned(), service.to_owned(), node.to_owned());
        self.run(OP, move |conn| {
            conn.execute(
                "UPDATE push_registrations SET errors = 0 WHERE owner = ?1 AND service = ?2 AND node = ?3",
                params![owner, service, node],
            )
            .context(OP)?;
            Ok(())
        })
        .await
    }
}
