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

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn item(jid: &str, groups: &[&str]) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn new_user_has_empty_roster_at_version_0() {
        let (_dir, store) = temp_store();
        assert_eq!(store.roster("h", "u").await.unwrap(), (0, vec![]));
        assert_eq!(store.item("h", "u", "c@h").await.unwrap(), None);
    }

    #[tokio::test]
    async fn put_update_remove_with_groups() {
        let (_dir, store) = temp_store();
        let mut juliet = RosterItem {
            jid: "juliet@example.com".into(),
            name: Some("Juliet".into()),
            subscription: Subscription::To,
            ask: true,
            approved: false,
            groups: vec!["Friends".into(), "Capulets".into()],
        };
        let v1 = store.put_item("h", "romeo", &juliet).await.unwrap();
        assert_eq!(v1, 1);
        assert_eq!(
            store.item("h", "romeo", "juliet@example.com").await.unwrap(),
            Some(juliet.clone())
        );

        let nurse = item("nurse@example.com", &[]);
        let v2 = store.put_item("h", "romeo", &nurse).await.unwrap();
        assert_eq!(v2, 2);

        // Update: every field replaced, groups reordered and changed.
        juliet.name = None;
        juliet.subscription = Subscription::Both;
        juliet.ask = false;
        juliet.approved = true;
        juliet.groups = vec!["Lovers".into(), "Friends".into()];
        let v3 = store.put_item("h", "romeo", &juliet).await.unwrap();
        assert_eq!(v3, 3);
        let (version, items) = store.roster("h", "romeo").await.unwrap();
        assert_eq!(version, 3);
        // Items keep their first-insertion order across updates.
        assert_eq!(items, vec![juliet.clone(), nurse.clone()]);

        assert_eq!(
            store
                .remove_item("h", "romeo", "juliet@example.com")
                .await
                .unwrap(),
            Some(4)
        );
        assert_eq!(
            store.item("h", "romeo", "juliet@example.com").await.unwrap(),
            None
        );
        assert_eq!(store.roster("h", "romeo").await.unwrap(), (4, vec![nurse]));
    }

    #[tokio::test]
    async fn every_subscription_round_trips() {
        let (_dir, store) = temp_store();
        for sub in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            let it = RosterItem {
                jid: format!("{}@h", sub.as_str()),
                subscription: sub,
                ..Default::default()
            };
            store.put_item("h", "u", &it).await.unwrap();
            assert_eq!(store.item("h", "u", &it.jid).await.unwrap(), Some(it));
        }
    }

    #[tokio::test]
    async fn versions_increase_and_reads_do_not_change_them() {
        let (_dir, store) = temp_store();
        let mut last = 0;
        for i in 0..5 {
            let v = store
                .put_item("h", "u", &item(&format!("c{i}@h"), &["g"]))
                .await
                .unwrap();
            assert!(v > last, "{v} after {last}");
            last = v;
            // Reads leave the version alone.
            assert_eq!(store.roster("h", "u").await.unwrap().0, last);
            store.item("h", "u", "c0@h").await.unwrap();
            assert_eq!(store.roster("h", "u").await.unwrap().0, last);
        }
        // Re-putting an identical item still counts as a change.
        let v = store.put_item("h", "u", &item("c0@h", &["g"])).await.unwrap();
        assert!(v > last);
        last = v;
        // Removing an absent item changes nothing.
        assert_eq!(store.remove_item("h", "u", "absent@h").await.unwrap(), None);
        assert_eq!(store.roster("h", "u").await.unwrap().0, last);
        let v = store.remove_item("h", "u", "c1@h").await.unwrap().unwrap();
        assert!(v > last);
        // Pending requests are not part of the roster.
        store
            .add_pending_in("h", "u", "p@h", "<presence/>")
            .await
            .unwrap();
        store.remove_pending_in("h", "u", "p@h").await.unwrap();
        assert_eq!(store.roster("h", "u").await.unwrap().0, v);
    }

    #[tokio::test]
    async fn users_are_isolated() {
        let (_dir, store) = temp_store();
        store.put_item("h", "a", &item("c@h", &["A"])).await.unwrap();
        store.put_item("h", "a", &item("d@h", &[])).await.unwrap();
        assert_eq!(store.put_item("h", "b", &item("c@h", &["B"])).await.unwrap(), 1);
        assert_eq!(store.put_item("other", "a", &item("c@h", &[])).await.unwrap(), 1);
        assert_eq!(
            store.roster("h", "b").await.unwrap(),
            (1, vec![item("c@h", &["B"])])
        );
        assert_eq!(store.roster("h", "a").await.unwrap().1.len(), 2);
        assert_eq!(store.remove_item("h", "b", "d@h").await.unwrap(), None);
    }

    #[tokio::test]
    async fn duplicate_groups_are_stored_once() {
        let (_dir, store) = temp_store();
        store
            .put_item("h", "u", &item("c@h", &["X", "Y", "X"]))
            .await
            .unwrap();
        assert_eq!(
            store.item("h", "u", "c@h").await.unwrap().unwrap().groups,
            ["X", "Y"]
        );
    }

    #[tokio::test]
    async fn pending_in_add_replace_remove_list() {
        let (_dir, store) = temp_store();
        assert!(store.pending_in("h", "u").await.unwrap().is_empty());
        store
            .add_pending_in("h", "u", "a@h", "<presence id='1'/>")
            .await
            .unwrap();
        store
            .add_pending_in("h", "u", "b@h", "<presence id='2'/>")
            .await
            .unwrap();
        store
            .add_pending_in("h", "other", "a@h", "<presence id='x'/>")
            .await
            .unwrap();
        // A newer request from the same contact replaces the older one.
        store
            .add_pending_in("h", "u", "a@h", "<presence id='3'/>")
            .await
            .unwrap();
        let mut pending = store.pending_in("h", "u").await.unwrap();
        pending.sort();
        assert_eq!(
            pending,
            [
                ("a@h".to_string(), "<presence id='3'/>".to_string()),
                ("b@h".to_string(), "<presence id='2'/>".to_string()),
            ]
        );
        assert!(store.remove_pending_in("h", "u", "a@h").await.unwrap());
        assert!(!store.remove_pending_in("h", "u", "a@h").await.unwrap());
        assert_eq!(
            store.pending_in("h", "u").await.unwrap(),
            [("b@h".to_string(), "<presence id='2'/>".to_string())]
        );
        assert_eq!(store.pending_in("h", "other").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn roster_survives_reopen() {
        let (dir, store) = temp_store();
        let it = item("c@h", &["G"]);
        store.put_item("h", "u", &it).await.unwrap();
        store
            .add_pending_in("h", "u", "p@h", "<presence/>")
            .await
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&dir.path().join("jackdaw.sqlite")).unwrap();
        assert_eq!(store.roster("h", "u").await.unwrap(), (1, vec![it]));
        assert_eq!(store.pending_in("h", "u").await.unwrap().len(), 1);
    }
}
