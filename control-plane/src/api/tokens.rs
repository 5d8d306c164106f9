//! `POST/GET /tokens`, `DELETE /tokens/{id}`: admin only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::token::{Role, Token, TokenCreate, TokenCreated};
use ferry_api::{Page, Problem, TokenId};

use super::extract::{ApiJson, ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::{names, App};
use crate::db::events::NewEvent;
use crate::error::{ApiError, ApiResult};
use crate::secrets::{new_secret, sha256_hex};

#[utoipa::path(operation_id = "tokens_create", post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenCreate,
    responses((status = 201, body = TokenCreated), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    ApiJson(req): ApiJson<TokenCreate>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    caller.require(Role::Admin)?;
    names::validate("token", &req.name)?;
    let secret = new_secret("ferry");
    let token = app
        .db
        .token_insert(&req.name, req.role, &sha256_hex(&secret))
        .await?;
    app.events
        .record(NewEvent::info(
            "token.created",
            format!(
                "token {} with role {} created",
                token.name,
                token.role.as_str()
            ),
        ))
        .await;
    Ok((StatusCode::CREATED, Json(TokenCreated { token, secret })))
}

#[utoipa::path(operation_id = "tokens_list", get, path = "/api/v1/tokens", tag = "tokens", params(PageParams),
    responses((status = 200, body = Page<Token>), (status = 403, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Token>>> {
    caller.require(Role::Admin)?;
    Ok(Json(app.db.token_list(q.by_id()?).await?))
}

#[utoipa::path(operation_id = "tokens_delete", delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, format = Uuid)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<TokenId>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    if id == caller.token_id {
        return Err(ApiError::conflict(
            "token_in_use",
            "a token cannot delete itself",
        ));
    }
    let deleted = app.db.token_delete(id).await?;
    app.tokens.clear();
    if !deleted {
        return Err(ApiError::not_found("token", id));
    }
    app.events
        .record(NewEvent::info(
            "token.deleted",
            format!("token {id} deleted"),
        ))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The calling token: its id, name and role (what a client may offer its user).
#[utoipa::path(operation_id = "whoami", get, path = "/api/v1/whoami", tag = "tokens",
    responses((status = 200, body = ferry_api::token::Whoami), (status = 401, body = Problem)))]
pub async fn whoami(
    State(app): State<App>,
    caller: Caller,
) -> crate::error::ApiResult<Json<ferry_api::token::Whoami>> {
    let t = app
        .db
        .token_fetch(caller.token_id)
        .await?
        .ok_or_else(|| crate::error::ApiError::unauthorized("the token was deleted"))?;
    Ok(Json(ferry_api::token::Whoami {
        token_id: t.id,
        name: t.name,
        role: caller.role,
    }))
}
