//! The `Hypervisor` trait: what a host's virtualisation backend tells and does.
//! Two backends implement it: `qemu` (real QEMU processes; KVM when it is real
//! hardware virtualisation, TCG otherwise) and `sim` (modelled hosts for scale and
//! policy tests). It reports host facts and runs VMs (power operations, delete,
//! list, console); runtime changes are announced on `vm_events`.

pub mod qemu;
pub mod sim;

use std::time::Duration;

use anyhow::bail;
use ferry_proto::v1::{
    CpuFacts, MemoryFacts, MigrateInReply, MigrateInRequest, MigrateOutRequest, MigrateTuneRequest,
    MigrationStatusReply, VmRuntime, VmSpec,
};
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

    /// Live migration, destination side: start the waiting copy and listen on
    /// `req.listen_ip`; returns the URI the source sends to and the frame sink.
    async fn migrate_in(&self, req: MigrateInRequest) -> anyhow::Result<MigrateInReply> {
        let _ = req;
        bail!("this backend cannot live-migrate yet")
    }
    /// Source side: start sending (over TLS to `tls_hostname` unless it is empty).
    async fn migrate_out(&self, req: MigrateOutRequest) -> anyhow::Result<VmRuntime> {
        let _ = req;
        bail!("this backend cannot live-migrate yet")
    }
    /// Source side: change a running migration (downtime target, post-copy).
    async fn migrate_tune(&self, req: MigrateTuneRequest) -> anyhow::Result<MigrationStatusReply> {
        let _ = req;
        bail!("this backend cannot live-migrate yet")
    }
    async fn migration_status(&self, vm_id: &str) -> anyhow::Result<MigrationStatusReply> {
        let _ = vm_id;
        bail!("this backend cannot live-migrate yet")
    }
    async fn migrate_cancel(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let _ = vm_id;
        bail!("this backend cannot live-migrate yet")
    }
    /// The guest's dirty-page rate, in bytes per second, sampled now.
    async fn sample_dirty_rate(&self, vm_id: &str) -> anyhow::Result<u64> {
        let _ = vm_id;
        bail!("this backend cannot sample dirty rates yet")
    }
    /// Stops this host's copy and removes it, keeping the disks.
    async fn vm_discard(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        self.vm_power(vm_id, "off", None, None).await
    }
}
