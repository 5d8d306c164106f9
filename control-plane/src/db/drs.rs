//! Balancing passes and their recommendations (`drs_passes`,
//! `drs_recommendations`), and what balancing reads of past moves: when each VM
//! last moved and which hosts it left.

use chrono::{DateTime, Utc};
use ferry_api::drs::{DrsPass, DrsTrigger, Imbalance, Recommendation, RecommendationState};
use ferry_api::{ClusterId, HostId, MigrationId, VmId};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;

#[derive(sqlx::FromRow)]
struct PassRow {
    id: Uuid,
    at: DateTime<Utc>,
    trigger: String,
    dry_run: bool,
    before: Json<Imbalance>,
    after: Json<Imbalance>,
    tolerance: Option<f64>,
    moves: i32,
    applied: i32,
}

impl From<PassRow> for DrsPass {
    fn from(r: PassRow) -> Self {
        DrsPass {
            id: r.id,
            at: r.at,
            trigger: if r.trigger == "scheduled" {
                DrsTrigger::Scheduled
            } else {
                DrsTrigger::OnDemand
            },
            dry_run: r.dry_run,
            before: r.before.0,
            after: r.after.0,
            tolerance: r.tolerance,
            moves: r.moves.max(0) as u32,
            applied: r.applied.max(0) as u32,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RecRow {
    id: Uuid,
    cluster_id: Uuid,
    pass_id: Uuid,
    vm_id: Uuid,
    from_host_id: Uuid,
    to_host_id: Uuid,
    gain: f64,
    cost_s: f64,
    reason: String,
    state: String,
    migration_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<RecRow> for Recommendation {
    fn from(r: RecRow) -> Self {
        Recommendation {
            id: r.id,
            cluster_id: ClusterId(r.cluster_id),
            pass_id: r.pass_id,
            vm_id: VmId(r.vm_id),
            from_host_id: HostId(r.from_host_id),
            to_host_id: HostId(r.to_host_id),
            gain: r.gain,
            cost_s: r.cost_s,
            reason: r.reason,
            // The column's CHECK admits only the four states.
            state: RecommendationState::parse(&r.state).unwrap_or(RecommendationState::Superseded),
            migration_id: r.migration_id.map(MigrationId),
            created_at: r.created_at,
        }
    }
}

const REC: &str = "SELECT id, cluster_id, pass_id, vm_id, from_host_id, to_host_id, gain, cost_s, \
    reason, state, migration_id, created_at FROM drs_recommendations";

impl Db {
    /// Records an evaluation that moved nothing (the imbalance's history).
    pub async fn drs_pass_record(&self, cluster: ClusterId, pass: &DrsPass) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::drs_pass_insert_on(&mut tx, cluster, pass).await?;
        tx.commit().await
    }

    async fn drs_pass_insert_on(
        conn: &mut PgConnection,
        cluster: ClusterId,
        pass: &DrsPass,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO drs_passes (id, cluster_id, trigger, dry_run, before, after, tolerance, moves, applied, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(pass.id)
        .bind(cluster.0)
        .bind(pass.trigger.as_str())
        .bind(pass.dry_run)
        .bind(Json(pass.before))
        .bind(Json(pass.after))
        .bind(pass.tolerance)
        .bind(pass.moves as i32)
        .bind(pass.applied as i32)
        .bind(pass.at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Records a pass with its recommendations; earlier pending ones are superseded.
    pub async fn drs_pass_insert(
        &self,
        cluster: ClusterId,
        pass: &DrsPass,
        recs: &[Recommendation],
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::drs_pass_insert_on(&mut tx, cluster, pass).await?;
        sqlx::query(
            "UPDATE drs_recommendations SET state = 'superseded' WHERE cluster_id = $1 AND state = 'pending'",
        )
        .bind(cluster.0)
        .execute(&mut *tx)
        .await?;
        for r in recs {
            Self::drs_recommendation_insert_on(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn drs_recommendation_insert_on(
        conn: &mut PgConnection,
        r: &Recommendation,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO drs_recommendations (id, cluster_id, pass_id, vm_id, from_host_id, to_host_id, \
             gain, cost_s, reason, state, migration_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(r.id)
        .bind(r.cluster_id.0)
        .bind(r.pass_id)
        .bind(r.vm_id.0)
        .bind(r.from_host_id.0)
        .bind(r.to_host_id.0)
        .bind(r.gain)
        .bind(r.cost_s)
        .bind(&r.reason)
        .bind(r.state.as_str())
        .bind(r.migration_id.map(|m| m.0))
        .bind(r.created_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The latest `limit` passes of a cluster, newest first.
    pub async fn drs_pass_history(
        &self,
        cluster: ClusterId,
        limit: i64,
    ) -> sqlx::Result<Vec<DrsPass>> {
        let rows: Vec<PassRow> = sqlx::query_as(
            "SELECT id, at, trigger, dry_run, before, after, tolerance, moves, applied FROM drs_passes \
             WHERE cluster_id = $1 ORDER BY at DESC, id LIMIT $2",
        )
        .bind(cluster.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(DrsPass::from).collect())
    }

    /// A cluster's recommendations, newest first (`pending_only`: those to act on).
    pub async fn drs_recommendation_list(
        &self,
        cluster: ClusterId,
        pending_only: bool,
        limit: i64,
    ) -> sqlx::Result<Vec<Recommendation>> {
        let rows: Vec<RecRow> = sqlx::query_as(&format!(
            "{REC} WHERE cluster_id = $1 AND ($2 = false OR state = 'pending') \
             ORDER BY created_at DESC, id LIMIT $3"
        ))
        .bind(cluster.0)
        .bind(pending_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Recommendation::from).collect())
    }

    pub async fn drs_recommendation_fetch(&self, id: Uuid) -> sqlx::Result<Option<Recommendation>> {
        let row: Option<RecRow> = sqlx::query_as(&format!("{REC} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Recommendation::from))
    }

    /// Moves a pending recommendation to `state`; false if it was not pending.
    pub async fn drs_recommendation_close(
        &self,
        id: Uuid,
        state: RecommendationState,
        migration: Option<MigrationId>,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE drs_recommendations SET state = $2, migration_id = $3 WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(migration.map(|m| m.0))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// For each VM of the cluster that moved since `since`: when it last moved and
    /// the hosts it left.
    pub async fn drs_recent_moves(
        &self,
        cluster: ClusterId,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<(VmId, DateTime<Utc>, Vec<HostId>)>> {
        let rows: Vec<(Uuid, DateTime<Utc>, Vec<Uuid>)> = sqlx::query_as(
            "SELECT m.vm_id, max(m.finished_at), array_agg(DISTINCT m.source_host_id) \
             FROM migrations m JOIN vms v ON v.id = m.vm_id \
             WHERE v.cluster_id = $1 AND m.state = 'completed' AND m.finished_at >= $2 \
             GROUP BY m.vm_id",
        )
        .bind(cluster.0)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(vm, at, left)| (VmId(vm), at, left.into_iter().map(HostId).collect()))
            .collect())
    }
}
