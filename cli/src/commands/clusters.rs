//! `ferryctl clusters [list | show C | create NAME | update C]`.

use clap::{Args, Subcommand};
use ferry_api::cluster::{Cluster, ClusterCreate, ClusterPatch, DrsAutomation, DrsPatch};

use super::Ctx;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    List,
    Show {
        cluster: String,
    },
    Create {
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change a cluster's name, CPU baseline or DRS settings.
    Update {
        cluster: String,
        #[arg(long)]
        name: Option<String>,
        /// Remove the CPU baseline.
        #[arg(long, conflicts_with = "cpu_baseline")]
        clear_cpu_baseline: bool,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Debug, Args)]
pub struct Settings {
    #[arg(long = "cpu-baseline")]
    pub cpu_baseline: Option<String>,
    #[arg(long = "drs-automation", value_parser = ["manual", "partially_automated", "fully_automated"])]
    pub drs_automation: Option<String>,
    #[arg(long = "drs-threshold")]
    pub drs_threshold: Option<u8>,
    #[arg(long = "drs-interval-s")]
    pub drs_interval_s: Option<u32>,
}

impl Settings {
    fn drs(&self) -> Option<DrsPatch> {
        let automation = self
            .drs_automation
            .as_deref()
            .and_then(DrsAutomation::parse);
        if automation.is_none() && self.drs_threshold.is_none() && self.drs_interval_s.is_none() {
            return None;
        }
        Some(DrsPatch {
            automation,
            threshold: self.drs_threshold,
            interval_s: self.drs_interval_s,
        })
    }
}

pub async fn run(ctx: &Ctx, cmd: Option<ClusterCmd>) -> anyhow::Result<()> {
    match cmd.unwrap_or(ClusterCmd::List) {
        ClusterCmd::List => {
            let mut items: Vec<Cluster> = ctx.list_all("/clusters").await?;
            items.sort_by(|a, b| a.name.cmp(&b.name));
            ctx.print(&items, |items| {
                let mut t = Table::new(&["NAME", "HOSTS", "VMS", "CPU BASELINE", "DRS", "ID"]);
                for c in items {
                    t.row(vec![
                        c.name.clone(),
                        c.host_count.to_string(),
                        c.vm_count.to_string(),
                        c.cpu_baseline.clone().unwrap_or_else(|| "-".into()),
                        format!(
                            "{} (threshold {})",
                            c.drs.automation.as_str(),
                            c.drs.threshold
                        ),
                        c.id.to_string(),
                    ]);
                }
                t.render()
            })
        }
        ClusterCmd::Show { cluster } => {
            let id = ctx.resolve("clusters", &cluster).await?;
            let c: Cluster = ctx.client.get(&format!("/clusters/{id}")).await?;
            ctx.print(&c, show)
        }
        ClusterCmd::Create { name, settings } => {
            let req = ClusterCreate {
                name,
                cpu_baseline: settings.cpu_baseline.clone(),
                drs: settings.drs(),
            };
            let c: Cluster = ctx.client.post("/clusters", &req).await?;
            ctx.print(&c, show)
        }
        ClusterCmd::Update {
            cluster,
            name,
            clear_cpu_baseline,
            settings,
        } => {
            let id = ctx.resolve("clusters", &cluster).await?;
            let cpu_baseline = if clear_cpu_baseline {
                Some(None)
            } else {
                settings.cpu_baseline.clone().map(Some)
            };
            let req = ClusterPatch {
                name,
                cpu_baseline,
                drs: settings.drs(),
            };
            let c: Cluster = ctx.client.patch(&format!("/clusters/{id}"), &req).await?;
            ctx.print(&c, show)
        }
    }
}

fn show(c: &Cluster) -> String {
    [
        format!("name:          {}", c.name),
        format!("id:            {}", c.id),
        format!(
            "cpu baseline:  {}",
            c.cpu_baseline.as_deref().unwrap_or("-")
        ),
        format!(
            "drs:           {}, threshold {}, every {} s",
            c.drs.automation.as_str(),
            c.drs.threshold,
            c.drs.interval_s
        ),
        format!("hosts:         {}", c.host_count),
        format!("vms:           {}", c.vm_count),
    ]
    .join("\n")
}
