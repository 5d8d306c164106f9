//! The saga log: every multi-step operation records its parameters and one row
//! per step event, so a control plane that restarts can see how far each got.

use ferry_api::SagaId;
use sqlx::types::Json;
use uuid::Uuid;

use super::Db;

impl Db {
    pub async fn saga_insert(
        &self,
        id: SagaId,
        kind: &str,
        params: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO sagas (id, kind, params) VALUES ($1, $2, $3)")
            .bind(id.0)
            .bind(kind)
            .bind(Json(params))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends a step event (`started`, `succeeded`, `failed`, `undo_started`, `undo_finished`).
    pub async fn saga_event(
        &self,
        id: SagaId,
        step: &str,
        event: &str,
        data: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO saga_events (saga_id, seq, step, event_type, data) VALUES \
             ($1, (SELECT COALESCE(max(seq), 0) + 1 FROM saga_events WHERE saga_id = $1), $2, $3, $4)",
        )
        .bind(id.0)
        .bind(step)
        .bind(event)
        .bind(Json(data))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn saga_set_state(&self, id: SagaId, state: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE sagas SET state = $2, updated_at = now() WHERE id = $1")
            .bind(id.0)
            .bind(state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sagas of `kind` a previous control plane left unfinished, with their params.
    pub async fn saga_unfinished(
        &self,
        kind: &str,
    ) -> sqlx::Result<Vec<(SagaId, serde_json::Value)>> {
        let rows: Vec<(Uuid, Json<serde_json::Value>)> =
            sqlx::query_as("SELECT id, params FROM sagas WHERE kind = $1 AND state IN ('running', 'unwinding') ORDER BY created_at")
                .bind(kind)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id, p)| (SagaId(id), p.0)).collect())
    }

    /// The steps that succeeded, in order.
    pub async fn saga_succeeded_steps(&self, id: SagaId) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT step FROM saga_events WHERE saga_id = $1 AND event_type = 'succeeded' ORDER BY seq")
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
    }
}
