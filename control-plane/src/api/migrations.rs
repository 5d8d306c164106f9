//! `POST /vms/{id}/migrate/check`, `POST /vms/{id}/migrate`, `GET /migrations`,
//! `GET /migrations/{id}`, `POST /migrations/{id}/cancel`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::migration::{CheckResult, MigrateRequest, Migration};
use ferry_api::token::Role;
use ferry_api::{MigrationId, Page, Problem, VmId};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(operation_id = "migrations_check", post, path = "/api/v1/vms/{id}/migrate/check", tag = "migrations",
    params(("id" = String, Path, format = Uuid)), request_body = MigrateRequest,
    responses((status = 200, body = CheckResult), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn check(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<VmId>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> ApiResult<Json<CheckResult>> {
    Ok(Json(app.migration_check(id, &req).await?))
}

#[utoipa::path(operation_id = "migrations_start", post, path = "/api/v1/vms/{id}/migrate", tag = "migrations",
    params(("id" = String, Path, format = Uuid)), request_body = MigrateRequest,
    responses((status = 202, body = Migration), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn start(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<VmId>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> ApiResult<(StatusCode, Json<Migration>)> {
    caller.require(Role::Operator)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(app.migration_start(id, &req).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MigrationListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    #[param(value_type = Option<String>, format = Uuid)]
    pub vm_id: Option<VmId>,
    /// `true`: only migrations still under way; `false`: only finished ones.
    pub active: Option<bool>,
}

#[utoipa::path(operation_id = "migrations_list", get, path = "/api/v1/migrations", tag = "migrations",
    params(MigrationListParams), responses((status = 200, body = Page<Migration>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<MigrationListParams>,
) -> ApiResult<Json<Page<Migration>>> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .by_id()?;
    Ok(Json(app.db.migration_list(page, q.vm_id, q.active).await?))
}

#[utoipa::path(operation_id = "migrations_get", get, path = "/api/v1/migrations/{id}", tag = "migrations",
    params(("id" = String, Path, format = Uuid)), responses((status = 200, body = Migration), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<MigrationId>,
) -> ApiResult<Json<Migration>> {
    Ok(Json(app.migration_get(id).await?))
}

#[utoipa::path(operation_id = "migrations_cancel", post, path = "/api/v1/migrations/{id}/cancel", tag = "migrations",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Migration), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<MigrationId>,
) -> ApiResult<Json<Migration>> {
    caller.require(Role::Operator)?;
    Ok(Json(app.migration_cancel(id).await?))
}
