//! Balancing (DRS) at the API: the cluster's imbalance and its history, balancing
//! passes, their recommendations, and a VM's own automation level.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cluster::Drs;
use crate::{ClusterId, HostId, MigrationId, VmId};

/// How unevenly the hosts are loaded, in [0, 1] (0: even; 1: one host carries all):
/// the coefficient of variation of host loads (demand ÷ capacity) ÷ √(n − 1), per
/// resource, and the root mean square of both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Imbalance {
    pub cpu: f64,
    pub memory: f64,
    pub combined: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrsTrigger {
    /// The cluster's periodic pass (every `drs.interval_s`).
    Scheduled,
    /// `POST /clusters/{id}/drs/run`.
    OnDemand,
}

impl DrsTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::OnDemand => "on_demand",
        }
    }
}

/// One balancing pass.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrsPass {
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    pub trigger: DrsTrigger,
    pub dry_run: bool,
    pub before: Imbalance,
    /// After the recommended moves (as simulated).
    pub after: Imbalance,
    /// The imbalance the threshold tolerates on this cluster (none at threshold 1).
    pub tolerance: Option<f64>,
    pub moves: u32,
    /// Moves started by the pass itself (fully automated).
    pub applied: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationState {
    Pending,
    Applied,
    Dismissed,
    /// A later pass replaced it.
    Superseded,
}

impl RecommendationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Dismissed => "dismissed",
            Self::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "applied" => Self::Applied,
            "dismissed" => Self::Dismissed,
            "superseded" => Self::Superseded,
            _ => return None,
        })
    }
}

/// A move a pass recommends, with why and what it gains.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recommendation {
    pub id: uuid::Uuid,
    pub cluster_id: ClusterId,
    pub pass_id: uuid::Uuid,
    pub vm_id: VmId,
    pub from_host_id: HostId,
    pub to_host_id: HostId,
    /// The combined imbalance it removes.
    pub gain: f64,
    /// Predicted seconds of transfer.
    pub cost_s: f64,
    pub reason: String,
    pub state: RecommendationState,
    pub migration_id: Option<MigrationId>,
    pub created_at: DateTime<Utc>,
}

/// `GET /clusters/{id}/drs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrsStatus {
    pub cluster_id: ClusterId,
    pub settings: Drs,
    /// Now, from the hosts' and VMs' measured load.
    pub imbalance: Imbalance,
    /// In the imbalance's units for this cluster's size (none at threshold 1).
    pub tolerance: Option<f64>,
    /// The same, as a spread of host loads (standard deviation ÷ mean).
    pub tolerated_spread: Option<f64>,
    /// Consecutive evaluations above the tolerance (the pass acts from 3 on).
    pub above_tolerance_rounds: u32,
    pub hosts: u32,
    pub vms: u32,
    /// The latest passes, newest first.
    pub history: Vec<DrsPass>,
    pub recommendations: Vec<Recommendation>,
    /// Placement rules broken now (each a sentence); balancing repairs them first.
    #[serde(default)]
    pub rule_violations: Vec<String>,
}

/// `POST /clusters/{id}/drs/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrsRunRequest {
    /// Plan only: record nothing, move nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a pass did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrsRun {
    pub pass: DrsPass,
    pub recommendations: Vec<Recommendation>,
    /// Migrations the pass started (fully automated, not a dry run).
    pub migrations: Vec<MigrationId>,
    /// Rules broken now that no move of this pass repairs, and why.
    #[serde(default)]
    pub unrepaired: Vec<String>,
}

/// A VM's own balancing level (`PATCH /vms/{id}`): `disabled` keeps it where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmDrsAutomation {
    Disabled,
    Manual,
    PartiallyAutomated,
    FullyAutomated,
}

impl VmDrsAutomation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Manual => "manual",
            Self::PartiallyAutomated => "partially_automated",
            Self::FullyAutomated => "fully_automated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disabled" => Self::Disabled,
            "manual" => Self::Manual,
            "partially_automated" => Self::PartiallyAutomated,
            "fully_automated" => Self::FullyAutomated,
            _ => return None,
        })
    }
}
