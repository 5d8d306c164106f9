//! The cluster's imbalance: how unevenly its hosts are loaded, per resource and
//! combined, in [0, 1].
//!
//! For a resource, each host's load is its VMs' demand ÷ its capacity. The
//! imbalance is the coefficient of variation of those loads (standard deviation ÷
//! mean) divided by √(n − 1), which is its largest possible value (all load on one
//! host of n): 0 when every host is equally loaded, 1 when one host carries
//! everything (Proxmox VE's rebalancer normalises the same way). The combined figure
//! is the root mean square of the CPU and memory figures, so neither resource hides
//! the other and a move that helps one without hurting the other always counts.

/// One host's demand and capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLoad {
    /// vCPU demand, in cores.
    pub cpu: f64,
    pub cpu_capacity: f64,
    pub mem_mib: f64,
    pub mem_capacity_mib: f64,
}

impl HostLoad {
    pub fn cpu_load(&self) -> f64 {
        self.cpu / self.cpu_capacity.max(1e-9)
    }

    pub fn mem_load(&self) -> f64 {
        self.mem_mib / self.mem_capacity_mib.max(1e-9)
    }
}

/// The imbalance of a cluster, per resource and combined.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Imbalance {
    pub cpu: f64,
    pub memory: f64,
    pub combined: f64,
}

/// Coefficient of variation ÷ √(n − 1), in [0, 1]; 0 for fewer than two hosts or
/// no load at all.
pub fn normalised_cv(loads: &[f64]) -> f64 {
    let n = loads.len();
    if n < 2 {
        return 0.0;
    }
    let mean = loads.iter().sum::<f64>() / n as f64;
    if mean <= 0.0 {
        return 0.0;
    }
    let var = loads.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
    (var.sqrt() / mean / ((n - 1) as f64).sqrt()).clamp(0.0, 1.0)
}

pub fn imbalance(hosts: &[HostLoad]) -> Imbalance {
    let cpu = normalised_cv(&hosts.iter().map(HostLoad::cpu_load).collect::<Vec<_>>());
    let memory = normalised_cv(&hosts.iter().map(HostLoad::mem_load).collect::<Vec<_>>());
    Imbalance {
        cpu,
        memory,
        combined: ((cpu * cpu + memory * memory) / 2.0).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(cpu: f64, mem: f64) -> HostLoad {
        HostLoad {
            cpu,
            cpu_capacity: 10.0,
            mem_mib: mem,
            mem_capacity_mib: 100.0,
        }
    }

    #[test]
    fn even_is_zero_and_all_on_one_host_is_one() {
        assert_eq!(
            imbalance(&[h(5.0, 50.0), h(5.0, 50.0), h(5.0, 50.0)]).combined,
            0.0
        );
        let one = imbalance(&[h(9.0, 90.0), h(0.0, 0.0), h(0.0, 0.0), h(0.0, 0.0)]);
        assert!((one.cpu - 1.0).abs() < 1e-9 && (one.combined - 1.0).abs() < 1e-9);
    }

    #[test]
    fn capacity_counts_not_raw_demand() {
        // 4 cores on a 8-core host and 2 on a 4-core host: equally loaded.
        let a = HostLoad {
            cpu: 4.0,
            cpu_capacity: 8.0,
            mem_mib: 0.0,
            mem_capacity_mib: 1.0,
        };
        let b = HostLoad {
            cpu: 2.0,
            cpu_capacity: 4.0,
            mem_mib: 0.0,
            mem_capacity_mib: 1.0,
        };
        assert_eq!(imbalance(&[a, b]).cpu, 0.0);
    }

    #[test]
    fn the_combined_figure_is_the_rms_of_both() {
        let i = imbalance(&[h(8.0, 50.0), h(2.0, 50.0)]);
        assert_eq!(i.memory, 0.0);
        assert!((i.combined - i.cpu / 2f64.sqrt()).abs() < 1e-12);
    }
}
