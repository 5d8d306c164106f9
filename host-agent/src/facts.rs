//! Facts read from this Linux host: CPU (vendor, model, flags, logical cores),
//! memory, and load (CPU busy % between samples, memory in use %).

use ferry_proto::v1::{CpuFacts, MemoryFacts};

/// CPU facts from `/proc/cpuinfo` (the first processor's identity, all cores).
pub fn cpu() -> CpuFacts {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    parse_cpuinfo(&info)
}

pub fn parse_cpuinfo(info: &str) -> CpuFacts {
    let mut f = CpuFacts::default();
    for line in info.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => f.cores += 1,
            "vendor_id" if f.vendor.is_empty() => f.vendor = v.to_string(),
            "model name" if f.model.is_empty() => f.model = v.to_string(),
            "flags" if f.flags.is_empty() => {
                f.flags = v.split_whitespace().map(String::from).collect()
            }
            _ => {}
        }
    }
    f.flags.sort();
    f
}

/// Memory facts from `/proc/meminfo`.
pub fn memory() -> MemoryFacts {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_meminfo(&info)
}

pub fn parse_meminfo(info: &str) -> MemoryFacts {
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
    };
    MemoryFacts {
        total_mib: field("MemTotal") / 1024,
        free_mib: field("MemAvailable") / 1024,
    }
}

/// CPU busy % between successive calls, from `/proc/stat`.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    pub fn sample(&mut self) -> f32 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().next() else {
            return 0.0;
        };
        let vals: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        if vals.len() < 4 {
            return 0.0;
        }
        let total: u64 = vals.iter().sum();
        let idle = vals[3] + vals.get(4).copied().unwrap_or(0);
        let pct = match self.last {
            Some((t0, i0)) if total > t0 => {
                100.0 * (1.0 - (idle - i0.min(idle)) as f32 / (total - t0) as f32)
            }
            _ => 0.0,
        };
        self.last = Some((total, idle));
        pct.clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo() {
        let f = parse_cpuinfo(
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon X\nflags\t\t: sse2 avx fpu\n\n\
             processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon X\nflags\t\t: sse2 avx fpu\n",
        );
        assert_eq!(f.cores, 2);
        assert_eq!(f.vendor, "GenuineIntel");
        assert_eq!(f.model, "Xeon X");
        assert_eq!(f.flags, vec!["avx", "fpu", "sse2"]);
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20480000 kB\n",
        );
        assert_eq!(m.total_mib, 24000);
        assert_eq!(m.free_mib, 20000);
    }

    #[test]
    fn this_host() {
        assert!(cpu().cores >= 1);
        assert!(memory().total_mib > 0);
    }
}
