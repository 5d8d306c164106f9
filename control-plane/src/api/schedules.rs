//! Scheduled operations: `GET/POST /schedules`, `GET/PATCH /schedules/{id}`,
//! `POST /schedules/{id}/cancel`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::schedule::{Schedule, ScheduleCreate, SchedulePatch};
use ferry_api::token::Role;
use ferry_api::{Problem, ScheduleId};

use super::extract::{ApiJson, ApiPath};
use super::Caller;
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(operation_id = "schedules_list", get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = Vec<Schedule>)))]
pub async fn list(State(app): State<App>, _caller: Caller) -> ApiResult<Json<Vec<Schedule>>> {
    Ok(Json(app.schedule_list().await?))
}

/// 422 `invalid_schedule` (timing), `invalid_time_zone`, `unknown_vm`,
/// `unknown_host`, `unknown_cluster` (the action's target); 409 `name_taken`.
#[utoipa::path(operation_id = "schedules_create", post, path = "/api/v1/schedules", tag = "schedules",
    request_body = ScheduleCreate,
    responses((status = 201, body = Schedule), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    ApiJson(req): ApiJson<ScheduleCreate>,
) -> ApiResult<(StatusCode, Json<Schedule>)> {
    caller.require(Role::Operator)?;
    Ok((StatusCode::CREATED, Json(app.schedule_create(req).await?)))
}

#[utoipa::path(operation_id = "schedules_get", get, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Schedule), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<ScheduleId>,
) -> ApiResult<Json<Schedule>> {
    Ok(Json(app.schedule_get(id).await?))
}

/// Changes the timing of an active schedule; 409 `schedule_not_active`.
#[utoipa::path(operation_id = "schedules_patch", patch, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, format = Uuid)), request_body = SchedulePatch,
    responses((status = 200, body = Schedule), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn patch(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<ScheduleId>,
    ApiJson(req): ApiJson<SchedulePatch>,
) -> ApiResult<Json<Schedule>> {
    caller.require(Role::Operator)?;
    Ok(Json(app.schedule_patch(id, req).await?))
}

/// A cancelled schedule never runs again; 409 `schedule_not_active`.
#[utoipa::path(operation_id = "schedules_cancel", post, path = "/api/v1/schedules/{id}/cancel", tag = "schedules",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Schedule), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<ScheduleId>,
) -> ApiResult<Json<Schedule>> {
    caller.require(Role::Operator)?;
    Ok(Json(app.schedule_cancel(id).await?))
}
