//! Bearer-token authentication and role checks. Every `/api/v1` call but health
//! and `/problems` needs `Authorization: Bearer <token>`; handlers state the role they need.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ferry_api::token::Role;
use ferry_api::TokenId;

use crate::app::App;
use crate::error::ApiError;

/// Who is calling: set by the middleware, read by handlers.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub token_id: TokenId,
    pub role: Role,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role; the token has {}",
                role.as_str(),
                self.role.as_str()
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
    }
}

pub async fn authenticate(
    State(app): State<App>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Mounted under `/api/v1`, so the path seen here has that prefix stripped.
    // Public: health, and the problem types' documentation.
    let path = req.uri().path();
    if path == "/health" || path == "/problems" || path.starts_with("/problems/") {
        return Ok(next.run(req).await);
    }
    // The event stream also opens with a single-use ticket (`POST /events/tickets`):
    // a browser's EventSource cannot send the Authorization header.
    if req.uri().path() == "/events/stream"
        && !req
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
    {
        let ticket = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("ticket="))
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing `Authorization: Bearer <token>` header or `?ticket=` (POST /events/tickets)",
                )
            })?;
        let (token_id, role) = app.stream_ticket_redeem(ticket).ok_or_else(|| {
            ApiError::unauthorized("the ticket is not valid (used, expired or unknown)")
        })?;
        return Ok(run_as(req, next, Caller { token_id, role }).await);
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
        })?;
    let (token_id, role) = app
        .token_authenticate(token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))?;
    Ok(run_as(req, next, Caller { token_id, role }).await)
}

/// Handles `req` for `caller`: handlers read it, the audit layer records it, and
/// what the request causes (events, the operations it starts) carries it.
async fn run_as(mut req: Request, next: Next, caller: Caller) -> Response {
    let acting = crate::audit::Acting {
        token_id: caller.token_id,
        role: caller.role,
    };
    if let Some(slot) = req.extensions().get::<crate::audit::CallerSlot>() {
        slot.set(acting);
    }
    req.extensions_mut().insert(caller);
    crate::audit::acting_as(acting, next.run(req)).await
}
