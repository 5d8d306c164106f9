//! The simulated backend: a modelled host with fixed, plausible facts (varied by the
//! host's index so a fleet is not uniform) and a gently moving load. It exists for
//! control-plane scale and policy tests; no feature is proven on it alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use ferry_proto::v1::{CpuFacts, MemoryFacts, VmRuntime, VmSpec};
use tokio::sync::broadcast;

use crate::generation::Generation;

use super::{AccelChoice, Hypervisor};

pub struct SimHost {
    index: u32,
    tick: AtomicU32,
    /// Modelled VMs: spec and state; transitions complete at once.
    vms: Mutex<HashMap<String, (VmSpec, &'static str)>>,
    generation: Generation,
    events: broadcast::Sender<VmRuntime>,
}

impl SimHost {
    pub fn new(index: u32) -> Self {
        Self {
            index,
            tick: AtomicU32::new(0),
            vms: Mutex::default(),
            generation: Generation::default(),
            events: broadcast::channel(64).0,
        }
    }

    fn runtime(&self, spec: &VmSpec, state: &str) -> VmRuntime {
        VmRuntime {
            vm_id: spec.vm_id.clone(),
            state: state.into(),
            generation: self.generation.next(),
            pid: 0,
            detail: "simulated".into(),
            name: spec.name.clone(),
        }
    }

    fn total_mib(&self) -> u64 {
        if self.index.is_multiple_of(2) {
            256 * 1024
        } else {
            512 * 1024
        }
    }
}

pub const SIM_CPU_MODELS: &[&str] = &[
    "Cascadelake-Server",
    "Haswell",
    "Icelake-Server",
    "Skylake-Server",
    "qemu64",
];

#[tonic::async_trait]
impl Hypervisor for SimHost {
    fn accel(&self) -> AccelChoice {
        AccelChoice {
            accel: "sim",
            reason: "simulated host (--backend sim)".into(),
        }
    }

    fn cpu(&self) -> CpuFacts {
        let flags = [
            "aes", "avx", "avx2", "avx512f", "fpu", "pdpe1gb", "sse2", "sse4_2", "vmx",
        ];
        CpuFacts {
            vendor: "GenuineIntel".into(),
            model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz (simulated)".into(),
            cores: if self.index.is_multiple_of(2) {
                64
            } else {
                128
            },
            flags: flags.iter().map(|s| s.to_string()).collect(),
            supported_models: SIM_CPU_MODELS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn memory(&self) -> MemoryFacts {
        let total = self.total_mib();
        MemoryFacts {
            total_mib: total,
            free_mib: total - total / 16,
        }
    }

    fn load(&self) -> (f32, f32) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        let cpu = 5.0 + ((self.index * 7 + t) % 10) as f32;
        (cpu, 6.25)
    }

    fn version(&self) -> String {
        format!("ferry-sim {}", crate::VERSION)
    }

    async fn vm_power(
        &self,
        vm_id: &str,
        action: &str,
        spec: Option<VmSpec>,
        _shutdown_timeout: Option<Duration>,
    ) -> anyhow::Result<VmRuntime> {
        let mut vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = spec {
            let state = vms.get(vm_id).map(|(_, st)| *st).unwrap_or("stopped");
            vms.insert(vm_id.to_string(), (s, state));
        }
        let Some((spec, state)) = vms.get_mut(vm_id) else {
            bail!("VM {vm_id} is not defined on this host")
        };
        *state = match (action, *state) {
            ("on", _) | ("resume", "paused") | ("reset", "running") => "running",
            ("off", _) | ("shutdown", _) => "stopped",
            ("pause", "running") | ("pause", "paused") => "paused",
            (a, s) => bail!("cannot {a} a {s} VM"),
        };
        let (spec, state) = (spec.clone(), *state);
        drop(vms);
        let rt = self.runtime(&spec, state);
        let _ = self.events.send(rt.clone());
        Ok(rt)
    }

    async fn vm_delete(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let removed = self
            .vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vm_id);
        Ok(match removed {
            Some((spec, _)) => self.runtime(&spec, "stopped"),
            None => VmRuntime {
                vm_id: vm_id.into(),
                state: "stopped".into(),
                ..Default::default()
            },
        })
    }

    fn vm_list(&self) -> Vec<VmRuntime> {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.values()
            .map(|(spec, state)| self.runtime(spec, state))
            .collect()
    }

    fn vm_console(&self, vm_id: &str, _max_bytes: usize) -> anyhow::Result<String> {
        if !self
            .vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(vm_id)
        {
            bail!("VM {vm_id} is not defined on this host");
        }
        Ok(format!("[simulated console of {vm_id}]\n"))
    }

    fn vm_events(&self) -> broadcast::Receiver<VmRuntime> {
        self.events.subscribe()
    }
}
