//! `ArchiveStore` on SQLite: message archives (XEP-0313) of users and
//! rooms, paged with XEP-0059 RSM by arrival order (`seq`).

use async_trait::async_trait;
use jackdaw_core::storage::{ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, StorageResult};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::{Context, SqliteStore, to_unsigned};

/// Removes a user's archive, for `AccountStore::delete`.
pub(super) fn delete_user(tx: &rusqlite::Transaction<'_>, owner: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM archive WHERE owner = ?1", params![owner])?;
    tx.execute("DELETE FROM archive_prefs WHERE owner = ?1", params![owner])?;
    Ok(())
}

fn bare_of(jid: &str) -> &str {
    jid.split_once('/').map(|(b, _)| b).unwrap_or(jid)
}

/// The `seq` of an owner's message, if it exists.
fn seq_of(conn: &rusqlite::Connection, owner: &str, id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT seq FROM archive WHERE owner = ?1 AND id = ?2")?
        .query_row(params![owner, id], |r| r.get(0))
        .optional()
}

#[async_trait]
impl ArchiveStore for SqliteStore {
    async fn append(&self, owner: &str, m: &ArchivedMessage) -> StorageResult<()> {
        self.append_many(&[(owner.to_owned(), m.clone())]).await
    }

    async fn append_many(&self, entries: &[(String, ArchivedMessage)]) -> StorageResult<()> {
        const OP: &str = "archive.append_many";
        let entries = entries.to_vec();
        self.run(OP, move |conn| {
            // One transaction for the batch: one WAL commit instead of one
            // per message.
            let tx = super::write_tx(conn, OP)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO archive (owner, id, ts, with_bare, with_full, stanza)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .context(OP)?;
                for (owner, m) in &entries {
                    stmt.execute(params![
                        owner,
                        m.id,
                        m.timestamp,
                        bare_of(&m.with),
                        m.with,
                        m.stanza
                    ])
                    .context(OP)?;
                }
            }
            tx.commit().context(OP)
        })
        .await
    }

    async fn query(&self, owner: &str, q: &ArchiveQuery) -> StorageResult<Option<ArchivePage>> {
        const OP: &str = "archive.query";
        let (owner, q) = (owner.to_owned(), q.clone());
        self.run(OP, move |conn| {
            // The filters, as SQL with bound values (never spliced text).
            let mut filter = String::from("owner = ?");
            let mut values: Vec<Value> = vec![Value::Text(owner.clone())];
            if let Some(with) = &q.with {
                if with.contains('/') {
                    filter.push_str(" AND with_full = ?");
                } else {
                    filter.push_str(" AND with_bare = ?");
                }
                values.push(Value::Text(with.clone()));
            }
            if let Some(start) = q.start {
                filter.push_str(" AND ts >= ?");
                values.push(Value::Integer(start));
            }
            if let Some(end) = q.end {
                filter.push_str(" AND ts <= ?");
                values.push(Value::Integer(end));
            }
            for (id, op) in [(&q.after_id, ">"), (&q.before_id, "<")] {
                if let Some(id) = id {
                    let Some(seq) = seq_of(conn, &owner, id).context(OP)? else {
                        return Ok(None);
                    };
                    filter.push_str(&format!(" AND seq {op} ?"));
                    values.push(Value::Integer(seq));
                }
            }
            if !q.ids.is_empty() {
                // XEP-0313 §4.1.5: every listed id must exist.
                let mut wanted: Vec<&String> = q.ids.iter().collect();
                wanted.sort();
                wanted.dedup();
                for id in wanted {
                    if seq_of(conn, &owner, id).context(OP)?.is_none() {
                        return Ok(None);
                    }
                }
                filter.push_str(" AND id IN (");
                filter.push_str(&vec!["?"; q.ids.len()].join(", "));
                filter.push(')');
                values.extend(q.ids.iter().cloned().map(Value::Text));
            }
            let count: i64 = conn
                .prepare(&format!("SELECT COUNT(*) FROM archive WHERE {filter}"))
                .and_then(|mut stmt| stmt.query_row(params_from_iter(values.iter()), |r| r.get(0)))
                .context(OP)?;
            let count = to_unsigned(count, "archive count")?;

            // The page: forwards after `page_after`, or backwards before
            // `page_before` (from the end when it is empty).
            let mut page_filter = filter.clone();
            let mut page_values = values.clone();
            let backwards = q.page_before.is_some();
            let cursor = if backwards { &q.page_before } else { &q.page_after };
            if let Some(id) = cursor.as_deref().filter(|id| !id.is_empty()) {
                let Some(seq) = seq_of(conn, &owner, id).context(OP)? else {
                    return Ok(None);
                };
                page_filter.push_str(if backwards { " AND seq < ?" } else { " AND seq > ?" });
                page_values.push(Value::Integer(seq));
            }
            let order = if backwards { "DESC" } else { "ASC" };
            page_values.push(Value::Integer(q.max as i64 + 1));
            let mut rows: Vec<(i64, ArchivedMessage)> = conn
                .prepare(&format!(
                    "SELECT seq, id, ts, with_full, stanza FROM archive WHERE {page_filter}
                     ORDER BY seq {order} LIMIT ?"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params_from_iter(page_values.iter()), |r| {
                        Ok((
                            r.get(0)?,
                            ArchivedMessage {
                                id: r.get(1)?,
                                timestamp: r.get(2)?,
                                with: r.get(3)?,
                                stanza: r.get(4)?,
                            },
                        ))
                    })?
                    .collect()
                })
                .context(OP)?;
            let complete = rows.len() <= q.max;
            rows.truncate(q.max);
            if backwards {
                rows.reverse();
            }
            let first_index = match rows.first() {
                Some((seq, _)) => {
                    let mut v = values.clone();
                    v.push(Value::Integer(*seq));
                    let n: i64 = conn
                        .prepare(&format!(
                            "SELECT COUNT(*) FROM archive WHERE {filter} AND seq < ?"
                        ))
                        .and_then(|mut stmt| stmt.query_row(params_from_iter(v.iter()), |r| r.get(0)))
                        .context(OP)?;
                    to_unsigned(n, "archive index")?
                }
                None => 0,
            };
            Ok(Some(ArchivePage {
                messages: rows.into_iter().map(|(_, m)| m).collect(),
                complete,
                count,
                first_index,
            }))
        })
        .await
    }

    async fn prefs(&self, owner: &str) -> StorageResult<Option<String>> {
        const OP: &str = "archive.prefs";
        let owner = owner.to_owned();
        self.run(OP, move |conn| {
            conn.prepare_cached("SELECT prefs FROM archive_prefs WHERE owner = ?1")
                .and_then(|mut stmt| stmt.query_row(params![owner], |r| r.get(0)).optional())
                .context(OP)
        })
        .await
    }

    async fn set_prefs(&self, owner: &str, prefs: &str) -> StorageResult<()> {
        const OP: &str = "archive.set_prefs";
        let (owner, prefs) = (owner.to_owned(), prefs.to_owned());
        self.run(OP, move |conn| {
            conn.prepare_cached(
                "INSERT INTO archive_prefs (owner, prefs) VALUES (?1, ?2)
                 ON CONFLICT (owner) DO UPDATE SET prefs = excluded.prefs",
            )
            .and_then(|mut stmt| stmt.execute(params![owner, prefs]))
            .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn expire(&self, before: i64) -> StorageResult<usize> {
        const OP: &str = "archive.expire";
        self.run(OP, move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM archive WHERE ts < ?1")
                .and_then(|mut stmt| stmt.execute(params![before]))
                .context(OP)?;
            Ok(n)
        })
        .await
    }

    async fn delete_owner(&self, owner: &str) -> StorageResult<()> {
        const OP: &str = "archive.delete_owner";
        let owner = owner.to_owned();
        self.run(OP, move |conn| {
            let tx = super::write_tx(conn, OP)?;
            delete_user(&tx, &owner).context(OP)?;
            tx.commit().context(OP)
        })
        .await
    }
}
