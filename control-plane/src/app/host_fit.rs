//! Host fit: whether a host can run a VM. One set of rules, each a named check
//! with a stable code and a sentence a person can act on, used by placement
//! (create, power-on, a migration without a destination), by the migration checks
//! and, next, by balancing — so a host is never "fit" for one and not the other.
//!
//! | check | code when it fails |
//! | --- | --- |
//! | `host_connected` (`destination_connected` in a migration's checks) | `host_unavailable` |
//! | `cpu_model` | `unsupported_cpu_model` |
//! | `memory` | `insufficient_memory` |
//! | `datastores` | `datastore_not_on_host` |
//! | `networks` | `network_not_on_host` |

use std::collections::HashSet;

use ferry_api::host::{Host, HostState};
use ferry_api::migration::Check;
use ferry_api::problem::Reason;
use ferry_api::vm::Vm;
use ferry_api::{DatastoreId, NetworkId};

pub use ferry_common::QEMU_OVERHEAD_MIB;

/// What a VM needs from a host.
pub struct Needs<'a> {
    pub memory_mib: u64,
    pub cpu_model: &'a str,
    pub datastores: &'a [DatastoreId],
    pub networks: &'a [NetworkId],
}

/// A recorded VM's datastores and networks, which its [`Needs`] borrow.
pub struct VmParts {
    pub datastores: Vec<DatastoreId>,
    pub networks: Vec<NetworkId>,
}

impl VmParts {
    pub fn of(vm: &Vm) -> Self {
        Self {
            datastores: vm.disks.iter().map(|d| d.datastore_id).collect(),
            networks: vm.nics.iter().map(|n| n.network_id).collect(),
        }
    }

    /// What `vm` needs from a host.
    pub fn needs<'a>(&'a self, vm: &'a Vm) -> Needs<'a> {
        Needs {
            memory_mib: vm.memory_mib,
            cpu_model: &vm.cpu_model,
            datastores: &self.datastores,
            networks: &self.networks,
        }
    }
}

/// Where the host stands in the question (only the connection check's name differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A host a VM is placed on.
    Host,
    /// The destination of a migration.
    Destination,
}

/// Which rule a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitKind {
    Connected,
    CpuModel,
    Memory,
    Datastores,
    Networks,
}

/// One host-fit check's result.
#[derive(Debug, Clone)]
pub struct Fit {
    pub kind: FitKind,
    pub name: &'static str,
    pub passed: bool,
    /// The code it fails with (also set when it passed).
    pub code: &'static str,
    pub detail: String,
}

impl From<Fit> for Check {
    fn from(f: Fit) -> Self {
        Check {
            name: f.name.into(),
            passed: f.passed,
            code: if f.passed { "ok".into() } else { f.code.into() },
            detail: if f.passed {
                format!("{}: ok", f.name)
            } else {
                f.detail
            },
        }
    }
}

fn check(
    kind: FitKind,
    name: &'static str,
    passed: bool,
    code: &'static str,
    detail: String,
) -> Fit {
    Fit {
        kind,
        name,
        passed,
        code,
        detail,
    }
}

/// Every fit check of `host` for the VM, passed or not, in a fixed order.
pub fn checks(host: &Host, needs: &Needs<'_>, role: Role) -> Vec<Fit> {
    let connected = match role {
        Role::Host => "host_connected",
        Role::Destination => "destination_connected",
    };
    let ds: HashSet<_> = host.datastores.iter().collect();
    let missing_ds: Vec<String> = needs
        .datastores
        .iter()
        .filter(|d| !ds.contains(d))
        .map(|d| d.to_string())
        .collect();
    let nets: HashSet<_> = host.networks.iter().collect();
    let missing_net: Vec<String> = needs
        .networks
        .iter()
        .filter(|n| !nets.contains(n))
        .map(|n| n.to_string())
        .collect();
    let need = needs.memory_mib + QEMU_OVERHEAD_MIB;
    vec![
        check(
            FitKind::Connected,
            connected,
            host.state == HostState::Connected,
            "host_unavailable",
            format!("host {} is {}", host.name, host.state.as_str()),
        ),
        check(
            FitKind::CpuModel,
            "cpu_model",
            host.cpu.supported_models.iter().any(|m| m == needs.cpu_model),
            "unsupported_cpu_model",
            format!(
                "host {} cannot run CPU model {} (see its cpu.supported_models)",
                host.name, needs.cpu_model
            ),
        ),
        check(
            FitKind::Memory,
            "memory",
            host.memory.free_mib >= need,
            "insufficient_memory",
            format!(
                "host {} has {} MiB free; the VM needs {need} MiB ({} + {QEMU_OVERHEAD_MIB} for QEMU)",
                host.name, host.memory.free_mib, needs.memory_mib
            ),
        ),
        check(
            FitKind::Datastores,
            "datastores",
            missing_ds.is_empty(),
            "datastore_not_on_host",
            format!(
                "host {} does not mount datastore(s) {}",
                host.name,
                missing_ds.join(", ")
            ),
        ),
        check(
            FitKind::Networks,
            "networks",
            missing_net.is_empty(),
            "network_not_on_host",
            format!(
                "host {} does not have network(s) {}",
                host.name,
                missing_net.join(", ")
            ),
        ),
    ]
}

/// The checks `host` fails for the VM (empty: it fits).
pub fn misfits(host: &Host, needs: &Needs<'_>) -> Vec<Fit> {
    checks(host, needs, Role::Host)
        .into_iter()
        .filter(|c| !c.passed)
        .collect()
}

/// Failed checks as the reasons of a problem.
pub fn reasons(misfits: &[Fit]) -> Vec<Reason> {
    misfits
        .iter()
        .map(|c| Reason {
            code: c.code.into(),
            detail: c.detail.clone(),
        })
        .collect()
}
