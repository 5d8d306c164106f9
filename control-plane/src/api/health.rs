//! `GET /health`: no token needed.

use axum::Json;
use ferry_api::Health;

#[utoipa::path(operation_id = "health_get", get, path = "/api/v1/health", tag = "health", security(),
    responses((status = 200, body = Health)))]
pub async fn get() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: crate::VERSION.into(),
    })
}
