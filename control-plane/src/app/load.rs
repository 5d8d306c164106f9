//! Each VM's measured load, smoothed: the agents send every running VM's CPU demand
//! (cores) and memory in use with each heartbeat; the control plane keeps two
//! exponentially weighted averages of the CPU demand — a short one (about the last
//! minute) and a long one (about the last 30 minutes) — and balances on
//! 0.75 × short + 0.25 × long (Xen Orchestra's weighting): recent enough to follow
//! a real shift, steady enough that a spike of a few seconds moves nothing.
//! Kept in memory: after a restart the averages refill within their windows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_api::{HostId, VmId};

const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Copy)]
struct Smoothed {
    host: HostId,
    short: f64,
    long: f64,
    mem_mib: f64,
    at: Instant,
}

/// A VM's load as balancing uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmLoad {
    pub host: HostId,
    /// Smoothed CPU demand, cores.
    pub cpu: f64,
    pub mem_mib: f64,
}

#[derive(Debug, Default)]
pub struct LoadCache {
    vms: Mutex<HashMap<VmId, Smoothed>>,
}

fn weight(dt: Duration, window: Duration) -> f64 {
    1.0 - (-dt.as_secs_f64() / window.as_secs_f64()).exp()
}

impl LoadCache {
    /// A sample from `host`'s heartbeat.
    pub fn record(&self, host: HostId, vm: VmId, cpu: f64, mem_mib: f64, now: Instant) {
        let cpu = if cpu.is_finite() { cpu.max(0.0) } else { 0.0 };
        let mut vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        let e = vms.entry(vm).or_insert(Smoothed {
            host,
            short: cpu,
            long: cpu,
            mem_mib,
            at: now,
        });
        if e.host != host {
            // It moved: its past load was another host's.
            *e = Smoothed {
                host,
                short: cpu,
                long: cpu,
                mem_mib,
                at: now,
            };
            return;
        }
        let dt = now.saturating_duration_since(e.at);
        e.short += weight(dt, SHORT) * (cpu - e.short);
        e.long += weight(dt, LONG) * (cpu - e.long);
        e.mem_mib = mem_mib;
        e.at = now;
    }

    pub fn get(&self, vm: VmId) -> Option<VmLoad> {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.get(&vm).map(|s| VmLoad {
            host: s.host,
            cpu: 0.75 * s.short + 0.25 * s.long,
            mem_mib: s.mem_mib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_barely_moves_it_and_a_shift_does() {
        let (c, h, vm) = (LoadCache::default(), HostId::new(), VmId::new());
        let t0 = Instant::now();
        for s in 0..600 {
            c.record(h, vm, 1.0, 1024.0, t0 + Duration::from_secs(s));
        }
        assert!((c.get(vm).unwrap().cpu - 1.0).abs() < 1e-6);
        // A 3 s spike to 8 cores.
        for s in 600..603 {
            c.record(h, vm, 8.0, 1024.0, t0 + Duration::from_secs(s));
        }
        let spiked = c.get(vm).unwrap().cpu;
        assert!(spiked < 1.5, "{spiked}");
        // A lasting shift to 4 cores shows within a few minutes.
        for s in 603..903 {
            c.record(h, vm, 4.0, 1024.0, t0 + Duration::from_secs(s));
        }
        assert!(c.get(vm).unwrap().cpu > 3.0);
    }

    #[test]
    fn a_move_starts_afresh() {
        let (c, vm) = (LoadCache::default(), VmId::new());
        let (a, b) = (HostId::new(), HostId::new());
        c.record(a, vm, 4.0, 1.0, Instant::now());
        c.record(b, vm, 0.5, 1.0, Instant::now());
        assert_eq!(c.get(vm).unwrap().host, b);
        assert!((c.get(vm).unwrap().cpu - 0.5).abs() < 1e-9);
    }
}
