//! Request extractors whose rejections are problem+json: malformed JSON, wrong
//! types, unknown enum values and bad ids all become a 4xx with a stable `code`.
//! Also the list parameters every collection shares (`?limit=&cursor=`).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use ferry_api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use serde::Deserialize;

use crate::db::PageReq;
use crate::error::ApiError;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match &r {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if status.as_u16() == 413 => "payload_too_large",
            _ => "invalid_body",
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(
            "invalid_id",
            format!("bad path parameter: {}", r.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

/// `?limit=&cursor=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1..1000 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
            Some(l) => Err(ApiError::bad_request(
                "out_of_range",
                format!("limit must be 1..{MAX_LIMIT}, not {l}"),
            )),
        }
    }

    /// A page whose cursor is an id.
    pub fn by_id(&self) -> Result<PageReq<uuid::Uuid>, ApiError> {
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(c.parse().map_err(|_| invalid_cursor(c))?),
        };
        Ok(PageReq {
            limit: self.limit()?,
            after,
        })
    }

    /// A page whose cursor is a sequence number.
    pub fn by_seq(&self) -> Result<PageReq<i64>, ApiError> {
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .ok()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| invalid_cursor(c))?,
            ),
        };
        Ok(PageReq {
            limit: self.limit()?,
            after,
        })
    }
}

pub fn invalid_cursor(c: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        format!("cursor {c:?} is not one this list returned"),
    )
}
