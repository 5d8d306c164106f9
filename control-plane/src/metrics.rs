//! Counters the control plane keeps about its own work, served at `GET /metrics` in
//! Prometheus' text format (no token: counts only, for scrapers and benchmarks).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub joins: AtomicU64,
    pub reports: AtomicU64,
    pub heartbeats: AtomicU64,
    pub facts_pulled: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let c = |name: &str, help: &str, v: &AtomicU64| {
            format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            )
        };
        [
            c(
                "ferry_agent_joins_total",
                "Agent joins accepted.",
                &self.joins,
            ),
            c(
                "ferry_host_reports_total",
                "Host facts reports received.",
                &self.reports,
            ),
            c(
                "ferry_host_heartbeats_total",
                "Host heartbeats processed.",
                &self.heartbeats,
            ),
            c(
                "ferry_host_facts_pulled_total",
                "Host facts pulled by reconcile.",
                &self.facts_pulled,
            ),
        ]
        .concat()
    }
}

/// Raises the open-files limit to its hard maximum: every agent holds a connection.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
