//! Balancing at the application layer: gathers a cluster's load (hosts' capacity
//! from their facts, VMs' smoothed demand from `load.rs`), runs the pure pass
//! (`crate::drs::balance`), and acts by the automation level — `manual` and
//! `partially_automated` record recommendations, `fully_automated` starts the
//! moves (through the ordinary migration path, so checks and budgets hold), a VM's
//! own level overriding the cluster's (`disabled`: never moved). Also the periodic
//! pass of each cluster, with hysteresis, and the recommendations' apply/dismiss.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_api::cluster::{Cluster, DrsAutomation};
use ferry_api::drs::{
    DrsPass, DrsRun, DrsStatus, DrsTrigger, Imbalance, Recommendation, RecommendationState,
    VmDrsAutomation,
};
use ferry_api::host::{Host, HostState};
use ferry_api::migration::{MigrateRequest, Migration};
use ferry_api::vm::{PowerState, Vm};
use ferry_api::{ClusterId, HostId, VmId};
use tokio_util::sync::CancellationToken;

use super::App;
use crate::drs::balance::{self, Hysteresis, Limits, MoveKind};
use crate::drs::imbalance::HostLoad;
use crate::error::{ApiError, ApiResult};

/// A VM moved within this long is cooling down: balancing leaves it be (Xen
/// Orchestra: 30 minutes).
pub const COOLDOWN: Duration = Duration::from_secs(30 * 60);
/// A VM does not go back to a host it left within this long.
pub const HISTORY: Duration = Duration::from_secs(24 * 3600);
/// The share of its vCPUs a VM not measured yet is assumed to keep busy.
const NEW_VM_CPU_SHARE: f64 = 0.5;
/// Link bandwidth assumed for a move's cost when none was measured (1 Gbit/s).
const DEFAULT_LINK_BPS: f64 = 125e6;

/// Per-cluster state of the periodic pass.
#[derive(Debug, Default)]
pub struct DrsState {
    clusters: Mutex<HashMap<ClusterId, (Hysteresis, Option<Instant>)>>,
}

impl DrsState {
    fn rounds(&self, c: ClusterId) -> u32 {
        self.clusters
            .lock()
            .map(|m| m.get(&c).map_or(0, |(h, _)| h.rounds()))
            .unwrap_or(0)
    }
}

/// A cluster as a pass sees it.
struct Snapshot {
    hosts: Vec<Host>,
    vms: Vec<(Vm, VmDrsAutomation)>,
    input_hosts: Vec<balance::Host>,
    input_vms: Vec<balance::Vm>,
    /// Placement rules broken now.
    violations: Vec<String>,
}

/// The violations that name `vm`, joined.
fn rules_of_vm(violations: &[String], vm: &str) -> String {
    let mine: Vec<&str> = violations
        .iter()
        .filter(|v| v.starts_with(&format!("{vm} ")))
        .map(String::as_str)
        .collect();
    mine.join("; ")
}

fn level(cluster: DrsAutomation) -> VmDrsAutomation {
    match cluster {
        DrsAutomation::Manual => VmDrsAutomation::Manual,
        DrsAutomation::PartiallyAutomated => VmDrsAutomation::PartiallyAutomated,
        DrsAutomation::FullyAutomated => VmDrsAutomation::FullyAutomated,
    }
}

fn view(i: crate::drs::imbalance::Imbalance) -> Imbalance {
    Imbalance {
        cpu: i.cpu,
        memory: i.memory,
        combined: i.combined,
    }
}

impl App {
    async fn drs_snapshot(&self, cluster: &Cluster) -> ApiResult<Snapshot> {
        let hosts: Vec<Host> = self
            .cluster_hosts(cluster.id)
            .await?
            .into_iter()
            .filter(|h| h.state == HostState::Connected && h.cpu.cores > 0)
            .collect();
        let index: HashMap<HostId, usize> =
            hosts.iter().enumerate().map(|(i, h)| (h.id, i)).collect();
        let vms = self.db.vm_list_cluster_running(cluster.id).await?;
        let busy: HashSet<VmId> = self.db.vm_op_list_cluster(cluster.id).await?;
        let since = Utc::now() - chrono::Duration::from_std(HISTORY).unwrap_or_default();
        let recent: HashMap<VmId, (chrono::DateTime<Utc>, Vec<HostId>)> = self
            .db
            .drs_recent_moves(cluster.id, since)
            .await?
            .into_iter()
            .map(|(vm, at, left)| (vm, (at, left)))
            .collect();
        let mut input_hosts: Vec<balance::Host> = hosts
            .iter()
            .map(|h| balance::Host {
                load: HostLoad {
                    cpu: 0.0,
                    cpu_capacity: f64::from(h.cpu.cores),
                    mem_mib: 0.0,
                    mem_capacity_mib: h.memory.total_mib as f64,
                },
                eligible: true,
            })
            .collect();
        let mut input_vms = Vec::new();
        let mut kept = Vec::new();
        let cooldown_start = Utc::now() - chrono::Duration::from_std(COOLDOWN).unwrap_or_default();
        for vm in vms {
            let Some(&hi) = vm.host_id.as_ref().and_then(|h| index.get(h)) else {
                continue;
            };
            let lvl = vm
                .drs_automation
                .unwrap_or_else(|| level(cluster.drs.automation));
            let (cpu, mem) = match self.loads.get(vm.id) {
                Some(l) if Some(l.host) == vm.host_id => (l.cpu, l.mem_mib),
                // Not measured yet: no CPU demand known, all its memory counted.
                _ => (0.0, vm.memory_mib as f64),
            };
            input_hosts[hi].load.cpu += cpu;
            input_hosts[hi].load.mem_mib += mem;
            let moved = recent.get(&vm.id);
            // The destination is not known yet: the cost assumes the default link.
            let link = DEFAULT_LINK_BPS;
            input_vms.push(balance::Vm {
                host: hi,
                cpu,
                mem_mib: mem,
                movable: lvl != VmDrsAutomation::Disabled
                    && vm.power_state == PowerState::Running
                    && !busy.contains(&vm.id),
                cooling: moved.is_some_and(|(at, _)| *at >= cooldown_start),
                cost_s: (vm.memory_mib as f64 * 1048576.0) / link.max(1.0),
                left: moved
                    .map(|(_, left)| left.iter().filter_map(|h| index.get(h).copied()).collect())
                    .unwrap_or_default(),
                rules: Default::default(),
            });
            kept.push((vm, lvl));
        }
        let rules = self.rules_context(cluster.id, None).await?;
        let vm_index: HashMap<VmId, usize> = kept
            .iter()
            .enumerate()
            .map(|(i, (v, _))| (v.id, i))
            .collect();
        for (i, (vm, _)) in kept.iter().enumerate() {
            input_vms[i].rules = rules.rules.indexed(vm.id, &index, &vm_index);
        }
        let violations = rules
            .rules
            .violations(&rules.at, &rules.names)
            .into_values()
            .flatten()
            .collect();
        Ok(Snapshot {
            hosts,
            vms: kept,
            input_hosts,
            input_vms,
            violations,
        })
    }

    /// `hosts` ordered best first for a VM with `cpu` cores of demand and `mem_mib`
    /// in use (leaving `from`, if it moves): by the cluster's combined imbalance once
    /// it is there — the one measure placement and balancing share — then by free
    /// memory. Hosts the balancing view does not weigh (not connected) go last.
    pub async fn rank_by_balance(
        &self,
        cluster: ClusterId,
        mut hosts: Vec<Host>,
        from: Option<HostId>,
        cpu: f64,
        mem_mib: f64,
    ) -> ApiResult<Vec<Host>> {
        let c = self.cluster_get(cluster).await?;
        let snap = self.drs_snapshot(&c).await?;
        let mut loads: Vec<HostLoad> = snap.input_hosts.iter().map(|h| h.load).collect();
        let index: HashMap<HostId, usize> = snap
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.id, i))
            .collect();
        if let Some(i) = from.and_then(|f| index.get(&f)) {
            loads[*i].cpu = (loads[*i].cpu - cpu).max(0.0);
            loads[*i].mem_mib = (loads[*i].mem_mib - mem_mib).max(0.0);
        }
        let score = |h: &Host| -> f64 {
            let Some(&i) = index.get(&h.id) else {
                return f64::MAX;
            };
            let mut l = loads.clone();
            l[i].cpu += cpu;
            l[i].mem_mib += mem_mib;
            crate::drs::imbalance::imbalance(&l).combined
        };
        let mut scored: Vec<(f64, Host)> = hosts.drain(..).map(|h| (score(&h), h)).collect();
        scored.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(b.1.memory.free_mib.cmp(&a.1.memory.free_mib))
        });
        Ok(scored.into_iter().map(|(_, h)| h).collect())
    }

    /// A VM's load for placement: measured if it is, else a new VM's guess (half its
    /// vCPUs busy, all its memory in use).
    pub fn vm_demand(&self, vm: &Vm) -> (f64, f64) {
        match self.loads.get(vm.id) {
            Some(l) if Some(l.host) == vm.host_id => (l.cpu, l.mem_mib),
            _ => (f64::from(vm.vcpus) * NEW_VM_CPU_SHARE, vm.memory_mib as f64),
        }
    }

    /// `GET /clusters/{id}/drs`.
    pub async fn drs_status(&self, id: ClusterId) -> ApiResult<DrsStatus> {
        let cluster = self.cluster_get(id).await?;
        let snap = self.drs_snapshot(&cluster).await?;
        let loads: Vec<HostLoad> = snap.input_hosts.iter().map(|h| h.load).collect();
        let n = snap.hosts.len();
        Ok(DrsStatus {
            cluster_id: id,
            settings: cluster.drs.clone(),
            imbalance: view(crate::drs::imbalance::imbalance(&loads)),
            tolerance: balance::tolerance(cluster.drs.threshold, n),
            tolerated_spread: balance::tolerated_spread(cluster.drs.threshold),
            above_tolerance_rounds: self.drs.rounds(id),
            hosts: n as u32,
            vms: snap.vms.len() as u32,
            history: self.db.drs_pass_history(id, 50).await?,
            recommendations: self.db.drs_recommendation_list(id, true, 200).await?,
            rule_violations: snap.violations,
        })
    }

    /// One balancing pass of cluster `id`.
    pub async fn drs_run(
        &self,
        id: ClusterId,
        trigger: DrsTrigger,
        dry_run: bool,
    ) -> ApiResult<DrsRun> {
        let cluster = self.cluster_get(id).await?;
        let snap = self.drs_snapshot(&cluster).await?;
        let limits = Limits {
            threshold: cluster.drs.threshold,
            ..Limits::default()
        };
        let plan = balance::plan(&snap.input_hosts, &snap.input_vms, &limits);
        let pass_id = uuid::Uuid::new_v4();
        let now = Utc::now();
        let load_of = |i: usize| {
            let l = snap.input_hosts[i].load;
            format!(
                "{} ({:.0}% CPU, {:.0}% memory)",
                snap.hosts[i].name,
                100.0 * l.cpu_load(),
                100.0 * l.mem_load()
            )
        };
        let mut recs = Vec::new();
        let mut started = Vec::new();
        for m in &plan.moves {
            let (vm, lvl) = &snap.vms[m.vm];
            let v = &snap.input_vms[m.vm];
            let mut rec = Recommendation {
                id: uuid::Uuid::new_v4(),
                cluster_id: id,
                pass_id,
                vm_id: vm.id,
                from_host_id: snap.hosts[m.from].id,
                to_host_id: snap.hosts[m.to].id,
                gain: m.gain,
                cost_s: m.cost_s,
                reason: match m.kind {
                    MoveKind::Balance => format!(
                        "move {} ({:.2} cores, {:.0} MiB in use) from {} to {}: the imbalance drops by {:.4} for about {:.1} s of transfer",
                        vm.name,
                        v.cpu,
                        v.mem_mib,
                        load_of(m.from),
                        load_of(m.to),
                        m.gain,
                        m.cost_s
                    ),
                    MoveKind::RepairMust | MoveKind::RepairShould => format!(
                        "move {} from {} to {}: repairs a broken {} rule ({})",
                        vm.name,
                        snap.hosts[m.from].name,
                        snap.hosts[m.to].name,
                        if m.kind == MoveKind::RepairMust { "must" } else { "should" },
                        rules_of_vm(&snap.violations, &vm.name)
                    ),
                },
                state: RecommendationState::Pending,
                migration_id: None,
                created_at: now,
            };
            if !dry_run && *lvl == VmDrsAutomation::FullyAutomated {
                let req = MigrateRequest {
                    destination_host_id: Some(rec.to_host_id),
                    ..Default::default()
                };
                match self.migration_start(vm.id, &req).await {
                    Ok(mig) => {
                        rec.state = RecommendationState::Applied;
                        rec.migration_id = Some(mig.id);
                        started.push(mig.id);
                    }
                    Err(e) => {
                        tracing::warn!(vm = %vm.id, "balancing move not started: {}", e.detail);
                        rec.reason =
                            format!("{} (not started automatically: {})", rec.reason, e.detail);
                    }
                }
            }
            recs.push(rec);
        }
        let pass = DrsPass {
            id: pass_id,
            at: now,
            trigger,
            dry_run,
            before: view(plan.before),
            after: view(plan.after),
            tolerance: balance::tolerance(cluster.drs.threshold, snap.hosts.len()),
            moves: plan.moves.len() as u32,
            applied: started.len() as u32,
        };
        if !dry_run {
            self.db.drs_pass_insert(id, &pass, &recs).await?;
            self.count_pass(&cluster.name, &pass);
        }
        Ok(DrsRun {
            pass,
            recommendations: recs,
            migrations: started,
            unrepaired: plan
                .unrepaired
                .iter()
                .map(|(i, why)| format!("{}: {why}", snap.vms[*i].0.name))
                .collect(),
        })
    }

    /// A recorded pass, for `/metrics`.
    fn count_pass(&self, cluster: &str, pass: &DrsPass) {
        let m = &self.metrics;
        m.drs_passes
            .inc(vec![("trigger", pass.trigger.as_str().to_string())]);
        m.drs_moves
            .add(vec![("kind", "recommended".into())], u64::from(pass.moves));
        m.drs_moves
            .add(vec![("kind", "applied".into())], u64::from(pass.applied));
        m.drs_imbalance
            .set(vec![("cluster", cluster.to_string())], pass.before.combined);
    }

    /// Starts a pending recommendation's move.
    pub async fn drs_apply(&self, rec: uuid::Uuid) -> ApiResult<Migration> {
        let r = self.recommendation_pending(rec).await?;
        let req = MigrateRequest {
            destination_host_id: Some(r.to_host_id),
            ..Default::default()
        };
        let mig = self.migration_start(r.vm_id, &req).await?;
        if !self
            .db
            .drs_recommendation_close(rec, RecommendationState::Applied, Some(mig.id))
            .await?
        {
            tracing::warn!(%rec, "recommendation closed by another request while it was applied");
        }
        Ok(mig)
    }

    pub async fn drs_dismiss(&self, rec: uuid::Uuid) -> ApiResult<Recommendation> {
        self.recommendation_pending(rec).await?;
        if !self
            .db
            .drs_recommendation_close(rec, RecommendationState::Dismissed, None)
            .await?
        {
            return Err(ApiError::conflict(
                "recommendation_not_pending",
                format!("recommendation {rec} is no longer pending"),
            ));
        }
        self.db
            .drs_recommendation_fetch(rec)
            .await?
            .ok_or_else(|| ApiError::not_found("recommendation", rec))
    }

    async fn recommendation_pending(&self, rec: uuid::Uuid) -> ApiResult<Recommendation> {
        let r = self
            .db
            .drs_recommendation_fetch(rec)
            .await?
            .ok_or_else(|| ApiError::not_found("recommendation", rec))?;
        if r.state != RecommendationState::Pending {
            return Err(ApiError::conflict(
                "recommendation_not_pending",
                format!("recommendation {rec} is {}", r.state.as_str()),
            ));
        }
        Ok(r)
    }

    pub async fn drs_list_recommendations(&self, id: ClusterId) -> ApiResult<Vec<Recommendation>> {
        self.cluster_get(id).await?;
        Ok(self.db.drs_recommendation_list(id, false, 200).await?)
    }

    /// One tick of the periodic passes: every cluster whose interval elapsed is
    /// evaluated (and recorded); it acts once its imbalance persisted, or at once
    /// when a placement rule is broken.
    pub async fn drs_tick(&self) -> anyhow::Result<()> {
        for cluster in self.db.cluster_list_all().await? {
            let due = {
                let mut m = self.drs.clusters.lock().unwrap_or_else(|p| p.into_inner());
                let e = m.entry(cluster.id).or_default();
                let due = e.1.is_none_or(|at| {
                    at.elapsed() >= Duration::from_secs(cluster.drs.interval_s.into())
                });
                if due {
                    e.1 = Some(Instant::now());
                }
                due
            };
            if !due {
                continue;
            }
            let snap = self
                .drs_snapshot(&cluster)
                .await
                .map_err(|e| anyhow::anyhow!(e.detail))?;
            let loads: Vec<HostLoad> = snap.input_hosts.iter().map(|h| h.load).collect();
            let now = crate::drs::imbalance::imbalance(&loads);
            let act = {
                let mut m = self.drs.clusters.lock().unwrap_or_else(|p| p.into_inner());
                let e = m.entry(cluster.id).or_default();
                let act =
                    e.0.observe(now.combined, cluster.drs.threshold, snap.hosts.len());
                if act {
                    e.0.reset();
                }
                act
            };
            // A broken rule is repaired at once, imbalance or not (mandatory moves).
            if act || !snap.violations.is_empty() {
                let run = self
                    .drs_run(cluster.id, DrsTrigger::Scheduled, false)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.detail))?;
                tracing::info!(cluster = %cluster.name, moves = run.pass.moves, applied = run.pass.applied, "balancing pass");
            } else {
                let pass = DrsPass {
                    id: uuid::Uuid::new_v4(),
                    at: Utc::now(),
                    trigger: DrsTrigger::Scheduled,
                    dry_run: false,
                    before: view(now),
                    after: view(now),
                    tolerance: balance::tolerance(cluster.drs.threshold, snap.hosts.len()),
                    moves: 0,
                    applied: 0,
                };
                self.db.drs_pass_record(cluster.id, &pass).await?;
                self.count_pass(&cluster.name, &pass);
            }
        }
        Ok(())
    }
}

/// The periodic balancing loop: a tick every 10 s; each cluster's pass runs every
/// `drs.interval_s` (default 300 s, vSphere DRS's own interval: with three
/// evaluations of hysteresis, an imbalance must last about 15 minutes before a VM
/// moves).
pub async fn drs_loop(app: App, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = app.drs_tick().await {
            tracing::warn!("balancing: {e:#}");
        }
    }
}
