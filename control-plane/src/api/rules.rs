//! Placement rules: `GET/POST /clusters/{id}/rules`, `GET/DELETE /rules/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::rule::{Rule, RuleCreate};
use ferry_api::token::Role;
use ferry_api::{ClusterId, Problem, RuleId};

use super::extract::{ApiJson, ApiPath};
use super::Caller;
use crate::app::App;
use crate::error::ApiResult;

#[utoipa::path(operation_id = "rules_list", get, path = "/api/v1/clusters/{id}/rules", tag = "rules",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Vec<Rule>), (status = 404, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
) -> ApiResult<Json<Vec<Rule>>> {
    Ok(Json(app.rule_list(id).await?))
}

/// Refused with 409 `rule_contradiction` when it contradicts another rule, or
/// `rule_infeasible` when no placement keeps every must rule within the hosts'
/// memory; 422 `invalid_rule`, `unknown_vm`, `unknown_host` for a malformed one.
#[utoipa::path(operation_id = "rules_create", post, path = "/api/v1/clusters/{id}/rules", tag = "rules",
    params(("id" = String, Path, format = Uuid)), request_body = RuleCreate,
    responses((status = 201, body = Rule), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
    ApiJson(req): ApiJson<RuleCreate>,
) -> ApiResult<(StatusCode, Json<Rule>)> {
    caller.require(Role::Admin)?;
    Ok((StatusCode::CREATED, Json(app.rule_create(id, req).await?)))
}

#[utoipa::path(operation_id = "rules_get", get, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Rule), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<RuleId>,
) -> ApiResult<Json<Rule>> {
    Ok(Json(app.rule_get(id).await?))
}

#[utoipa::path(operation_id = "rules_delete", delete, path = "/api/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<RuleId>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    app.rule_delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
