//! The simulated backend: a modelled host with fixed, plausible facts (varied by the
//! host's index so a fleet is not uniform) and a gently moving load. It exists for
//! control-plane scale and policy tests; no feature is proven on it alone.

use std::sync::atomic::{AtomicU32, Ordering};

use ferry_proto::v1::{CpuFacts, MemoryFacts};

use super::{AccelChoice, Hypervisor};

pub struct SimHost {
    index: u32,
    tick: AtomicU32,
}

impl SimHost {
    pub fn new(index: u32) -> Self {
        Self {
            index,
            tick: AtomicU32::new(0),
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
}
