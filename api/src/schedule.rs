//! Scheduled operations at the API: a migration, a maintenance entry or exit, or
//! a balancing pass, run at a time (`not_before`) or on a recurrence (daily,
//! weekly, or a cron expression) in a named time zone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::maintenance::{PoweredOffPolicy, UnmovablePolicy};
use crate::{ClusterId, HostId, ScheduleId, VmId};

/// What a schedule does when it comes due. It runs as the same request would
/// (checks and budgets included); one whose checks fail records why and does
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduledAction {
    /// `POST /vms/{id}/migrate` (no destination: the best host then).
    Migrate {
        vm_id: VmId,
        #[serde(default)]
        destination_host_id: Option<HostId>,
    },
    /// `POST /hosts/{id}/maintenance`.
    MaintenanceEnter {
        host_id: HostId,
        #[serde(default)]
        powered_off: PoweredOffPolicy,
        #[serde(default)]
        unmovable: UnmovablePolicy,
    },
    /// `DELETE /hosts/{id}/maintenance` (`move_back`: `?move_back=true`).
    MaintenanceExit {
        host_id: HostId,
        #[serde(default)]
        move_back: bool,
    },
    /// `POST /clusters/{id}/drs/run`.
    DrsRun { cluster_id: ClusterId },
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }
}

/// When a schedule runs again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "every", rename_all = "snake_case", deny_unknown_fields)]
pub enum Repeat {
    /// Once, at `not_before`.
    #[default]
    Once,
    /// Every day at `at` (`HH:MM`, the schedule's time zone).
    Daily { at: String },
    /// On each of `days` at `at` (`HH:MM`, the schedule's time zone).
    Weekly { days: Vec<Weekday>, at: String },
    /// A cron expression (minute hour day-of-month month day-of-week; an optional
    /// leading seconds field), in the schedule's time zone.
    Cron { expression: String },
}

/// Where a schedule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleState {
    /// It runs when `next_run_at` comes.
    Active,
    /// A one-off that ran.
    Done,
    Cancelled,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Done, Self::Cancelled]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Claimed; the action is being started.
    Running,
    /// The action started (`operation_id`: its migration, maintenance or pass).
    Started,
    /// The action's checks refused it; nothing was done (`detail` says why).
    Refused,
    /// Due while the control plane was down for longer than the grace period:
    /// not run late.
    Missed,
    /// The control plane stopped while it was being started; not retried (it may
    /// or may not have started: see `detail`).
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Started => "started",
            Self::Refused => "refused",
            Self::Missed => "missed",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Started,
            Self::Refused,
            Self::Missed,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One run of a schedule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRun {
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// When it was run.
    pub ran_at: DateTime<Utc>,
    pub outcome: RunOutcome,
    pub detail: String,
    /// The migration, maintenance or balancing pass it started.
    pub operation_id: Option<uuid::Uuid>,
}

/// A schedule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub id: ScheduleId,
    pub name: String,
    pub action: ScheduledAction,
    pub repeat: Repeat,
    /// IANA name (`Europe/Berlin`); `UTC` by default.
    pub time_zone: String,
    /// Not run before this (a one-off runs at it).
    pub not_before: Option<DateTime<Utc>>,
    /// When it runs next (none once done or cancelled).
    pub next_run_at: Option<DateTime<Utc>>,
    pub state: ScheduleState,
    /// The latest runs, newest first (at most 20).
    pub runs: Vec<ScheduleRun>,
    pub created_at: DateTime<Utc>,
}

/// `POST /schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleCreate {
    /// Unique; 1..=63 characters.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    pub action: ScheduledAction,
    /// Required for `once`; for a recurrence, its first run is not before it.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default)]
    pub repeat: Repeat,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// `PATCH /schedules/{id}`: each field given replaces the schedule's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(default)]
    pub repeat: Option<Repeat>,
    #[serde(default)]
    pub time_zone: Option<String>,
}
