//! `ferryctl tasks [list | show ID]`.

use clap::Subcommand;
use ferry_api::task::Task;
use ferry_api::Page;

use super::{when, Ctx};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// The newest tasks.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    Show {
        id: uuid::Uuid,
    },
}

pub async fn run(ctx: &Ctx, cmd: Option<TaskCmd>) -> anyhow::Result<()> {
    match cmd.unwrap_or(TaskCmd::List { limit: 50 }) {
        TaskCmd::List { limit } => {
            let page: Page<Task> = ctx.client.get(&format!("/tasks?limit={limit}")).await?;
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
