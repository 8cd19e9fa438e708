//! `PushStore` on PostgreSQL: XEP-0357 push registrations per account.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{PushRegistration, PushStore, StorageResult};

use super::{Context, LOCK_PUSH, PostgresStore, lock_user, to_unsigned};

/// Removes an account's registrations, for `AccountStore::delete`.
pub(super) async fn delete_user(tx: &Transaction<'_>, owner: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("DELETE FROM push_registrations WHERE owner = $1", &[&owner])
        .await?;
    Ok(())
}

const LIST: &str =
    "SELECT service, node, options, errors FROM push_registrations WHERE owner = $1 ORDER BY seq";

fn registration(r: &tokio_postgres::Row) -> StorageResult<PushRegistration> {
    Ok(PushRegistration {
        service: r.get(0),
        node: r.get(1),
        options: r.get(2),
        errors: to_unsigned(i64::from(r.get::<_, i32>(3)), "push error count")?,
    })
}

#[async_trait]
impl PushStore for PostgresStore {
    async fn register(
        &self,
        owner: &str,
        r: &PushRegistration,
        max_devices: usize,
    ) -> StorageResult<Vec<PushRegistration>> {
        const OP: &str = "push.register";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // Under the owner's lock, so two registrations at once cannot both
        // keep max_devices others.
        lock_user(&tx, LOCK_PUSH, owner, OP).await?;
        // A re-registration counts as the newest device.
        tx.execute(
            "DELETE FROM push_registrations WHERE owner = $1 AND service = $2 AND node = $3",
            &[&owner, &r.service, &r.node],
        )
        .await
        .context(OP)?;
        tx.execute(
            "INSERT INTO push_registrations (owner, service, node, options, errors)
             VALUES ($1, $2, $3, $4, 0)",
            &[&owner, &r.service, &r.node, &r.options],
        )
        .await
        .context(OP)?;
        let all = tx
            .query(LIST, &[&owner])
            .await
            .context(OP)?
            .iter()
            .map(registration)
            .collect::<StorageResult<Vec<_>>>()?;
        let excess = all.len().saturating_sub(max_devices.max(1));
        let evicted: Vec<PushRegistration> = all.into_iter().take(excess).collect();
        for old in &evicted {
            tx.execute(
                "DELETE FROM push_registrations WHERE owner = $1 AND service = $2 AND node = $3",
                &[&owner, &old.service, &old.node],
            )
            .await
            .context(OP)?;
        }
        tx.commit().await.context(OP)?;
        Ok(evicted)
    }

    async fn unregister(&self, owner: &str, service: &str, node: Option<&str>) -> StorageResult<usize> {
        const OP: &str = "push.unregister";
        let client = self.client(OP).await?;
        let n = match node {
            Some(node) => {
                client
                    .execute(
                        "DELETE FROM push_registrations WHERE owner = $1 AND service = $2 AND node = $3",
                        &[&owner, &service, &node],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        "DELETE FROM push_registrations WHERE owner = $1 AND service = $2",
                        &[&owner, &service],
                    )
                    .await
            }
        }
        .context(OP)?;
        to_unsigned(n as i64, "deleted registration count")
    }

    async fn registrations(&self, owner: &str) -> StorageResult<Vec<PushRegistration>> {
        const OP: &str = "push.registrations";
        let client = self.client(OP).await?;
        let stmt = client.prepare_cached(LIST).await.context(OP)?;
        client
            .query(&stmt, &[&owner])
            .await
            .context(OP)?
            .iter()
            .map(registration)
            .collect()
    }

    async fn record_error(&self, owner: &str, service: &str, node: &str) -> StorageResult<u32> {
        const OP: &str = "push.record_error";
        let client = self.client(OP).await?;
        // No such registration counts as 0, as on SQLite.
        let errors: Option<i32> = client
            .query_opt(
                "UPDATE push_registrations SET errors = errors + 1
                 WHERE owner = $1 AND service = $2 AND node = $3
                 RETURNING errors",
                &[&owner, &service, &node],
            )
            .await
            .context(OP)?
            .map(|r| r.get(0));
        to_unsigned(i64::from(errors.unwrap_or(0)), "push error count")
    }

    async fn clear_errors(&self, owner: &str, service: &str, node: &str) -> StorageResult<()> {
        const OP: &str = "push.clear_errors";
        let client = self.client(OP).await?;
        client
            .execute(
                "UPDATE push_registrations SET errors = 0 WHERE owner = $1 AND service = $2 AND node = $3",
                &[&owner, &service, &node],
            )
            .await
            .context(OP)?;
        Ok(())
    }
}
