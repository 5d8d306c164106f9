//! `GET /hosts`, `GET /hosts/{id}`.

use axum::extract::State;
use axum::Json;
use ferry_api::host::Host;
use ferry_api::{ClusterId, HostId, Page, Problem};
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::db::hosts::HostFilter;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostListParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only the host of this name.
    pub name: Option<String>,
    /// Only hosts of this cluster.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cluster_id: Option<ClusterId>,
}

impl HostListParams {
    fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[utoipa::path(operation_id = "hosts_list", get, path = "/api/v1/hosts", tag = "hosts", params(HostListParams),
    responses((status = 200, body = Page<Host>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<HostListParams>,
) -> ApiResult<Json<Page<Host>>> {
    let page = q.page().by_id()?;
    let filter = HostFilter {
        name: q.name,
        cluster_id: q.cluster_id,
    };
    Ok(Json(app.db.host_list(page, &filter).await?))
}

#[utoipa::path(operation_id = "hosts_get", get, path = "/api/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Host), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<HostId>,
) -> ApiResult<Json<Host>> {
    app.db
        .host_fetch(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("host", id))
}
