//! The saga log: every multi-step operation records its parameters and one row
//! per node event, so a control plane that restarts can see how far each got
//! (`saga::recover_all`). The writes a node's outcome makes share its transaction
//! (`*_on`, on a connection the executor holds in a transaction).

use ferry_api::SagaId;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;
use crate::saga::{NodeEvent, SagaState};

/// One recorded node event.
#[derive(Debug, Clone)]
pub struct SagaEventRow {
    pub node: String,
    pub event: NodeEvent,
    pub data: serde_json::Value,
}

/// A saga as recorded.
#[derive(Debug, Clone)]
pub struct SagaRow {
    pub id: SagaId,
    pub kind: String,
    pub params: serde_json::Value,
    pub state: SagaState,
}

impl Db {
    pub async fn saga_insert_on(
        conn: &mut PgConnection,
        id: SagaId,
        kind: &str,
        params: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO sagas (id, kind, params) VALUES ($1, $2, $3)")
            .bind(id.0)
            .bind(kind)
            .bind(Json(params))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Appends a node event.
    pub async fn saga_event_on(
        conn: &mut PgConnection,
        id: SagaId,
        node: &str,
        event: NodeEvent,
        data: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO saga_events (saga_id, seq, step, event_type, data) VALUES \
             ($1, (SELECT COALESCE(max(seq), 0) + 1 FROM saga_events WHERE saga_id = $1), $2, $3, $4)",
        )
        .bind(id.0)
        .bind(node)
        .bind(event.as_str())
        .bind(Json(data))
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn saga_event(
        &self,
        id: SagaId,
        node: &str,
        event: NodeEvent,
        data: &serde_json::Value,
    ) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::saga_event_on(&mut conn, id, node, event, data).await
    }

    pub async fn saga_set_state_on(
        conn: &mut PgConnection,
        id: SagaId,
        state: SagaState,
    ) -> sqlx::Result<()> {
        sqlx::query("UPDATE sagas SET state = $2, updated_at = now() WHERE id = $1")
            .bind(id.0)
            .bind(state.as_str())
            .execute(conn)
            .await?;
        Ok(())
    }

    pub async fn saga_set_state(&self, id: SagaId, state: SagaState) -> sqlx::Result<()> {
        let mut conn = self.pool.acquire().await?;
        Self::saga_set_state_on(&mut conn, id, state).await
    }

    /// Every saga a previous control plane left unfinished, oldest first.
    pub async fn saga_unfinished(&self) -> sqlx::Result<Vec<SagaRow>> {
        let rows: Vec<(Uuid, String, Json<serde_json::Value>, String)> = sqlx::query_as(
            "SELECT id, kind, params, state FROM sagas WHERE state IN ('running', 'unwinding') \
             ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, kind, params, state)| SagaRow {
                id: SagaId(id),
                kind,
                params: params.0,
                // The column's CHECK admits only the four states.
                state: SagaState::parse(&state).unwrap_or(SagaState::Failed),
            })
            .collect())
    }

    pub async fn saga_fetch(&self, id: SagaId) -> sqlx::Result<Option<SagaRow>> {
        let row: Option<(Uuid, String, Json<serde_json::Value>, String)> =
            sqlx::query_as("SELECT id, kind, params, state FROM sagas WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, kind, params, state)| SagaRow {
            id: SagaId(id),
            kind,
            params: params.0,
            state: SagaState::parse(&state).unwrap_or(SagaState::Failed),
        }))
    }

    /// The saga's node events, in order.
    pub async fn saga_events(&self, id: SagaId) -> sqlx::Result<Vec<SagaEventRow>> {
        let rows: Vec<(String, String, Json<serde_json::Value>)> = sqlx::query_as(
            "SELECT step, event_type, data FROM saga_events WHERE saga_id = $1 ORDER BY seq",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(node, event, data)| {
                Some(SagaEventRow {
                    node,
                    // The column's CHECK admits only the five events.
                    event: NodeEvent::parse(&event)?,
                    data: data.0,
                })
            })
            .collect())
    }
}
