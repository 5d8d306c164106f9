//! `ferryctl tasks [list [--state S] [--kind K] [--vm VM] | show ID]`.

use clap::Subcommand;
use ferry_api::task::Task;
use ferry_api::Page;

use super::{urlencode, when, Ctx};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// The newest tasks.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only tasks in this state.
        #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
        state: Option<String>,
        /// Only tasks of this kind (e.g. vm.power_on).
        #[arg(long)]
        kind: Option<String>,
        /// Only tasks acting on this VM (name or id).
        #[arg(long)]
        vm: Option<String>,
    },
    Show {
        id: uuid::Uuid,
    },
}

pub async fn run(ctx: &Ctx, cmd: Option<TaskCmd>) -> anyhow::Result<()> {
    let all = TaskCmd::List {
        limit: 50,
        state: None,
        kind: None,
        vm: None,
    };
    match cmd.unwrap_or(all) {
        TaskCmd::List {
            limit,
            state,
            kind,
            vm,
        } => {
            let mut path = format!("/tasks?limit={limit}");
            if let Some(s) = state {
                path.push_str(&format!("&state={s}"));
            }
            if let Some(k) = kind {
                path.push_str(&format!("&kind={}", urlencode(&k)));
            }
            if let Some(v) = vm {
                path.push_str(&format!("&target_id={}", ctx.resolve("vms", &v).await?));
            }
            let page: Page<Task> = ctx.client.get(&path).await?;
            ctx.print(&page.items, |items| {
                let mut t = Table::new(&[
                    "ID", "KIND", "STATE", "PROGRESS", "TARGET", "CREATED", "ERROR",
                ]);
                for k in items {
                    t.row(vec![
                        k.id.to_string(),
                        k.kind.clone(),
                        format!("{:?}", k.state).to_lowercase(),
                        format!("{:.0}%", k.progress_pct),
                        k.target
                            .as_ref()
                            .map(|t| format!("{} {}", t.kind, t.id))
                            .unwrap_or_else(|| "-".into()),
                        when(Some(k.created_at)),
                        k.error.clone().unwrap_or_default(),
                    ]);
                }
                t.render()
            })
        }
        TaskCmd::Show { id } => {
            let k: Task = ctx.client.get(&format!("/tasks/{id}")).await?;
            ctx.print(&k, |k| serde_json::to_string_pretty(k).unwrap_or_default())
        }
    }
}
