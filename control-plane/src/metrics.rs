//! What the control plane tells Prometheus at `GET /metrics` (no token: counts and
//! timings only, no names or ids): API request durations by route and status;
//! hosts, VMs and migrations by state (read from the inventory at each scrape);
//! migration total time, downtime and bytes; saga steps, outcomes and recoveries;
//! balancing passes, imbalance and moves; agent joins, reports and heartbeats.
//! Labels are of low cardinality by construction: a route is the router's template
//! (`/api/v1/vms/{id}`), never the path asked for.

use std::sync::atomic::{AtomicU64, Ordering};

use ferry_common::prom::{CounterVec, Exposition, GaugeVec, Histogram, Labels};

use crate::db::Db;

/// Request durations: 1 ms to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// A migration's total time: 0.25 s to 30 min.
const MIGRATION_BUCKETS: &[f64] = &[
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// A migration's downtime: 1 ms to 10 s.
const DOWNTIME_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Bytes a migration sent: 16 MiB to 256 GiB, ×4 apart.
const BYTES_BUCKETS: &[f64] = &[
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
    68719476736.0,
    274877906944.0,
];

#[derive(Debug)]
pub struct Metrics {
    pub joins: AtomicU64,
    pub reports: AtomicU64,
    pub heartbeats: AtomicU64,
    pub facts_pulled: AtomicU64,
    /// Change requests the audit trail failed to record.
    pub audit_write_failures: AtomicU64,
    /// `method`, `route`, `status`.
    pub http: Histogram,
    /// Completed migrations: `strategy`.
    pub migration_seconds: Histogram,
    pub migration_downtime: Histogram,
    pub migration_bytes: Histogram,
    /// Migrations that ended: `state` (completed, failed, cancelled).
    pub migrations_ended: CounterVec,
    /// Saga nodes run: `saga`, `node`, `result` (succeeded, failed, undone).
    pub saga_steps: CounterVec,
    /// Sagas that ended: `saga`, `outcome` (done, unwound, stuck).
    pub sagas_ended: CounterVec,
    /// Sagas resumed from their log after a restart: `saga`.
    pub saga_recoveries: CounterVec,
    /// Balancing passes: `trigger`.
    pub drs_passes: CounterVec,
    /// Moves balancing recommended and started itself: `kind` (recommended, applied).
    pub drs_moves: CounterVec,
    /// The last pass's combined imbalance before its moves: `cluster` (its name).
    pub drs_imbalance: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            joins: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            facts_pulled: AtomicU64::new(0),
            audit_write_failures: AtomicU64::new(0),
            http: Histogram::new(HTTP_BUCKETS),
            migration_seconds: Histogram::new(MIGRATION_BUCKETS),
            migration_downtime: Histogram::new(DOWNTIME_BUCKETS),
            migration_bytes: Histogram::new(BYTES_BUCKETS),
            migrations_ended: CounterVec::default(),
            saga_steps: CounterVec::default(),
            sagas_ended: CounterVec::default(),
            saga_recoveries: CounterVec::default(),
            drs_passes: CounterVec::default(),
            drs_moves: CounterVec::default(),
            drs_imbalance: GaugeVec::default(),
        }
    }
}

fn label(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A migration that ended in `state`, with its result when it completed.
    pub fn migration_ended(
        &self,
        state: ferry_api::migration::MigrationState,
        result: Option<&ferry_api::migration::MigrationResult>,
    ) {
        self.migrations_ended.inc(label("state", state.as_str()));
        if let Some(r) = result {
            let l = || label("strategy", r.strategy.clone());
            self.migration_seconds.observe(l(), r.total_ms as f64 / 1e3);
            self.migration_downtime
                .observe(l(), r.downtime_ms as f64 / 1e3);
            self.migration_bytes
                .observe(l(), r.transferred_bytes as f64);
        }
    }

    /// The whole exposition; the inventory gauges are read from `db` now.
    pub async fn render(&self, db: &Db) -> String {
        let mut e = Exposition::new();
        e.gauge(
            "ferry_build_info",
            "The control plane's version.",
            &[(label("version", env!("CARGO_PKG_VERSION")), 1.0)],
        );
        let c = |v: &AtomicU64| vec![(Labels::new(), v.load(Ordering::Relaxed) as f64)];
        e.counter(
            "ferry_agent_joins_total",
            "Agent joins accepted.",
            &c(&self.joins),
        );
        e.counter(
            "ferry_host_reports_total",
            "Host facts reports received.",
            &c(&self.reports),
        );
        e.counter(
            "ferry_host_heartbeats_total",
            "Host heartbeats processed.",
            &c(&self.heartbeats),
        );
        e.counter(
            "ferry_host_facts_pulled_total",
            "Host facts pulled by reconcile.",
            &c(&self.facts_pulled),
        );
        e.counter(
            "ferry_audit_write_failures_total",
            "Change requests the audit trail failed to record.",
            &c(&self.audit_write_failures),
        );
        e.histogram(
            "ferry_http_request_duration_seconds",
            "REST API requests by method, route template and status.",
            &self.http,
        );
        // The inventory now. A failed read leaves the families out (and says so in
        // the log) rather than reporting zeros that are not true.
        for (name, help, key, sql, all) in [
            (
                "ferry_hosts",
                "Hosts by state.",
                "state",
                // As the API shows it (`db::hosts`): unreachable is disconnected.
                "SELECT CASE WHEN NOT reachable THEN 'disconnected' \
                 WHEN mode = 'active' THEN 'connected' ELSE mode END, count(*) \
                 FROM hosts GROUP BY 1",
                &[
                    "connected",
                    "disconnected",
                    "entering_maintenance",
                    "maintenance",
                ][..],
            ),
            (
                "ferry_vms",
                "VMs by power state.",
                "power_state",
                "SELECT power_state, count(*) FROM vms GROUP BY power_state",
                &["running", "stopped", "paused", "migrating"][..],
            ),
            (
                "ferry_migrations",
                "Migrations in the inventory by state.",
                "state",
                "SELECT state, count(*) FROM migrations GROUP BY state",
                &[
                    "queued",
                    "preparing",
                    "transferring",
                    "switching_over",
                    "completed",
                    "failed",
                    "cancelled",
                ][..],
            ),
        ] {
            match sqlx::query_as::<_, (String, i64)>(sql)
                .fetch_all(&db.pool)
                .await
            {
                Ok(rows) => {
                    // Every state appears, 0 when none: absent series break alerts.
                    let samples: Vec<(Labels, f64)> = all
                        .iter()
                        .map(|s| {
                            let n = rows.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                            (label(key, *s), n as f64)
                        })
                        .collect();
                    e.gauge(name, help, &samples);
                }
                Err(err) => tracing::warn!("metrics: {name}: {err}"),
            }
        }
        e.counter(
            "ferry_migrations_ended_total",
            "Migrations that ended, by final state.",
            &self.migrations_ended.samples(),
        );
        e.histogram(
            "ferry_migration_duration_seconds",
            "Completed migrations' total time, by strategy.",
            &self.migration_seconds,
        );
        e.histogram(
            "ferry_migration_downtime_seconds",
            "Completed migrations' downtime (the VM paused on both hosts), by strategy.",
            &self.migration_downtime,
        );
        e.histogram(
            "ferry_migration_transferred_bytes",
            "Bytes completed migrations sent, by strategy.",
            &self.migration_bytes,
        );
        e.counter(
            "ferry_saga_steps_total",
            "Saga nodes run, by saga, node and result (succeeded, failed, undone).",
            &self.saga_steps.samples(),
        );
        e.counter(
            "ferry_sagas_ended_total",
            "Sagas that ended, by saga and outcome (done, unwound, stuck).",
            &self.sagas_ended.samples(),
        );
        e.counter(
            "ferry_saga_recoveries_total",
            "Sagas resumed from their log after a control-plane restart.",
            &self.saga_recoveries.samples(),
        );
        e.counter(
            "ferry_drs_passes_total",
            "Balancing passes, by trigger.",
            &self.drs_passes.samples(),
        );
        e.counter(
            "ferry_drs_moves_total",
            "Balancing moves: recommended, and applied by a fully automated pass.",
            &self.drs_moves.samples(),
        );
        e.gauge(
            "ferry_drs_imbalance",
            "The cluster's combined imbalance at its last balancing pass (before its moves).",
            &self.drs_imbalance.samples(),
        );
        e.finish()
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
