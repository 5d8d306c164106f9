//! `ferryctl host maintenance HOST [enter [--dry-run] | show | cancel | exit]`,
//! with the evacuation's progress live until it ends.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use ferry_api::maintenance::{
    Maintenance, MaintenanceExit, MaintenancePlan, MaintenanceRequest, MaintenanceState,
    PoweredOffPolicy, UnmovablePolicy,
};

use super::Ctx;
use crate::table::Table;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PoweredOff {
    Move,
    Leave,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Unmovable {
    Fail,
    PowerOff,
    Wait,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCmd {
    /// Evacuate the host; `--dry-run` prints the plan and changes nothing.
    Enter {
        #[arg(long)]
        dry_run: bool,
        /// VMs that are not running: re-homed (`move`) or left (`leave`).
        #[arg(long, value_enum, default_value = "leave")]
        powered_off: PoweredOff,
        /// Running VMs no host can take: refuse to enter (`fail`), power them off,
        /// or `wait`.
        #[arg(long, value_enum, default_value = "fail")]
        unmovable: Unmovable,
        /// Return once the evacuation started.
        #[arg(long)]
        no_wait: bool,
    },
    /// The latest maintenance: its plan and progress.
    Show,
    /// Stop the evacuation (finished moves stay; the host is connected again).
    Cancel,
    /// Leave maintenance: the host takes VMs again.
    Exit {
        /// Move the VMs the evacuation moved back here.
        #[arg(long)]
        move_back: bool,
    },
}

fn plan_table(p: &MaintenancePlan) -> String {
    let mut t = Table::new(&["#", "VM", "ACTION", "TO", "PREDICTED", "PROBLEMS"]);
    for s in &p.steps {
        t.row(vec![
            s.order.to_string(),
            s.vm_name.clone(),
            serde_json::to_value(s.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            s.destination_host_id.map_or("-".into(), |h| h.to_string()),
            format!("{:.1} s", s.predicted_s),
            s.problems
                .iter()
                .map(|r| r.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    format!(
        "{}\n{} VM(s); predicted {:.1} s in all{}{}",
        t.render(),
        p.steps.len(),
        p.predicted_total_s,
        if p.feasible {
            ""
        } else {
            "; NOT feasible (unmovable: fail)"
        },
        if p.problems.is_empty() {
            String::new()
        } else {
            format!(
                "\nproblems:\n  {}",
                p.problems
                    .iter()
                    .map(|r| format!("{} [{}]", r.detail, r.code))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )
        }
    )
}

fn progress(m: &Maintenance) -> String {
    format!(
        "{}: {} of {} moved, {} running VM(s) left{}",
        m.state.as_str(),
        m.done,
        m.total,
        m.remaining_running,
        m.error
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})"))
    )
}

pub async fn run(ctx: &Ctx, host: &str, cmd: MaintenanceCmd) -> anyhow::Result<()> {
    let id = ctx.resolve("hosts", host).await?;
    let path = format!("/hosts/{id}/maintenance");
    match cmd {
        MaintenanceCmd::Enter {
            dry_run,
            powered_off,
            unmovable,
            no_wait,
        } => {
            let req = MaintenanceRequest {
                dry_run,
                powered_off: match powered_off {
                    PoweredOff::Move => PoweredOffPolicy::Move,
                    PoweredOff::Leave => PoweredOffPolicy::Leave,
                },
                unmovable: match unmovable {
                    Unmovable::Fail => UnmovablePolicy::Fail,
                    Unmovable::PowerOff => UnmovablePolicy::PowerOff,
                    Unmovable::Wait => UnmovablePolicy::Wait,
                },
            };
            if dry_run {
                let p: MaintenancePlan = ctx.client.post(&path, &req).await?;
                return ctx.print(&p, plan_table);
            }
            let mut m: Maintenance = ctx.client.post(&path, &req).await?;
            if !no_wait {
                let mut last = String::new();
                while m.state == MaintenanceState::Evacuating {
                    let line = progress(&m);
                    if line != last {
                        eprintln!("{line}");
                        last = line;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    m = ctx.client.get(&path).await?;
                }
            }
            ctx.print(&m, progress)?;
            if matches!(
                m.state,
                MaintenanceState::Failed | MaintenanceState::Cancelled
            ) {
                anyhow::bail!("the host did not enter maintenance: {}", progress(&m));
            }
            Ok(())
        }
        MaintenanceCmd::Show => {
            let m: Maintenance = ctx.client.get(&path).await?;
            ctx.print(&m, |m| format!("{}\n{}", progress(m), plan_table(&m.plan)))
        }
        MaintenanceCmd::Cancel => {
            let m: Maintenance = ctx
                .client
                .post(&format!("{path}/cancel"), &serde_json::json!({}))
                .await?;
            ctx.print(&m, |m| format!("cancelling: {}", progress(m)))
        }
        MaintenanceCmd::Exit { move_back } => {
            let e: MaintenanceExit = ctx
                .client
                .delete_json(&format!("{path}?move_back={move_back}"))
                .await?;
            ctx.print(&e, |e| {
                let mut out = format!("host {} is {}", e.host.name, e.host.state.as_str());
                if move_back {
                    out.push_str(&format!("; {} VM(s) moving back", e.moved_back.len()));
                    for r in &e.not_moved_back {
                        out.push_str(&format!("\n  not moved back: {} [{}]", r.detail, r.code));
                    }
                }
                out
            })
        }
    }
}
