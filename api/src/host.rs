//! Hosts: one per agent identity.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ClusterId, DatastoreId, HostId, NetworkId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Connected,
    Disconnected,
    EnteringMaintenance,
    Maintenance,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::EnteringMaintenance => "entering_maintenance",
            Self::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "connected" => Self::Connected,
            "disconnected" => Self::Disconnected,
            "entering_maintenance" => Self::EnteringMaintenance,
            "maintenance" => Self::Maintenance,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
    Sim,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
            Self::Sim => "sim",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "kvm" => Self::Kvm,
            "tcg" => Self::Tcg,
            "sim" => Self::Sim,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostCpu {
    pub vendor: String,
    pub model: String,
    pub cores: u32,
    pub flags: Vec<String>,
    /// CPU models this host's hypervisor can offer a guest.
    pub supported_models: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostMemory {
    pub total_mib: u64,
    pub free_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostLoad {
    pub cpu_pct: f32,
    pub mem_pct: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Host {
    pub id: HostId,
    pub name: String,
    pub cluster_id: ClusterId,
    /// Where the agent serves its gRPC API (host:port).
    pub address: String,
    pub state: HostState,
    pub accel: Accel,
    /// Why the agent chose its accelerator.
    pub accel_reason: String,
    pub cpu: HostCpu,
    pub memory: HostMemory,
    pub datastores: Vec<DatastoreId>,
    pub networks: Vec<NetworkId>,
    pub vm_count: u32,
    pub load: HostLoad,
    pub agent_version: String,
    pub hypervisor_version: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}
