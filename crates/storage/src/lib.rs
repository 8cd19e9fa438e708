//! Storage backends for Jackdaw: implementations of the storage traits of
//! `jackdaw_core::storage` (`AccountStore`, `RosterStore`, `OfflineStore`,
//! ...).
//!
//! The embedded default is [`SqliteStore`], a single SQLite file in WAL
//! mode; large deployments use [`PostgresStore`]. Open one at startup
//! (the server's `wiring` picks it from the config), keep it as a
//! [`Database`] and hand [`Database::stores`] to the server.

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use jackdaw_core::storage::{StorageResult, Stores};

/// The database the server opened: either backend, with what the server
/// does to it besides the stores (the clean-shutdown checkpoint).
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(PostgresStore),
}

impl Database {
    pub fn stores(&self) -> Stores {
        match self {
            Database::Sqlite(db) => db.stores(),
            #[cfg(feature = "postgres")]
            Database::Postgres(db) => db.stores(),
        }
    }

    /// At clean shutdown: SQLite folds its WAL into the database file;
    /// a no-op on PostgreSQL, whose server checkpoints on its own.
    pub async fn checkpoint(&self) -> StorageResult<()> {
        match self {
            Database::Sqlite(db) => db.checkpoint().await,
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => Ok(()),
        }
    }
}
