//! `ferryctl schedule [list | show ID | create NAME ACTION [WHEN] | change ID [WHEN] | cancel ID]`:
//! operations run at a time or on a recurrence.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use ferry_api::maintenance::{PoweredOffPolicy, UnmovablePolicy};
use ferry_api::schedule::{
    Repeat, Schedule, ScheduleCreate, SchedulePatch, ScheduledAction, Weekday,
};

use super::Ctx;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Every schedule: what, when next, the latest run.
    List,
    /// One schedule and its latest runs.
    Show { id: uuid::Uuid },
    /// Schedule an operation. Exactly one action flag.
    Create {
        name: String,
        /// Live-migrate this VM (to `--to`, or the best host then).
        #[arg(long, group = "action", value_name = "VM")]
        migrate: Option<String>,
        #[arg(long, requires = "migrate", value_name = "HOST")]
        to: Option<String>,
        /// Put this host into maintenance (evacuate it).
        #[arg(long, group = "action", value_name = "HOST")]
        enter_maintenance: Option<String>,
        /// Take this host out of maintenance.
        #[arg(long, group = "action", value_name = "HOST")]
        exit_maintenance: Option<String>,
        /// Run a balancing pass of this cluster.
        #[arg(long, group = "action", value_name = "CLUSTER")]
        balance: Option<String>,
        #[command(flatten)]
        when: When,
    },
    /// Change when an active schedule runs.
    Change {
        id: uuid::Uuid,
        #[command(flatten)]
        when: When,
    },
    /// Cancel a schedule: it never runs again.
    Cancel { id: uuid::Uuid },
}

#[derive(Debug, Args)]
pub struct When {
    /// When (RFC 3339, or `+90s`, `+10m`, `+2h` from now); a recurrence starts
    /// no earlier.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Every day at HH:MM.
    #[arg(long, value_name = "HH:MM", conflicts_with_all = ["weekly", "cron"])]
    daily: Option<String>,
    /// On days at a time: `mon,thu@02:30`.
    #[arg(long, value_name = "DAYS@HH:MM", conflicts_with = "cron")]
    weekly: Option<String>,
    /// A cron expression: `"30 2 * * 1-5"`.
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// The time zone of the recurrence (IANA name; UTC by default).
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
}

impl When {
    fn not_before(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let Some(at) = &self.at else { return Ok(None) };
        if let Some(rel) = at.strip_prefix('+') {
            let d = ferry_common::duration::parse(rel).map_err(|e| anyhow::anyhow!("--at: {e}"))?;
            return Ok(Some(Utc::now() + chrono::Duration::from_std(d)?));
        }
        Ok(Some(
            DateTime::parse_from_rfc3339(at)
                .with_context(|| format!("--at: {at:?} is neither RFC 3339 nor +DURATION"))?
                .with_timezone(&Utc),
        ))
    }

    fn repeat(&self) -> anyhow::Result<Option<Repeat>> {
        if let Some(at) = &self.daily {
            return Ok(Some(Repeat::Daily { at: at.clone() }));
        }
        if let Some(w) = &self.weekly {
            let (days, at) = w
                .split_once('@')
                .context("--weekly is DAYS@HH:MM, e.g. mon,thu@02:30")?;
            let days = days
                .split(',')
                .map(|d| {
                    serde_json::from_value::<Weekday>(serde_json::Value::String(
                        d.trim().to_lowercase(),
                    ))
                    .with_context(|| format!("--weekly: {d:?} is not a day (mon … sun)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(Some(Repeat::Weekly {
                days,
                at: at.into(),
            }));
        }
        Ok(self
            .cron
            .clone()
            .map(|expression| Repeat::Cron { expression }))
    }
}

fn describe(a: &ScheduledAction) -> String {
    match a {
        ScheduledAction::Migrate {
            vm_id,
            destination_host_id,
        } => match destination_host_id {
            Some(h) => format!("migrate {vm_id} to {h}"),
            None => format!("migrate {vm_id}"),
        },
        ScheduledAction::MaintenanceEnter { host_id, .. } => format!("enter maintenance {host_id}"),
        ScheduledAction::MaintenanceExit { host_id, .. } => format!("exit maintenance {host_id}"),
        ScheduledAction::DrsRun { cluster_id } => format!("balance {cluster_id}"),
    }
}

fn repeat_text(r: &Repeat) -> String {
    match r {
        Repeat::Once => "once".into(),
        Repeat::Daily { at } => format!("daily {at}"),
        Repeat::Weekly { days, at } => format!(
            "weekly {}@{at}",
            days.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Repeat::Cron { expression } => format!("cron {expression}"),
    }
}

fn table(list: &[Schedule]) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "WHAT", "REPEAT", "ZONE", "NEXT", "STATE", "LAST RUN",
    ]);
    for s in list {
        t.row(vec![
            s.id.to_string(),
            s.name.clone(),
            describe(&s.action),
            repeat_text(&s.repeat),
            s.time_zone.clone(),
            s.next_run_at.map_or("-".into(), |t| t.to_rfc3339()),
            s.state.as_str().into(),
            s.runs.first().map_or("-".into(), |r| {
                format!(
                    "{} {}: {}",
                    r.ran_at.to_rfc3339(),
                    r.outcome.as_str(),
                    r.detail
                )
            }),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, cmd: ScheduleCmd) -> anyhow::Result<()> {
    match cmd {
        ScheduleCmd::List => {
            let list: Vec<Schedule> = ctx.client.get("/schedules").await?;
            ctx.print(&list, |l| table(l))
        }
        ScheduleCmd::Show { id } => {
            let s: Schedule = ctx.client.get(&format!("/schedules/{id}")).await?;
            ctx.print(&s, |s| {
                let mut out = table(std::slice::from_ref(s));
                out.push_str("\n\n");
                let mut t = Table::new(&["DUE", "RAN", "OUTCOME", "DETAIL"]);
                for r in &s.runs {
                    t.row(vec![
                        r.due_at.to_rfc3339(),
                        r.ran_at.to_rfc3339(),
                        r.outcome.as_str().into(),
                        r.detail.clone(),
                    ]);
                }
                out.push_str(&t.render());
                out
            })
        }
        ScheduleCmd::Create {
            name,
            migrate,
            to,
            enter_maintenance,
            exit_maintenance,
            balance,
            when,
        } => {
            let action = if let Some(vm) = migrate {
                ScheduledAction::Migrate {
                    vm_id: ctx.resolve("vms", &vm).await?.into(),
                    destination_host_id: match to {
                        Some(h) => Some(ctx.resolve("hosts", &h).await?.into()),
                        None => None,
                    },
                }
            } else if let Some(h) = enter_maintenance {
                ScheduledAction::MaintenanceEnter {
                    host_id: ctx.resolve("hosts", &h).await?.into(),
                    powered_off: PoweredOffPolicy::default(),
                    unmovable: UnmovablePolicy::default(),
                }
            } else if let Some(h) = exit_maintenance {
                ScheduledAction::MaintenanceExit {
                    host_id: ctx.resolve("hosts", &h).await?.into(),
                    move_back: false,
                }
            } else if let Some(c) = balance {
                ScheduledAction::DrsRun {
                    cluster_id: ctx.resolve("clusters", &c).await?.into(),
                }
            } else {
                anyhow::bail!(
                    "name what to run: --migrate, --enter-maintenance, --exit-maintenance or --balance"
                );
            };
            let req = ScheduleCreate {
                name,
                action,
                not_before: when.not_before()?,
                repeat: when.repeat()?.unwrap_or_default(),
                time_zone: when.tz.clone(),
            };
            let s: Schedule = ctx.client.post("/schedules", &req).await?;
            ctx.print(&s, |s| {
                format!(
                    "schedule {} created: {}; next run {}",
                    s.name,
                    s.id,
                    s.next_run_at.map_or("never".into(), |t| t.to_rfc3339())
                )
            })
        }
        ScheduleCmd::Change { id, when } => {
            let req = SchedulePatch {
                not_before: when.not_before()?,
                repeat: when.repeat()?,
                time_zone: when.tz.clone(),
            };
            let s: Schedule = ctx.client.patch(&format!("/schedules/{id}"), &req).await?;
            ctx.print(&s, |s| {
                format!(
                    "schedule {}: next run {}",
                    s.name,
                    s.next_run_at.map_or("never".into(), |t| t.to_rfc3339())
                )
            })
        }
        ScheduleCmd::Cancel { id } => {
            let s: Schedule = ctx
                .client
                .post(&format!("/schedules/{id}/cancel"), &serde_json::json!({}))
                .await?;
            ctx.print(&s, |s| format!("schedule {} {}", s.name, s.state.as_str()))
        }
    }
}
