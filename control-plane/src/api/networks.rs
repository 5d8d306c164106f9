//! `GET /networks`, `GET /networks/{id}`.

use axum::extract::State;
use axum::Json;
use ferry_api::network::Network;
use ferry_api::{NetworkId, Page, Problem};
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NetworkListParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub name: Option<String>,
}

impl NetworkListParams {
    fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[utoipa::path(operation_id = "networks_list", get, path = "/api/v1/networks", tag = "networks", params(NetworkListParams),
    responses((status = 200, body = Page<Network>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<NetworkListParams>,
) -> ApiResult<Json<Page<Network>>> {
    Ok(Json(
        app.db
            .network_list(q.page().by_id()?, q.name.as_deref())
            .await?,
    ))
}

#[utoipa::path(operation_id = "networks_get", get, path = "/api/v1/networks/{id}", tag = "networks", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Network), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<NetworkId>,
) -> ApiResult<Json<Network>> {
    app.db
        .network_fetch(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("network", id))
}
