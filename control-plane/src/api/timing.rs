//! Times every HTTP request for `ferry_http_request_duration_seconds`, labelled by
//! method, the route's template (`/api/v1/vms/{id}`; `unmatched` for paths no route
//! has) and status. The time is to the response's head: an event stream counts
//! until it starts streaming.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;

pub async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    app.metrics.http.observe(
        vec![
            ("method", method),
            ("route", route),
            ("status", resp.status().as_u16().to_string()),
        ],
        t0.elapsed().as_secs_f64(),
    );
    resp
}
