//! The operation each VM is under (`vm_operations`): at most one at a time, held
//! by the database's primary key, taken in the same transaction that records the
//! operation (a migration's saga, a power task) and released by whatever ends it.

use ferry_api::problem::OperationRef;
use ferry_api::VmId;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;

/// What holds a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Migration,
    Power,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Migration => "migration",
            Self::Power => "power",
        }
    }
}

impl Db {
    /// Takes `vm` for the operation `op`; `Err` names the operation holding it.
    pub async fn vm_op_take_on(
        conn: &mut PgConnection,
        vm: VmId,
        kind: OpKind,
        op: Uuid,
    ) -> sqlx::Result<Result<(), OperationRef>> {
        let taken = sqlx::query(
            "INSERT INTO vm_operations (vm_id, kind, op_id) VALUES ($1, $2, $3) \
             ON CONFLICT (vm_id) DO NOTHING",
        )
        .bind(vm.0)
        .bind(kind.as_str())
        .bind(op)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if taken {
            return Ok(Ok(()));
        }
        let (kind, id): (String, Uuid) =
            sqlx::query_as("SELECT kind, op_id FROM vm_operations WHERE vm_id = $1")
                .bind(vm.0)
                .fetch_one(conn)
                .await?;
        Ok(Err(OperationRef { kind, id }))
    }

    /// Releases `vm` if `op` holds it (a release replayed is harmless).
    pub async fn vm_op_release_on(conn: &mut PgConnection, vm: VmId, op: Uuid) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM vm_operations WHERE vm_id = $1 AND op_id = $2")
            .bind(vm.0)
            .bind(op)
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn vm_op_release(&self, vm: VmId, op: Uuid) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::vm_op_release_on(&mut conn, vm, op).await
    }

    /// The VMs of a cluster that an operation holds.
    pub async fn vm_op_list_cluster(
        &self,
        cluster: ferry_api::ClusterId,
    ) -> sqlx::Result<std::collections::HashSet<VmId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT o.vm_id FROM vm_operations o JOIN vms v ON v.id = o.vm_id WHERE v.cluster_id = $1",
        )
        .bind(cluster.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(VmId).collect())
    }

    /// The operation holding `vm`, if any.
    pub async fn vm_op_fetch(&self, vm: VmId) -> sqlx::Result<Option<OperationRef>> {
        let row: Option<(String, Uuid)> =
            sqlx::query_as("SELECT kind, op_id FROM vm_operations WHERE vm_id = $1")
                .bind(vm.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(kind, id)| OperationRef { kind, id }))
    }

    /// At start-up: power tasks do not outlive the control plane that ran them, so
    /// their holds go, and their tasks are recorded as failed. Returns how many.
    pub async fn vm_op_clear_power(&self) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE tasks SET state = 'failed', progress_pct = 100, \
             error = 'the control plane restarted during the operation', finished_at = now() \
             WHERE id IN (SELECT op_id FROM vm_operations WHERE kind = 'power') \
             AND state IN ('queued', 'running')",
        )
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM vm_operations WHERE kind = 'power'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
