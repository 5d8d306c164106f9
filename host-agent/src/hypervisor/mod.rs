//! The `Hypervisor` trait: what a host's virtualisation backend tells and does.
//! Two backends implement it: `qemu` (real QEMU processes; KVM when it is real
//! hardware virtualisation, TCG otherwise) and `sim` (modelled hosts for scale and
//! policy tests). It reports host facts and runs VMs (power operations, delete,
//! list, console); runtime changes are announced on `vm_events`.

pub mod qemu;
pub mod sim;

use std::time::Duration;

use ferry_proto::v1::{CpuFacts, MemoryFacts, VmRuntime, VmSpec};
use tokio::sync::broadcast;

/// The accelerator a backend uses, and why it chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// `kvm`, `tcg` or `sim`.
    pub accel: &'static str,
    pub reason: String,
}

#[tonic::async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    fn accel(&self) -> AccelChoice;
    /// CPU facts, including the guest CPU models this host can offer.
    fn cpu(&self) -> CpuFacts;
    fn memory(&self) -> MemoryFacts;
    /// (CPU busy %, memory in use %) right now.
    fn load(&self) -> (f32, f32);
    /// e.g. `QEMU emulator version 7.2.x`.
    fn version(&self) -> String;

    /// `on` (needs `spec`), `off`, `shutdown` (ACPI, then forced after the timeout),
    /// `reset`, `pause`, `resume`.
    async fn vm_power(
        &self,
        vm_id: &str,
        action: &str,
        spec: Option<VmSpec>,
        shutdown_timeout: Option<Duration>,
    ) -> anyhow::Result<VmRuntime>;
    /// Stops the VM if it runs and removes it (disks included) from this host.
    async fn vm_delete(&self, vm_id: &str) -> anyhow::Result<VmRuntime>;
    fn vm_list(&self) -> Vec<VmRuntime>;
    fn vm_console(&self, vm_id: &str, max_bytes: usize) -> anyhow::Result<String>;
    /// Runtime changes, each with a new generation.
    fn vm_events(&self) -> broadcast::Receiver<VmRuntime>;
}
