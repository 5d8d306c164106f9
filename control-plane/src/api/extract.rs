//! Request extractors whose rejections are problem+json: malformed JSON, wrong
//! types, unknown enum values and bad ids all become a 4xx with a stable `code`.
//! Also the list parameters every collection shares (`?limit=&cursor=`).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use ferry_api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::db::PageReq;
use crate::error::ApiError;

/// A JSON body of `T`. No string in it may hold a NUL character (PostgreSQL's
/// text cannot): such a body is refused with 422 `invalid_body`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(mut v) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        integral_floats_as_integers(&mut v);
        // Every body is an object (serde would also read a struct from an array).
        if !v.is_object() {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        if holds_nul(&v) {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "a string in the body contains a NUL character",
            ));
        }
        serde_json::from_value(v).map(ApiJson).map_err(|e| {
            ApiError::unprocessable(
                "invalid_body",
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}

/// `8.0` is an integer to JSON Schema (and to a client in JavaScript): read it
/// as `8`, which the integer fields' deserializers accept (float fields take
/// integers too).
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(o) => o.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(holds_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters of `T`; none may hold a NUL character (400 `invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        if q.contains('\0') || q.to_ascii_lowercase().contains("%00") {
            return Err(ApiError::bad_request(
                "invalid_query",
                "a query parameter contains a NUL character",
            ));
        }
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

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
