//! Scheduled operations: creating one (its action's targets resolved and its
//! timing checked), listing, changing its timing, cancelling; and the runner that
//! claims each due run once (`db/schedules.rs`) and starts the action exactly as
//! the same API request would — checks and migration budgets included — recording
//! what it started, or why it was refused and did nothing.

use std::time::Duration;

use chrono::Utc;
use ferry_api::drs::DrsTrigger;
use ferry_api::maintenance::MaintenanceRequest;
use ferry_api::migration::MigrateRequest;
use ferry_api::schedule::{
    RunOutcome, Schedule, ScheduleCreate, SchedulePatch, ScheduleState, ScheduledAction,
};
use ferry_api::ScheduleId;
use tokio_util::sync::CancellationToken;

use super::{names, App};
use crate::db::events::NewEvent;
use crate::error::{is_unique_violation, ApiError, ApiResult};
use crate::recurrence::Recurrence;

/// How late a run may start after its due time (the control plane was down):
/// later than this it is recorded `missed`, not run.
pub const GRACE: Duration = Duration::from_secs(15 * 60);
/// How often the runner looks for due runs.
const TICK: Duration = Duration::from_millis(500);

fn recurrence(s: &Schedule) -> ApiResult<Recurrence> {
    Recurrence::new(&s.repeat, &s.time_zone, s.not_before)
        .map_err(|e| ApiError::unprocessable(e.code, e.detail))
}

impl App {
    async fn schedule_check_action(&self, a: &ScheduledAction) -> ApiResult<()> {
        let missing = |what: &'static str, code: &'static str, id: uuid::Uuid| {
            ApiError::unprocessable(code, format!("action: no {what} with id {id}"))
        };
        match a {
            ScheduledAction::Migrate {
                vm_id,
                destination_host_id,
            } => {
                if self.db.vm_fetch(*vm_id).await?.is_none() {
                    return Err(missing("VM", "unknown_vm", vm_id.0));
                }
                if let Some(h) = destination_host_id {
                    if !self.db.host_exists(*h).await? {
                        return Err(missing("host", "unknown_host", h.0));
                    }
                }
            }
            ScheduledAction::MaintenanceEnter { host_id, .. }
            | ScheduledAction::MaintenanceExit { host_id, .. } => {
                if !self.db.host_exists(*host_id).await? {
                    return Err(missing("host", "unknown_host", host_id.0));
                }
            }
            ScheduledAction::DrsRun { cluster_id } => {
                if self.db.cluster_fetch(*cluster_id).await?.is_none() {
                    return Err(missing("cluster", "unknown_cluster", cluster_id.0));
                }
            }
        }
        Ok(())
    }

    pub async fn schedule_create(&self, req: ScheduleCreate) -> ApiResult<Schedule> {
        names::validate("schedule name", &req.name)?;
        self.schedule_check_action(&req.action).await?;
        let now = Utc::now();
        let mut s = Schedule {
            id: ScheduleId::new(),
            name: req.name,
            action: req.action,
            repeat: req.repeat,
            time_zone: req.time_zone.unwrap_or_else(|| "UTC".into()),
            not_before: req.not_before,
            next_run_at: None,
            state: ScheduleState::Active,
            runs: Vec::new(),
            created_at: now,
        };
        let r = recurrence(&s)?;
        if s.not_before
            .is_some_and(|nb| nb < now - chrono::Duration::seconds(60))
        {
            return Err(ApiError::unprocessable(
                "invalid_schedule",
                "not_before is in the past",
            ));
        }
        s.next_run_at = r.first(now);
        match self.db.schedule_insert(&s).await {
            Err(e) if is_unique_violation(&e, None) => {
                return Err(ApiError::conflict(
                    "name_taken",
                    format!("a schedule named {} exists already", s.name),
                ))
            }
            r => r?,
        }
        self.events
            .record(
                NewEvent::info(
                    "schedule.created",
                    format!(
                        "schedule {} created, next run {}",
                        s.name,
                        s.next_run_at.map_or("never".into(), |t| t.to_rfc3339())
                    ),
                )
                .data(serde_json::json!({"schedule_id": s.id})),
            )
            .await;
        self.schedule_get(s.id).await
    }

    pub async fn schedule_get(&self, id: ScheduleId) -> ApiResult<Schedule> {
        self.db
            .schedule_fetch(id)
            .await?
            .ok_or_else(|| ApiError::not_found("schedule", id))
    }

    pub async fn schedule_list(&self) -> ApiResult<Vec<Schedule>> {
        Ok(self.db.schedule_list().await?)
    }

    pub async fn schedule_patch(&self, id: ScheduleId, p: SchedulePatch) -> ApiResult<Schedule> {
        let mut s = self.schedule_get(id).await?;
        if s.state != ScheduleState::Active {
            return Err(ApiError::conflict(
                "schedule_not_active",
                format!("schedule {} is {}", s.name, s.state.as_str()),
            ));
        }
        if let Some(nb) = p.not_before {
            s.not_before = Some(nb);
        }
        if let Some(r) = p.repeat {
            s.repeat = r;
        }
        if let Some(tz) = p.time_zone {
            s.time_zone = tz;
        }
        let next = recurrence(&s)?.first(Utc::now());
        if !self
            .db
            .schedule_retime(id, &s.repeat, &s.time_zone, s.not_before, next)
            .await?
        {
            return Err(ApiError::conflict(
                "schedule_not_active",
                format!("schedule {} ran or was cancelled meanwhile", s.name),
            ));
        }
        self.schedule_get(id).await
    }

    pub async fn schedule_cancel(&self, id: ScheduleId) -> ApiResult<Schedule> {
        let s = self.schedule_get(id).await?;
        if !self.db.schedule_cancel(id).await? {
            return Err(ApiError::conflict(
                "schedule_not_active",
                format!("schedule {} is {}", s.name, s.state.as_str()),
            ));
        }
        self.events
            .record(
                NewEvent::info(
                    "schedule.cancelled",
                    format!("schedule {} cancelled", s.name),
                )
                .data(serde_json::json!({"schedule_id": id})),
            )
            .await;
        self.schedule_get(id).await
    }

    /// Starts a schedule's action: what it started, or the refusal.
    async fn schedule_execute(&self, a: &ScheduledAction) -> ApiResult<(String, uuid::Uuid)> {
        Ok(match a {
            ScheduledAction::Migrate {
                vm_id,
                destination_host_id,
            } => {
                let req = MigrateRequest {
                    destination_host_id: *destination_host_id,
                    ..Default::default()
                };
                let m = self.migration_start(*vm_id, &req).await?;
                (
                    format!("migration {} to host {}", m.id, m.destination_host_id),
                    m.id.0,
                )
            }
            ScheduledAction::MaintenanceEnter {
                host_id,
                powered_off,
                unmovable,
            } => {
                let req = MaintenanceRequest {
                    dry_run: false,
                    powered_off: *powered_off,
                    unmovable: *unmovable,
                };
                let m = self.maintenance_enter(*host_id, &req).await?;
                (format!("evacuation {} of host {host_id}", m.id), m.id)
            }
            ScheduledAction::MaintenanceExit { host_id, move_back } => {
                let e = self.maintenance_exit(*host_id, *move_back).await?;
                (
                    format!(
                        "host {} left maintenance; {} VM(s) moved back",
                        e.host.name,
                        e.moved_back.len()
                    ),
                    host_id.0,
                )
            }
            ScheduledAction::DrsRun { cluster_id } => {
                let r = self
                    .drs_run(*cluster_id, DrsTrigger::Scheduled, false)
                    .await?;
                (
                    format!(
                        "balancing pass: {} move(s), {} started",
                        r.pass.moves, r.pass.applied
                    ),
                    r.pass.id,
                )
            }
        })
    }

    /// Runs every due run; true if there was one.
    pub async fn schedule_tick(&self) -> anyhow::Result<bool> {
        let grace = chrono::Duration::from_std(GRACE)?;
        let claimed = self
            .db
            .schedule_claim_due(Utc::now(), grace, |s, due| {
                Recurrence::new(&s.repeat, &s.time_zone, s.not_before)
                    .ok()
                    .and_then(|r| r.next_after(due))
            })
            .await?;
        let Some((c, missed)) = claimed else {
            return Ok(false);
        };
        if missed {
            tracing::warn!(schedule = %c.schedule.name, due = %c.due_at, "scheduled run missed");
            return Ok(true);
        }
        let (outcome, detail, op) = match self.schedule_execute(&c.schedule.action).await {
            Ok((what, id)) => (RunOutcome::Started, what, Some(id)),
            Err(e) => (
                RunOutcome::Refused,
                format!("{}: {}", e.code, e.detail),
                None,
            ),
        };
        self.db
            .schedule_run_finish(c.run, outcome, &detail, op)
            .await?;
        self.events
            .record(
                NewEvent::info(
                    "schedule.ran",
                    format!(
                        "schedule {} ({}): {}",
                        c.schedule.name,
                        outcome.as_str(),
                        detail
                    ),
                )
                .data(serde_json::json!({"schedule_id": c.schedule.id, "due_at": c.due_at})),
            )
            .await;
        Ok(true)
    }
}

/// The runner: every due run, as it comes due, until `stop`. Runs a previous
/// control plane left half-started are marked interrupted first (never re-run).
pub async fn schedule_loop(app: App, stop: CancellationToken) {
    match app.db.schedule_runs_interrupt().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} scheduled run(s) were interrupted by the last stop"),
        Err(e) => tracing::warn!("scheduled runs: {e:#}"),
    }
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Every run due now, one after the other.
        loop {
            match app.schedule_tick().await {
                Ok(true) if !stop.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("scheduled runs: {e:#}");
                    break;
                }
            }
        }
    }
}
