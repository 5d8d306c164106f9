//! Maintenance mode at the API: a host's evacuation, planned (`dry_run`) or run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::problem::Reason;
use crate::{HostId, MigrationId, VmId};

/// What happens to VMs that are not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoweredOffPolicy {
    /// Re-homed to another host (no data moves: their disks are on shared storage).
    Move,
    /// Stay on the host.
    #[default]
    Leave,
}

/// What happens to a running VM no other host can take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnmovablePolicy {
    /// Entering is refused (with the reasons) when any VM cannot move.
    #[default]
    Fail,
    /// Such VMs are powered off (and stay on the host).
    PowerOff,
    /// The evacuation waits until they can move (or are stopped by someone).
    Wait,
}

impl PoweredOffPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Move => "move",
            Self::Leave => "leave",
        }
    }
}

impl UnmovablePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::PowerOff => "power_off",
            Self::Wait => "wait",
        }
    }
}

/// `POST /hosts/{id}/maintenance`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// Only plan: move nothing, record nothing.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub powered_off: PoweredOffPolicy,
    #[serde(default)]
    pub unmovable: UnmovablePolicy,
}

/// What the plan does with one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// Live-migrate it.
    Migrate,
    /// Re-home a VM that is not running.
    Rehome,
    /// Leave it (not running, `powered_off: leave`).
    Leave,
    /// No host can take it: power it off (`unmovable: power_off`).
    PowerOff,
    /// No host can take it now: wait (`unmovable: wait`).
    Wait,
    /// No host can take it (`unmovable: fail`): entering is refused.
    Refuse,
}

/// One VM of the plan, in order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanStep {
    pub order: u32,
    pub vm_id: VmId,
    pub vm_name: String,
    pub action: StepAction,
    pub destination_host_id: Option<HostId>,
    /// Predicted seconds of its move.
    pub predicted_s: f64,
    /// Why it cannot move (when it cannot).
    pub problems: Vec<Reason>,
}

/// The whole evacuation, before it runs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaintenancePlan {
    pub host_id: HostId,
    pub steps: Vec<PlanStep>,
    /// Predicted seconds for the whole evacuation (moves run within the budgets).
    pub predicted_total_s: f64,
    /// False when `unmovable: fail` and some VM cannot move.
    pub feasible: bool,
    pub problems: Vec<Reason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceState {
    Evacuating,
    /// Empty of running VMs: the host is in maintenance.
    InMaintenance,
    Cancelled,
    Failed,
    /// Left maintenance.
    Exited,
}

impl MaintenanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evacuating => "evacuating",
            Self::InMaintenance => "in_maintenance",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Exited => "exited",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "evacuating" => Self::Evacuating,
            "in_maintenance" => Self::InMaintenance,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            "exited" => Self::Exited,
            _ => return None,
        })
    }
}

/// One VM's move in a running evacuation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaintenanceMove {
    pub vm_id: VmId,
    pub migration_id: Option<MigrationId>,
    /// The migration's state (or `done` for a re-homed VM).
    pub state: String,
}

/// `DELETE /hosts/{id}/maintenance`: the host (its fields at the top level, as
/// before), and with `?move_back=true` the VMs the evacuation moved, sent back.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaintenanceExit {
    #[serde(flatten)]
    pub host: crate::host::Host,
    /// Migrations started to bring VMs back to the host.
    #[serde(default)]
    pub moved_back: Vec<MigrationId>,
    /// VMs the evacuation moved that are not moved back, and why.
    #[serde(default)]
    pub not_moved_back: Vec<Reason>,
}

/// `GET /hosts/{id}/maintenance`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Maintenance {
    pub id: uuid::Uuid,
    pub host_id: HostId,
    pub state: MaintenanceState,
    pub plan: MaintenancePlan,
    /// Running VMs that left the host / that were on it.
    pub done: u32,
    pub total: u32,
    pub remaining_running: u32,
    pub moves: Vec<MaintenanceMove>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}
