//! `ferryctl audit [--limit N] [--by TOKEN] [--vm VM | --target ID]
//! [--outcome O] [--route R]`: the audit trail (admin only), newest first.

use clap::Args;
use ferry_api::audit::AuditEntry;
use ferry_api::Page;

use super::{urlencode, when, Ctx};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only requests made with this token (name or id). (`--token` is the
    /// token ferryctl itself uses.)
    #[arg(long)]
    pub by: Option<String>,
    /// Only requests acting on this VM (name or id).
    #[arg(long, conflicts_with = "target")]
    pub vm: Option<String>,
    /// Only requests acting on this object (any id).
    #[arg(long)]
    pub target: Option<uuid::Uuid>,
    /// Only requests that ended so.
    #[arg(long, value_parser = ["succeeded", "refused", "failed"])]
    pub outcome: Option<String>,
    /// Only this route template, e.g. `/api/v1/vms/{id}/migrate`.
    #[arg(long)]
    pub route: Option<String>,
}

/// A token by id, or by name (the token list has no name filter).
async fn token_id(ctx: &Ctx, name_or_id: &str) -> anyhow::Result<uuid::Uuid> {
    if let Ok(id) = name_or_id.parse() {
        return Ok(id);
    }
    let page: Page<ferry_api::token::Token> = ctx.client.get("/tokens?limit=1000").await?;
    page.items
        .iter()
        .find(|t| t.name == name_or_id)
        .map(|t| t.id.0)
        .ok_or_else(|| anyhow::anyhow!("no token named {name_or_id:?}"))
}

pub async fn run(ctx: &Ctx, a: AuditArgs) -> anyhow::Result<()> {
    let mut path = format!("/audit?limit={}", a.limit);
    if let Some(t) = &a.by {
        path.push_str(&format!("&token_id={}", token_id(ctx, t).await?));
    }
    if let Some(v) = &a.vm {
        path.push_str(&format!("&target_id={}", ctx.resolve("vms", v).await?));
    }
    if let Some(t) = a.target {
        path.push_str(&format!("&target_id={t}"));
    }
    if let Some(o) = &a.outcome {
        path.push_str(&format!("&outcome={o}"));
    }
    if let Some(r) = &a.route {
        path.push_str(&format!("&route={}", urlencode(r)));
    }
    let page: Page<AuditEntry> = ctx.client.get(&path).await?;
    ctx.print(&page.items, |items| {
        let mut t = Table::new(&[
            "SEQ",
            "AT",
            "WHO",
            "ROLE",
            "OPERATION",
            "TARGETS",
            "OUTCOME",
            "CODE",
            "FROM",
        ]);
        for e in items {
            t.row(vec![
                e.seq.to_string(),
                when(Some(e.at)),
                e.actor
                    .as_ref()
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| "(no token)".into()),
                e.actor
                    .as_ref()
                    .map(|a| a.role.as_str().to_string())
                    .unwrap_or_else(|| "-".into()),
                e.operation.clone(),
                e.target_ids
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                format!("{} {}", e.outcome.as_str(), e.status),
                e.code.clone().unwrap_or_else(|| "-".into()),
                e.remote_addr.clone(),
            ]);
        }
        t.render()
    })
}
