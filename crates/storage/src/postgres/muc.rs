//! `MucStore` on PostgreSQL: one JSON document per persistent room.

use async_trait::async_trait;
use jackdaw_core::storage::{MucStore, StorageResult};

use super::{Context, PostgresStore};

#[async_trait]
impl MucStore for PostgresStore {
    async fn save_room(&self, service: &str, room: &str, data: &str) -> StorageResult<()> {
        const OP: &str = "muc.save_room";
        let client = self.client(OP).await?;
        client
            .execute(
                "INSERT INTO muc_rooms (service, room, data) VALUES ($1, $2, $3)
                 ON CONFLICT (service, room) DO UPDATE SET
                     data = EXCLUDED.data, updated_at = EXCLUDED.updated_at",
                &[&service, &room, &data],
            )
            .await
            .context(OP)?;
        Ok(())
    }

    async fn delete_room(&self, service: &str, room: &str) -> StorageResult<()> {
        const OP: &str = "muc.delete_room";
        let client = self.client(OP).await?;
        client
            .execute(
                "DELETE FROM muc_rooms WHERE service = $1 AND room = $2",
                &[&service, &room],
            )
            .await
            .context(OP)?;
        Ok(())
    }

    async fn rooms(&self, service: &str) -> StorageResult<Vec<(String, String)>> {
        const OP: &str = "muc.rooms";
        let client = self.client(OP).await?;
        let rows = client
            .query(
                r#"SELECT room, data FROM muc_rooms WHERE service = $1 ORDER BY room COLLATE "C""#,
                &[&service],
            )
            .await
            .context(OP)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
