//! `GET/POST /clusters`, `GET/PATCH /clusters/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::cluster::{Cluster, ClusterCreate, ClusterPatch};
use ferry_api::token::Role;
use ferry_api::{ClusterId, Page, Problem};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::error::ApiResult;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClusterListParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub name: Option<String>,
}

impl ClusterListParams {
    fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[utoipa::path(operation_id = "clusters_list", get, path = "/api/v1/clusters", tag = "clusters", params(ClusterListParams),
    responses((status = 200, body = Page<Cluster>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<ClusterListParams>,
) -> ApiResult<Json<Page<Cluster>>> {
    Ok(Json(
        app.db
            .cluster_list(q.page().by_id()?, q.name.as_deref())
            .await?,
    ))
}

#[utoipa::path(operation_id = "clusters_create", post, path = "/api/v1/clusters", tag = "clusters", request_body = ClusterCreate,
    responses((status = 201, body = Cluster), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    ApiJson(req): ApiJson<ClusterCreate>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    caller.require(Role::Admin)?;
    Ok((StatusCode::CREATED, Json(app.cluster_create(req).await?)))
}

#[utoipa::path(operation_id = "clusters_get", get, path = "/api/v1/clusters/{id}", tag = "clusters", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Cluster), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
) -> ApiResult<Json<Cluster>> {
    Ok(Json(app.cluster_get(id).await?))
}

#[utoipa::path(operation_id = "clusters_patch", patch, path = "/api/v1/clusters/{id}", tag = "clusters", params(("id" = String, Path, format = Uuid)),
    request_body = ClusterPatch,
    responses((status = 200, body = Cluster), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<ClusterId>,
    ApiJson(req): ApiJson<ClusterPatch>,
) -> ApiResult<Json<Cluster>> {
    caller.require(Role::Admin)?;
    Ok(Json(app.cluster_patch(id, req).await?))
}
