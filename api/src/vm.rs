//! Virtual machines: inventory, disks, NICs, boot and migration policy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ClusterId, DatastoreId, HostId, NetworkId, VmId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    Stopped,
    Paused,
    Migrating,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Paused => "paused",
            Self::Migrating => "migrating",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "paused" => Self::Paused,
            "migrating" => Self::Migrating,
            _ => return None,
        })
    }
}

/// `POST /vms/{id}/power`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Start the VM (placement picks a host if it has none).
    On,
    /// Force off (like pulling the plug).
    Off,
    /// ACPI power button; forced off if the guest ignores it.
    Shutdown,
    /// Hard reset.
    Reset,
    Pause,
    Resume,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Shutdown => "shutdown",
            Self::Reset => "reset",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub action: PowerAction,
    /// With `off`: if a migration holds the VM, cancel it first (a migration past
    /// its switchover is let finish), then power off. Otherwise a VM with an
    /// operation in flight is refused with 409 `vm_busy`.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disk {
    pub datastore_id: DatastoreId,
    pub size_bytes: u64,
    /// File name inside the datastore.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub datastore_id: DatastoreId,
    #[schema(minimum = 1048576, maximum = 70368744177664_u64)]
    pub size_bytes: u64,
    /// File name inside the datastore; defaults to `<vm name>-<index>.qcow2`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Nic {
    pub network_id: NetworkId,
    pub mac: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    pub network_id: NetworkId,
}

/// How the VM boots: a kernel with initrd and command line, or a disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Boot {
    Kernel {
        kernel: String,
        #[serde(default)]
        initrd: Option<String>,
        #[serde(default)]
        cmdline: Option<String>,
    },
    Disk {
        /// Index into `disks`.
        disk: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MigrationMode {
    Auto,
    Precopy,
    Postcopy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPolicy {
    #[serde(default = "default_max_downtime_ms")]
    #[schema(minimum = 1, maximum = 60000)]
    pub max_downtime_ms: u32,
    /// 0 means no cap.
    #[serde(default)]
    #[schema(maximum = 1000000)]
    pub max_bandwidth_mbps: u32,
    #[serde(default = "default_mode")]
    pub mode: MigrationMode,
    #[serde(default = "default_true")]
    pub allow_throttle: bool,
    /// 0 lets Ferry decide.
    #[serde(default)]
    #[schema(maximum = 16)]
    pub parallel_channels: u8,
}

fn default_max_downtime_ms() -> u32 {
    300
}
fn default_mode() -> MigrationMode {
    MigrationMode::Auto
}
fn default_true() -> bool {
    true
}

impl Default for MigrationPolicy {
    fn default() -> Self {
        Self {
            max_downtime_ms: default_max_downtime_ms(),
            max_bandwidth_mbps: 0,
            mode: default_mode(),
            allow_throttle: true,
            parallel_channels: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vm {
    pub id: VmId,
    pub name: String,
    pub host_id: Option<HostId>,
    pub cluster_id: ClusterId,
    pub power_state: PowerState,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub cpu_model: String,
    pub machine_type: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub boot: Option<Boot>,
    pub migration_policy: MigrationPolicy,
    /// The VM's own balancing level; none: the cluster's.
    pub drs_automation: Option<crate::drs::VmDrsAutomation>,
    pub created_at: DateTime<Utc>,
}

/// `PATCH /vms/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmPatch {
    /// The VM's own balancing level; `null` returns it to the cluster's.
    #[serde(default, deserialize_with = "some_nullable")]
    #[schema(value_type = Option<crate::drs::VmDrsAutomation>)]
    pub drs_automation: Option<Option<crate::drs::VmDrsAutomation>>,
}

/// Tells "absent" (`None`) apart from "null" (`Some(None)`).
fn some_nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /vms`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    /// Where the VM lives; omitted: the host's cluster, or the `default` cluster.
    #[serde(default)]
    pub cluster_id: Option<ClusterId>,
    #[serde(default)]
    pub host_id: Option<HostId>,
    #[schema(minimum = 1, maximum = 256)]
    pub vcpus: u32,
    #[schema(minimum = 16, maximum = 6291456)]
    pub memory_mib: u64,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub cpu_model: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub machine_type: Option<String>,
    #[serde(default)]
    #[schema(max_items = 16)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    #[schema(max_items = 8)]
    pub nics: Vec<NicSpec>,
    #[serde(default)]
    pub boot: Option<Boot>,
    #[serde(default)]
    pub migration_policy: Option<MigrationPolicy>,
}

/// Limits a `VmCreate` must respect.
pub const MAX_VCPUS: u32 = 256;
pub const MIN_MEMORY_MIB: u64 = 16;
pub const MAX_MEMORY_MIB: u64 = 6 * 1024 * 1024;
pub const MAX_DISKS: usize = 16;
/// A migration's bandwidth cap at most (1 Tbit/s); 0 is no cap.
pub const MAX_BANDWIDTH_MBPS: u32 = 1_000_000;
pub const MAX_NICS: usize = 8;
pub const DEFAULT_CPU_MODEL: &str = "qemu64";
pub const DEFAULT_MACHINE_TYPE: &str = "q35";
