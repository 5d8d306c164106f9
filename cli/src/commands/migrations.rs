//! `ferryctl vm migrate VM [--to HOST] [--to-datastore DS [--storage-only]]` with a
//! live progress bar and a summary, and
//! `ferryctl migrations [list | show ID | cancel ID]`.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use ferry_api::migration::{Migration, MigrationState};
use ferry_api::Page;

use super::{when, Ctx};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    pub vm: String,
    /// Destination host (name or id); default: placement picks one.
    #[arg(long)]
    pub to: Option<String>,
    /// Copy the disks to this datastore of the destination (name or id); without
    /// it, disks move only when the destination lacks their datastore.
    #[arg(long = "to-datastore")]
    pub to_datastore: Option<String>,
    /// Move only the disks, to `--to-datastore` on the VM's own host (a
    /// storage-only move: the VM keeps running where it is).
    #[arg(
        long = "storage-only",
        requires = "to_datastore",
        conflicts_with = "to"
    )]
    pub storage_only: bool,
    #[arg(long = "max-downtime-ms")]
    pub max_downtime_ms: Option<u32>,
    #[arg(long = "max-bandwidth-mbps")]
    pub max_bandwidth_mbps: Option<u32>,
    /// Only run the compatibility checks.
    #[arg(long)]
    pub check: bool,
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum MigrationCmd {
    List,
    Show {
        id: uuid::Uuid,
    },
    /// Cancel before switchover: the VM keeps running on its source.
    Cancel {
        id: uuid::Uuid,
    },
}

fn mib(b: u64) -> u64 {
    b >> 20
}

fn summary(m: &Migration) -> String {
    match (&m.state, &m.result) {
        (MigrationState::Completed, Some(r)) => format!(
            "migrated in {:.2} s: downtime {} ms, {} MiB sent in {} passes, strategy {}{}",
            r.total_ms as f64 / 1000.0,
            r.downtime_ms,
            mib(r.transferred_bytes),
            r.iterations,
            r.strategy,
            if r.relay_frames > 0 {
                format!(", {} frames held by the relay", r.relay_frames)
            } else {
                String::new()
            }
        ),
        (s, _) => format!(
            "migration {}{}",
            s.as_str(),
            m.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}

pub async fn migrate(ctx: &Ctx, a: MigrateArgs) -> anyhow::Result<()> {
    let id = ctx.resolve("vms", &a.vm).await?;
    let mut body = serde_json::json!({});
    if let Some(to) = &a.to {
        body["destination_host_id"] = serde_json::json!(ctx.resolve("hosts", to).await?);
    }
    if a.storage_only {
        let vm: serde_json::Value = ctx.client.get(&format!("/vms/{id}")).await?;
        body["destination_host_id"] = vm["host_id"].clone();
    }
    if let Some(ds) = &a.to_datastore {
        body["destination_datastore_id"] = serde_json::json!(ctx.resolve("datastores", ds).await?);
    }
    if a.max_downtime_ms.is_some() || a.max_bandwidth_mbps.is_some() {
        let vm: serde_json::Value = ctx.client.get(&format!("/vms/{id}")).await?;
        let mut policy = vm["migration_policy"].clone();
        if let Some(d) = a.max_downtime_ms {
            policy["max_downtime_ms"] = d.into();
        }
        if let Some(b) = a.max_bandwidth_mbps {
            policy["max_bandwidth_mbps"] = b.into();
        }
        body["policy"] = policy;
    }
    if a.check {
        let r: ferry_api::migration::CheckResult = ctx
            .client
            .post(&format!("/vms/{id}/migrate/check"), &body)
            .await?;
        return ctx.print(&r, |r| {
            let mut t = Table::new(&["CHECK", "RESULT", "DETAIL"]);
            for c in &r.checks {
                t.row(vec![
                    c.name.clone(),
                    if c.passed {
                        "ok".into()
                    } else {
                        c.code.clone()
                    },
                    c.detail.clone(),
                ]);
            }
            format!(
                "{}\n{}",
                t.render(),
                if r.compatible {
                    "compatible"
                } else {
                    "NOT compatible"
                }
            )
        });
    }
    let mut m: Migration = ctx
        .client
        .post(&format!("/vms/{id}/migrate"), &body)
        .await?;
    if a.no_wait {
        return ctx.print(&m, |m| format!("migration {} {}", m.id, m.state.as_str()));
    }
    let tty = std::io::stderr().is_terminal() && ctx.output == crate::Output::Table;
    let mut decisions = Decisions::default();
    while !m.state.is_final() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        m = ctx.client.get(&format!("/migrations/{}", m.id)).await?;
        for line in decisions.new_for(ctx, &m).await {
            if tty {
                eprint!("\r\x1b[K");
            }
            eprintln!("{line}");
        }
        if tty {
            let p = &m.progress;
            let filled = (p.percent / 5.0).round() as usize;
            eprint!(
                "\r[{}{}] {:>5.1}%  {:<14} pass {:<3} {:>5}/{} MiB  dirty {:>4} MiB/s  {:>5} MiB/s  eta {:.1} s   ",
                "#".repeat(filled.min(20)),
                ".".repeat(20 - filled.min(20)),
                p.percent,
                m.state.as_str(),
                p.iteration,
                mib(p.total_bytes.saturating_sub(p.remaining_bytes)),
                mib(p.total_bytes),
                mib(p.dirty_rate_bps),
                mib(p.bandwidth_bps),
                p.eta_ms as f64 / 1000.0
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprintln!();
    }
    ctx.print(&m, summary)?;
    if m.state != MigrationState::Completed {
        anyhow::bail!("the migration did not complete");
    }
    Ok(())
}

/// The strategy decisions (`migration.strategy` events) of a migration as they
/// come: a raised downtime target, throttling, the switch to post-copy.
#[derive(Default)]
struct Decisions {
    since: i64,
}

impl Decisions {
    async fn new_for(&mut self, ctx: &Ctx, m: &Migration) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let page: Page<ferry_api::event::Event> = match ctx
                .client
                .get(&format!(
                    "/events?kind=migration.strategy&since={}&limit=100",
                    self.since
                ))
                .await
            {
                Ok(p) => p,
                Err(_) => return out, // progress matters more than the notes
            };
            let n = page.items.len();
            for e in page.items {
                self.since = self.since.max(e.seq);
                if e.data["migration_id"] == m.id.to_string() {
                    out.push(e.message);
                }
            }
            if n < 100 {
                return out;
            }
        }
    }
}

pub async fn run(ctx: &Ctx, cmd: Option<MigrationCmd>) -> anyhow::Result<()> {
    match cmd.unwrap_or(MigrationCmd::List) {
        MigrationCmd::List => {
            let page: Page<Migration> = ctx.client.get("/migrations?limit=100").await?;
            ctx.print(&page.items, |items| {
                let mut t = Table::new(&["ID", "VM", "STATE", "PROGRESS", "DOWNTIME", "CREATED"]);
                for m in items {
                    t.row(vec![
                        m.id.to_string(),
                        m.vm_id.to_string(),
                        m.state.as_str().into(),
                        format!("{:.0}%", m.progress.percent),
                        m.result
                            .as_ref()
                            .map(|r| format!("{} ms", r.downtime_ms))
                            .unwrap_or_else(|| "-".into()),
                        when(Some(m.created_at)),
                    ]);
                }
                t.render()
            })
        }
        MigrationCmd::Show { id } => {
            let m: Migration = ctx.client.get(&format!("/migrations/{id}")).await?;
            ctx.print(&m, |m| {
                format!(
                    "{}\n{}",
                    serde_json::to_string_pretty(m).unwrap_or_default(),
                    summary(m)
                )
            })
        }
        MigrationCmd::Cancel { id } => {
            let m: Migration = ctx
                .client
                .post(&format!("/migrations/{id}/cancel"), &serde_json::json!({}))
                .await?;
            ctx.print(&m, |m| {
                format!(
                    "cancel requested for migration {} ({})",
                    m.id,
                    m.state.as_str()
                )
            })
        }
    }
}
