//! `RosterStore` on SQLite: roster items with their groups (a child table,
//! in the client's order), the per-user roster version, and pending
//! inbound subscription requests.

use std::collections::HashMap;

use async_trait::async_trait;
use jackdaw_core::storage::{RosterItem, RosterStore, StorageError, StorageResult, Subscription};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Context, SqliteStore, to_unsigned, write_tx};

/// Columns of `roster_items` read into an item, in this order.
const ITEM_COLUMNS: &str = "id, contact, name, subscription, ask, approved";

/// A `roster_items` row before its groups are attached.
struct ItemRow {
    id: i64,
    contact: String,
    name: Option<String>,
    subscription: String,
    ask: bool,
    approved: bool,
}

impl ItemRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(ItemRow {
            id: r.get(0)?,
            contact: r.get(1)?,
            name: r.get(2)?,
            subscription: r.get(3)?,
            ask: r.get(4)?,
            approved: r.get(5)?,
        })
    }

    fn into_item(self, groups: Vec<String>) -> StorageResult<RosterItem> {
        let subscription = Subscription::parse(&self.subscription).ok_or_else(|| {
            StorageError::Backend(format!(
                "sqlite: invalid roster subscription {:?}",
                self.subscription
            ))
        })?;
        Ok(RosterItem {
            jid: self.contact,
            name: self.name,
            subscription,
            ask: self.ask,
            approved: self.approved,
            groups,
        })
    }
}

fn version(conn: &Connection, host: &str, user: &str) -> StorageResult<u64> {
    const OP: &str = "roster.version";
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM roster_versions WHERE host = ?1 AND username = ?2")
        .and_then(|mut stmt| stmt.query_row(params![host, user], |r| r.get(0)).optional())
        .context(OP)?;
    to_unsigned(version.unwrap_or(0), "roster version")
}

/// Increments the user's roster version (a new user goes 0 -> 1) and
/// returns the new value. Called in the transaction of every change.
fn bump_version(tx: &Transaction<'_>, host: &str, user: &str) -> StorageResult<u64> {
    const OP: &str = "roster.bump_version";
    let version: i64 = tx
        .prepare_cached(
            "INSERT INTO roster_versions (host, username, version) VALUES (?1, ?2, 1)
             ON CONFLICT (host, username) DO UPDATE SET version = version + 1
             RETURNING version",
        )
        .and_then(|mut stmt| stmt.query_row(params![host, user], |r| r.get(0)))
        .context(OP)?;
    to_unsigned(version, "roster version")
}

/// Removes the user's roster items (groups cascade) and pending requests,
/// for `AccountStore::delete`. The version row is kept and bumped, not
/// deleted: restarting at 0 would let a recreated account reach a version
/// number a client cached for the old roster, and that client would then
/// be told its stale copy is current (RFC 6121 §2.6.3).
pub(super) fn delete_user(tx: &Transaction<'_>, host: &str, user: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM roster_items WHERE host = ?1 AND username = ?2",
        params![host, user],
    )?;
    tx.execute(
        "DELETE FROM pending_subscriptions_in WHERE host = ?1 AND username = ?2",
        params![host, user],
    )?;
    tx.execute(
        "UPDATE roster_versions SET version = version + 1 WHERE host = ?1 AND username = ?2",
        params![host, user],
    )?;
    Ok(())
}

#[async_trait]
impl RosterStore for SqliteStore {
    async fn roster(&self, host: &str, user: &str) -> StorageResult<(u64, Vec<RosterItem>)> {
        const OP: &str = "roster.roster";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| {
            // One read transaction so the version matches the items.
            let tx = conn.transaction().context(OP)?;
            let version = version(&tx, &host, &user)?;
            let rows: Vec<ItemRow> = tx
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM roster_items
                     WHERE host = ?1 AND username = ?2 ORDER BY id"
                ))
                .and_then(|mut stmt| stmt.query_map(params![host, user], ItemRow::from_row)?.collect())
                .context(OP)?;
            let mut groups: HashMap<i64, Vec<String>> = HashMap::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT g.item_id, g.name FROM roster_groups g
                         JOIN roster_items i ON i.id = g.item_id
                         WHERE i.host = ?1 AND i.username = ?2
                         ORDER BY g.item_id, g.position",
                    )
                    .context(OP)?;
                let mut query = stmt.query(params![host, user]).context(OP)?;
                while let Some(row) = query.next().context(OP)? {
                    let id: i64 = row.get(0).context(OP)?;
                    groups.entry(id).or_default().push(row.get(1).context(OP)?);
                }
            }
            let items = rows
                .into_iter()
                .map(|row| {
                    let item_groups = groups.remove(&row.id).unwrap_or_default();
                    row.into_item(item_groups)
                })
                .collect::<StorageResult<Vec<_>>>()?;
            Ok((version, items))
        })
        .await
    }

    async fn item(&self, host: &str, user: &str, contact: &str) -> StorageResult<Option<RosterItem>> {
        const OP: &str = "roster.item";
        let (host, user, contact) = (host.to_owned(), user.to_owned(), contact.to_owned());
        self.run(OP, move |conn| {
            let tx = conn.transaction().context(OP)?;
            let Some(row) = tx
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM roster_items
                     WHERE host = ?1 AND username = ?2 AND contact = ?3"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![host, user, contact], ItemRow::from_row)
                        .optional()
                })
                .context(OP)?
            else {
                return Ok(None);
            };
            let groups = tx
                .prepare_cached("SELECT name FROM roster_groups WHERE item_id = ?1 ORDER BY position")
                .and_then(|mut stmt| stmt.query_map([row.id], |r| r.get(0))?.collect())
                .context(OP)?;
            row.into_item(groups).map(Some)
        })
        .await
    }

    async fn put_item(&self, host: &str, user: &str, item: &RosterItem) -> StorageResult<u64> {
        const OP: &str = "roster.put_item";
        let (host, user, item) = (host.to_owned(), user.to_owned(), item.clone());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            // An upsert, not INSERT OR REPLACE: REPLACE deletes the old row,
            // which would give the item a new id on every update.
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO roster_items
                         (host, username, contact, name, subscription, ask, approved)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (host, username, contact) DO UPDATE SET
                         name = excluded.name,
                         subscription = excluded.subscription,
                         ask = excluded.ask,
                         approved = excluded.approved
                     RETURNING id",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            host,
                            user,
                            item.jid,
                            item.name,
                            item.subscription.as_str(),
                            item.ask,
                            item.approved,
                        ],
                        |r| r.get(0),
                    )
                })
                .context(OP)?;
            tx.execute("DELETE FROM roster_groups WHERE item_id = ?1", [id])
                .context(OP)?;
            {
                // A group named twice is stored once (RFC 6121 §2.3.3 has
                // the server reject duplicates; storage just stays sane).
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO roster_groups (item_id, name, position)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (item_id, name) DO NOTHING",
                    )
                    .context(OP)?;
                for (position, group) in item.groups.iter().enumerate() {
                    stmt.execute(params![id, group, position as i64]).context(OP)?;
                }
            }
            let version = bump_version(&tx, &host, &user)?;
            tx.commit().context(OP)?;
            Ok(version)
        })
        .await
    }

    async fn remove_item(&self, host: &str, user: &str, contact: &str) -> StorageResult<Option<u64>> {
        const OP: &str = "roster.remove_item";
        let (host, user, contact) = (host.to_owned(), user.to_owned(), contact.to_owned());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            let removed = tx
                .execute(
                    "DELETE FROM roster_items
                     WHERE host = ?1 AND username = ?2 AND contact = ?3",
                    params![host, user, contact],
                )
                .context(OP)?;
            if removed == 0 {
                // Nothing changed, so the version stays; dropping `tx`
                // rolls back the empty transaction.
                return Ok(None);
            }
            let version = bump_version(&tx, &host, &user)?;
            tx.commit().context(OP)?;
            Ok(Some(version))
        })
        .await
    }

    async fn add_pending_in(&self, host: &str, user: &str, contact: &str, stanza: &str) -> StorageResult<()> {
        const OP: &str = "roster.add_pending_in";
        let (host, user, contact, stanza) = (
            host.to_owned(),
            user.to_owned(),
            contact.to_owned(),
            stanza.to_owned(),
        );
        self.run(OP, move |conn| {
            conn.prepare_cached(
                "INSERT INTO pending_subscriptions_in (host, username, contact, stanza)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (host, username, contact) DO UPDATE SET
                     stanza = excluded.stanza,
                     received_at = excluded.received_at",
            )
            .and_then(|mut stmt| stmt.execute(params![host, user, contact, stanza]))
            .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn remove_pending_in(&self, host: &str, user: &str, contact: &str) -> StorageResult<bool> {
        const OP: &str = "roster.remove_pending_in";
        let (host, user, contact) = (host.to_owned(), user.to_owned(), contact.to_owned());
        self.run(OP, move |conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM pending_subscriptions_in
                     WHERE host = ?1 AND username = ?2 AND contact = ?3",
                )
                .and_then(|mut stmt| stmt.execute(params![host, user, contact]))
                .context(OP)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn pending_in(&self, host: &str, user: &str) -> StorageResult<Vec<(String, String)>> {
        const OP: &str = "roster.pending_in";
        let (host, user) = (host.to_owned(), user.to_owned());
        self.run(OP, move |conn| {
            conn.prepare_cached(
                "SELECT contact, stanza FROM pending_subscriptions_in
                 WHERE host = ?1 AND username = ?2
                 ORDER BY received_at, contact",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![host, user], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .context(OP)
        })
        .await
    }
}
