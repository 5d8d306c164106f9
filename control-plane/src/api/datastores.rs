//! `GET /datastores`, `GET /datastores/{id}`.

use axum::extract::State;
use axum::Json;
use ferry_api::datastore::Datastore;
use ferry_api::{DatastoreId, Page, Problem};
use serde::Deserialize;

use super::extract::{ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatastoreListParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub name: Option<String>,
}

impl DatastoreListParams {
    fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[utoipa::path(operation_id = "datastores_list", get, path = "/api/v1/datastores", tag = "datastores", params(DatastoreListParams),
    responses((status = 200, body = Page<Datastore>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<DatastoreListParams>,
) -> ApiResult<Json<Page<Datastore>>> {
    Ok(Json(
        app.db
            .datastore_list(q.page().by_id()?, q.name.as_deref())
            .await?,
    ))
}

#[utoipa::path(operation_id = "datastores_get", get, path = "/api/v1/datastores/{id}", tag = "datastores", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Datastore), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<DatastoreId>,
) -> ApiResult<Json<Datastore>> {
    app.db
        .datastore_fetch(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("datastore", id))
}
