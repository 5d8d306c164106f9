//! The audit trail, and the actor behind events (issue #13).
//!
//! * [`record`], a layer around the REST API: every request that is not a read
//!   (`GET`, `HEAD`, `OPTIONS`) is written to the `audit` table once answered:
//!   who (the token that authenticated it, filled in by `api::auth` through a
//!   [`CallerSlot`]; none for a request refused 401), what (the operation as its
//!   route template, the ids in its path and the id of what it created, its body
//!   with secrets removed), from where (the peer address), when, how long, and how
//!   it ended (status, outcome, the problem's code).
//! * [`acting_as`] / [`spawn`]: the caller as a task-local, so an event recorded
//!   while a request is handled — or by an operation it started (a migration's or
//!   evacuation's saga, a power task) — carries its actor (`events.actor`).
//!
//! Secrets never reach the trail: bodies are redacted by field name
//! ([`redact`]), and nothing here is logged.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_api::audit::AuditOutcome;
use ferry_api::token::Role;
use ferry_api::TokenId;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::db::audit::NewAudit;
use crate::error::ApiError;

/// The caller of a request: its token and role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acting {
    pub token_id: TokenId,
    pub role: Role,
}

tokio::task_local! {
    static ACTOR: Acting;
}

/// The caller whose request (or operation) this task serves, if any.
pub fn current() -> Option<Acting> {
    ACTOR.try_with(|a| *a).ok()
}

/// Runs `f` on behalf of `a`.
pub async fn acting_as<F: Future>(a: Acting, f: F) -> F::Output {
    ACTOR.scope(a, f).await
}

/// `tokio::spawn` that keeps the caller: an operation a request starts records
/// its events as that request's.
pub fn spawn<F>(f: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(a) => tokio::spawn(ACTOR.scope(a, f)),
        None => tokio::spawn(f),
    }
}

/// Where `api::auth` leaves the caller for [`record`], which runs outside it.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<Acting>>>);

impl CallerSlot {
    pub fn set(&self, a: Acting) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
    }

    fn get(&self) -> Option<Acting> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A summary larger than this is reduced to its fields.
const MAX_SUMMARY: usize = 4096;
/// The bodies read here (requests are limited to 1 MiB before).
const MAX_BODY: usize = 2 << 20;

/// The audit layer (see the module's doc).
pub async fn record(State(app): State<App>, mut req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let t0 = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let route = if route.starts_with("/api/v1") {
        route
    } else {
        format!("/api/v1{route}")
    };
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<crate::http_tls::Peer>>()
        .map(|c| c.0 .0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut target_ids: Vec<uuid::Uuid> = req
        .uri()
        .path()
        .split('/')
        .filter_map(|s| s.parse().ok())
        .collect();
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let (parts, body) = req.into_parts();
    let (request, resp) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let request = summary(&bytes);
            let req = Request::from_parts(parts, Body::from(bytes));
            (request, next.run(req).await)
        }
        Err(_) => (
            json!({"unreadable": true}),
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than 1 MiB (or was cut off)",
            )
            .into_response(),
        ),
    };
    // The answer: a problem's code, or the id of what was made. (Change answers
    // are small JSON; one that cannot be read whole is a failure, said as one.)
    let (parts, bytes) = match read_answer(resp).await {
        Ok(read) => read,
        Err(e) => {
            let err = ApiError::internal(e);
            let body = serde_json::to_vec(&err.problem()).unwrap_or_default();
            let (parts, _) = err.into_response().into_parts();
            (parts, axum::body::Bytes::from(body))
        }
    };
    let status = parts.status.as_u16();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let code = (status >= 400)
        .then(|| answer["code"].as_str().map(str::to_string))
        .flatten();
    if status < 300 {
        if let Some(id) = answer["id"].as_str().and_then(|s| s.parse().ok()) {
            if !target_ids.contains(&id) {
                target_ids.push(id);
            }
        }
    }
    let entry = NewAudit {
        actor: slot.get(),
        method,
        route,
        target_ids,
        request,
        remote_addr,
        status,
        outcome: AuditOutcome::of_status(status),
        code,
        duration_ms: t0.elapsed().as_millis() as u64,
    };
    if let Err(e) = app.db.audit_insert(&entry).await {
        // The request is done either way; a trail with a hole is an alarm.
        crate::metrics::Metrics::inc(&app.metrics.audit_write_failures);
        tracing::error!(
            operation = %format!("{} {}", entry.method, entry.route),
            status,
            "the audit trail missed a request: {e}"
        );
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// An answer's head and whole body.
async fn read_answer(
    resp: Response,
) -> Result<(axum::http::response::Parts, axum::body::Bytes), String> {
    let (parts, body) = resp.into_parts();
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map(|b| (parts, b))
        .map_err(|e| format!("read the answer to record it: {e}"))
}

/// The body as recorded (always an object): JSON with secrets removed, reduced
/// to its fields when large; anything else by its size.
fn summary(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return json!({});
    }
    // Not a JSON object (refused, but recorded): its size only.
    let Some(mut v) = serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(Value::is_object)
    else {
        return json!({"bytes": bytes.len()});
    };
    redact(&mut v);
    if v.to_string().len() > MAX_SUMMARY {
        let fields: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        return json!({"bytes": bytes.len(), "fields": fields});
    }
    v
}

/// Whether a field by this name holds a secret.
fn secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "ticket",
        "key",
        "csr",
        "credential",
    ]
    .iter()
    .any(|s| n == *s || n.ends_with(&format!("_{s}")) || n.starts_with(&format!("{s}_")))
        && !n.ends_with("_id")
}

/// Replaces every secret field's value (at any depth) with `"[redacted]"`.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if secret_field(k) {
                    *child = json!("[redacted]");
                } else {
                    redact(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth_and_ids_are_kept() {
        let mut v = json!({
            "name": "ci",
            "token": "fyt_abc",
            "join_token": "j",
            "nested": [{"client_secret": "s", "password": "p", "token_id": "keep"}],
            "ticket": "t",
            "api_key": "k",
            "role": "operator",
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["fyt_abc", "\"j\"", "\"s\"", "\"p\"", "\"t\"", "\"k\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["nested"][0]["token_id"], "keep");
        assert_eq!(v["role"], "operator");
    }

    #[test]
    fn a_large_body_is_reduced_to_its_fields() {
        let big = json!({"name": "x".repeat(5000), "memory_mib": 1}).to_string();
        let s = summary(big.as_bytes());
        assert_eq!(s["fields"], json!(["memory_mib", "name"]));
        assert_eq!(summary(b"not json"), json!({"bytes": 8}));
        assert_eq!(summary(b"[1, 2]"), json!({"bytes": 6}));
        assert_eq!(summary(b""), json!({}));
    }
}
