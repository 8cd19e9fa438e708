//! The SQLite storage backend: opening and configuring the database file,
//! schema migrations, and the bridge that runs blocking SQLite calls off
//! the async runtime. The trait implementations live in the submodules,
//! one per store.
//!
//! # Threading
//!
//! rusqlite is synchronous, so every query runs inside
//! `tokio::task::spawn_blocking`, on one `Connection` behind a
//! `std::sync::Mutex`. We chose this over a dedicated database thread fed
//! by a channel because it needs no queue, reply plumbing or shutdown
//! protocol of its own, and a panic in one query is contained by its
//! `JoinHandle` instead of killing the thread everyone depends on. The
//! queries here take microseconds, so callers rarely wait on the lock
//! (and one SQLite connection serialises writes anyway). Should contention
//! ever matter, this is the place to add a pool of read-only connections
//! beside the writer: WAL lets readers run concurrently with it.

mod accounts;
mod archive;
mod blocklist;
mod muc;
mod oauth;
mod offline;
mod push;
mod roster;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jackdaw_core::storage::{StorageError, StorageResult, Stores};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

/// Schema migrations, in order. Migration `i` (0-based) brings the schema
/// to version `i + 1`, recorded in `PRAGMA user_version`. Append only:
/// never edit a migration that has shipped. They run with foreign keys on
/// and inside a transaction (where `PRAGMA foreign_keys` is a no-op), so a
/// migration that rebuilds a referenced table needs special handling.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_muc.sql"),
    include_str!("migrations/0003_archive.sql"),
    include_str!("migrations/0004_push.sql"),
    include_str!("migrations/0005_blocklist.sql"),
    include_str!("migrations/0006_archive_indexes.sql"),
    include_str!("migrations/0007_oauth2.sql"),
];

/// How long a statement waits for a lock held by another connection (an
/// admin's `sqlite3` shell, a backup) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Failures opening the database; runtime failures are `StorageError`s.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("cannot create database directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open database {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot set PRAGMA {pragma}: {source}")]
    Pragma {
        pragma: &'static str,
        source: rusqlite::Error,
    },
    /// SQLite refused WAL (e.g. a filesystem without shared memory); we
    /// do not run without it, as `synchronous=NORMAL` relies on it.
    #[error("database refused journal_mode=WAL (it is in mode {0:?})")]
    NotWal(String),
    #[error("database schema migration to version {version} failed: {source}")]
    Migration { version: usize, source: rusqlite::Error },
    /// The file was written by a newer Jackdaw; refuse rather than guess.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: usize },
}

/// SQLite implementation of every store. Cheap to clone: clones share one
/// connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, configures it and
    /// brings its schema up to date.
    ///
    /// This does blocking file I/O: call it at startup, before serving, or
    /// wrap it in `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Self, SqliteError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SqliteError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            // We serialise access ourselves (the Mutex), so SQLite's own
            // per-connection mutex would only cost time.
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|source| SqliteError::Open {
            path: path.to_owned(),
            source,
        })?;
        configure(&conn)?;
        migrate(&mut conn)?;
        tracing::debug!(path = %path.display(), "opened SQLite storage");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_owned(),
            }),
        })
    }

    /// The path the database was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// All three stores, backed by this database.
    pub fn stores(&self) -> Stores {
        Stores {
            accounts: Arc::new(self.clone()),
            rosters: Arc::new(self.clone()),
            offline: Arc::new(self.clone()),
            muc: Arc::new(self.clone()),
            archive: Arc::new(self.clone()),
            push: Arc::new(self.clone()),
            blocklist: Arc::new(self.clone()),
            oauth: Arc::new(self.clone()),
        }
    }

    /// Copies the write-ahead log into the database file and truncates the
    /// log (`PRAGMA wal_checkpoint(TRUNCATE)`). Call at clean shutdown so
    /// the file is self-contained (easy to back up or copy); nothing is
    /// lost without it, SQLite replays the WAL at the next open.
    pub async fn checkpoint(&self) -> StorageResult<()> {
        self.run("checkpoint", |conn| {
            // Returns (busy, WAL frames, frames checkpointed); busy = 1
            // means another connection held a lock and the WAL stays.
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                .context("checkpoint")?;
            if busy != 0 {
                tracing::warn!("WAL checkpoint incomplete: database busy");
            }
            Ok(())
        })
        .await
    }

    /// Runs `f` with the connection on tokio's blocking pool. `op` names
    /// the operation in error messages.
    async fn run<T, F>(&self, op: &'static str, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StorageResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut inner.lock()))
            .await
            .map_err(|e| StorageError::Backend(format!("sqlite {op}: task failed: {e}")))?
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| {
            // A query panicked while holding the lock. rusqlite's
            // `Transaction` rolls back when dropped during unwinding, so the
            // connection is still sound; refusing it would take the whole
            // storage down over one bug. Roll back defensively in case the
            // panic struck outside a `Transaction` guard.
            tracing::warn!("SQLite connection mutex was poisoned by a panic; recovering");
            let conn = poisoned.into_inner();
            if !conn.is_autocommit() {
                // (No let-chain: they need Rust 1.88; the workspace says 1.85.)
                let rollback = conn.execute_batch("ROLLBACK");
                if let Err(e) = rollback {
                    tracing::error!("rollback after panic failed: {e}");
                }
            }
            self.conn.clear_poison();
            conn
        })
    }
}

/// Per-connection settings. Pragmas are not stored in the file (except
/// journal_mode), so they are set at every open.
fn configure(conn: &Connection) -> Result<(), SqliteError> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|source| SqliteError::Pragma {
            pragma: "journal_mode",
            source,
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::NotWal(mode));
    }
    // In WAL mode, synchronous=NORMAL syncs only at checkpoints, not at
    // every commit. A committed transaction is in the WAL file (the OS page
    // cache) before the call returns, so it survives a crash of this
    // process; only a power loss or OS crash can roll back the last few
    // commits, and never corrupts the database. That is the usual trade for
    // a chat server; FULL would fsync every message.
    // A 32 MiB page cache (negative = KiB): the archive's indexes are
    // written at every message, and SQLite's 2 MiB default spills to the
    // file under a chat load.
    let pragmas: [(&'static str, &dyn rusqlite::ToSql); 3] = [
        ("synchronous", &"NORMAL"),
        ("foreign_keys", &true),
        ("cache_size", &-32768),
    ];
    for (pragma, value) in pragmas {
        conn.pragma_update(None, pragma, value)
            .map_err(|source| SqliteError::Pragma { pragma, source })?;
    }
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| SqliteError::Pragma {
            pragma: "busy_timeout",
            source,
        })?;
    Ok(())
}

/// Applies the migrations the file has not seen yet, each in its own
/// transaction together with its `user_version` bump, so a crash leaves
/// the schema at a well-defined version.
fn migrate(conn: &mut Connection) -> Result<(), SqliteError> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| SqliteError::Pragma {
            pragma: "user_version",
            source,
        })?;
    // user_version is a signed 32-bit header field; negative only if
    // someone else wrote it, so treat it like a too-new schema.
    let current = usize::try_from(current)
        .ok()
        .filter(|&v| v <= MIGRATIONS.len())
        .ok_or(SqliteError::SchemaTooNew {
            found: current,
            supported: MIGRATIONS.len(),
        })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        // IMMEDIATE, then re-read the version: two processes opening a new
        // file at once (a server and `jackdaw user add`) must not both apply
        // the same migration.
        let apply = |conn: &mut Connection| -> rusqlite::Result<bool> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
            if now >= version as i64 {
                return Ok(false);
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version as i64)?;
            tx.commit()?;
            Ok(true)
        };
        if apply(conn).map_err(|source| SqliteError::Migration { version, source })? {
            tracing::info!(version, "applied SQLite schema migration");
        }
    }
    Ok(())
}

/// Starts a write transaction. IMMEDIATE takes the write lock at BEGIN:
/// a DEFERRED transaction that reads before writing can hit `SQLITE_BUSY`
/// when upgrading, which `busy_timeout` does not retry, should another
/// process (an admin's `sqlite3` shell, a backup) hold the file.
fn write_tx<'c>(conn: &'c mut Connection, op: &str) -> StorageResult<Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .context(op)
}

/// Turns rusqlite errors into `StorageError::Backend` naming the operation.
/// SQLite's messages name tables and columns, never bound values, so
/// credentials and message bodies cannot leak into the log this way.
trait Context<T> {
    fn context(self, op: &str) -> StorageResult<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, op: &str) -> StorageResult<T> {
        self.map_err(|e| StorageError::Backend(format!("sqlite {op}: {e}")))
    }
}

/// Reads a non-negative integer column into an unsigned type, treating
/// anything else as corruption instead of wrapping around.
fn to_unsigned<U: TryFrom<i64>>(value: i64, what: &str) -> StorageResult<U> {
    U::try_from(value).map_err(|_| StorageError::Backend(format!("sqlite: invalid {what} {value}")))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::SqliteStore;

    /// A store on a fresh file in a temporary directory; keep the
    /// `TempDir` alive as long as the store.
    pub(crate) fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = SqliteStore::open(&dir.path().join("jackdaw.sqlite")).expect("open store");
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jackdaw_core::storage::{OfflineStore, RosterItem};

    fn user_version(store: &SqliteStore) -> i64 {
        store
            .inner
            .lock()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn open_creates_parent_dirs_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/jackdaw.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.exists());
        assert_eq!(store.path(), path);
        assert_eq!(user_version(&store), MIGRATIONS.len() as i64);
        let conn = store.inner.lock();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: bool = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert!(fk);
        // synchronous: 1 = NORMAL
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_does_not_remigrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jackdaw.sqlite");
        {
            let store = SqliteStore::open(&path).unwrap();
            OfflineStore::push(&store, "h", "u", "<message/>", 10)
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&store), MIGRATIONS.len() as i64);
        assert_eq!(OfflineStore::count(&store, "h", "u").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jackdaw.sqlite");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .inner
                .lock()
                .pragma_update(None, "user_version", 999)
                .unwrap();
        }
        match SqliteStore::open(&path) {
            Err(SqliteError::SchemaTooNew { found: 999, .. }) => {}
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn checkpoint_truncates_wal() {
        let (dir, store) = test_support::temp_store();
        OfflineStore::push(&store, "h", "u", "<message/>", 10)
            .await
            .unwrap();
        let wal = dir.path().join("jackdaw.sqlite-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        store.checkpoint().await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        assert_eq!(OfflineStore::count(&store, "h", "u").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn stores_share_the_database() {
        let (_dir, store) = test_support::temp_store();
        let stores = store.stores();
        stores
            .rosters
            .put_item(
                "h",
                "u",
                &RosterItem {
                    jid: "c@h".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let (version, items) = store.clone().stores().rosters.roster("h", "u").await.unwrap();
        assert_eq!(version, 1);
        assert_eq!(items.len(), 1);
    }

    #[tokio::test]
    async fn recovers_from_a_panicking_query() {
        let (_dir, store) = test_support::temp_store();
        let result = store
            .run("panic", |conn| -> StorageResult<()> {
                let tx = conn.transaction().context("begin")?;
                tx.execute(
                    "INSERT INTO offline_messages (host, username, stanza) VALUES ('h', 'u', 'x')",
                    [],
                )
                .context("insert")?;
                panic!("simulated bug mid-transaction");
            })
            .await;
        assert!(matches!(result, Err(StorageError::Backend(_))));
        // The half-done transaction was rolled back and the store works.
        assert_eq!(OfflineStore::count(&store, "h", "u").await.unwrap(), 0);
        OfflineStore::push(&store, "h", "u", "<message/>", 10)
            .await
            .unwrap();
        assert_eq!(OfflineStore::count(&store, "h", "u").await.unwrap(), 1);
    }
}
