//! What the control plane and the host agent both need and neither owns: the one
//! duration parser of their flags (`duration`), reading names out of x509
//! certificates (`x509`), and what a VM costs a host beside its RAM.

pub mod duration;
pub mod prom;
pub mod x509;

/// Memory QEMU itself needs beside the guest's RAM: the control plane's host-fit
/// checks count it, and an agent offering a share of its memory to VMs
/// (`--vm-memory-mib`) counts it against that share.
pub const QEMU_OVERHEAD_MIB: u64 = 64;
