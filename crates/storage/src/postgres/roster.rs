//! `RosterStore` on PostgreSQL: roster items with their groups (in the
//! client's order), the per-user roster version, and pending inbound
//! subscription requests.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{RosterItem, RosterStore, StorageError, StorageResult, Subscription};
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;

use super::{Context, PostgresStore, to_unsigned};

/// Columns of `roster_items` read into an item, in this order.
const ITEM_COLUMNS: &str = "id, contact, name, subscription, ask, approved";

fn item_from(r: &Row, groups: Vec<String>) -> StorageResult<RosterItem> {
    let subscription: String = r.get(3);
    let subscription = Subscription::parse(&subscription).ok_or_else(|| {
        StorageError::Backend(format!("postgres: invalid roster subscription {subscription:?}"))
    })?;
    Ok(RosterItem {
        jid: r.get(1),
        name: r.get(2),
        subscription,
        ask: r.get(4),
        approved: r.get(5),
        groups,
    })
}

async fn version(conn: &Transaction<'_>, host: &str, user: &str) -> StorageResult<u64> {
    const OP: &str = "roster.version";
    let version: Option<i64> = conn
        .query_opt(
            "SELECT version FROM roster_versions WHERE host = $1 AND username = $2",
            &[&host, &user],
        )
        .await
        .context(OP)?
        .map(|r| r.get(0));
    to_unsigned(version.unwrap_or(0), "roster version")
}

/// Increments the user's roster version (a new user goes 0 -> 1) and
/// returns the new value. Called in the transaction of every change; the
/// upsert locks the row, so concurrent changes get distinct versions.
async fn bump_version(tx: &Transaction<'_>, host: &str, user: &str) -> StorageResult<u64> {
    const OP: &str = "roster.bump_version";
    let version: i64 = tx
        .query_one(
            "INSERT INTO roster_versions (host, username, version) VALUES ($1, $2, 1)
             ON CONFLICT (host, username) DO UPDATE SET version = roster_versions.version + 1
             RETURNING version",
            &[&host, &user],
        )
        .await
        .context(OP)?
        .get(0);
    to_unsigned(version, "roster version")
}

/// Removes the user's roster items (groups cascade) and pending requests,
/// for `AccountStore::delete`. The version row is bumped, not deleted (see
/// the SQLite backend: a recreated account must not reach a version a
/// client cached for the old roster).
pub(super) async fn delete_user(
    tx: &Transaction<'_>,
    host: &str,
    user: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM roster_items WHERE host = $1 AND username = $2",
        &[&host, &user],
    )
    .await?;
    tx.execute(
        "DELETE FROM pending_subscriptions_in WHERE host = $1 AND username = $2",
        &[&host, &user],
    )
    .await?;
    tx.execute(
        "UPDATE roster_versions SET version = version + 1 WHERE host = $1 AND username = $2",
        &[&host, &user],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl RosterStore for PostgresStore {
    async fn roster(&self, host: &str, user: &str) -> StorageResult<(u64, Vec<RosterItem>)> {
        const OP: &str = "roster.roster";
        let mut client = self.client(OP).await?;
        // One snapshot so the version matches the items.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .context(OP)?;
        let version = version(&tx, host, user).await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM roster_items
                     WHERE host = $1 AND username = $2 ORDER BY id"
                ),
                &[&host, &user],
            )
            .await
            .context(OP)?;
        let mut groups: HashMap<i64, Vec<String>> = HashMap::new();
        for row in tx
            .query(
                "SELECT g.item_id, g.name FROM roster_groups g
                 JOIN roster_items i ON i.id = g.item_id
                 WHERE i.host = $1 AND i.username = $2
                 ORDER BY g.item_id, g.position",
                &[&host, &user],
            )
            .await
            .context(OP)?
        {
            groups.entry(row.get(0)).or_default().push(row.get(1));
        }
        tx.commit().await.context(OP)?;
        let items = rows
            .iter()
            .map(|row| {
                let id: i64 = row.get(0);
                item_from(row, groups.remove(&id).unwrap_or_default())
            })
            .collect::<StorageResult<Vec<_>>>()?;
        Ok((version, items))
    }

    async fn item(&self, host: &str, user: &str, contact: &str) -> StorageResult<Option<RosterItem>> {
        const OP: &str = "roster.item";
        let client = self.client(OP).await?;
        // One statement, so the groups match the item.
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS},
                        ARRAY(SELECT g.name FROM roster_groups g
                              WHERE g.item_id = i.id ORDER BY g.position)
                 FROM roster_items i
                 WHERE host = $1 AND username = $2 AND contact = $3"
            ))
            .await
            .context(OP)?;
        let Some(row) = client
            .query_opt(&stmt, &[&host, &user, &contact])
            .await
            .context(OP)?
        else {
            return Ok(None);
        };
        let groups: Vec<String> = row.get(6);
        item_from(&row, groups).map(Some)
    }

    async fn put_item(&self, host: &str, user: &str, item: &RosterItem) -> StorageResult<u64> {
        const OP: &str = "roster.put_item";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        // An upsert keeps the item's id (and so its place in the roster).
        let id: i64 = tx
            .query_one(
                "INSERT INTO roster_items
                     (host, username, contact, name, subscription, ask, approved)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (host, username, contact) DO UPDATE SET
                     name = EXCLUDED.name,
                     subscription = EXCLUDED.subscription,
                     ask = EXCLUDED.ask,
                     approved = EXCLUDED.approved
                 RETURNING id",
                &[
                    &host,
                    &user,
                    &item.jid,
                    &item.name,
                    &item.subscription.as_str(),
                    &item.ask,
                    &item.approved,
                ],
            )
            .await
            .context(OP)?
            .get(0);
        tx.execute("DELETE FROM roster_groups WHERE item_id = $1", &[&id])
            .await
            .context(OP)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO roster_groups (item_id, name, position)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (item_id, name) DO NOTHING",
            )
            .await
            .context(OP)?;
        // A group named twice is stored once, at its first place.
        for (position, group) in item.groups.iter().enumerate() {
            tx.execute(&stmt, &[&id, group, &(position as i32)])
                .await
                .context(OP)?;
        }
        let version = bump_version(&tx, host, user).await?;
        tx.commit().await.context(OP)?;
        Ok(version)
    }

    async fn remove_item(&self, host: &str, user: &str, contact: &str) -> StorageResult<Option<u64>> {
        const OP: &str = "roster.remove_item";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        let removed = tx
            .execute(
                "DELETE FROM roster_items WHERE host = $1 AND username = $2 AND contact = $3",
                &[&host, &user, &contact],
            )
            .await
            .context(OP)?;
        if removed == 0 {
            // Nothing changed, so the version stays; dropping `tx` rolls
            // back the empty transaction.
            return Ok(None);
        }
        let version = bump_version(&tx, host, user).await?;
        tx.commit().await.context(OP)?;
        Ok(Some(version))
    }

    async fn add_pending_in(&self, host: &str, user: &str, contact: &str, stanza: &str) -> StorageResult<()> {
        const OP: &str = "roster.add_pending_in";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO pending_subscriptions_in (host, username, contact, stanza)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (host, username, contact) DO UPDATE SET
                     stanza = EXCLUDED.stanza,
                     received_at = EXCLUDED.received_at",
            )
            .await
            .context(OP)?;
        client
            .execute(&stmt, &[&host, &user, &contact, &stanza])
            .await
            .context(OP)?;
        Ok(())
    }

    async fn remove_pending_in(&self, host: &str, user: &str, contact: &str) -> StorageResult<bool> {
        const OP: &str = "roster.remove_pending_in";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM pending_subscriptions_in
                 WHERE host = $1 AND username = $2 AND contact = $3",
            )
            .await
            .context(OP)?;
        Ok(client
            .execute(&stmt, &[&host, &user, &contact])
            .await
            .context(OP)?
            > 0)
    }

    async fn pending_in(&self, host: &str, user: &str) -> StorageResult<Vec<(String, String)>> {
        const OP: &str = "roster.pending_in";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached(
                r#"SELECT contact, stanza FROM pending_subscriptions_in
                   WHERE host = $1 AND username = $2
                   ORDER BY received_at, contact COLLATE "C""#,
            )
            .await
            .context(OP)?;
        let rows = client.query(&stmt, &[&host, &user]).await.context(OP)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
