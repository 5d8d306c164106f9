//! `GET /audit`: the audit trail (admin only), newest first, filtered by token,
//! target, outcome or operation.

use axum::extract::State;
use axum::Json;
use ferry_api::audit::{AuditEntry, AuditOutcome};
use ferry_api::token::Role;
use ferry_api::{Page, TokenId};
use serde::Deserialize;

use super::extract::{ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::db::audit::AuditFilter;
use crate::db::PageReq;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (older entries).
    pub cursor: Option<String>,
    /// Only requests made with this token.
    #[param(value_type = Option<String>, format = Uuid)]
    pub token_id: Option<TokenId>,
    /// Only requests acting on this object (in their path, or made by them).
    #[param(value_type = Option<String>, format = Uuid)]
    pub target_id: Option<uuid::Uuid>,
    /// Only requests that ended so.
    #[param(value_type = Option<AuditOutcome>)]
    pub outcome: Option<AuditOutcome>,
    /// Only this operation's route template, e.g. `/api/v1/vms/{id}/migrate`.
    #[param(min_length = 1, max_length = 200)]
    pub route: Option<String>,
}

#[utoipa::path(operation_id = "audit_list", get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = Page<AuditEntry>), (status = 400), (status = 403)))]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    caller.require(Role::Admin)?;
    if q.route
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.chars().count() > 200)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "route must be 1..200 characters",
        ));
    }
    let paging = PageParams {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .by_seq()?;
    let page = PageReq {
        limit: paging.limit,
        after: paging.after,
    };
    let f = AuditFilter {
        token_id: q.token_id,
        target_id: q.target_id,
        outcome: q.outcome,
        route: q.route,
    };
    Ok(Json(app.db.audit_list(page, &f).await?))
}
