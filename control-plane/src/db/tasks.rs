//! Tasks: user-visible operations and their progress.

use chrono::{DateTime, Utc};
use ferry_api::task::{Task, TaskState, TaskTarget};
use ferry_api::TaskId;
use uuid::Uuid;

use super::{paginate, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub progress_pct: f32,
    pub target_kind: Option<String>,
    pub target_id: Option<Uuid>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn task_state(s: &str) -> TaskState {
    match s {
        "running" => TaskState::Running,
        "succeeded" => TaskState::Succeeded,
        "failed" => TaskState::Failed,
        "cancelled" => TaskState::Cancelled,
        _ => TaskState::Queued,
    }
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Self {
        Task {
            id: TaskId(r.id),
            kind: r.kind,
            state: task_state(&r.state),
            progress_pct: r.progress_pct,
            target: match (r.target_kind, r.target_id) {
                (Some(kind), Some(id)) => Some(TaskTarget { kind, id }),
                _ => None,
            },
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

/// What `GET /tasks` narrows the list to.
#[derive(Debug, Default)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub kind: Option<String>,
    pub target_id: Option<Uuid>,
}

const SELECT: &str =
    "SELECT id, kind, state, progress_pct, target_kind, target_id, error, created_at, \
    finished_at FROM tasks";

impl Db {
    /// Newest first, only those `f` admits.
    pub async fn task_list(
        &self,
        page: PageReq<(DateTime<Utc>, Uuid)>,
        f: &TaskFilter,
    ) -> sqlx::Result<ferry_api::Page<Task>> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("{SELECT} WHERE true"));
        if let Some((at, id)) = page.after {
            qb.push(" AND (created_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        if let Some(state) = f.state {
            qb.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(kind) = &f.kind {
            qb.push(" AND kind = ").push_bind(kind.clone());
        }
        if let Some(target) = f.target_id {
            qb.push(" AND target_id = ").push_bind(target);
        }
        // A literal limit (validated by the caller), as in `PagedQuery`.
        qb.push(format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            u64::from(page.limit) + 1
        ));
        let rows: Vec<TaskRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| format!("{}_{}", r.created_at.timestamp_micros(), r.id),
            Task::from,
        ))
    }

    pub async fn task_fetch(&self, id: TaskId) -> sqlx::Result<Option<Task>> {
        let row: Option<TaskRow> = sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Task::from))
    }

    pub async fn task_insert(
        &self,
        kind: &str,
        target_kind: &str,
        target_id: Uuid,
    ) -> sqlx::Result<TaskId> {
        let mut conn = self.pool.acquire().await?;
        Self::task_insert_on(&mut conn, kind, target_kind, target_id).await
    }

    pub async fn task_insert_on(
        conn: &mut sqlx::PgConnection,
        kind: &str,
        target_kind: &str,
        target_id: Uuid,
    ) -> sqlx::Result<TaskId> {
        let id = TaskId::new();
        sqlx::query("INSERT INTO tasks (id, kind, target_kind, target_id) VALUES ($1, $2, $3, $4)")
            .bind(id.0)
            .bind(kind)
            .bind(target_kind)
            .bind(target_id)
            .execute(conn)
            .await?;
        Ok(id)
    }

    pub async fn task_update(
        &self,
        id: TaskId,
        state: TaskState,
        progress_pct: f32,
        error: Option<&str>,
    ) -> sqlx::Result<()> {
        let state = match state {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        };
        sqlx::query(
            "UPDATE tasks SET state = $2, progress_pct = GREATEST(progress_pct, $3), error = $4, \
             started_at = COALESCE(started_at, CASE WHEN $2 <> 'queued' THEN now() END), \
             finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled') THEN now() END \
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(state)
        .bind(progress_pct)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
