//! Maintenance mode: `POST /hosts/{id}/maintenance` (`dry_run`: the plan),
//! `GET /hosts/{id}/maintenance`, `POST /hosts/{id}/maintenance/cancel`,
//! `DELETE /hosts/{id}/maintenance` (exit).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_api::maintenance::{Maintenance, MaintenanceExit, MaintenancePlan, MaintenanceRequest};
use ferry_api::token::Role;
use ferry_api::{HostId, Problem};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::Caller;
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(operation_id = "maintenance_enter", post, path = "/api/v1/hosts/{id}/maintenance", tag = "maintenance",
    params(("id" = String, Path, format = Uuid)), request_body = MaintenanceRequest,
    responses((status = 200, body = MaintenancePlan, description = "dry run: the plan"),
              (status = 202, body = Maintenance, description = "the evacuation started"),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn enter(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<HostId>,
    ApiJson(req): ApiJson<MaintenanceRequest>,
) -> ApiResult<Response> {
    if req.dry_run {
        return Ok(Json(app.maintenance_plan(id, &req).await?).into_response());
    }
    caller.require(Role::Operator)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(app.maintenance_enter(id, &req).await?),
    )
        .into_response())
}

#[utoipa::path(operation_id = "maintenance_get", get, path = "/api/v1/hosts/{id}/maintenance", tag = "maintenance",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Maintenance), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<HostId>,
) -> ApiResult<Json<Maintenance>> {
    Ok(Json(app.maintenance_get(id).await?))
}

#[utoipa::path(operation_id = "maintenance_cancel", post, path = "/api/v1/hosts/{id}/maintenance/cancel", tag = "maintenance",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Maintenance), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<HostId>,
) -> ApiResult<Json<Maintenance>> {
    caller.require(Role::Operator)?;
    Ok(Json(app.maintenance_cancel(id).await?))
}

#[utoipa::path(operation_id = "maintenance_exit", delete, path = "/api/v1/hosts/{id}/maintenance", tag = "maintenance",
    params(("id" = String, Path, format = Uuid), ExitParams),
    responses((status = 200, body = MaintenanceExit), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn exit(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<HostId>,
    ApiQuery(q): ApiQuery<ExitParams>,
) -> ApiResult<Json<MaintenanceExit>> {
    caller.require(Role::Operator)?;
    Ok(Json(
        app.maintenance_exit(id, q.move_back.unwrap_or(false))
            .await?,
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExitParams {
    /// Move the VMs the latest evacuation moved back to the host (those still
    /// running where it sent them).
    pub move_back: Option<bool>,
}
