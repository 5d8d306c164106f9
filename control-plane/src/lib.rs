//! Ferry's control plane: the REST API (`api`), the agent-facing gRPC API (`grpc`),
//! the inventory in PostgreSQL (`db`, one module per resource), the certificate
//! authority that gives agents their identities (`ca`), the embedded PostgreSQL
//! launcher (`embedded_pg`), the event log and stream (`events`) and the loops that
//! watch hosts (`monitor`), the audit trail (`audit`). `server` wires them together.

pub mod api;
pub mod app;
pub mod audit;
pub mod ca;
pub mod config;
pub mod db;
pub mod drs;
pub mod embedded_pg;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http_tls;
pub mod metrics;
pub mod monitor;
pub mod recurrence;
pub mod rules;
pub mod saga;
pub mod sagas;
pub mod secrets;
pub mod server;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
