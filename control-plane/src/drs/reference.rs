//! The exhaustive solver the balancing pass is measured against (its tests and
//! `ferry-bench-drs`): the least imbalance any assignment of the VMs to the hosts
//! reaches, memory fill respected. n^v assignments: for small clusters only.

use rand::Rng;

use super::balance::{plan, with_vms, Host, Limits, Vm};
use super::imbalance::{imbalance, HostLoad};

/// The pass as the comparison runs it: threshold 5, no move limits.
pub const SMALL_LIMITS: Limits = Limits {
    threshold: 5,
    max_moves: 100,
    max_per_host: 100,
    mem_fill: 0.9,
};

/// A small cluster for the comparison: 2–4 equal hosts (16 cores, 64 GiB) and
/// `vm_count` VMs (0.5–4 cores, 1–7 GiB), all starting on the first host.
pub fn small_cluster(
    rng: &mut impl Rng,
    vm_count: std::ops::RangeInclusive<usize>,
) -> (Vec<Host>, Vec<Vm>) {
    let n = rng.gen_range(2..=4);
    let hosts = (0..n)
        .map(|_| Host {
            load: HostLoad {
                cpu: 0.0,
                cpu_capacity: 16.0,
                mem_mib: 0.0,
                mem_capacity_mib: 64.0 * 1024.0,
            },
            eligible: true,
        })
        .collect();
    let count = rng.gen_range(vm_count);
    let vms = (0..count)
        .map(|_| {
            let mem_mib = f64::from(rng.gen_range(1..8u32) * 1024);
            Vm {
                host: 0,
                cpu: rng.gen_range(0.5..4.0),
                mem_mib,
                movable: true,
                cooling: false,
                cost_s: mem_mib / 1024.0,
                left: Vec::new(),
                rules: Default::default(),
            }
        })
        .collect();
    (hosts, vms)
}

/// Runs passes (applying their moves; no cooldown, no history: the brute force
/// has neither) until one moves nothing or `max_passes`; the imbalance reached.
pub fn settle(hosts: &[Host], vms: &mut [Vm], limits: &Limits, max_passes: usize) -> f64 {
    for _ in 0..max_passes {
        let p = plan(&with_vms(hosts, vms), vms, limits);
        if p.moves.is_empty() {
            break;
        }
        for m in &p.moves {
            vms[m.vm].host = m.to;
        }
    }
    let loads: Vec<HostLoad> = with_vms(hosts, vms).iter().map(|h| h.load).collect();
    imbalance(&loads).combined
}

/// The best combined imbalance of any assignment of `vms` to `hosts` (whose load
/// is what is not among `vms`) with each host's memory at most `fill` full.
pub fn best_assignment(hosts: &[Host], vms: &[Vm], fill: f64) -> f64 {
    let n = hosts.len();
    let mut best = f64::MAX;
    let mut assign = vec![0usize; vms.len()];
    let mut loads: Vec<HostLoad> = hosts.iter().map(|h| h.load).collect();
    loop {
        for (l, h) in loads.iter_mut().zip(hosts) {
            *l = h.load;
        }
        for (v, &h) in vms.iter().zip(&assign) {
            loads[h].cpu += v.cpu;
            loads[h].mem_mib += v.mem_mib;
        }
        if loads.iter().all(|l| l.mem_mib <= l.mem_capacity_mib * fill) {
            best = best.min(imbalance(&loads).combined);
        }
        // The next assignment: a base-n counter over the VMs.
        let mut i = 0;
        loop {
            if i == assign.len() {
                return best;
            }
            assign[i] += 1;
            if assign[i] < n {
                break;
            }
            assign[i] = 0;
            i += 1;
        }
    }
}
