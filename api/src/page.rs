//! List pages: `{"items": [...], "next_cursor": ...}`.

use serde::{Deserialize, Serialize};

/// One page of a list; pass `next_cursor` back as `?cursor=` for the next one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Default and largest `?limit=` of every list.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
