//! The `Hypervisor` trait: what a host's virtualisation backend tells and does.
//! Two backends implement it: `qemu` (real QEMU processes; KVM when it is real
//! hardware virtualisation, TCG otherwise) and `sim` (modelled hosts for scale and
//! policy tests). VM lifecycle and migration operations join this trait with the
//! QEMU backend and live migration; for now it reports host facts.

pub mod qemu;
pub mod sim;

use ferry_proto::v1::{CpuFacts, MemoryFacts};

/// The accelerator a backend uses, and why it chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// `kvm`, `tcg` or `sim`.
    pub accel: &'static str,
    pub reason: String,
}

pub trait Hypervisor: Send + Sync + 'static {
    fn accel(&self) -> AccelChoice;
    /// CPU facts, including the guest CPU models this host can offer.
    fn cpu(&self) -> CpuFacts;
    fn memory(&self) -> MemoryFacts;
    /// (CPU busy %, memory in use %) right now.
    fn load(&self) -> (f32, f32);
    /// e.g. `QEMU emulator version 7.2.x`.
    fn version(&self) -> String;
}
