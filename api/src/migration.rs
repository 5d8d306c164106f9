//! Live migrations: the request, the compatibility check, and the migration record
//! with its progress and outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vm::MigrationPolicy;
use crate::{DatastoreId, HostId, MigrationId, VmId};

/// `POST /vms/{id}/migrate` and `/migrate/check`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// Omitted: placement picks one.
    #[serde(default)]
    pub destination_host_id: Option<HostId>,
    /// Copy every disk to this datastore of the destination while the VM runs
    /// (storage migration). Omitted: disks move only when the destination lacks
    /// their datastore (to one of the same kind with the most room). With the
    /// VM's own host as `destination_host_id`: a storage-only move (the VM stays,
    /// its disks switch to their copies).
    #[serde(default)]
    pub destination_datastore_id: Option<DatastoreId>,
    /// Overrides the VM's migration policy for this move.
    #[serde(default)]
    pub policy: Option<MigrationPolicy>,
}

/// One named compatibility check.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// Stable code (`ok` when passed).
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    pub total_ms: u64,
    pub downtime_ms: u64,
    pub strategy: String,
    /// The bandwidth the agents measured between the two hosts, bytes/s.
    #[serde(default)]
    pub bandwidth_bps: u64,
    /// The guest's dirty rate sampled by QEMU, bytes/s.
    #[serde(default)]
    pub dirty_rate_bps: u64,
    /// Disk bytes a storage migration copies first (the disks' virtual size: an
    /// upper bound, unallocated regions cost little); 0 with shared storage.
    #[serde(default)]
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub compatible: bool,
    pub destination_host_id: Option<HostId>,
    pub checks: Vec<Check>,
    pub prediction: Option<Prediction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    Queued,
    Preparing,
    Transferring,
    SwitchingOver,
    Completed,
    Failed,
    Cancelled,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Preparing => "preparing",
            Self::Transferring => "transferring",
            Self::SwitchingOver => "switching_over",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "preparing" => Self::Preparing,
            "transferring" => Self::Transferring,
            "switching_over" => Self::SwitchingOver,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct MigrationProgress {
    pub iteration: u64,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
    pub dirty_rate_bps: u64,
    pub bandwidth_bps: u64,
    pub throttle_pct: u32,
    pub expected_downtime_ms: u64,
    pub eta_ms: u64,
    /// 0..100; never goes backwards.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrationResult {
    pub total_ms: u64,
    /// QEMU's measured downtime (VM paused on both hosts).
    pub downtime_ms: u64,
    pub transferred_bytes: u64,
    pub iterations: u64,
    pub strategy: String,
    /// Frames the source's relay held while the VM was paused and handed to the
    /// destination (counted when QEMU reported completion; 0 without a relay).
    #[serde(default)]
    pub relay_frames: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Migration {
    pub id: MigrationId,
    pub vm_id: VmId,
    pub source_host_id: HostId,
    pub destination_host_id: HostId,
    pub state: MigrationState,
    pub phase: String,
    pub policy: MigrationPolicy,
    pub progress: MigrationProgress,
    pub prediction: Option<Prediction>,
    pub result: Option<MigrationResult>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Each phase so far, in order: `queued`, `preparing` (the destination's QEMU
    /// starts), `mirroring` (a storage migration's disk copy), `precopy` /
    /// `postcopy` (the memory), `switchover` (commit and the source's clean-up).
    #[serde(default)]
    pub phases: Vec<MigrationPhase>,
}

/// One phase of a migration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MigrationPhase {
    pub name: String,
    pub started_at: DateTime<Utc>,
    /// Until the next phase began, or the migration ended; none while it lasts.
    pub duration_ms: Option<u64>,
}
