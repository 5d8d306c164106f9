//! Host maintenance: each evacuation's record (`maintenance`) and the host's
//! administrative mode (`hosts.mode`: active, entering_maintenance, maintenance).

use chrono::{DateTime, Utc};
use ferry_api::maintenance::{MaintenancePlan, MaintenanceState};
use ferry_api::{HostId, SagaId};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;

/// The host's administrative mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMode {
    Active,
    EnteringMaintenance,
    Maintenance,
}

impl HostMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::EnteringMaintenance => "entering_maintenance",
            Self::Maintenance => "maintenance",
        }
    }
}

/// A maintenance as recorded.
#[derive(Debug, Clone)]
pub struct MaintenanceRow {
    pub id: Uuid,
    pub host_id: HostId,
    pub saga_id: SagaId,
    pub state: MaintenanceState,
    pub plan: MaintenancePlan,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

type Row = (
    Uuid,
    Uuid,
    Uuid,
    String,
    Json<MaintenancePlan>,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn from_row(r: Row) -> MaintenanceRow {
    MaintenanceRow {
        id: r.0,
        host_id: HostId(r.1),
        saga_id: SagaId(r.2),
        // The column's CHECK admits only the five states.
        state: MaintenanceState::parse(&r.3).unwrap_or(MaintenanceState::Failed),
        plan: r.4 .0,
        error: r.5,
        created_at: r.6,
        finished_at: r.7,
    }
}

const SELECT: &str =
    "SELECT id, host_id, saga_id, state, plan, error, created_at, finished_at FROM maintenance";

impl Db {
    pub async fn host_set_mode_on(
        conn: &mut PgConnection,
        host: HostId,
        mode: HostMode,
    ) -> sqlx::Result<()> {
        sqlx::query("UPDATE hosts SET mode = $2 WHERE id = $1")
            .bind(host.0)
            .bind(mode.as_str())
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn host_set_mode(&self, host: HostId, mode: HostMode) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::host_set_mode_on(&mut conn, host, mode).await
    }

    /// Records a maintenance; a unique violation if the host is being evacuated.
    #[allow(clippy::too_many_arguments)]
    pub async fn maintenance_insert_on(
        conn: &mut PgConnection,
        id: Uuid,
        host: HostId,
        saga: SagaId,
        powered_off: &str,
        unmovable: &str,
        plan: &MaintenancePlan,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO maintenance (id, host_id, saga_id, powered_off, unmovable, plan) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(host.0)
        .bind(saga.0)
        .bind(powered_off)
        .bind(unmovable)
        .bind(Json(plan))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The host's latest maintenance.
    pub async fn maintenance_latest(&self, host: HostId) -> sqlx::Result<Option<MaintenanceRow>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "{SELECT} WHERE host_id = $1 ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(host.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(from_row))
    }

    pub async fn maintenance_finish_on(
        conn: &mut PgConnection,
        id: Uuid,
        state: MaintenanceState,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE maintenance SET state = $2, error = $3, finished_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(error)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn maintenance_finish(
        &self,
        id: Uuid,
        state: MaintenanceState,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::maintenance_finish_on(&mut conn, id, state, error).await
    }

    /// Asks a running evacuation to stop; false if none runs.
    pub async fn maintenance_request_cancel(&self, host: HostId) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE maintenance SET cancel_requested = true WHERE host_id = $1 AND state = 'evacuating'",
        )
        .bind(host.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn maintenance_cancel_requested(&self, id: Uuid) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT cancel_requested FROM maintenance WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
    }
}
