//! Placement rules (`rules`, `rule_vms`, `rule_hosts`). A rule is created inside a
//! transaction that holds its cluster's row, so two rules created at once are
//! validated one after the other and cannot together contradict.

use chrono::{DateTime, Utc};
use ferry_api::rule::{Rule, RuleKind};
use ferry_api::{ClusterId, HostId, RuleId, VmId};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::Db;

type Row = (
    Uuid,
    Uuid,
    String,
    String,
    DateTime<Utc>,
    Vec<Uuid>,
    Vec<Uuid>,
);

const SELECT: &str = "SELECT r.id, r.cluster_id, r.name, r.kind, r.created_at, \
     COALESCE((SELECT array_agg(vm_id ORDER BY vm_id) FROM rule_vms WHERE rule_id = r.id), '{}'), \
     COALESCE((SELECT array_agg(host_id ORDER BY host_id) FROM rule_hosts WHERE rule_id = r.id), '{}') \
     FROM rules r";

fn from_row(r: Row) -> Option<Rule> {
    Some(Rule {
        id: RuleId(r.0),
        cluster_id: ClusterId(r.1),
        name: r.2,
        // The column's CHECK admits only the six kinds.
        kind: RuleKind::parse(&r.3)?,
        vm_ids: r.5.into_iter().map(VmId).collect(),
        host_ids: r.6.into_iter().map(HostId).collect(),
        violations: Vec::new(),
        created_at: r.4,
    })
}

impl Db {
    /// Starts a rule change of `cluster`: the cluster's row is held until commit.
    pub async fn rule_lock_cluster(
        &self,
        cluster: ClusterId,
    ) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT id FROM clusters WHERE id = $1 FOR UPDATE")
            .bind(cluster.0)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub async fn rule_list_cluster_on(
        conn: &mut PgConnection,
        cluster: ClusterId,
    ) -> sqlx::Result<Vec<Rule>> {
        let rows: Vec<Row> =
            sqlx::query_as(&format!("{SELECT} WHERE r.cluster_id = $1 ORDER BY r.name"))
                .bind(cluster.0)
                .fetch_all(conn)
                .await?;
        Ok(rows.into_iter().filter_map(from_row).collect())
    }

    pub async fn rule_list_cluster(&self, cluster: ClusterId) -> sqlx::Result<Vec<Rule>> {
        let mut conn = self.pool.acquire().await?;
        Self::rule_list_cluster_on(&mut conn, cluster).await
    }

    pub async fn rule_fetch(&self, id: RuleId) -> sqlx::Result<Option<Rule>> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE r.id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(from_row))
    }

    pub async fn rule_insert_on(conn: &mut PgConnection, r: &Rule) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO rules (id, cluster_id, name, kind, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(r.id.0)
            .bind(r.cluster_id.0)
            .bind(&r.name)
            .bind(r.kind.as_str())
            .bind(r.created_at)
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO rule_vms (rule_id, vm_id) SELECT $1, unnest($2::uuid[])")
            .bind(r.id.0)
            .bind(r.vm_ids.iter().map(|v| v.0).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO rule_hosts (rule_id, host_id) SELECT $1, unnest($2::uuid[])")
            .bind(r.id.0)
            .bind(r.host_ids.iter().map(|h| h.0).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// False if no such rule.
    pub async fn rule_delete(&self, id: RuleId) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM rules WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
