//! `GET /events` (`?since=`) and `GET /events/stream`: Server-Sent Events of the same
//! objects, first the backlog after `since`, then live ones, each exactly once.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use ferry_api::event::Event;
use ferry_api::page::MAX_LIMIT;
use ferry_api::{Page, Problem};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::extract::{ApiQuery, PageParams};
use super::Caller;
use crate::app::App;
use crate::db::PageReq;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events after this `seq`.
    pub since: Option<i64>,
    /// Only events whose kind starts with this, e.g. `host.`.
    pub kind: Option<String>,
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `/events` only: the newest first (the cursor then pages to older ones, down
    /// to `since` if given).
    pub newest_first: Option<bool>,
    /// `/events/stream` only: a ticket from `POST /events/tickets`, instead of the
    /// `Authorization` header (single use, 60 s).
    pub ticket: Option<String>,
}

impl EventParams {
    fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

impl EventParams {
    fn after(&self) -> ApiResult<Option<i64>> {
        if self.since.is_some_and(|s| s < 0) {
            return Err(ApiError::bad_request(
                "out_of_range",
                "since must be 0 or more",
            ));
        }
        let cursor = self.page().by_seq()?.after;
        Ok(cursor.max(self.since))
    }
}

#[utoipa::path(operation_id = "events_list", get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, body = Page<Event>), (status = 400, body = Problem)))]
pub async fn list(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<EventParams>,
) -> ApiResult<Json<Page<Event>>> {
    if q.newest_first == Some(true) {
        // `since` bounds the pages from below: the newest first, down to it.
        q.after()?;
        let page = PageReq {
            limit: q.page().limit()?,
            after: q.page().by_seq()?.after,
        };
        return Ok(Json(
            app.db
                .event_list_newest(page, q.since, q.kind.as_deref())
                .await?,
        ));
    }
    let page = PageReq {
        limit: q.page().limit()?,
        after: q.after()?,
    };
    Ok(Json(app.db.event_list(page, q.kind.as_deref()).await?))
}

#[utoipa::path(operation_id = "events_stream", get, path = "/api/v1/events/stream", tag = "events", params(EventParams),
    responses((status = 200, description = "text/event-stream of Event objects")))]
pub async fn stream(
    State(app): State<App>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<EventParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let mut after = q.after()?.unwrap_or(0);
    let kind = q.kind.clone();
    // Subscribe before reading the backlog so nothing falls between the two.
    let mut live = app.events.subscribe();
    let stream = async_stream::stream! {
        loop {
            let page = match app.db.event_list(PageReq { limit: MAX_LIMIT, after: Some(after) }, kind.as_deref()).await {
                Ok(p) => p,
                Err(e) => { tracing::warn!("event stream backlog: {e}"); return; }
            };
            let more = page.next_cursor.is_some();
            for ev in page.items {
                after = ev.seq;
                yield Ok(to_sse(&ev));
            }
            if !more { break; }
        }
        loop {
            match live.recv().await {
                Ok(ev) => {
                    if ev.seq <= after || kind.as_deref().is_some_and(|k| !ev.kind.starts_with(k)) {
                        continue;
                    }
                    after = ev.seq;
                    yield Ok(to_sse(&ev));
                }
                Err(RecvError::Lagged(_)) => {
                    // Too slow a reader: catch up from the log.
                    let page = match app.db.event_list(PageReq { limit: MAX_LIMIT, after: Some(after) }, kind.as_deref()).await {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                    for ev in page.items {
                        after = ev.seq;
                        yield Ok(to_sse(&ev));
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn to_sse(ev: &Event) -> SseEvent {
    SseEvent::default()
        .id(ev.seq.to_string())
        .event(ev.kind.clone())
        .data(serde_json::to_string(ev).unwrap_or_default())
}

/// A single-use ticket that opens `GET /events/stream?ticket=…` within 60 s,
/// without the `Authorization` header (for a browser's EventSource).
#[utoipa::path(operation_id = "events_ticket", post, path = "/api/v1/events/tickets", tag = "events",
    responses((status = 201, body = ferry_api::token::StreamTicket), (status = 401, body = Problem)))]
pub async fn ticket(
    State(app): State<App>,
    caller: Caller,
) -> (axum::http::StatusCode, Json<ferry_api::token::StreamTicket>) {
    let ticket = app.stream_ticket(caller.token_id, caller.role);
    let ttl = chrono::Duration::from_std(crate::app::tokens::TICKET_TTL).unwrap_or_default();
    (
        axum::http::StatusCode::CREATED,
        Json(ferry_api::token::StreamTicket {
            ticket,
            expires_at: chrono::Utc::now() + ttl,
        }),
    )
}
