//! The QEMU backend. At start-up it asks the installed QEMU for its version and the
//! CPU models it offers (`-cpu help`) and chooses the accelerator:
//!
//! * `--accel kvm` / `--accel tcg`: as told (kvm fails start-up if `/dev/kvm` does
//!   not open).
//! * `--accel auto`: KVM only when `/dev/kvm` opens *and* it is real hardware
//!   virtualisation: the host CPU has `vmx`/`svm` and the kernel is not running
//!   KVM's PVM mode (`/sys/module/kvm_pvm`). On nested machines where `/dev/kvm`
//!   opens but is PVM, an unmodified Linux guest crawls (~50 s to early init, and
//!   `-cpu host` aborts on MSR 0x10a) while TCG boots it in ~2 s, so TCG is chosen.
//!   The reason is reported with the host's facts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_proto::v1::{
    CpuFacts, MemoryFacts, MigrateInReply, MigrateInRequest, MigrateOutRequest, MigrateTuneRequest,
    MigrationStatusReply, PowerAction, VmRuntime, VmSpec,
};
use tokio::sync::broadcast;

use super::{AccelChoice, Hypervisor};
use crate::config;
use crate::datastores::DatastoreSpec;
use crate::facts::{self, CpuSampler};
use crate::qemu_vm::QemuVms;

pub struct QemuBackend {
    binary: String,
    version: String,
    models: Vec<String>,
    accel: AccelChoice,
    cpu_sampler: Mutex<CpuSampler>,
    pub vms: Arc<QemuVms>,
    /// The memory offered to VMs (`--vm-memory-mib`); all of the machine's if none.
    pub vm_memory_mib: Option<u64>,
}

impl QemuBackend {
    /// Asks QEMU for its facts, chooses the accelerator, and sets up the VM
    /// registry under `run_dir` with this host's datastores and network bridges.
    pub fn new(
        binary: &str,
        choice: config::AccelChoice,
        run_dir: PathBuf,
        datastores: Vec<DatastoreSpec>,
        networks: &[(String, String)],
        shutdown_timeout: Duration,
        migration_tls: config::MigrationTls,
    ) -> anyhow::Result<Self> {
        let out = Command::new(binary)
            .arg("--version")
            .output()
            .with_context(|| {
                format!("run `{binary} --version`: install qemu-system-x86 (or pass --qemu)")
            })?;
        if !out.status.success() {
            bail!(
                "`{binary} --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let out = Command::new(binary)
            .args(["-cpu", "help"])
            .output()
            .context("run `qemu -cpu help`")?;
        let models = parse_cpu_models(&String::from_utf8_lossy(&out.stdout));
        let accel = choose_accel(
            choice,
            &facts::cpu().flags,
            Path::new("/dev/kvm"),
            Path::new("/sys/module/kvm_pvm"),
        )?;
        tracing::info!(accel = accel.accel, reason = %accel.reason, %version, models = models.len(), "QEMU backend ready");
        let mut vms = QemuVms::new(binary, accel.accel, run_dir, datastores, networks)?;
        if let Some(v) = Arc::get_mut(&mut vms) {
            v.shutdown_timeout = shutdown_timeout;
            v.migration_tls = migration_tls;
            v.pad_tcg_memory = crate::qemu_vm::needs_tcg_dirty_padding(&version, accel.accel);
            if v.pad_tcg_memory {
                tracing::warn!(%version, "this QEMU loses guest writes when it migrates a TCG guest (fixed in 9.0): TCG guests get one page more RAM, which avoids it at the cost of a short stall when a move starts");
            }
        }
        Ok(Self {
            binary: binary.to_string(),
            version,
            models,
            accel,
            cpu_sampler: Mutex::default(),
            vms,
            vm_memory_mib: None,
        })
    }

    pub fn binary(&self) -> &str {
        &self.binary
    }
}

#[tonic::async_trait]
impl Hypervisor for QemuBackend {
    fn accel(&self) -> AccelChoice {
        self.accel.clone()
    }

    fn cpu(&self) -> CpuFacts {
        let mut cpu = facts::cpu();
        cpu.supported_models = self.models.clone();
        cpu
    }

    /// The machine's memory, or the share offered to VMs: its total, and what of
    /// it the VMs running here leave free.
    fn memory(&self) -> MemoryFacts {
        let m = facts::memory();
        match self.vm_memory_mib {
            None => m,
            Some(cap) => MemoryFacts {
                total_mib: m.total_mib.min(cap),
                free_mib: m.free_mib.min(cap.saturating_sub(self.vms.committed_mib())),
            },
        }
    }

    fn load(&self) -> (f32, f32) {
        let cpu = self
            .cpu_sampler
            .lock()
            .map(|mut s| s.sample())
            .unwrap_or(0.0);
        let m = facts::memory();
        let mem = if m.total_mib > 0 {
            100.0 * (1.0 - m.free_mib as f32 / m.total_mib as f32)
        } else {
            0.0
        };
        (cpu, mem)
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn vm_loads(&self) -> Vec<ferry_proto::v1::VmLoad> {
        self.vms.loads()
    }

    fn vm_metrics(&self) -> Vec<super::VmMetrics> {
        self.vms.metrics()
    }

    fn qemu_processes(&self) -> Option<usize> {
        Some(self.vms.process_count())
    }

    async fn vm_power(
        &self,
        vm_id: &str,
        action: PowerAction,
        spec: Option<VmSpec>,
        shutdown_timeout: Option<Duration>,
    ) -> anyhow::Result<VmRuntime> {
        self.vms.power(vm_id, action, spec, shutdown_timeout).await
    }

    async fn vm_delete(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        self.vms.delete(vm_id).await
    }

    fn vm_list(&self) -> Vec<VmRuntime> {
        self.vms.list()
    }

    fn vm_console(&self, vm_id: &str, max_bytes: usize) -> anyhow::Result<String> {
        self.vms.console(vm_id, max_bytes)
    }

    fn vm_events(&self) -> broadcast::Receiver<VmRuntime> {
        self.vms.subscribe()
    }

    async fn migrate_in(&self, req: MigrateInRequest) -> anyhow::Result<MigrateInReply> {
        self.vms.migrate_in(req).await
    }

    async fn migrate_out(&self, req: MigrateOutRequest) -> anyhow::Result<VmRuntime> {
        self.vms.migrate_out(req).await
    }

    async fn migrate_tune(&self, req: MigrateTuneRequest) -> anyhow::Result<MigrationStatusReply> {
        self.vms.migrate_tune(req).await
    }

    async fn migration_status(
        &self,
        vm_id: &str,
        wait: Duration,
    ) -> anyhow::Result<MigrationStatusReply> {
        self.vms.migration_status(vm_id, wait).await
    }

    async fn migrate_cancel(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        self.vms.migrate_cancel(vm_id).await
    }

    async fn sample_dirty_rate(&self, vm_id: &str) -> anyhow::Result<u64> {
        self.vms
            .sample_dirty_rate(vm_id, Duration::from_secs(1))
            .await
    }

    async fn vm_discard(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        self.vms.discard(vm_id).await
    }

    async fn mirror_start(
        &self,
        req: ferry_proto::v1::MirrorStartRequest,
    ) -> anyhow::Result<ferry_proto::v1::MirrorStatusReply> {
        self.vms.mirror_start(req).await
    }

    async fn mirror_status(
        &self,
        vm_id: &str,
        wait: std::time::Duration,
    ) -> anyhow::Result<ferry_proto::v1::MirrorStatusReply> {
        self.vms.mirror_status(vm_id, wait).await
    }

    async fn mirror_cancel(
        &self,
        vm_id: &str,
    ) -> anyhow::Result<ferry_proto::v1::MirrorStatusReply> {
        self.vms.mirror_cancel(vm_id).await
    }

    async fn mirror_pivot(
        &self,
        vm_id: &str,
    ) -> anyhow::Result<ferry_proto::v1::MirrorStatusReply> {
        self.vms.mirror_pivot(vm_id).await
    }

    async fn remove_disks(&self, req: ferry_proto::v1::RemoveDisksRequest) -> anyhow::Result<u32> {
        self.vms.remove_disks(req).await
    }
}

/// Model names from `qemu-system-x86_64 -cpu help` (`x86 Skylake-Client  Intel ...`).
pub fn parse_cpu_models(help: &str) -> Vec<String> {
    // QEMU 7.2 prints `x86 qemu64  QEMU Virtual CPU version 2.5+` lines; QEMU 9 and
    // later print `Available CPUs:` and then `  qemu64  (alias …)` lines, up to a
    // blank line and the `Recognized CPUID flags:` section.
    let mut models: Vec<String> = Vec::new();
    let mut in_list = false;
    for line in help.lines() {
        if let Some(rest) = line.trim().strip_prefix("x86 ") {
            models.extend(rest.split_whitespace().next().map(String::from));
        } else if line.trim_end() == "Available CPUs:" {
            in_list = true;
        } else if line.trim().is_empty() || !line.starts_with(' ') {
            in_list = false;
        } else if in_list {
            models.extend(line.split_whitespace().next().map(String::from));
        }
    }
    models.sort();
    models.dedup();
    models
}

/// The accelerator decision (see the module doc).
pub fn choose_accel(
    choice: config::AccelChoice,
    cpu_flags: &[String],
    dev_kvm: &Path,
    pvm_module: &Path,
) -> anyhow::Result<AccelChoice> {
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
        .is_ok();
    let hw_virt = cpu_flags.iter().any(|f| f == "vmx" || f == "svm");
    let pvm = pvm_module.exists();
    Ok(match choice {
        config::AccelChoice::Tcg => AccelChoice {
            accel: "tcg",
            reason: "TCG requested (--accel tcg)".into(),
        },
        config::AccelChoice::Kvm => {
            if !kvm_opens {
                bail!("--accel kvm, but {} does not open", dev_kvm.display());
            }
            AccelChoice {
                accel: "kvm",
                reason: "KVM requested (--accel kvm)".into(),
            }
        }
        config::AccelChoice::Auto => match (kvm_opens, hw_virt, pvm) {
            (false, _, _) => AccelChoice {
                accel: "tcg",
                reason: format!("{} does not open", dev_kvm.display()),
            },
            (true, _, true) => AccelChoice {
                accel: "tcg",
                reason:
                    "/dev/kvm is KVM's PVM mode (nested, no hardware virtualisation): Linux guests \
                         crawl under it, TCG boots them faster"
                        .into(),
            },
            (true, false, false) => AccelChoice {
                accel: "tcg",
                reason:
                    "/dev/kvm opens but the CPU has no vmx/svm flag: not hardware virtualisation"
                        .into(),
            },
            (true, true, false) => AccelChoice {
                accel: "kvm",
                reason: "/dev/kvm opens and the CPU has hardware virtualisation".into(),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_models() {
        let help = "Available CPUs:\nx86 486                   (alias configured by machine type)\n\
                    x86 Skylake-Client-v1     Intel Core Processor (Skylake)\nx86 qemu64  QEMU Virtual CPU version 2.5+\n\
                    \nRecognized CPUID flags:\n  3dnow\n";
        assert_eq!(
            parse_cpu_models(help),
            vec!["486", "Skylake-Client-v1", "qemu64"]
        );
        // QEMU 10's layout.
        let help = "Available CPUs:\n  486                   (alias configured by machine type)\n  \
                    Broadwell-IBRS        (alias of Broadwell-v3)\n  qemu64-v1             QEMU Virtual CPU version 2.5+\n  \
                    qemu64                (alias configured by machine type)\n\nRecognized CPUID flags:\n  3dnow 3dnowext abm\n";
        assert_eq!(
            parse_cpu_models(help),
            vec!["486", "Broadwell-IBRS", "qemu64", "qemu64-v1"]
        );
        let real = std::process::Command::new("qemu-system-x86_64")
            .args(["-cpu", "help"])
            .output();
        if let Ok(out) = real {
            let models = parse_cpu_models(&String::from_utf8_lossy(&out.stdout));
            assert!(models.iter().any(|m| m == "qemu64"), "{models:?}");
            assert!(!models.iter().any(|m| m == "3dnow"), "{models:?}");
        }
    }

    #[test]
    fn accel_rules() {
        let dir = tempfile::tempdir().unwrap();
        let kvm = dir.path().join("kvm");
        std::fs::write(&kvm, b"").unwrap();
        let pvm = dir.path().join("kvm_pvm");
        let missing = dir.path().join("none");
        let vmx = vec!["vmx".to_string()];
        let auto = config::AccelChoice::Auto;
        assert_eq!(choose_accel(auto, &vmx, &kvm, &pvm).unwrap().accel, "kvm");
        assert_eq!(choose_accel(auto, &[], &kvm, &pvm).unwrap().accel, "tcg");
        assert_eq!(
            choose_accel(auto, &vmx, &missing, &pvm).unwrap().accel,
            "tcg"
        );
        std::fs::create_dir(&pvm).unwrap();
        let c = choose_accel(auto, &vmx, &kvm, &pvm).unwrap();
        assert_eq!(c.accel, "tcg");
        assert!(c.reason.contains("PVM"));
        assert_eq!(
            choose_accel(config::AccelChoice::Tcg, &vmx, &kvm, &pvm)
                .unwrap()
                .accel,
            "tcg"
        );
        assert!(choose_accel(config::AccelChoice::Kvm, &vmx, &missing, &pvm).is_err());
    }
}
