//! The evacuation saga (maintenance mode) on the saga executor:
//!
//! ```text
//!  enter ──────────────► evacuate ─────────────────────► in_maintenance
//!  host: entering_        every running VM live-migrated  │ POINT OF NO RETURN
//!  maintenance            to the best fitting host, small │ (NO_RETURN = 2): the
//!  undo: host active      first, within the budgets; a    │ host is empty of
//!  again, the end         failed move retried on another  │ running VMs; it is
//!  recorded               host (3 tries); unmovable VMs   │ `maintenance`
//!                         by policy; powered-off VMs      │
//!                         re-homed or left                │
//!                         undo: cancel moves in flight    │
//! ```
//!
//! `evacuate` keeps no state of its own: each round it looks at what is on the
//! host and at the migrations off it since the maintenance began, so after a
//! control-plane restart it simply runs again (moves in flight are sagas of their
//! own and resume too). A cancel stops it at any time: the moves that finished
//! stay, those in flight are cancelled, the host becomes `connected` again.

use std::collections::HashMap;
use std::time::Duration;

use ferry_api::maintenance::{MaintenanceState, PoweredOffPolicy, UnmovablePolicy};
use ferry_api::migration::{MigrateRequest, MigrationState};
use ferry_api::vm::{PowerAction, PowerState};
use ferry_api::{HostId, VmId};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::db::events::NewEvent;
use crate::db::maintenance::HostMode;
use crate::db::Db;
use crate::saga::{Ctx, Done, Node, NodeError, NodeResult, Outcome, Saga, Undone, Write};

pub const KIND: &str = "evacuate";

/// How often a move of one VM is tried (on a different host each time).
const TRIES: usize = 3;
/// How long a VM must have had no destination before the `unmovable` policy
/// applies to it during the evacuation (the plan refused the unmovable ones).
const UNMOVABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub maintenance: uuid::Uuid,
    pub host: HostId,
    pub host_name: String,
    pub powered_off: PoweredOffPolicy,
    pub unmovable: UnmovablePolicy,
}

pub struct Evacuate;

type ECtx<'a> = Ctx<'a, Evacuate>;

static NODES: [Node<Evacuate>; 3] = [
    Node {
        name: "enter",
        action: enter,
        undo: leave,
    },
    Node {
        name: "evacuate",
        action: evacuate,
        undo: stop_moves,
    },
    Node {
        name: "in_maintenance",
        action: finish,
        undo: crate::saga::nothing_to_undo,
    },
];

impl Saga for Evacuate {
    const KIND: &'static str = KIND;
    const NO_RETURN: usize = 2;
    type Params = Params;

    fn nodes() -> &'static [Node<Self>] {
        &NODES
    }

    fn stuck(ctx: &ECtx<'_>, why: &str) -> Vec<Write> {
        let (id, why) = (ctx.params.maintenance, why.to_string());
        vec![Box::new(move |c| {
            Box::pin(async move {
                Db::maintenance_finish_on(c, id, MaintenanceState::Failed, Some(&why)).await
            })
        })]
    }

    fn after<'a>(app: &'a App, p: &'a Params, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let ev = match outcome {
                Outcome::Done => NewEvent::info(
                    "host.maintenance",
                    format!(
                        "host {} is in maintenance: no running VM is left on it",
                        p.host_name
                    ),
                ),
                Outcome::Unwound(NodeError::Cancelled) => NewEvent::info(
                    "host.maintenance_cancelled",
                    format!(
                        "maintenance of host {} cancelled; the moves that finished stay",
                        p.host_name
                    ),
                ),
                Outcome::Unwound(e) => NewEvent::warning(
                    "host.maintenance_failed",
                    format!(
                        "maintenance of host {} failed: {e}; the host is connected again",
                        p.host_name
                    ),
                ),
                Outcome::Stuck(why) => NewEvent::warning(
                    "host.maintenance_failed",
                    format!("maintenance of host {} failed: {why}", p.host_name),
                ),
                Outcome::Crashed => return,
            };
            app.events.record(ev.host(p.host)).await;
        })
    }
}

fn enter<'a>(ctx: &'a ECtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let host = ctx.params.host;
        ctx.app
            .events
            .record(
                NewEvent::info(
                    "host.maintenance_entering",
                    format!("host {} is entering maintenance", ctx.params.host_name),
                )
                .host(host),
            )
            .await;
        Ok(Done::nothing()
            .write(move |c| Box::pin(Db::host_set_mode_on(c, host, HostMode::EnteringMaintenance))))
    })
}

/// The host takes VMs again, and the maintenance records how it ended.
fn leave<'a>(ctx: &'a ECtx<'a>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async move {
        let p = ctx.params;
        ctx.write(
            "host_set_mode",
            ctx.app.db.host_set_mode(p.host, HostMode::Active),
        )
        .await?;
        let (state, error) = match ctx.cause {
            Some(NodeError::Cancelled) => (MaintenanceState::Cancelled, None),
            Some(e) => (MaintenanceState::Failed, Some(e.to_string())),
            None => (MaintenanceState::Failed, None),
        };
        ctx.write(
            "maintenance_finish",
            ctx.app
                .db
                .maintenance_finish(p.maintenance, state, error.as_deref()),
        )
        .await?;
        Ok(Undone::Undone)
    })
}

fn evacuate<'a>(ctx: &'a ECtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let p = ctx.params;
        let app = ctx.app;
        let latest = app
            .db
            .maintenance_latest(p.host)
            .await?
            .ok_or_else(|| NodeError::Failed("the maintenance record is gone".into()))?;
        let started = latest.created_at;
        let plan_dest: HashMap<VmId, Option<HostId>> = latest
            .plan
            .steps
            .iter()
            .map(|s| (s.vm_id, s.destination_host_id))
            .collect();
        let mut stuck_since: HashMap<VmId, tokio::time::Instant> = HashMap::new();
        loop {
            if app.db.maintenance_cancel_requested(p.maintenance).await? {
                return Err(NodeError::Cancelled);
            }
            let host = app
                .db
                .host_fetch(p.host)
                .await?
                .ok_or_else(|| NodeError::Failed(format!("host {} is gone", p.host_name)))?;
            let targets = app
                .evacuation_targets(&host)
                .await
                .map_err(|e| NodeError::Failed(e.detail))?;
            // What was tried already, per VM (restart-safe: read from the record).
            let mut tried: HashMap<ferry_api::VmId, Vec<HostId>> = HashMap::new();
            let mut in_flight = 0;
            for (vm, _, state, dest) in app.db.migration_list_from_host(p.host, started).await? {
                match state {
                    MigrationState::Failed | MigrationState::Cancelled => {
                        tried.entry(vm).or_default().push(dest)
                    }
                    MigrationState::Completed => {}
                    _ => in_flight += 1,
                }
            }
            let vms = app.db.vm_list_on_host(p.host).await?;
            let mut rules = app
                .rules_context(host.cluster_id, Some(p.host))
                .await
                .map_err(|e| NodeError::Failed(e.detail))?;
            let mut left = 0;
            for vm in &vms {
                let running = vm.power_state == PowerState::Running;
                if !running {
                    if vm.power_state == PowerState::Paused {
                        left += 1;
                    }
                    if vm.power_state == PowerState::Stopped
                        && p.powered_off == PoweredOffPolicy::Move
                        && app.db.vm_op_fetch(vm.id).await?.is_none()
                    {
                        let (ranked, _) = app
                            .evacuation_destinations(&host, vm, &targets, &HashMap::new(), &rules)
                            .await
                            .map_err(|e| NodeError::Failed(e.detail))?;
                        if let Some(d) = ranked.first() {
                            ctx.write("vm_rehome", app.db.vm_rehome(vm.id, p.host, d.id))
                                .await?;
                        }
                    }
                    continue;
                }
                left += 1;
                if app.db.vm_op_fetch(vm.id).await?.is_some() {
                    continue; // its move (or another operation) is under way
                }
                let avoid = tried.get(&vm.id).cloned().unwrap_or_default();
                if avoid.len() >= TRIES {
                    return Err(NodeError::Failed(format!(
                        "VM {} failed to move {TRIES} times",
                        vm.name
                    )));
                }
                let (mut ranked, why) = app
                    .evacuation_destinations(&host, vm, &targets, &HashMap::new(), &rules)
                    .await
                    .map_err(|e| NodeError::Failed(e.detail))?;
                // A retry goes to another host if one fits, else again where it
                // failed (a failure may have been passing: a restart, a lost link).
                ranked.sort_by_key(|h| avoid.contains(&h.id));
                // The plan's destination while it still fits (and did not fail),
                // so the evacuation does what the plan said (its order kept the
                // rules satisfiable).
                let planned = plan_dest
                    .get(&vm.id)
                    .copied()
                    .flatten()
                    .filter(|h| !avoid.contains(h));
                let Some(dest) = ranked
                    .iter()
                    .find(|h| Some(h.id) == planned)
                    .or(ranked.first())
                else {
                    let why = why.first().map(|r| r.detail.clone()).unwrap_or_default();
                    // No room now may be a move still ending (its memory not yet
                    // freed, or reported): the policy applies once it lasts.
                    let since = *stuck_since
                        .entry(vm.id)
                        .or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() < UNMOVABLE_AFTER && p.unmovable != UnmovablePolicy::Wait {
                        continue;
                    }
                    match p.unmovable {
                        UnmovablePolicy::Fail => {
                            return Err(NodeError::Failed(format!(
                                "VM {} cannot move: {why}",
                                vm.name
                            )))
                        }
                        UnmovablePolicy::PowerOff => {
                            app.vm_power(vm.id, PowerAction::Off, false)
                                .await
                                .map_err(|e| NodeError::Failed(e.detail))?;
                        }
                        UnmovablePolicy::Wait => {}
                    }
                    continue;
                };
                stuck_since.remove(&vm.id);
                let req = MigrateRequest {
                    destination_host_id: Some(dest.id),
                    ..Default::default()
                };
                match app.migration_start_leaving(vm.id, &req, Some(p.host)).await {
                    Ok(_) => {
                        in_flight += 1;
                        // The next VM of this round sees where this one goes.
                        rules.at.insert(vm.id, dest.id);
                    }
                    // Raced with another operation: the next round looks again.
                    Err(e) if e.code == "vm_busy" || e.code == "migration_in_progress" => {}
                    Err(e) => {
                        tracing::warn!(vm = %vm.id, "evacuation move not started: {}", e.detail)
                    }
                }
            }
            if left == 0 && in_flight == 0 {
                return Ok(Done::nothing());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// How long a cancelled evacuation waits for its moves to end.
const MOVES_STOP_WITHIN: Duration = Duration::from_secs(120);

/// Cancels the moves off the host still in flight (the finished ones stay), and
/// waits for them to end.
fn stop_moves<'a>(ctx: &'a ECtx<'a>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async move {
        let p = ctx.params;
        let Some(m) = ctx.app.db.maintenance_latest(p.host).await? else {
            return Ok(Undone::Undone);
        };
        for (_, id, state, _) in ctx
            .app
            .db
            .migration_list_from_host(p.host, m.created_at)
            .await?
        {
            if !state.is_final() {
                // False once past its switchover: that move is let finish.
                ctx.write(
                    "migration_request_cancel",
                    ctx.app.db.migration_request_cancel(id),
                )
                .await?;
            }
        }
        // The evacuation ends once its moves have: each VM then runs on exactly
        // one host (a cancelled move's destination QEMU is gone).
        let deadline = tokio::time::Instant::now() + MOVES_STOP_WITHIN;
        loop {
            let open = ctx
                .app
                .db
                .migration_list_from_host(p.host, m.created_at)
                .await?
                .iter()
                .filter(|(_, _, state, _)| !state.is_final())
                .count();
            if open == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(host = %p.host, open, "evacuation cancelled with moves still ending");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Undone::Undone)
    })
}

fn finish<'a>(ctx: &'a ECtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let (host, id) = (ctx.params.host, ctx.params.maintenance);
        Ok(Done::nothing()
            .write(move |c| Box::pin(Db::host_set_mode_on(c, host, HostMode::Maintenance)))
            .write(move |c| {
                Box::pin(Db::maintenance_finish_on(
                    c,
                    id,
                    MaintenanceState::InMaintenance,
                    None,
                ))
            }))
    })
}
