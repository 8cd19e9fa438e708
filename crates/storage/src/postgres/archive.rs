//! `ArchiveStore` on PostgreSQL: message archives (XEP-0313) of users and
//! rooms, paged with XEP-0059 RSM by arrival order (`seq`).

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use jackdaw_core::storage::{ArchivePage, ArchiveQuery, ArchiveStore, ArchivedMessage, StorageResult};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::{Context, PostgresStore, to_unsigned};

/// Removes a user's archive, for `AccountStore::delete`.
pub(super) async fn delete_user(tx: &Transaction<'_>, owner: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("DELETE FROM archive WHERE owner = $1", &[&owner])
        .await?;
    tx.execute("DELETE FROM archive_prefs WHERE owner = $1", &[&owner])
        .await?;
    Ok(())
}

fn bare_of(jid: &str) -> &str {
    jid.split_once('/').map(|(b, _)| b).unwrap_or(jid)
}

/// The `seq` of an owner's message, if it exists.
async fn seq_of(tx: &Transaction<'_>, owner: &str, id: &str) -> StorageResult<Option<i64>> {
    Ok(tx
        .query_opt(
            "SELECT seq FROM archive WHERE owner = $1 AND id = $2",
            &[&owner, &id],
        )
        .await
        .context("archive.query")?
        .map(|r| r.get(0)))
}

type Param = Box<dyn ToSql + Sync + Send>;

/// SQL conditions with their bound values (never spliced text); the
/// placeholders are numbered as the values are added.
#[derive(Default)]
struct Filter {
    sql: String,
    values: Vec<Param>,
}

impl Filter {
    fn and(&mut self, condition: &str, value: Param) {
        self.values.push(value);
        if !self.sql.is_empty() {
            self.sql.push_str(" AND ");
        }
        self.sql
            .push_str(&condition.replace('?', &format!("${}", self.values.len())));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The advisory lock that orders archive batches (any fixed number; "MAM").
const ARCHIVE_APPEND_LOCK: i64 = 0x004d_414d;

#[async_trait]
impl ArchiveStore for PostgresStore {
    async fn append(&self, owner: &str, m: &ArchivedMessage) -> StorageResult<()> {
        self.append_many(&[(owner.to_owned(), m.clone())]).await
    }

    async fn append_many(&self, entries: &[(String, ArchivedMessage)]) -> StorageResult<()> {
        const OP: &str = "archive.append_many";
        let mut client = self.client(OP).await?;
        // One transaction for the batch: one commit instead of one per
        // message; rows get their seq in the batch's order.
        let tx = client.transaction().await.context(OP)?;
        // seq is taken at insert, not at commit: without this lock a
        // concurrent batch could commit a lower seq later, and a client
        // paging "after" the higher one would never see it (SQLite's single
        // writer gives this for free).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ARCHIVE_APPEND_LOCK])
            .await
            .context(OP)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO archive (owner, id, ts, with_bare, with_full, stanza)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await
            .context(OP)?;
        for (owner, m) in entries {
            tx.execute(
                &stmt,
                &[owner, &m.id, &m.timestamp, &bare_of(&m.with), &m.with, &m.stanza],
            )
            .await
            .context(OP)?;
        }
        tx.commit().await.context(OP)
    }

    async fn query(&self, owner: &str, q: &ArchiveQuery) -> StorageResult<Option<ArchivePage>> {
        const OP: &str = "archive.query";
        let mut client = self.client(OP).await?;
        // One snapshot for the count, the page and its index.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .context(OP)?;
        let mut filter = Filter::default();
        filter.and("owner = ?", Box::new(owner.to_owned()));
        if let Some(with) = &q.with {
            if with.contains('/') {
                filter.and("with_full = ?", Box::new(with.clone()));
            } else {
                filter.and("with_bare = ?", Box::new(with.clone()));
            }
        }
        if let Some(start) = q.start {
            filter.and("ts >= ?", Box::new(start));
        }
        if let Some(end) = q.end {
            filter.and("ts <= ?", Box::new(end));
        }
        for (id, condition) in [(&q.after_id, "seq > ?"), (&q.before_id, "seq < ?")] {
            if let Some(id) = id {
                let Some(seq) = seq_of(&tx, owner, id).await? else {
                    return Ok(None);
                };
                filter.and(condition, Box::new(seq));
            }
        }
        if !q.ids.is_empty() {
            // XEP-0313 §4.1.5: every listed id must exist.
            let mut wanted: Vec<&String> = q.ids.iter().collect();
            wanted.sort();
            wanted.dedup();
            for id in wanted {
                if seq_of(&tx, owner, id).await?.is_none() {
                    return Ok(None);
                }
            }
            filter.and("id = ANY(?)", Box::new(q.ids.clone()));
        }
        let count: i64 = tx
            .query_one(
                &format!("SELECT COUNT(*) FROM archive WHERE {}", filter.sql),
                &filter.params(),
            )
            .await
            .context(OP)?
            .get(0);
        let count = to_unsigned(count, "archive count")?;

        // The page: forwards after `page_after`, or backwards before
        // `page_before` (from the end when it is empty).
        let backwards = q.page_before.is_some();
        let cursor = if backwards { &q.page_before } else { &q.page_after };
        let mut page_sql = filter.sql.clone();
        let mut page_values: Vec<&(dyn ToSql + Sync)> = filter.params();
        let cursor_seq = match cursor.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => match seq_of(&tx, owner, id).await? {
                Some(seq) => Some(seq),
                None => return Ok(None),
            },
            None => None,
        };
        let mut n = page_values.len();
        if let Some(seq) = &cursor_seq {
            n += 1;
            page_sql.push_str(&format!(" AND seq {} ${n}", if backwards { "<" } else { ">" }));
            page_values.push(seq);
        }
        let limit = q.max as i64 + 1;
        n += 1;
        page_values.push(&limit);
        let order = if backwards { "DESC" } else { "ASC" };
        let rows = tx
            .query(
                &format!(
                    "SELECT seq, id, ts, with_full, stanza FROM archive WHERE {}
                     ORDER BY seq {order} LIMIT ${n}",
                    page_sql
                ),
                &page_values,
            )
            .await
            .context(OP)?;
        let mut rows: Vec<(i64, ArchivedMessage)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    ArchivedMessage {
                        id: r.get(1),
                        timestamp: r.get(2),
                        with: r.get(3),
                        stanza: r.get(4),
                    },
                )
            })
            .collect();
        let complete = rows.len() <= q.max;
        rows.truncate(q.max);
        if backwards {
            rows.reverse();
        }
        let first_index = match rows.first() {
            Some((seq, _)) => {
                let mut values = filter.params();
                values.push(seq);
                let n: i64 = tx
                    .query_one(
                        &format!(
                            "SELECT COUNT(*) FROM archive WHERE {} AND seq < ${}",
                            filter.sql,
                            values.len()
                        ),
                        &values,
                    )
                    .await
                    .context(OP)?
                    .get(0);
                to_unsigned(n, "archive index")?
            }
            None => 0,
        };
        tx.commit().await.context(OP)?;
        Ok(Some(ArchivePage {
            messages: rows.into_iter().map(|(_, m)| m).collect(),
            complete,
            count,
            first_index,
        }))
    }

    async fn prefs(&self, owner: &str) -> StorageResult<Option<String>> {
        const OP: &str = "archive.prefs";
        let client = self.client(OP).await?;
        let stmt = client
            .prepare_cached("SELECT prefs FROM archive_prefs WHERE owner = $1")
            .await
            .context(OP)?;
        Ok(client
            .query_opt(&stmt, &[&owner])
            .await
            .context(OP)?
            .map(|r| r.get(0)))
    }

    async fn set_prefs(&self, owner: &str, prefs: &str) -> StorageResult<()> {
        const OP: &str = "archive.set_prefs";
        let client = self.client(OP).await?;
        client
            .execute(
                "INSERT INTO archive_prefs (owner, prefs) VALUES ($1, $2)
                 ON CONFLICT (owner) DO UPDATE SET prefs = EXCLUDED.prefs",
                &[&owner, &prefs],
            )
            .await
            .context(OP)?;
        Ok(())
    }

    async fn expire(&self, before: i64) -> StorageResult<usize> {
        const OP: &str = "archive.expire";
        let mut client = self.client(OP).await?;
        // A large backlog may take longer than the pool's statement
        // timeout; cut short, it would roll back and grow for ever.
        let tx = client.transaction().await.context(OP)?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .context(OP)?;
        let n = tx
            .execute("DELETE FROM archive WHERE ts < $1", &[&before])
            .await
            .context(OP)?;
        tx.commit().await.context(OP)?;
        to_unsigned(n as i64, "expired message count")
    }

    async fn delete_owner(&self, owner: &str) -> StorageResult<()> {
        const OP: &str = "archive.delete_owner";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.context(OP)?;
        delete_user(&tx, owner).await.context(OP)?;
        tx.commit().await.context(OP)
    }
}
