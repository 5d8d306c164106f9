//! The exhaustive solver the balancing pass is measured against (its tests and
//! `ferry-bench-drs`): the least imbalance any assignment of the VMs to the hosts
//! reaches, memory fill respected. n^v assignments: for small clusters only.

use super::balance::{Host, Vm};
use super::imbalance::{imbalance, HostLoad};

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
