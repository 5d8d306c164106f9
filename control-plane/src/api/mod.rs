//! The REST API v1 (`shared/API.md`): the router, the OpenAPI document generated
//! from the handlers, authentication, and the dashboard placeholder at `/`.
//! One module per resource; handlers parse input, call `App`, convert the result.

pub mod audit;
pub mod auth;
pub mod clusters;
pub mod contract;
pub mod datastores;
pub mod drs;
pub mod events;
pub mod extract;
pub mod health;
pub mod hosts;
pub mod maintenance;
pub mod migrations;
pub mod networks;
pub mod problems;
pub mod rules;
pub mod schedules;
pub mod tasks;
pub mod timing;
pub mod tokens;
pub mod vms;
pub mod web;

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use auth::Caller;

use crate::app::App;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferry REST API", version = "1", description = "Live migration and cluster control plane"),
    paths(
        health::get,
        hosts::list, hosts::get,
        maintenance::enter, maintenance::get, maintenance::cancel, maintenance::exit,
        clusters::list, clusters::create, clusters::get, clusters::patch,
        drs::get, drs::run, drs::recommendations, drs::apply, drs::dismiss,
        rules::list, rules::create, rules::get, rules::delete,
        schedules::list, schedules::create, schedules::get, schedules::patch, schedules::cancel,
        datastores::list, datastores::get,
        networks::list, networks::get,
        vms::list, vms::create, vms::get, vms::patch, vms::delete, vms::power, vms::console,
        migrations::check, migrations::start, migrations::list, migrations::get, migrations::cancel,
        tasks::list, tasks::get,
        events::list, events::stream, events::ticket,
        tokens::create, tokens::list, tokens::delete, tokens::whoami,
        problems::list, problems::get,
        audit::list,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole HTTP application: `/api/v1/...`, `/` (dashboard) and problem+json
/// answers for unknown paths, wrong methods and (as a last resort) panics.
pub fn router(app: App) -> Router {
    let v1 = Router::new()
        .route("/health", get(health::get))
        .route("/openapi.json", get(openapi))
        .route("/problems", get(problems::list))
        .route("/problems/{code}", get(problems::get))
        .route("/audit", get(audit::list))
        .route("/hosts", get(hosts::list))
        .route("/hosts/{id}", get(hosts::get))
        .route(
            "/hosts/{id}/maintenance",
            get(maintenance::get)
                .post(maintenance::enter)
                .delete(maintenance::exit),
        )
        .route(
            "/hosts/{id}/maintenance/cancel",
            axum::routing::post(maintenance::cancel),
        )
        .route("/clusters", get(clusters::list).post(clusters::create))
        .route("/clusters/{id}", get(clusters::get).patch(clusters::patch))
        .route("/clusters/{id}/drs", get(drs::get))
        .route("/clusters/{id}/rules", get(rules::list).post(rules::create))
        .route("/rules/{id}", get(rules::get).delete(rules::delete))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route(
            "/schedules/{id}",
            get(schedules::get).patch(schedules::patch),
        )
        .route(
            "/schedules/{id}/cancel",
            axum::routing::post(schedules::cancel),
        )
        .route("/clusters/{id}/drs/run", axum::routing::post(drs::run))
        .route(
            "/clusters/{id}/drs/recommendations",
            get(drs::recommendations),
        )
        .route(
            "/drs/recommendations/{id}/apply",
            axum::routing::post(drs::apply),
        )
        .route(
            "/drs/recommendations/{id}/dismiss",
            axum::routing::post(drs::dismiss),
        )
        .route("/datastores", get(datastores::list))
        .route("/datastores/{id}", get(datastores::get))
        .route("/networks", get(networks::list))
        .route("/networks/{id}", get(networks::get))
        .route("/vms", get(vms::list).post(vms::create))
        .route(
            "/vms/{id}",
            get(vms::get).patch(vms::patch).delete(vms::delete),
        )
        .route("/vms/{id}/power", axum::routing::post(vms::power))
        .route("/vms/{id}/console", get(vms::console))
        .route(
            "/vms/{id}/migrate/check",
            axum::routing::post(migrations::check),
        )
        .route("/vms/{id}/migrate", axum::routing::post(migrations::start))
        .route("/migrations", get(migrations::list))
        .route("/migrations/{id}", get(migrations::get))
        .route(
            "/migrations/{id}/cancel",
            axum::routing::post(migrations::cancel),
        )
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::get))
        .route("/events", get(events::list))
        .route("/events/stream", get(events::stream))
        .route("/events/tickets", axum::routing::post(events::ticket))
        .route("/whoami", get(tokens::whoami))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", axum::routing::delete(tokens::delete))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        // Outside authentication, so a refused (401) change is recorded too.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::audit::record,
        ));

    Router::new()
        .nest("/api/v1", v1)
        .route("/", get(web::index))
        .route("/ui/{*path}", get(web::asset))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            timing::record,
        ))
        .with_state(app)
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        // Spans name the path, never the query: an event-stream ticket travels there.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
}

async fn openapi(_caller: Caller) -> Json<&'static serde_json::Value> {
    Json(contract::document())
}

async fn metrics(axum::extract::State(app): axum::extract::State<App>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(&app.db).await,
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such path: {}", uri.path()),
    )
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not accept that method",
    )
    .into_response()
}

#[cfg(test)]
mod spec_dump {
    /// `cargo test -p ferry-control-plane --lib spec_dump -- --ignored` writes the
    /// served document to /tmp/openapi.json (for a look).
    #[test]
    #[ignore]
    fn dump() {
        let text = serde_json::to_string_pretty(super::contract::document()).unwrap();
        std::fs::write("/tmp/openapi.json", text).unwrap();
    }
}
