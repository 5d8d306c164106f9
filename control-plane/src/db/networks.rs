//! Networks (port groups), joined by name across the hosts that offer them.

use ferry_api::network::Network;
use ferry_api::{HostId, NetworkId};
use uuid::Uuid;

use super::{list_by_id_and_name, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct NetworkRow {
    pub id: Uuid,
    pub name: String,
    pub host_ids: Vec<Uuid>,
}

impl From<NetworkRow> for Network {
    fn from(r: NetworkRow) -> Self {
        Network {
            id: NetworkId(r.id),
            name: r.name,
            host_ids: r.host_ids.into_iter().map(HostId).collect(),
        }
    }
}

const SELECT: &str = "SELECT n.id, n.name, \
    COALESCE((SELECT array_agg(hn.host_id ORDER BY hn.host_id) FROM host_networks hn \
              WHERE hn.network_id = n.id), '{}') AS host_ids";

impl Db {
    pub async fn network_list(
        &self,
        page: PageReq<Uuid>,
        name: Option<&str>,
    ) -> sqlx::Result<ferry_api::Page<Network>> {
        list_by_id_and_name(
            self,
            "networks n",
            SELECT,
            page,
            name,
            Network::from,
            |r: &NetworkRow| r.id,
        )
        .await
    }

    pub async fn network_fetch(&self, id: NetworkId) -> sqlx::Result<Option<Network>> {
        let row: Option<NetworkRow> =
            sqlx::query_as(&format!("{SELECT} FROM networks n WHERE n.id = $1"))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Network::from))
    }
}
