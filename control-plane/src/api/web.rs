//! The dashboard's assets (`web/`), embedded into the binary so the control plane
//! serves them with no Node.js or asset directory at run time. `GET /` is the page;
//! `GET /ui/…` the scripts, styles and the vendored chart library. The dashboard is a
//! client of the public REST API only.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Every file the dashboard loads: its path under `/ui/`, content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.css", CSS, include_bytes!("../../../web/app.css")),
    ("js/main.js", JS, include_bytes!("../../../web/js/main.js")),
    ("js/api.js", JS, include_bytes!("../../../web/js/api.js")),
    ("js/ui.js", JS, include_bytes!("../../../web/js/ui.js")),
    (
        "js/chart.js",
        JS,
        include_bytes!("../../../web/js/chart.js"),
    ),
    (
        "js/overview.js",
        JS,
        include_bytes!("../../../web/js/overview.js"),
    ),
    ("js/vms.js", JS, include_bytes!("../../../web/js/vms.js")),
    ("js/vm.js", JS, include_bytes!("../../../web/js/vm.js")),
    (
        "js/migrate.js",
        JS,
        include_bytes!("../../../web/js/migrate.js"),
    ),
    (
        "js/migration.js",
        JS,
        include_bytes!("../../../web/js/migration.js"),
    ),
    ("js/host.js", JS, include_bytes!("../../../web/js/host.js")),
    (
        "js/balancing.js",
        JS,
        include_bytes!("../../../web/js/balancing.js"),
    ),
    (
        "js/activity.js",
        JS,
        include_bytes!("../../../web/js/activity.js"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        JS,
        include_bytes!("../../../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        CSS,
        include_bytes!("../../../web/vendor/uPlot.min.css"),
    ),
    (
        "favicon.svg",
        SVG,
        include_bytes!("../../../web/favicon.svg"),
    ),
];

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Only our own origin: no inline script, no third-party anything.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn headers(resp: &mut Response, content_type: &str) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("ascii"),
    );
    // Assets change with the binary; revalidate rather than serve a stale dashboard.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /`: the dashboard's page.
pub async fn index() -> Response {
    let mut resp = include_str!("../../../web/index.html").into_response();
    headers(&mut resp, "text/html; charset=utf-8");
    resp
}

/// `GET /ui/{*path}`: one embedded asset.
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, ty, bytes)) => {
            let mut resp = (StatusCode::OK, *bytes).into_response();
            headers(&mut resp, ty);
            resp
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such asset: /ui/{path}"),
        )
        .into_response(),
    }
}

/// The paths of every embedded asset, for tests.
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(p, _, _)| *p)
}
