//! Datastores. Identity comes from the storage itself (the id file each agent reads
//! back), so `kind` is derived: `shared` when more than one host mounts the same id.

use ferry_api::datastore::{Datastore, DatastoreKind};
use ferry_api::{DatastoreId, HostId};
use uuid::Uuid;

use super::{list_by_id_and_name, unsigned, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct DatastoreRow {
    pub id: Uuid,
    pub name: String,
    pub capacity_bytes: i64,
    pub free_bytes: i64,
    pub host_ids: Vec<Uuid>,
}

impl From<DatastoreRow> for Datastore {
    fn from(r: DatastoreRow) -> Self {
        Datastore {
            id: DatastoreId(r.id),
            name: r.name,
            kind: if r.host_ids.len() > 1 {
                DatastoreKind::Shared
            } else {
                DatastoreKind::Local
            },
            capacity_bytes: unsigned(r.capacity_bytes),
            free_bytes: unsigned(r.free_bytes),
            host_ids: r.host_ids.into_iter().map(HostId).collect(),
        }
    }
}

const SELECT: &str = "SELECT d.id, d.name, d.capacity_bytes, d.free_bytes, \
    COALESCE((SELECT array_agg(hd.host_id ORDER BY hd.host_id) FROM host_datastores hd \
              WHERE hd.datastore_id = d.id), '{}') AS host_ids";

impl Db {
    pub async fn datastore_list(
        &self,
        page: PageReq<Uuid>,
        name: Option<&str>,
    ) -> sqlx::Result<ferry_api::Page<Datastore>> {
        list_by_id_and_name(
            self,
            "datastores d",
            SELECT,
            page,
            name,
            Datastore::from,
            |r: &DatastoreRow| r.id,
        )
        .await
    }

    pub async fn datastore_fetch(&self, id: DatastoreId) -> sqlx::Result<Option<Datastore>> {
        let row: Option<DatastoreRow> =
            sqlx::query_as(&format!("{SELECT} FROM datastores d WHERE d.id = $1"))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Datastore::from))
    }
}
