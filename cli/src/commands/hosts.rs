//! `ferryctl hosts [list | show HOST]`.

use clap::Subcommand;
use ferry_api::host::Host;

use super::{when, Ctx};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// All hosts.
    List,
    /// One host in full (by name or id).
    Show { host: String },
    /// Maintenance mode: enter (evacuate; `--dry-run` shows the plan), show,
    /// cancel, exit.
    Maintenance {
        host: String,
        #[command(subcommand)]
        cmd: super::maintenance::MaintenanceCmd,
    },
}

pub async fn run(ctx: &Ctx, cmd: Option<HostCmd>) -> anyhow::Result<()> {
    match cmd.unwrap_or(HostCmd::List) {
        HostCmd::Maintenance { host, cmd } => super::maintenance::run(ctx, &host, cmd).await,
        HostCmd::List => {
            let mut hosts: Vec<Host> = ctx.list_all("/hosts").await?;
            hosts.sort_by(|a, b| a.name.cmp(&b.name));
            ctx.print(&hosts, |hosts| {
                let mut t = Table::new(&[
                    "NAME",
                    "STATE",
                    "ACCEL",
                    "CPU",
                    "MEMORY",
                    "VMS",
                    "LOAD",
                    "ADDRESS",
                    "LAST SEEN",
                ]);
                for h in hosts {
                    t.row(vec![
                        h.name.clone(),
                        h.state.as_str().into(),
                        h.accel.as_str().into(),
                        format!("{} cores", h.cpu.cores),
                        format!(
                            "{}/{} GiB free",
                            h.memory.free_mib / 1024,
                            h.memory.total_mib / 1024
                        ),
                        h.vm_count.to_string(),
                        format!("cpu {:.0}% mem {:.0}%", h.load.cpu_pct, h.load.mem_pct),
                        h.address.clone(),
                        when(h.last_seen_at),
                    ]);
                }
                t.render()
            })
        }
        HostCmd::Show { host } => {
            let id = ctx.resolve("hosts", &host).await?;
            let h: Host = ctx.client.get(&format!("/hosts/{id}")).await?;
            ctx.print(&h, |h| {
                [
                    format!("name:        {}", h.name),
                    format!("id:          {}", h.id),
                    format!("cluster:     {}", h.cluster_id),
                    format!("state:       {}", h.state.as_str()),
                    format!("address:     {}", h.address),
                    format!("accel:       {} ({})", h.accel.as_str(), h.accel_reason),
                    format!(
                        "cpu:         {} {} ({} cores)",
                        h.cpu.vendor, h.cpu.model, h.cpu.cores
                    ),
                    format!("cpu models:  {}", h.cpu.supported_models.join(" ")),
                    format!(
                        "memory:      {} MiB free of {} MiB",
                        h.memory.free_mib, h.memory.total_mib
                    ),
                    format!(
                        "load:        cpu {:.1}%  mem {:.1}%",
                        h.load.cpu_pct, h.load.mem_pct
                    ),
                    format!(
                        "datastores:  {}",
                        h.datastores
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    format!(
                        "networks:    {}",
                        h.networks
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    format!("vms:         {}", h.vm_count),
                    format!(
                        "versions:    agent {}, {}",
                        h.agent_version, h.hypervisor_version
                    ),
                    format!("last seen:   {}", when(h.last_seen_at)),
                ]
                .join("\n")
            })
        }
    }
}
