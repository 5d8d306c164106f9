//! The application layer: what the REST and gRPC edges call. It validates intent,
//! talks to the datastore and records events; the edges only parse and convert.

pub mod analysis;
pub mod clusters;
pub mod drs;
pub mod host_fit;
pub mod hosts;
pub mod leftovers;
pub mod load;
pub mod maintenance;
pub mod migrate_checks;
pub mod migrations;
pub mod names;
pub mod placement;
pub mod power;
pub mod rules;
pub mod schedules;
pub mod storage;
pub mod tokens;
pub mod vms;

pub use tokens::TokenCache;

use std::sync::Arc;

use crate::ca::CertificateAuthority;
use crate::config::Config;
use crate::db::Db;
use crate::events::EventBus;
use crate::grpc::agent_client::AgentConnector;
use crate::metrics::Metrics;

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub struct App {
    pub db: Db,
    pub events: EventBus,
    pub ca: Arc<CertificateAuthority>,
    pub config: Arc<Config>,
    pub join_token: Arc<String>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenCache>,
    /// Mutual-TLS client side towards agents.
    pub agents: AgentConnector,
    /// Measured bandwidth between hosts (analysis before migrations).
    pub links: Arc<analysis::LinkCache>,
    /// The saga executor's test hooks (none set outside the tests).
    pub saga_hooks: Arc<crate::saga::Hooks>,
    /// Each VM's smoothed load, from the agents' heartbeats.
    pub loads: Arc<load::LoadCache>,
    /// The periodic balancing passes' state per cluster.
    pub drs: Arc<drs::DrsState>,
}
