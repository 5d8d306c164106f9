//! Maintenance mode: the plan of a host's evacuation (each VM, its destination,
//! the order — small VMs first, so most of the host empties early — the predicted
//! time of each move and of the whole, and every problem), starting it as a saga
//! (`sagas/evacuate.rs`), its progress, cancel and exit. The host is `maintenance`
//! only once no running VM is left on it; placement and balancing never use a host
//! in or entering maintenance (host fit requires `connected`).

use std::collections::HashMap;

use ferry_api::host::{Host, HostState};
use ferry_api::maintenance::{
    Maintenance, MaintenanceExit, MaintenanceMove, MaintenancePlan, MaintenanceRequest,
    MaintenanceState, PlanStep, PoweredOffPolicy, StepAction, UnmovablePolicy,
};
use ferry_api::migration::{MigrateRequest, MigrationState};
use ferry_api::problem::Reason;
use ferry_api::vm::{PowerState, Vm};
use ferry_api::{HostId, SagaId, VmId};

use super::host_fit::{misfits, reasons, VmParts, QEMU_OVERHEAD_MIB};
use super::rules::RulesContext;
use super::App;
use crate::db::maintenance::HostMode;
use crate::db::Db;
use crate::error::{is_unique_violation, ApiError, ApiResult};
use crate::sagas::evacuate;

/// Link bandwidth assumed for a prediction when none was measured (1 Gbit/s).
const DEFAULT_LINK_BPS: f64 = 125e6;
/// What a move costs beyond its transfer (destination start, switchover, clean-up).
const MOVE_OVERHEAD_S: f64 = 1.0;

impl App {
    /// The other connected hosts of `host`'s cluster.
    pub async fn evacuation_targets(&self, host: &Host) -> ApiResult<Vec<Host>> {
        Ok(self
            .cluster_hosts(host.cluster_id)
            .await?
            .into_iter()
            .filter(|h| h.id != host.id && h.state == HostState::Connected)
            .collect())
    }

    /// The fitting targets for `vm`, best balanced first (those that keep its
    /// should rules before the others), given memory already promised to earlier
    /// moves (`promised`, MiB per host), and the rules (`rules`:
    /// built with the host as `leaving`, earlier moves of the plan placed).
    pub async fn evacuation_destinations(
        &self,
        host: &Host,
        vm: &Vm,
        targets: &[Host],
        promised: &HashMap<HostId, u64>,
        rules: &RulesContext,
    ) -> ApiResult<(Vec<Host>, Vec<Reason>)> {
        let parts = VmParts::of(vm);
        let needs = parts.needs(vm);
        let mut fitting = Vec::new();
        let mut why = Vec::new();
        for t in targets {
            let mut t = t.clone();
            t.memory.free_mib = t
                .memory
                .free_mib
                .saturating_sub(promised.get(&t.id).copied().unwrap_or(0));
            let m = misfits(&t, &needs);
            if m.is_empty() {
                fitting.push(t);
            } else if why.len() < 10 {
                why.extend(reasons(&m));
            }
        }
        let (fitting, broken) = rules.filter(vm.id, fitting);
        why.extend(broken);
        if fitting.is_empty() && why.is_empty() {
            why.push(Reason {
                code: "no_suitable_host".into(),
                detail: format!("no other connected host in the cluster of {}", host.name),
            });
        }
        let (cpu, mem) = self.vm_demand(vm);
        let mut ranked = self
            .rank_by_balance(host.cluster_id, fitting, Some(host.id), cpu, mem)
            .await?;
        rules.should_first(vm.id, &mut ranked);
        Ok((ranked, why))
    }

    /// The evacuation of `host`, planned.
    pub async fn maintenance_plan(
        &self,
        host_id: HostId,
        req: &MaintenanceRequest,
    ) -> ApiResult<MaintenancePlan> {
        let host = self
            .db
            .host_fetch(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", host_id))?;
        let targets = self.evacuation_targets(&host).await?;
        // Small and quiet VMs first, so most of the host empties early.
        let mut vms = self.db.vm_list_on_host(host_id).await?;
        let mut promised: HashMap<HostId, u64> = HashMap::new();
        let mut rules = self.rules_context(host.cluster_id, Some(host_id)).await?;
        // Destinations are chosen most constrained first (the VMs with the fewest
        // hosts that can take them: a VM pinned by rules before one that can go
        // anywhere), so a greedy choice does not take the only host another needs;
        // the steps then run small and quiet VMs first.
        let mut choices: HashMap<VmId, usize> = HashMap::new();
        for vm in &vms {
            let (ranked, _) = self
                .evacuation_destinations(&host, vm, &targets, &promised, &rules)
                .await?;
            choices.insert(vm.id, ranked.len());
        }
        vms.sort_by_key(|v| {
            (
                v.power_state != PowerState::Running,
                choices.get(&v.id).copied().unwrap_or(0),
                v.memory_mib,
            )
        });
        let mut steps = Vec::new();
        let mut problems = Vec::new();
        let mut moves_s = Vec::new();
        for vm in &vms {
            let running = matches!(vm.power_state, PowerState::Running | PowerState::Paused);
            if !running && req.powered_off == PoweredOffPolicy::Leave {
                steps.push(step(steps.len(), vm, StepAction::Leave, None, 0.0, vec![]));
                continue;
            }
            let (ranked, why) = self
                .evacuation_destinations(&host, vm, &targets, &promised, &rules)
                .await?;
            match ranked.first() {
                Some(dest) if vm.power_state != PowerState::Paused => {
                    *promised.entry(dest.id).or_default() += vm.memory_mib + QEMU_OVERHEAD_MIB;
                    if running {
                        rules.at.insert(vm.id, dest.id);
                    }
                    let link = self
                        .known_link_bandwidth(host_id, dest.id)
                        .map_or(DEFAULT_LINK_BPS, |b| b as f64);
                    let secs = if running {
                        vm.memory_mib as f64 * 1048576.0 / link.max(1.0) + MOVE_OVERHEAD_S
                    } else {
                        0.0
                    };
                    moves_s.push(secs);
                    let action = if running {
                        StepAction::Migrate
                    } else {
                        StepAction::Rehome
                    };
                    steps.push(step(steps.len(), vm, action, Some(dest.id), secs, vec![]));
                }
                _ => {
                    let mut why = why;
                    if vm.power_state == PowerState::Paused {
                        why = vec![Reason {
                            code: "vm_not_running".into(),
                            detail: format!(
                                "VM {} is paused; only a running VM is live-migrated (resume it or power it off)",
                                vm.name
                            ),
                        }];
                    }
                    let action = if !running {
                        StepAction::Leave
                    } else {
                        match req.unmovable {
                            UnmovablePolicy::Fail => StepAction::Refuse,
                            UnmovablePolicy::PowerOff => StepAction::PowerOff,
                            UnmovablePolicy::Wait => StepAction::Wait,
                        }
                    };
                    problems.extend(why.iter().map(|r| Reason {
                        code: r.code.clone(),
                        detail: format!("{}: {}", vm.name, r.detail),
                    }));
                    steps.push(step(steps.len(), vm, action, None, 0.0, why));
                }
            }
        }
        let exec_key = |s: &PlanStep| {
            let vm = vms.iter().find(|v| v.id == s.vm_id);
            (
                vm.is_none_or(|v| v.power_state != PowerState::Running),
                vm.map_or(0, |v| v.memory_mib),
            )
        };
        steps.sort_by_key(exec_key);
        for (i, s) in steps.iter_mut().enumerate() {
            s.order = i as u32;
        }
        // Moves run side by side within the budget: the evacuation takes about the
        // sum ÷ the budget, and never less than its longest move.
        let budget = f64::from(self.migration_budget(host_id, host_id).await.max(1));
        let longest = moves_s.iter().copied().fold(0.0, f64::max);
        let total = (moves_s.iter().sum::<f64>() / budget).max(longest);
        Ok(MaintenancePlan {
            host_id,
            feasible: !steps.iter().any(|s| s.action == StepAction::Refuse),
            steps,
            predicted_total_s: total,
            problems,
        })
    }

    /// `POST /hosts/{id}/maintenance` without `dry_run`: starts the evacuation.
    pub async fn maintenance_enter(
        &self,
        host_id: HostId,
        req: &MaintenanceRequest,
    ) -> ApiResult<Maintenance> {
        let host = self
            .db
            .host_fetch(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", host_id))?;
        if self
            .db
            .maintenance_latest(host_id)
            .await?
            .is_some_and(|m| m.state == MaintenanceState::Evacuating)
        {
            return Err(ApiError::conflict(
                "maintenance_in_progress",
                format!("host {} is already being evacuated", host.name),
            ));
        }
        if host.state != HostState::Connected {
            return Err(ApiError::conflict(
                "host_unavailable",
                format!("host {} is {}", host.name, host.state.as_str()),
            ));
        }
        let plan = self.maintenance_plan(host_id, req).await?;
        if !plan.feasible {
            let first = plan
                .problems
                .first()
                .map(|r| r.detail.clone())
                .unwrap_or_default();
            return Err(ApiError::conflict(
                "maintenance_infeasible",
                format!(
                    "host {} cannot be emptied (unmovable: fail): {first}",
                    host.name
                ),
            )
            .with_reasons(plan.problems.clone()));
        }
        let id = uuid::Uuid::new_v4();
        let saga = SagaId::new();
        let params = evacuate::Params {
            maintenance: id,
            host: host_id,
            host_name: host.name.clone(),
            powered_off: req.powered_off,
            unmovable: req.unmovable,
        };
        let json = serde_json::to_value(&params).map_err(anyhow::Error::from)?;
        let mut tx = self.db.pool.begin().await?;
        Db::saga_insert_on(&mut tx, saga, evacuate::KIND, &json).await?;
        if let Err(e) = Db::maintenance_insert_on(
            &mut tx,
            id,
            host_id,
            saga,
            req.powered_off.as_str(),
            req.unmovable.as_str(),
            &plan,
        )
        .await
        {
            return Err(if is_unique_violation(&e, None) {
                ApiError::conflict(
                    "maintenance_in_progress",
                    format!("host {} is already being evacuated", host.name),
                )
            } else {
                e.into()
            });
        }
        tx.commit().await?;
        let app = self.clone();
        crate::audit::spawn(async move {
            crate::saga::start::<evacuate::Evacuate>(&app, saga, params).await;
        });
        self.maintenance_get(host_id).await
    }

    /// The host's latest maintenance, with its progress.
    pub async fn maintenance_get(&self, host_id: HostId) -> ApiResult<Maintenance> {
        let m = self
            .db
            .maintenance_latest(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("maintenance of host", host_id))?;
        let on_host = self.db.vm_list_on_host(host_id).await?;
        let remaining = on_host
            .iter()
            .filter(|v| matches!(v.power_state, PowerState::Running | PowerState::Paused))
            .count() as u32;
        let total = m
            .plan
            .steps
            .iter()
            .filter(|s| s.action == StepAction::Migrate)
            .count() as u32;
        let moves = self
            .db
            .migration_list_from_host(host_id, m.created_at)
            .await?
            .into_iter()
            .map(|(vm, id, state, _)| MaintenanceMove {
                vm_id: vm,
                migration_id: Some(id),
                state: state.as_str().into(),
            })
            .collect();
        Ok(Maintenance {
            id: m.id,
            host_id,
            state: m.state,
            done: total.saturating_sub(remaining.min(total)),
            total,
            remaining_running: remaining,
            plan: m.plan,
            moves,
            error: m.error,
            created_at: m.created_at,
            finished_at: m.finished_at,
        })
    }

    /// `POST /hosts/{id}/maintenance/cancel`.
    pub async fn maintenance_cancel(&self, host_id: HostId) -> ApiResult<Maintenance> {
        if !self.db.maintenance_request_cancel(host_id).await? {
            return Err(ApiError::conflict(
                "maintenance_not_running",
                format!("host {host_id} is not being evacuated"),
            ));
        }
        self.maintenance_get(host_id).await
    }

    /// `DELETE /hosts/{id}/maintenance`: the host takes VMs again; with
    /// `move_back`, the VMs its latest evacuation moved and that still run where it
    /// sent them are migrated back (through the ordinary path: checks, budgets).
    pub async fn maintenance_exit(
        &self,
        host_id: HostId,
        move_back: bool,
    ) -> ApiResult<MaintenanceExit> {
        let host = self
            .db
            .host_fetch(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", host_id))?;
        let latest = self.db.maintenance_latest(host_id).await?;
        if latest
            .as_ref()
            .is_some_and(|m| m.state == MaintenanceState::Evacuating)
        {
            return Err(ApiError::conflict(
                "maintenance_in_progress",
                format!(
                    "host {} is being evacuated; cancel that first (POST /hosts/{{id}}/maintenance/cancel)",
                    host.name
                ),
            ));
        }
        if host.state != HostState::Maintenance {
            return Err(ApiError::conflict(
                "not_in_maintenance",
                format!("host {} is {}", host.name, host.state.as_str()),
            ));
        }
        let mut tx = self.db.pool.begin().await?;
        Db::host_set_mode_on(&mut tx, host_id, HostMode::Active).await?;
        let since = latest.as_ref().map(|m| m.created_at);
        if let Some(m) = latest.filter(|m| m.state == MaintenanceState::InMaintenance) {
            Db::maintenance_finish_on(&mut tx, m.id, MaintenanceState::Exited, None).await?;
        }
        tx.commit().await?;
        self.events
            .record(
                crate::db::events::NewEvent::info(
                    "host.maintenance_exited",
                    format!("host {} left maintenance", host.name),
                )
                .host(host_id),
            )
            .await;
        let (mut moved_back, mut not_moved_back) = (Vec::new(), Vec::new());
        if let (true, Some(since)) = (move_back, since) {
            let mut seen = Vec::new();
            for (vm_id, _, state, dest) in self.db.migration_list_from_host(host_id, since).await? {
                if state != MigrationState::Completed || seen.contains(&vm_id) {
                    continue;
                }
                seen.push(vm_id);
                let Some(vm) = self.db.vm_fetch(vm_id).await? else {
                    continue;
                };
                if vm.host_id != Some(dest) || vm.power_state != PowerState::Running {
                    not_moved_back.push(Reason {
                        code: "vm_moved_since".into(),
                        detail: format!(
                            "{} is no longer running where the evacuation sent it",
                            vm.name
                        ),
                    });
                    continue;
                }
                let req = MigrateRequest {
                    destination_host_id: Some(host_id),
                    ..Default::default()
                };
                match self.migration_start(vm_id, &req).await {
                    Ok(m) => moved_back.push(m.id),
                    Err(e) => not_moved_back.push(Reason {
                        code: e.code.to_string(),
                        detail: format!("{}: {}", vm.name, e.detail),
                    }),
                }
            }
        }
        let host = self
            .db
            .host_fetch(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", host_id))?;
        Ok(MaintenanceExit {
            host,
            moved_back,
            not_moved_back,
        })
    }
}

fn step(
    order: usize,
    vm: &Vm,
    action: StepAction,
    dest: Option<HostId>,
    secs: f64,
    problems: Vec<Reason>,
) -> PlanStep {
    PlanStep {
        order: order as u32 + 1,
        vm_id: vm.id,
        vm_name: vm.name.clone(),
        action,
        destination_host_id: dest,
        predicted_s: secs,
        problems,
    }
}
