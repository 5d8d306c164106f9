//! `GET /tasks` (newest first, filtered by state, kind and target), `GET /tasks/{id}`.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_api::task::{Task, TaskState};
use ferry_api::{Page, Problem, TaskId};
use serde::Deserialize;

use super::extract::{invalid_cursor, ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::db::tasks::TaskFilter;
use crate::db::PageReq;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskListParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only tasks in this state.
    #[param(value_type = Option<TaskState>)]
    pub state: Option<TaskState>,
    /// Only tasks of this kind (e.g. `vm.power`, `host.maintenance`), 1..63 characters.
    #[param(min_length = 1, max_length = 63)]
    pub kind: Option<String>,
    /// Only tasks acting on this object (a VM's, host's or cluster's id).
    #[param(value_type = Option<String>, format = Uuid)]
    pub target_id: Option<uuid::Uuid>,
}

#[utoipa::path(operation_id = "tasks_list", get, path = "/api/v1/tasks", tag = "tasks", params(TaskListParams),
    responses((status = 200, body = Page<Task>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<TaskListParams>,
) -> ApiResult<Json<Page<Task>>> {
    if q.kind
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.chars().count() > 63)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "kind must be 1..63 characters",
        ));
    }
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let after = match &page.cursor {
        None => None,
        Some(c) => {
            let c = c.as_str();
            let (micros, id) = c.split_once('_').ok_or_else(|| invalid_cursor(c))?;
            let at = micros
                .parse::<i64>()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(|| invalid_cursor(c))?;
            Some((at, id.parse().map_err(|_| invalid_cursor(c))?))
        }
    };
    Ok(Json(
        app.db
            .task_list(
                PageReq {
                    limit: page.limit()?,
                    after,
                },
                &TaskFilter {
                    state: q.state,
                    kind: q.kind,
                    target_id: q.target_id,
                },
            )
            .await?,
    ))
}

#[utoipa::path(operation_id = "tasks_get", get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Task), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<TaskId>,
) -> ApiResult<Json<Task>> {
    app.db
        .task_fetch(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("task", id))
}
