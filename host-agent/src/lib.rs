//! Ferry's host agent. It joins the control plane (`identity`), reports the host's
//! facts and heartbeats (`runner`), serves the agent gRPC API to the control plane
//! (`service`), and runs VMs through a `Hypervisor` backend: `qemu` (real QEMU/KVM
//! or TCG) or `sim` (modelled hosts for control-plane scale and policy tests).

pub mod bandwidth;
pub mod config;
pub mod datastores;
pub mod error;
pub mod facts;
pub mod frames;
pub mod generation;
pub mod hypervisor;
pub mod identity;
pub mod metrics;
pub mod netdev;
pub mod qemu_vm;
pub mod qmp;
pub mod runner;
pub mod service;
pub mod tunnel;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
