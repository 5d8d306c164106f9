//! Balancing: `GET /clusters/{id}/drs`, `POST /clusters/{id}/drs/run`,
//! `GET /clusters/{id}/drs/recommendations`, `POST /drs/recommendations/{id}/apply`,
//! `POST /drs/recommendations/{id}/dismiss`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::drs::{DrsRun, DrsRunRequest, DrsStatus, DrsTrigger, Recommendation};
use ferry_api::migration::Migration;
use ferry_api::token::Role;
use ferry_api::{ClusterId, Problem};

use super::extract::{ApiJson, ApiPath};
use super::Caller;
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(operation_id = "drs_get", get, path = "/api/v1/clusters/{id}/drs", tag = "drs",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = DrsStatus), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
) -> ApiResult<Json<DrsStatus>> {
    Ok(Json(app.drs_status(id).await?))
}

#[utoipa::path(operation_id = "drs_run", post, path = "/api/v1/clusters/{id}/drs/run", tag = "drs",
    params(("id" = String, Path, format = Uuid)), request_body = DrsRunRequest,
    responses((status = 200, body = DrsRun), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn run(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
    ApiJson(req): ApiJson<DrsRunRequest>,
) -> ApiResult<Json<DrsRun>> {
    if !req.dry_run {
        caller.require(Role::Operator)?;
    }
    Ok(Json(
        app.drs_run(id, DrsTrigger::OnDemand, req.dry_run).await?,
    ))
}

#[utoipa::path(operation_id = "drs_recommendations", get, path = "/api/v1/clusters/{id}/drs/recommendations", tag = "drs",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<Recommendation>), (status = 404, body = Problem)))]
pub async fn recommendations(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
) -> ApiResult<Json<Vec<Recommendation>>> {
    Ok(Json(app.drs_list_recommendations(id).await?))
}

#[utoipa::path(operation_id = "drs_apply", post, path = "/api/v1/drs/recommendations/{id}/apply", tag = "drs",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 202, body = Migration), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn apply(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<(StatusCode, Json<Migration>)> {
    caller.require(Role::Operator)?;
    Ok((StatusCode::ACCEPTED, Json(app.drs_apply(id).await?)))
}

#[utoipa::path(operation_id = "drs_dismiss", post, path = "/api/v1/drs/recommendations/{id}/dismiss", tag = "drs",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Recommendation), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn dismiss(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> ApiResult<Json<Recommendation>> {
    caller.require(Role::Operator)?;
    Ok(Json(app.drs_dismiss(id).await?))
}
