//! Each running VM's load, for balancing: CPU demand from the CPU time of QEMU's
//! vCPU threads (QEMU names them `CPU <n>/KVM` or `CPU <n>/TCG`), so QEMU's own
//! I/O and migration threads do not count as the guest's demand; and memory in
//! use as the QEMU process's resident set. Sampled at each heartbeat: demand is
//! the CPU time since the last sample ÷ the wall time, in cores.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use ferry_proto::v1::VmLoad;

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Default)]
pub struct LoadSampler {
    last: Mutex<HashMap<u32, (u64, Instant)>>,
}

/// utime + stime of the process's vCPU threads, in ticks.
pub fn vcpu_ticks(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("CPU ") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are stat's fields 14 and 15: 12 and 13 after the name.
        total += tick(11) + tick(12);
    }
    Some(total)
}

/// The process's resident memory, MiB.
pub fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

impl LoadSampler {
    /// The load of each `(vm_id, pid)` since its last sample (the first sample of a
    /// process reports no CPU demand yet).
    pub fn sample(&self, running: &[(String, u32)]) -> Vec<VmLoad> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for (vm_id, pid) in running {
            let Some(ticks) = vcpu_ticks(*pid) else {
                continue;
            };
            let cpu_cores = match last.get(pid) {
                Some((t0, at)) if ticks >= *t0 => {
                    let secs = now.duration_since(*at).as_secs_f64();
                    if secs > 0.0 {
                        (ticks - t0) as f64 / TICKS_PER_S / secs
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            seen.insert(*pid, (ticks, now));
            out.push(VmLoad {
                vm_id: vm_id.clone(),
                cpu_cores,
                mem_used_mib: rss_mib(*pid),
            });
        }
        *last = seen;
        out
    }
}

impl super::QemuVms {
    /// Each running VM's load since the last call.
    pub fn loads(&self) -> Vec<ferry_proto::v1::VmLoad> {
        let running: Vec<(String, u32)> = self
            .vms
            .lock()
            .map(|m| {
                m.values()
                    .filter_map(|h| {
                        let l = h.live.lock().ok()?;
                        (l.state == super::PowerState::Running).then_some((h.id.clone(), l.pid?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.load_sampler.sample(&running)
    }

    /// Remembers `vm`'s latest measured dirty rate (bytes/s).
    pub fn note_dirty_rate(&self, vm: &str, bps: u64) {
        if let Ok(mut m) = self.dirty_rates.lock() {
            m.insert(vm.to_string(), bps);
        }
    }

    /// Every VM with a QEMU process here: vCPU time, resident memory, last dirty rate.
    pub fn metrics(&self) -> Vec<crate::hypervisor::VmMetrics> {
        let dirty = self
            .dirty_rates
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.values()
            .filter_map(|h| {
                let pid = h.live.lock().ok()?.pid?;
                Some(crate::hypervisor::VmMetrics {
                    vm_id: h.id.clone(),
                    name: h.spec.lock().map(|s| s.name.clone()).unwrap_or_default(),
                    cpu_seconds: vcpu_ticks(pid).map(|t| t as f64 / TICKS_PER_S),
                    rss_bytes: Some(rss_mib(pid) << 20),
                    dirty_rate_bps: dirty.get(&h.id).copied(),
                })
            })
            .collect()
    }

    /// QEMU processes this agent runs.
    pub fn process_count(&self) -> usize {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.values()
            .filter(|h| {
                h.live
                    .lock()
                    .is_ok_and(|l| l.pid.is_some_and(super::pid_alive))
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_of_this_process_is_not_a_vcpu() {
        // This test process has no "CPU n/…" threads: zero vCPU ticks, some RSS.
        let me = std::process::id();
        assert_eq!(vcpu_ticks(me), Some(0));
        assert!(rss_mib(me) > 0);
        assert_eq!(vcpu_ticks(u32::MAX), None);
    }
}
