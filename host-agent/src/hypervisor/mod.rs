//! The `Hypervisor` trait: what a host's virtualisation backend tells and does.
//! Two backends implement it: `qemu` (real QEMU processes; KVM when it is real
//! hardware virtualisation, TCG otherwise) and `sim` (modelled hosts for scale and
//! policy tests). It reports host facts and runs VMs (power operations, delete,
//! list, console); runtime changes are announced on `vm_events`.

pub mod qemu;
pub mod sim;
pub mod sim_migration;

use std::time::Duration;

use ferry_proto::errors::ErrorCode;
use ferry_proto::v1::{
    CpuFacts, MemoryFacts, MigrateInReply, MigrateInRequest, MigrateOutRequest, MigrateTuneRequest,
    MigrationStatusReply, MirrorStartRequest, MirrorStatusReply, PowerAction, RemoveDisksRequest,
    VmLoad, VmRuntime, VmSpec,
};
use tokio::sync::broadcast;

/// The accelerator a backend uses, and why it chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// `kvm`, `tcg` or `sim`.
    pub accel: &'static str,
    pub reason: String,
}

/// One VM as the agent's `/metrics` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmMetrics {
    pub vm_id: String,
    pub name: String,
    /// CPU time its vCPUs used, seconds (monotonic while the process lives).
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// The last dirty rate measured (a sample for a prediction, or a migration's
    /// progress), bytes/s; `None` until one was.
    pub dirty_rate_bps: Option<u64>,
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
    /// Each running VM's load since the last call (sent with heartbeats).
    fn vm_loads(&self) -> Vec<VmLoad>;
    /// Each VM with a process here, for the agent's `/metrics` (no side effects).
    fn vm_metrics(&self) -> Vec<VmMetrics> {
        Vec::new()
    }
    /// QEMU processes this agent runs; `None` for a backend without processes.
    fn qemu_processes(&self) -> Option<usize> {
        None
    }

    /// A power operation: `On` needs `spec`; `Shutdown` asks the guest (ACPI) and
    /// forces it off after the timeout.
    async fn vm_power(
        &self,
        vm_id: &str,
        action: PowerAction,
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
    async fn migrate_in(&self, req: MigrateInRequest) -> anyhow::Result<MigrateInReply>;
    /// Source side: start sending (over TLS to `tls_hostname` unless it is empty).
    /// Asked again while that migration is under way or done, it answers for it.
    async fn migrate_out(&self, req: MigrateOutRequest) -> anyhow::Result<VmRuntime>;
    /// Source side: change a running migration (downtime target, post-copy).
    async fn migrate_tune(&self, req: MigrateTuneRequest) -> anyhow::Result<MigrationStatusReply>;
    /// Source side: the outgoing migration's status (`MIGRATION_NONE` if none).
    async fn migration_status(
        &self,
        vm_id: &str,
        wait: std::time::Duration,
    ) -> anyhow::Result<MigrationStatusReply>;
    /// Source side: cancel before switchover; the VM keeps running here. Fails with
    /// `ALREADY_DONE` when the migration completed, `PAST_SWITCHOVER` in post-copy.
    async fn migrate_cancel(&self, vm_id: &str) -> anyhow::Result<VmRuntime>;
    /// The guest's dirty-page rate, in bytes per second, sampled now.
    async fn sample_dirty_rate(&self, vm_id: &str) -> anyhow::Result<u64>;
    /// Stops this host's copy and removes it, keeping the disks (but those an
    /// unfinished incoming storage migration created).
    async fn vm_discard(&self, vm_id: &str) -> anyhow::Result<VmRuntime>;
    /// Storage migration, source side: mirror the VM's disks to the destination's
    /// NBD export (idempotent).
    async fn mirror_start(&self, req: MirrorStartRequest) -> anyhow::Result<MirrorStatusReply> {
        Err(crate::error::coded(
            ErrorCode::Invalid,
            format!("this backend cannot mirror disks (VM {})", req.vm_id),
        ))
    }
    /// The mirrors' state; while some is not in sync, waits up to `wait` for a
    /// change first.
    async fn mirror_status(
        &self,
        vm_id: &str,
        _wait: std::time::Duration,
    ) -> anyhow::Result<MirrorStatusReply> {
        Err(crate::error::coded(
            ErrorCode::Invalid,
            format!("this backend cannot mirror disks (VM {vm_id})"),
        ))
    }
    /// Stops the mirrors, leaving the source's disks as they are (idempotent).
    async fn mirror_cancel(&self, _vm_id: &str) -> anyhow::Result<MirrorStatusReply> {
        Ok(MirrorStatusReply::default())
    }
    /// Storage-only move: switches each disk to its in-sync local copy (idempotent).
    async fn mirror_pivot(&self, vm_id: &str) -> anyhow::Result<MirrorStatusReply> {
        Err(crate::error::coded(
            ErrorCode::Invalid,
            format!("this backend cannot mirror disks (VM {vm_id})"),
        ))
    }
    /// Removes disk images no QEMU here uses; returns how many were removed.
    async fn remove_disks(&self, req: RemoveDisksRequest) -> anyhow::Result<u32> {
        Err(crate::error::coded(
            ErrorCode::Invalid,
            format!("this backend has no disk images (VM {})", req.vm_id),
        ))
    }
    /// Bandwidth measurement, destination side: open a sink for one probe.
    async fn bandwidth_sink(&self, listen_ip: &str) -> anyhow::Result<String> {
        crate::bandwidth::sink(listen_ip).await
    }
    /// Source side: send `bytes` to the sink and time it.
    async fn bandwidth_probe(&self, address: &str, bytes: u64) -> anyhow::Result<(u64, Duration)> {
        crate::bandwidth::probe(address, bytes).await
    }
}
