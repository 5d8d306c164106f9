//! Ferry's REST API v1 vocabulary, shared by the control plane (which serves it),
//! `ferryctl`, the tests and the benchmarks: typed IDs, the resource views, request
//! bodies, list pages and the `application/problem+json` error body.
//!
//! View types live apart from database rows (the control plane converts rows into
//! these at the edge), so the wire contract in `shared/API.md` is written down once.

pub mod audit;
pub mod cluster;
pub mod datastore;
pub mod drs;
pub mod event;
pub mod host;
pub mod ids;
pub mod maintenance;
pub mod migration;
pub mod network;
pub mod page;
pub mod problem;
pub mod rule;
pub mod schedule;
pub mod task;
pub mod token;
pub mod vm;

pub use ids::*;
pub use page::Page;
pub use problem::Problem;

/// `GET /api/v1/health`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}
