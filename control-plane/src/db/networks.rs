//! Networks (port groups), joined by name across the hosts that offer them.

use ferry_api::network::Network;
use ferry_api::{HostId, NetworkId};
use uuid::Uuid;

use super::{paginate, Db, PageReq, PagedQuery};

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
        let rows: Vec<NetworkRow> = PagedQuery::new("networks n")
            .filter("n.id > ", page.after)
            .filter("n.name = ", name.map(str::to_string))
            .finish("n.id", page.limit, SELECT, "n")
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| r.id.to_string(),
            Network::from,
        ))
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
