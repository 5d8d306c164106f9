//! `GET /tasks`, `GET /tasks/{id}` (newest first).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use ferry_api::task::Task;
use ferry_api::{Page, Problem, TaskId};

use super::extract::{invalid_cursor, ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::db::PageReq;
use crate::error::{ApiError, ApiResult};

#[utoipa::path(operation_id = "tasks_list", get, path = "/api/v1/tasks", tag = "tasks", params(PageParams),
    responses((status = 200, body = Page<Task>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Task>>> {
    let after = match &q.cursor {
        None => None,
        Some(c) => {
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
            .task_list(PageReq {
                limit: q.limit()?,
                after,
            })
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
