//! `ferryctl drs [show C | run C [--dry-run] | apply REC | dismiss REC | vm VM LEVEL]`:
//! a cluster's balance, its passes and recommendations, and a VM's own level.

use clap::Subcommand;
use ferry_api::drs::{DrsRun, DrsRunRequest, DrsStatus, Recommendation, VmDrsAutomation};
use ferry_api::migration::Migration;
use ferry_api::vm::{Vm, VmPatch};

use super::Ctx;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum DrsCmd {
    /// The cluster's imbalance now, its tolerance, the latest passes and the
    /// pending recommendations.
    Show { cluster: String },
    /// Run a balancing pass now; `--dry-run` only plans (records nothing).
    Run {
        cluster: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Start a recommended move.
    Apply { recommendation: uuid::Uuid },
    /// Drop a recommendation.
    Dismiss { recommendation: uuid::Uuid },
    /// A VM's own balancing level: disabled, manual, partially_automated,
    /// fully_automated, or `cluster` (the cluster's).
    Vm {
        vm: String,
        #[arg(value_parser = ["disabled", "manual", "partially_automated", "fully_automated", "cluster"])]
        level: String,
    },
}

fn recs_table(recs: &[Recommendation]) -> String {
    let mut t = Table::new(&["ID", "VM", "FROM", "TO", "GAIN", "COST", "STATE", "WHY"]);
    for r in recs {
        t.row(vec![
            r.id.to_string(),
            r.vm_id.to_string(),
            r.from_host_id.to_string(),
            r.to_host_id.to_string(),
            format!("{:.4}", r.gain),
            format!("{:.1} s", r.cost_s),
            r.state.as_str().into(),
            r.reason.clone(),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, cmd: DrsCmd) -> anyhow::Result<()> {
    match cmd {
        DrsCmd::Show { cluster } => {
            let id = ctx.resolve("clusters", &cluster).await?;
            let s: DrsStatus = ctx.client.get(&format!("/clusters/{id}/drs")).await?;
            ctx.print(&s, |s| {
                let tol = s
                    .tolerance
                    .map_or("none (threshold 1: mandatory moves only)".into(), |t| {
                        format!("{t:.4}")
                    });
                let mut out = format!(
                    "automation {}, threshold {}, every {} s\nimbalance {:.4} (cpu {:.4}, memory {:.4}); tolerance {tol}; above it for {} evaluation(s)\n{} hosts, {} running VMs\n\n",
                    s.settings.automation.as_str(),
                    s.settings.threshold,
                    s.settings.interval_s,
                    s.imbalance.combined,
                    s.imbalance.cpu,
                    s.imbalance.memory,
                    s.above_tolerance_rounds,
                    s.hosts,
                    s.vms
                );
                let mut t = Table::new(&["AT", "TRIGGER", "BEFORE", "AFTER", "MOVES", "STARTED"]);
                for p in s.history.iter().take(10) {
                    t.row(vec![
                        p.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        p.trigger.as_str().into(),
                        format!("{:.4}", p.before.combined),
                        format!("{:.4}", p.after.combined),
                        p.moves.to_string(),
                        p.applied.to_string(),
                    ]);
                }
                out.push_str(&t.render());
                out.push_str("\n\n");
                out.push_str(&recs_table(&s.recommendations));
                out
            })
        }
        DrsCmd::Run { cluster, dry_run } => {
            let id = ctx.resolve("clusters", &cluster).await?;
            let r: DrsRun = ctx
                .client
                .post(
                    &format!("/clusters/{id}/drs/run"),
                    &DrsRunRequest { dry_run },
                )
                .await?;
            ctx.print(&r, |r| {
                format!(
                    "{}imbalance {:.4} -> {:.4} with {} move(s); {} started\n{}",
                    if r.pass.dry_run { "dry run: " } else { "" },
                    r.pass.before.combined,
                    r.pass.after.combined,
                    r.pass.moves,
                    r.pass.applied,
                    recs_table(&r.recommendations)
                )
            })
        }
        DrsCmd::Apply { recommendation } => {
            let m: Migration = ctx
                .client
                .post(
                    &format!("/drs/recommendations/{recommendation}/apply"),
                    &serde_json::json!({}),
                )
                .await?;
            ctx.print(&m, |m| format!("migration {} started", m.id))
        }
        DrsCmd::Dismiss { recommendation } => {
            let r: Recommendation = ctx
                .client
                .post(
                    &format!("/drs/recommendations/{recommendation}/dismiss"),
                    &serde_json::json!({}),
                )
                .await?;
            ctx.print(&r, |r| {
                format!("recommendation {} {}", r.id, r.state.as_str())
            })
        }
        DrsCmd::Vm { vm, level } => {
            let id = ctx.resolve("vms", &vm).await?;
            let req = VmPatch {
                drs_automation: Some(VmDrsAutomation::parse(&level)),
            };
            let v: Vm = ctx.client.patch(&format!("/vms/{id}"), &req).await?;
            ctx.print(&v, |v| {
                format!(
                    "VM {}: balancing {}",
                    v.name,
                    v.drs_automation.map_or("as its cluster's", |l| l.as_str())
                )
            })
        }
    }
}
