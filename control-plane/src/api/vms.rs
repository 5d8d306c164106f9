//! `GET/POST /vms`, `GET/DELETE /vms/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferry_api::task::Task;
use ferry_api::token::Role;
use ferry_api::vm::{PowerRequest, Vm, VmCreate, VmPatch};
use ferry_api::{ClusterId, HostId, Page, Problem, VmId};
use serde::Deserialize;

use super::extract::{invalid_cursor, ApiJson, ApiPath, ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::db::vms::{VmFilter, VmSort};
use crate::db::PageReq;
use crate::error::ApiResult;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VmListParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub name: Option<String>,
    #[param(value_type = Option<String>, format = Uuid)]
    pub host_id: Option<HostId>,
    #[param(value_type = Option<String>, format = Uuid)]
    pub cluster_id: Option<ClusterId>,
    /// Only VMs in this power state.
    #[param(value_type = Option<ferry_api::vm::PowerState>)]
    pub power_state: Option<ferry_api::vm::PowerState>,
    /// Only VMs whose name contains this (any case; 1..63 characters).
    #[param(min_length = 1, max_length = 63)]
    pub q: Option<String>,
    /// The order: `id` (default), `name`, `memory_mib` or `created_at`; a leading
    /// `-` reverses it. A cursor belongs to the order that made it.
    #[param(value_type = Option<String>, pattern = "^-?(id|name|memory_mib|created_at)$")]
    pub sort: Option<VmSort>,
}

impl VmListParams {
    fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[utoipa::path(operation_id = "vms_list", get, path = "/api/v1/vms", tag = "vms", params(VmListParams),
    responses((status = 200, body = Page<Vm>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<VmListParams>,
) -> ApiResult<Json<Page<Vm>>> {
    let sort = q.sort.unwrap_or_default();
    let page = q.page();
    let page = PageReq {
        limit: page.limit()?,
        after: match &page.cursor {
            None => None,
            Some(c) => Some(sort.parse_cursor(c).ok_or_else(|| invalid_cursor(c))?),
        },
    };
    if q.q
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.chars().count() > 63)
    {
        return Err(crate::error::ApiError::bad_request(
            "invalid_query",
            "q must be 1..63 characters",
        ));
    }
    let f = VmFilter {
        name: q.name,
        host_id: q.host_id,
        cluster_id: q.cluster_id,
        power_state: q.power_state,
        search: q.q,
    };
    Ok(Json(app.db.vm_list(page, sort, &f).await?))
}

#[utoipa::path(operation_id = "vms_create", post, path = "/api/v1/vms", tag = "vms", request_body = VmCreate,
    responses((status = 201, body = Vm), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    ApiJson(req): ApiJson<VmCreate>,
) -> ApiResult<(StatusCode, Json<Vm>)> {
    caller.require(Role::Admin)?;
    Ok((StatusCode::CREATED, Json(app.vm_create(req).await?)))
}

#[utoipa::path(operation_id = "vms_get", get, path = "/api/v1/vms/{id}", tag = "vms", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Vm), (status = 404, body = Problem)))]
pub async fn get(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<VmId>,
) -> ApiResult<Json<Vm>> {
    Ok(Json(app.vm_get(id).await?))
}

#[utoipa::path(operation_id = "vms_patch", patch, path = "/api/v1/vms/{id}", tag = "vms", params(("id" = String, Path, format = Uuid)),
    request_body = VmPatch,
    responses((status = 200, body = Vm), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<VmId>,
    ApiJson(req): ApiJson<VmPatch>,
) -> ApiResult<Json<Vm>> {
    caller.require(Role::Operator)?;
    Ok(Json(app.vm_patch(id, req).await?))
}

#[utoipa::path(operation_id = "vms_delete", delete, path = "/api/v1/vms/{id}", tag = "vms", params(("id" = String, Path, format = Uuid)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<VmId>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    app.vm_delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(operation_id = "vms_power", post, path = "/api/v1/vms/{id}/power", tag = "vms",
    params(("id" = String, Path, format = Uuid)), request_body = PowerRequest,
    responses((status = 202, body = Task), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn power(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<VmId>,
    ApiJson(req): ApiJson<PowerRequest>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    caller.require(Role::Operator)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(app.vm_power(id, req.action, req.force).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleParams {
    /// How many bytes of the console's tail (default 65536, at most 1 MiB).
    #[param(minimum = 1, maximum = 1048576)]
    pub bytes: Option<u32>,
}

#[utoipa::path(operation_id = "vms_console", get, path = "/api/v1/vms/{id}/console", tag = "vms",
    params(("id" = String, Path, format = Uuid), ConsoleParams),
    responses((status = 200, description = "the tail of the serial console", content_type = "text/plain"),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn console(
    State(app): State<App>,
    _caller: Caller,
    ApiPath(id): ApiPath<VmId>,
    ApiQuery(q): ApiQuery<ConsoleParams>,
) -> ApiResult<([(axum::http::HeaderName, &'static str); 1], String)> {
    let bytes = q.bytes.unwrap_or(65536);
    if !(1..=1 << 20).contains(&bytes) {
        return Err(crate::error::ApiError::bad_request(
            "out_of_range",
            "bytes must be 1..1048576",
        ));
    }
    let text = app.vm_console(id, bytes).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    ))
}
