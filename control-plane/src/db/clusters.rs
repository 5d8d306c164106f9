//! Clusters.

use chrono::{DateTime, Utc};
use ferry_api::cluster::{Cluster, Drs, DrsAutomation};
use ferry_api::ClusterId;
use uuid::Uuid;

use super::{list_by_id_and_name, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct ClusterRow {
    pub id: Uuid,
    pub name: String,
    pub cpu_baseline: Option<String>,
    pub drs_automation: String,
    pub drs_threshold: i16,
    pub drs_interval_s: i32,
    pub host_count: i64,
    pub vm_count: i64,
    pub created_at: DateTime<Utc>,
}

impl From<ClusterRow> for Cluster {
    fn from(r: ClusterRow) -> Self {
        Cluster {
            id: ClusterId(r.id),
            name: r.name,
            cpu_baseline: r.cpu_baseline,
            drs: Drs {
                automation: DrsAutomation::parse(&r.drs_automation)
                    .unwrap_or(DrsAutomation::Manual),
                threshold: r.drs_threshold.clamp(1, 5) as u8,
                interval_s: r.drs_interval_s.max(1) as u32,
            },
            host_count: r.host_count.max(0) as u32,
            vm_count: r.vm_count.max(0) as u32,
            created_at: r.created_at,
        }
    }
}

const SELECT: &str = "SELECT c.id, c.name, c.cpu_baseline, c.drs_automation, c.drs_threshold, \
    c.drs_interval_s, c.created_at, \
    (SELECT count(*) FROM hosts h WHERE h.cluster_id = c.id) AS host_count, \
    (SELECT count(*) FROM vms v WHERE v.cluster_id = c.id) AS vm_count";

/// The writable fields of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterFields {
    pub name: String,
    pub cpu_baseline: Option<String>,
    pub drs: Drs,
}

impl Db {
    pub async fn cluster_list(
        &self,
        page: PageReq<Uuid>,
        name: Option<&str>,
    ) -> sqlx::Result<ferry_api::Page<Cluster>> {
        list_by_id_and_name(
            self,
            "clusters c",
            SELECT,
            page,
            name,
            Cluster::from,
            |r: &ClusterRow| r.id,
        )
        .await
    }

    /// Every cluster (there are few: a cluster is tens to thousands of hosts).
    pub async fn cluster_list_all(&self) -> sqlx::Result<Vec<Cluster>> {
        let rows: Vec<ClusterRow> =
            sqlx::query_as(&format!("{SELECT} FROM clusters c ORDER BY c.id"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Cluster::from).collect())
    }

    pub async fn cluster_fetch(&self, id: ClusterId) -> sqlx::Result<Option<Cluster>> {
        let row: Option<ClusterRow> =
            sqlx::query_as(&format!("{SELECT} FROM clusters c WHERE c.id = $1"))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Cluster::from))
    }

    pub async fn cluster_insert(&self, f: &ClusterFields) -> sqlx::Result<ClusterId> {
        let id = ClusterId::new();
        sqlx::query(
            "INSERT INTO clusters (id, name, cpu_baseline, drs_automation, drs_threshold, drs_interval_s) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.0)
        .bind(&f.name)
        .bind(&f.cpu_baseline)
        .bind(f.drs.automation.as_str())
        .bind(i16::from(f.drs.threshold))
        .bind(f.drs.interval_s as i32)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    pub async fn cluster_update(&self, id: ClusterId, f: &ClusterFields) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE clusters SET name = $2, cpu_baseline = $3, drs_automation = $4, drs_threshold = $5, \
             drs_interval_s = $6, updated_at = now() WHERE id = $1",
        )
        .bind(id.0)
        .bind(&f.name)
        .bind(&f.cpu_baseline)
        .bind(f.drs.automation.as_str())
        .bind(i16::from(f.drs.threshold))
        .bind(f.drs.interval_s as i32)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The cluster called `name`, created with defaults on first use.
    pub async fn cluster_ensure(&self, name: &str) -> sqlx::Result<(ClusterId, bool)> {
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO clusters (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(id) = inserted {
            return Ok((ClusterId(id), true));
        }
        let id: Uuid = sqlx::query_scalar("SELECT id FROM clusters WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok((ClusterId(id), false))
    }
}
