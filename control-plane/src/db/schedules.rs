//! Scheduled operations (`schedules`) and their runs (`schedule_runs`). A due run
//! is claimed with `FOR UPDATE SKIP LOCKED` in the transaction that records it
//! and advances the schedule, so it is run once even by two control planes.

use chrono::{DateTime, Utc};
use ferry_api::schedule::{
    Repeat, RunOutcome, Schedule, ScheduleRun, ScheduleState, ScheduledAction,
};
use ferry_api::ScheduleId;
use sqlx::types::Json;
use uuid::Uuid;

use super::Db;

type Row = (
    Uuid,
    String,
    Json<ScheduledAction>,
    Json<Repeat>,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    DateTime<Utc>,
);

type RunRow = (DateTime<Utc>, DateTime<Utc>, String, String, Option<Uuid>);

const SELECT: &str = "SELECT id, name, action, repeat, time_zone, not_before, next_run_at, state, created_at FROM schedules";

fn from_row(r: Row) -> Option<Schedule> {
    Some(Schedule {
        id: ScheduleId(r.0),
        name: r.1,
        action: r.2 .0,
        repeat: r.3 .0,
        time_zone: r.4,
        not_before: r.5,
        next_run_at: r.6,
        // The column's CHECK admits only the three states.
        state: ScheduleState::parse(&r.7)?,
        runs: Vec::new(),
        created_at: r.8,
    })
}

/// A run claimed: the schedule as it was, and when the run was due.
pub struct Claimed {
    pub run: Uuid,
    pub schedule: Schedule,
    pub due_at: DateTime<Utc>,
}

impl Db {
    pub async fn schedule_insert(&self, s: &Schedule) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO schedules (id, name, action, repeat, time_zone, not_before, next_run_at, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(s.id.0)
        .bind(&s.name)
        .bind(Json(&s.action))
        .bind(Json(&s.repeat))
        .bind(&s.time_zone)
        .bind(s.not_before)
        .bind(s.next_run_at)
        .bind(s.state.as_str())
        .bind(s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn schedule_fetch(&self, id: ScheduleId) -> sqlx::Result<Option<Schedule>> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        let Some(mut s) = row.and_then(from_row) else {
            return Ok(None);
        };
        s.runs = self.schedule_runs(id, 20).await?;
        Ok(Some(s))
    }

    pub async fn schedule_list(&self) -> sqlx::Result<Vec<Schedule>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "{SELECT} ORDER BY state = 'active' DESC, next_run_at NULLS LAST, name LIMIT 1000"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Schedule> = rows.into_iter().filter_map(from_row).collect();
        for s in &mut out {
            s.runs = self.schedule_runs(s.id, 1).await?;
        }
        Ok(out)
    }

    pub async fn schedule_runs(
        &self,
        id: ScheduleId,
        limit: i64,
    ) -> sqlx::Result<Vec<ScheduleRun>> {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT due_at, ran_at, outcome, detail, operation_id FROM schedule_runs \
                 WHERE schedule_id = $1 ORDER BY ran_at DESC LIMIT $2",
        )
        .bind(id.0)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(ScheduleRun {
                    due_at: r.0,
                    ran_at: r.1,
                    outcome: RunOutcome::parse(&r.2)?,
                    detail: r.3,
                    operation_id: r.4,
                })
            })
            .collect())
    }

    /// Changes an active schedule's timing. False if it is not active.
    pub async fn schedule_retime(
        &self,
        id: ScheduleId,
        repeat: &Repeat,
        time_zone: &str,
        not_before: Option<DateTime<Utc>>,
        next_run_at: Option<DateTime<Utc>>,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE schedules SET repeat = $2, time_zone = $3, not_before = $4, next_run_at = $5, \
             updated_at = now() WHERE id = $1 AND state = 'active'",
        )
        .bind(id.0)
        .bind(Json(repeat))
        .bind(time_zone)
        .bind(not_before)
        .bind(next_run_at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Cancels an active schedule. False if it is not active.
    pub async fn schedule_cancel(&self, id: ScheduleId) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE schedules SET state = 'cancelled', next_run_at = NULL, updated_at = now() \
             WHERE id = $1 AND state = 'active'",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Claims the next due run, if any: records it (`running`, or `missed` when it
    /// is later than `grace` past due) and advances the schedule to `next` —
    /// computed by `next_of` from the schedule and the due time — in one
    /// transaction.
    pub async fn schedule_claim_due(
        &self,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        next_of: impl Fn(&Schedule, DateTime<Utc>) -> Option<DateTime<Utc>>,
    ) -> sqlx::Result<Option<(Claimed, bool)>> {
        let mut tx = self.pool.begin().await?;
        let row: Option<Row> = sqlx::query_as(&format!(
            "{SELECT} WHERE state = 'active' AND next_run_at <= $1 \
             ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(schedule) = row.and_then(from_row) else {
            return Ok(None);
        };
        let Some(due_at) = schedule.next_run_at else {
            return Ok(None);
        };
        let missed = now - due_at > grace;
        let next = next_of(&schedule, due_at);
        sqlx::query(
            "UPDATE schedules SET next_run_at = $2, state = $3, updated_at = now() WHERE id = $1",
        )
        .bind(schedule.id.0)
        .bind(next)
        .bind(if next.is_some() { "active" } else { "done" })
        .execute(&mut *tx)
        .await?;
        let run = Uuid::new_v4();
        let (outcome, detail) = if missed {
            (
                RunOutcome::Missed,
                format!(
                    "due at {due_at} while the control plane was down; more than {} s late, not run",
                    grace.num_seconds()
                ),
            )
        } else {
            (RunOutcome::Running, String::new())
        };
        sqlx::query(
            "INSERT INTO schedule_runs (id, schedule_id, due_at, outcome, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(run)
        .bind(schedule.id.0)
        .bind(due_at)
        .bind(outcome.as_str())
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((
            Claimed {
                run,
                schedule,
                due_at,
            },
            missed,
        )))
    }

    pub async fn schedule_run_finish(
        &self,
        run: Uuid,
        outcome: RunOutcome,
        detail: &str,
        operation: Option<Uuid>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE schedule_runs SET outcome = $2, detail = $3, operation_id = $4 WHERE id = $1",
        )
        .bind(run)
        .bind(outcome.as_str())
        .bind(detail)
        .bind(operation)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs a stopped control plane left `running`: interrupted (never re-run, so
    /// no action runs twice). How many.
    pub async fn schedule_runs_interrupt(&self) -> sqlx::Result<u64> {
        let r = sqlx::query(
            "UPDATE schedule_runs SET outcome = 'interrupted', \
             detail = 'the control plane stopped while starting it; see the events for what began' \
             WHERE outcome = 'running'",
        )
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
