//! `ferryctl vms [list | show VM | create NAME ... | delete VM]`.

use clap::{Args, Subcommand};
use ferry_api::task::{Task, TaskState};
use ferry_api::vm::{Boot, DiskSpec, NicSpec, Vm, VmCreate};
use ferry_api::{ClusterId, DatastoreId, HostId, NetworkId};

use super::migrations as commands_migrate;
use super::{urlencode, when, Ctx};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// All VMs (optionally of one host).
    List {
        #[arg(long)]
        host: Option<String>,
        /// Only VMs in this power state.
        #[arg(long, value_parser = ["running", "stopped", "paused", "migrating"])]
        state: Option<String>,
        /// Only VMs whose name contains this (any case).
        #[arg(long)]
        search: Option<String>,
        /// Order: name (default), memory_mib or created_at; a leading - reverses.
        #[arg(long, default_value = "name", value_parser = ["name", "-name", "memory_mib", "-memory_mib", "created_at", "-created_at"], allow_hyphen_values = true)]
        sort: String,
    },
    /// One VM in full (by name or id).
    Show { vm: String },
    /// Define a VM in the inventory.
    Create(Box<CreateArgs>),
    /// Remove a stopped VM from the inventory (and its disks from its host).
    Delete { vm: String },
    /// Power operation, run as a task; waits for it unless --no-wait.
    Power {
        vm: String,
        #[arg(value_parser = ["on", "off", "shutdown", "reset", "pause", "resume"])]
        action: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Live-migrate the VM (progress bar, then a summary).
    Migrate(commands_migrate::MigrateArgs),
    /// The tail of the VM's serial console.
    Console {
        vm: String,
        #[arg(long, default_value_t = 65536)]
        bytes: u32,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    #[arg(long = "memory-mib", default_value_t = 256)]
    pub memory_mib: u64,
    /// Host (name or id); default: none yet (placement decides at power-on).
    #[arg(long)]
    pub host: Option<String>,
    /// Cluster (name or id).
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long = "cpu-model")]
    pub cpu_model: Option<String>,
    #[arg(long = "machine-type")]
    pub machine_type: Option<String>,
    /// A disk: DATASTORE:SIZE_MIB (datastore name or id; repeatable).
    #[arg(long = "disk")]
    pub disks: Vec<String>,
    /// A NIC on a network (name or id; repeatable).
    #[arg(long = "nic")]
    pub nics: Vec<String>,
    /// Boot this kernel (path on the host).
    #[arg(long)]
    pub kernel: Option<String>,
    #[arg(long)]
    pub initrd: Option<String>,
    #[arg(long)]
    pub cmdline: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: Option<VmCmd>) -> anyhow::Result<()> {
    let all = VmCmd::List {
        host: None,
        state: None,
        search: None,
        sort: "name".into(),
    };
    match cmd.unwrap_or(all) {
        VmCmd::List {
            host,
            state,
            search,
            sort,
        } => {
            let mut path = format!("/vms?sort={sort}");
            if let Some(h) = host {
                path.push_str(&format!("&host_id={}", ctx.resolve("hosts", &h).await?));
            }
            if let Some(s) = state {
                path.push_str(&format!("&power_state={s}"));
            }
            if let Some(q) = search {
                path.push_str(&format!("&q={}", urlencode(&q)));
            }
            // In the server's order (it pages in it).
            let vms: Vec<Vm> = ctx.list_all(&path).await?;
            ctx.print(&vms, |vms| {
                let mut t = Table::new(&[
                    "NAME",
                    "POWER",
                    "HOST",
                    "VCPUS",
                    "MEMORY",
                    "CPU MODEL",
                    "ID",
                ]);
                for v in vms {
                    t.row(vec![
                        v.name.clone(),
                        v.power_state.as_str().into(),
                        v.host_id
                            .map(|h| h.to_string())
                            .unwrap_or_else(|| "-".into()),
                        v.vcpus.to_string(),
                        format!("{} MiB", v.memory_mib),
                        v.cpu_model.clone(),
                        v.id.to_string(),
                    ]);
                }
                t.render()
            })
        }
        VmCmd::Show { vm } => {
            let id = ctx.resolve("vms", &vm).await?;
            let v: Vm = ctx.client.get(&format!("/vms/{id}")).await?;
            ctx.print(&v, show)
        }
        VmCmd::Create(a) => {
            let a = *a;
            let mut disks = Vec::new();
            for d in &a.disks {
                let (ds, size) = d
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--disk {d:?}: expected DATASTORE:SIZE_MIB"))?;
                let size: u64 = size
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--disk {d:?}: size is not a number"))?;
                disks.push(DiskSpec {
                    datastore_id: DatastoreId(ctx.resolve("datastores", ds).await?),
                    size_bytes: size * 1024 * 1024,
                    path: None,
                });
            }
            let mut nics = Vec::new();
            for n in &a.nics {
                nics.push(NicSpec {
                    network_id: NetworkId(ctx.resolve("networks", n).await?),
                });
            }
            let boot = a.kernel.map(|kernel| Boot::Kernel {
                kernel,
                initrd: a.initrd,
                cmdline: a.cmdline,
            });
            let req = VmCreate {
                name: a.name,
                cluster_id: match &a.cluster {
                    Some(c) => Some(ClusterId(ctx.resolve("clusters", c).await?)),
                    None => None,
                },
                host_id: match &a.host {
                    Some(h) => Some(HostId(ctx.resolve("hosts", h).await?)),
                    None => None,
                },
                vcpus: a.vcpus,
                memory_mib: a.memory_mib,
                cpu_model: a.cpu_model,
                machine_type: a.machine_type,
                disks,
                nics,
                boot,
                migration_policy: None,
            };
            let v: Vm = ctx.client.post("/vms", &req).await?;
            ctx.print(&v, show)
        }
        VmCmd::Power {
            vm,
            action,
            no_wait,
        } => {
            let id = ctx.resolve("vms", &vm).await?;
            let task: Task = ctx
                .client
                .post(
                    &format!("/vms/{id}/power"),
                    &serde_json::json!({"action": action}),
                )
                .await?;
            let task = if no_wait {
                task
            } else {
                wait_task(ctx, task).await?
            };
            ctx.print(&task, |t| match t.state {
                TaskState::Succeeded => format!("VM {vm}: {action} done"),
                TaskState::Failed => format!(
                    "VM {vm}: {action} failed: {}",
                    t.error.clone().unwrap_or_default()
                ),
                s => format!("VM {vm}: {action} {:?} (task {})", s, t.id).to_lowercase(),
            })?;
            if task.state == TaskState::Failed {
                anyhow::bail!("power {action} failed");
            }
            Ok(())
        }
        VmCmd::Migrate(a) => super::migrations::migrate(ctx, a).await,
        VmCmd::Console { vm, bytes } => {
            let id = ctx.resolve("vms", &vm).await?;
            let text = ctx
                .client
                .get_text(&format!("/vms/{id}/console?bytes={bytes}"))
                .await?;
            print!("{text}");
            Ok(())
        }
        VmCmd::Delete { vm } => {
            let id = ctx.resolve("vms", &vm).await?;
            ctx.client.delete(&format!("/vms/{id}")).await?;
            if ctx.output == crate::Output::Table {
                println!("deleted VM {vm}");
            }
            Ok(())
        }
    }
}

fn show(v: &Vm) -> String {
    let mut lines = vec![
        format!("name:          {}", v.name),
        format!("id:            {}", v.id),
        format!("power:         {}", v.power_state.as_str()),
        format!(
            "host:          {}",
            v.host_id
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        format!("cluster:       {}", v.cluster_id),
        format!("vcpus:         {}", v.vcpus),
        format!("memory:        {} MiB", v.memory_mib),
        format!("cpu model:     {}", v.cpu_model),
        format!("machine type:  {}", v.machine_type),
    ];
    for (i, d) in v.disks.iter().enumerate() {
        lines.push(format!(
            "disk {i}:        {} ({} MiB) on {}",
            d.path,
            d.size_bytes >> 20,
            d.datastore_id
        ));
    }
    for (i, n) in v.nics.iter().enumerate() {
        lines.push(format!("nic {i}:         {} on {}", n.mac, n.network_id));
    }
    let p = &v.migration_policy;
    lines.push(
        format!(
            "migration:     mode {:?}, max downtime {} ms, throttle {}",
            p.mode,
            p.max_downtime_ms,
            if p.allow_throttle { "allowed" } else { "off" }
        )
        .to_lowercase(),
    );
    lines.push(format!("created:       {}", when(Some(v.created_at))));
    lines.join("\n")
}

/// Polls a task until it finishes (or 10 minutes pass).
async fn wait_task(ctx: &Ctx, task: Task) -> anyhow::Result<Task> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut t = task;
    while matches!(t.state, TaskState::Queued | TaskState::Running)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        t = ctx.client.get(&format!("/tasks/{}", t.id)).await?;
    }
    Ok(t)
}
