//! Storage backends for Jackdaw: implementations of the storage traits of
//! `jackdaw_core::storage` (`AccountStore`, `RosterStore`, `OfflineStore`).
//!
//! The embedded default is [`SqliteStore`], a single SQLite file in WAL
//! mode; open it once at startup and hand [`SqliteStore::stores`] to the
//! server.

pub mod sqlite;

pub use sqlite::SqliteStore;
