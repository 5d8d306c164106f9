//! Migrations: the record of each move, its progress and its outcome.

use chrono::{DateTime, Utc};
use ferry_api::migration::{
    Migration, MigrationProgress, MigrationResult, MigrationState, Prediction,
};
use ferry_api::vm::MigrationPolicy;
use ferry_api::{ClusterId, HostId, MigrationId, SagaId, VmId};
use sqlx::types::Json;
use uuid::Uuid;

use super::{paginate, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct MigrationRow {
    pub id: Uuid,
    pub vm_id: Uuid,
    pub source_host_id: Uuid,
    pub destination_host_id: Uuid,
    pub state: String,
    pub phase: String,
    pub policy: Json<MigrationPolicy>,
    pub progress: Json<MigrationProgress>,
    pub prediction: Option<Json<Prediction>>,
    pub result: Option<Json<MigrationResult>>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `[{"name", "at"}]`, each phase's start.
    pub phases: Json<Vec<PhaseStart>>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct PhaseStart {
    pub name: String,
    pub at: DateTime<Utc>,
}

/// Phases with durations: each lasts until the next begins, the last until the end.
fn timeline(
    created: DateTime<Utc>,
    starts: &[PhaseStart],
    finished: Option<DateTime<Utc>>,
) -> Vec<ferry_api::migration::MigrationPhase> {
    let mut all = vec![PhaseStart {
        name: "queued".into(),
        at: created,
    }];
    all.extend(starts.iter().cloned());
    (0..all.len())
        .map(|i| {
            let end = all.get(i + 1).map(|n| n.at).or(finished);
            ferry_api::migration::MigrationPhase {
                name: all[i].name.clone(),
                started_at: all[i].at,
                duration_ms: end.map(|e| (e - all[i].at).num_milliseconds().max(0) as u64),
            }
        })
        .collect()
}

impl From<MigrationRow> for Migration {
    fn from(r: MigrationRow) -> Self {
        Migration {
            id: MigrationId(r.id),
            vm_id: VmId(r.vm_id),
            source_host_id: HostId(r.source_host_id),
            destination_host_id: HostId(r.destination_host_id),
            state: MigrationState::parse(&r.state).unwrap_or(MigrationState::Failed),
            phase: r.phase,
            policy: r.policy.0,
            progress: r.progress.0,
            prediction: r.prediction.map(|p| p.0),
            result: r.result.map(|p| p.0),
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            phases: timeline(r.created_at, &r.phases.0, r.finished_at),
        }
    }
}

const SELECT: &str =
    "SELECT id, vm_id, source_host_id, destination_host_id, state, phase, policy, progress, \
    prediction, result, error, created_at, started_at, finished_at, phases FROM migrations";

/// A migration about to be recorded.
pub struct NewMigration<'a> {
    pub id: MigrationId,
    pub vm: VmId,
    pub source: HostId,
    pub destination: HostId,
    pub policy: &'a MigrationPolicy,
    pub prediction: Option<&'a Prediction>,
    pub saga: SagaId,
    /// The share of its hosts' budgets it takes (2 for a disk copy to another
    /// host: a second stream on the link).
    pub slots: i16,
}

impl Db {
    /// Records a migration; fails with a unique violation if the VM already moves.
    pub async fn migration_insert_on(
        conn: &mut sqlx::PgConnection,
        m: &NewMigration<'_>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO migrations (id, vm_id, source_host_id, destination_host_id, policy, prediction, saga_id, slots) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(m.id.0)
        .bind(m.vm.0)
        .bind(m.source.0)
        .bind(m.destination.0)
        .bind(Json(m.policy))
        .bind(m.prediction.map(Json))
        .bind(m.saga.0)
        .bind(m.slots)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn migration_fetch(&self, id: MigrationId) -> sqlx::Result<Option<Migration>> {
        let row: Option<MigrationRow> = sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Migration::from))
    }

    /// Newest first.
    pub async fn migration_list(
        &self,
        page: PageReq<Uuid>,
        vm: Option<VmId>,
        active: Option<bool>,
    ) -> sqlx::Result<ferry_api::Page<Migration>> {
        let mut q = sqlx::QueryBuilder::new(format!("{SELECT} WHERE true"));
        if let Some(after) = page.after {
            q.push(" AND (created_at, id) < (SELECT created_at, id FROM migrations WHERE id = ")
                .push_bind(after)
                .push(")");
        }
        if let Some(vm) = vm {
            q.push(" AND vm_id = ").push_bind(vm.0);
        }
        match active {
            Some(true) => q.push(" AND finished_at IS NULL"),
            Some(false) => q.push(" AND finished_at IS NOT NULL"),
            None => &mut q,
        };
        q.push(format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            u64::from(page.limit) + 1
        ));
        let rows: Vec<MigrationRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| r.id.to_string(),
            Migration::from,
        ))
    }

    pub async fn migration_set_state(
        &self,
        id: MigrationId,
        state: MigrationState,
        phase: &str,
    ) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::migration_set_state_on(&mut conn, id, state, phase).await
    }

    pub async fn migration_set_state_on(
        conn: &mut sqlx::PgConnection,
        id: MigrationId,
        state: MigrationState,
        phase: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE migrations SET state = $2, phase = $3, \
             phases = CASE WHEN phase = $3 THEN phases \
                      ELSE phases || jsonb_build_array(jsonb_build_object('name', $3::text, 'at', clock_timestamp())) END, \
             started_at = COALESCE(started_at, CASE WHEN $2 <> 'queued' THEN now() END) WHERE id = $1",
        )
        .bind(id.0)
        .bind(state.as_str())
        .bind(phase)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn migration_set_progress(
        &self,
        id: MigrationId,
        p: &MigrationProgress,
    ) -> sqlx::Result<()> {
        sqlx::query("UPDATE migrations SET progress = $2 WHERE id = $1")
            .bind(id.0)
            .bind(Json(p))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn migration_finish(
        &self,
        id: MigrationId,
        state: MigrationState,
        result: Option<&MigrationResult>,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::migration_finish_on(&mut conn, id, state, result, error).await
    }

    pub async fn migration_finish_on(
        conn: &mut sqlx::PgConnection,
        id: MigrationId,
        state: MigrationState,
        result: Option<&MigrationResult>,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE migrations SET state = $2, phase = $2, result = $3, error = $4, finished_at = now() WHERE id = $1",
        )
        .bind(id.0)
        .bind(state.as_str())
        .bind(result.map(Json))
        .bind(error)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Asks a running migration to stop; false if it already finished.
    pub async fn migration_request_cancel(&self, id: MigrationId) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE migrations SET cancel_requested = true WHERE id = $1 \
             AND state NOT IN ('completed', 'failed', 'cancelled', 'switching_over')",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn migration_cancel_requested(&self, id: MigrationId) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT cancel_requested FROM migrations WHERE id = $1")
            .bind(id.0)
            .fetch_one(&self.pool)
            .await
    }

    /// Migrations off `host` created since `since`: (vm, id, state, destination).
    pub async fn migration_list_from_host(
        &self,
        host: HostId,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<(VmId, MigrationId, MigrationState, HostId)>> {
        let rows: Vec<(Uuid, Uuid, String, Uuid)> = sqlx::query_as(
            "SELECT vm_id, id, state, destination_host_id FROM migrations \
             WHERE source_host_id = $1 AND created_at >= $2 ORDER BY created_at",
        )
        .bind(host.0)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(vm, id, st, d)| {
                (
                    VmId(vm),
                    MigrationId(id),
                    MigrationState::parse(&st).unwrap_or(MigrationState::Failed),
                    HostId(d),
                )
            })
            .collect())
    }

    /// Where the VMs of `cluster` under migration are going.
    pub async fn migration_active_destinations(
        &self,
        cluster: ClusterId,
    ) -> sqlx::Result<Vec<(VmId, HostId)>> {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT m.vm_id, m.destination_host_id FROM migrations m JOIN vms v ON v.id = m.vm_id \
             WHERE v.cluster_id = $1 AND m.state NOT IN ('completed', 'failed', 'cancelled')",
        )
        .bind(cluster.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(vm, h)| (VmId(vm), HostId(h)))
            .collect())
    }

    /// Whether `vm`'s latest migration failed in post-copy (its state is split
    /// between two hosts: an operator decides, no sweep touches its copies).
    pub async fn migration_latest_failed_in_postcopy(&self, vm: VmId) -> sqlx::Result<bool> {
        let row: Option<bool> = sqlx::query_scalar(
            "SELECT state = 'failed' AND phase = 'postcopy' FROM migrations \
             WHERE vm_id = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(vm.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.unwrap_or(false))
    }

    /// Unfinished migrations touching `host` (for its concurrency budget).
    pub async fn migration_active_on_host(&self, host: HostId) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM migrations WHERE state NOT IN ('completed', 'failed', 'cancelled') \
             AND (source_host_id = $1 OR destination_host_id = $1)",
        )
        .bind(host.0)
        .fetch_one(&self.pool)
        .await
    }

    /// Whether a migration touching any of `hosts` is unfinished, or finished less
    /// than `quiet` ago (a link between them is not measured then).
    pub async fn migration_recent_on_hosts(
        &self,
        hosts: &[HostId],
        quiet: std::time::Duration,
    ) -> sqlx::Result<bool> {
        let ids: Vec<Uuid> = hosts.iter().map(|h| h.0).collect();
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM migrations \
               WHERE (source_host_id = ANY($1) OR destination_host_id = ANY($1)) \
               AND (state NOT IN ('completed', 'failed', 'cancelled') \
                    OR finished_at > now() - make_interval(secs => $2)))",
        )
        .bind(&ids)
        .bind(quiet.as_secs_f64())
        .fetch_one(&self.pool)
        .await
    }

    /// Starts queued migration `id` if both its hosts have a free slot and no older
    /// queued migration shares a host with it (first come, first served). Serialised
    /// by an advisory lock so two sagas cannot both take the last slot.
    pub async fn migration_try_start(&self, id: MigrationId, budget: u32) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(727274)")
            .execute(&mut *tx)
            .await?;
        let ok: bool = sqlx::query_scalar(
            // Slots in use on either host, plus this move's, within the budget —
            // or nothing else running there (a move bigger than the budget still
            // gets its turn, alone).
            "WITH me AS (SELECT source_host_id AS s, destination_host_id AS d, created_at, slots FROM migrations WHERE id = $1), \
                  used AS (SELECT COALESCE(sum(m.slots), 0) AS n FROM migrations m, me WHERE m.state IN ('preparing', 'transferring', 'switching_over') \
                       AND (m.source_host_id IN (me.s, me.d) OR m.destination_host_id IN (me.s, me.d))) \
             SELECT ((SELECT n FROM used) = 0 OR (SELECT n FROM used) + (SELECT slots FROM me) <= $2) \
                AND NOT EXISTS (SELECT 1 FROM migrations m, me WHERE m.state = 'queued' AND m.id <> $1 \
                       AND (m.created_at, m.id) < (me.created_at, $1) \
                       AND (m.source_host_id IN (me.s, me.d) OR m.destination_host_id IN (me.s, me.d)))",
        )
        .bind(id.0)
        .bind(i64::from(budget))
        .fetch_one(&mut *tx)
        .await?;
        if ok {
            sqlx::query("UPDATE migrations SET state = 'preparing', phase = 'preparing', started_at = now(), \
                 phases = phases || jsonb_build_array(jsonb_build_object('name', 'preparing', 'at', clock_timestamp())) \
                 WHERE id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ok)
    }

    /// Moves the VM to `host` and marks it running: the migration's commit.
    /// A storage migration's disks now live on their new datastores.
    pub async fn vm_disks_moved_on(
        conn: &mut sqlx::PgConnection,
        vm: VmId,
        moves: &[crate::app::storage::DiskMove],
    ) -> sqlx::Result<()> {
        for m in moves {
            sqlx::query("UPDATE vm_disks SET datastore_id = $3 WHERE vm_id = $1 AND idx = $2")
                .bind(vm.0)
                .bind(m.disk as i32)
                .bind(m.to.0)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    pub async fn vm_commit_move_on(
        conn: &mut sqlx::PgConnection,
        vm: VmId,
        host: HostId,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE vms SET host_id = $2, power_state = 'running', runtime_generation = 0, updated_at = now() \
             WHERE id = $1",
        )
        .bind(vm.0)
        .bind(host.0)
        .execute(conn)
        .await?;
        Ok(())
    }
}
