//! `MucStore` on SQLite: one JSON document per persistent room.

use async_trait::async_trait;
use jackdaw_core::storage::{MucStore, StorageResult};
use rusqlite::params;

use super::{Context, SqliteStore, write_tx};

#[async_trait]
impl MucStore for SqliteStore {
    async fn save_room(&self, service: &str, room: &str, data: &str) -> StorageResult<()> {
        const OP: &str = "muc.save_room";
        let (service, room, data) = (service.to_owned(), room.to_owned(), data.to_owned());
        self.run(OP, move |conn| {
            let tx = write_tx(conn, OP)?;
            tx.execute(
                "INSERT INTO muc_rooms (service, room, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (service, room) DO UPDATE SET data = excluded.data, updated_at = unixepoch()",
                params![service, room, data],
            )
            .context(OP)?;
            tx.commit().context(OP)
        })
        .await
    }

    async fn delete_room(&self, service: &str, room: &str) -> StorageResult<()> {
        const OP: &str = "muc.delete_room";
        let (service, room) = (service.to_owned(), room.to_owned());
        self.run(OP, move |conn| {
            conn.execute(
                "DELETE FROM muc_rooms WHERE service = ?1 AND room = ?2",
                params![service, room],
            )
            .context(OP)?;
            Ok(())
        })
        .await
    }

    async fn rooms(&self, service: &str) -> StorageResult<Vec<(String, String)>> {
        const OP: &str = "muc.rooms";
        let service = service.to_owned();
        self.run(OP, move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT room, data FROM muc_rooms WHERE service = ?1 ORDER BY room")
                .context(OP)?;
            let rows = stmt
                .query_map(params![service], |r| Ok((r.get(0)?, r.get(1)?)))
                .context(OP)?
                .collect::<rusqlite::Result<Vec<(String, String)>>>()
                .context(OP)?;
            Ok(rows)
        })
        .await
    }
}
