//! `ferryctl tokens [list | create NAME --role R | delete ID]` (admin only).

use clap::Subcommand;
use ferry_api::token::{Role, Token, TokenCreate, TokenCreated};

use super::{when, Ctx};
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    List,
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    Delete {
        id: uuid::Uuid,
    },
}

pub async fn run(ctx: &Ctx, cmd: Option<TokenCmd>) -> anyhow::Result<()> {
    match cmd.unwrap_or(TokenCmd::List) {
        TokenCmd::List => {
            let items: Vec<Token> = ctx.list_all("/tokens").await?;
            ctx.print(&items, |items| {
                let mut t = Table::new(&["ID", "NAME", "ROLE", "CREATED", "LAST USED"]);
                for k in items {
                    t.row(vec![
                        k.id.to_string(),
                        k.name.clone(),
                        k.role.as_str().into(),
                        when(Some(k.created_at)),
                        when(k.last_used_at),
                    ]);
                }
                t.render()
            })
        }
        TokenCmd::Create { name, role } => {
            let role = Role::parse(&role).unwrap_or(Role::Viewer);
            let created: TokenCreated = ctx
                .client
                .post("/tokens", &TokenCreate { name, role })
                .await?;
            ctx.print(&created, |c| {
                format!(
                    "token {} ({}, role {})\nsecret (shown once): {}",
                    c.token.name,
                    c.token.id,
                    c.token.role.as_str(),
                    c.secret
                )
            })
        }
        TokenCmd::Delete { id } => {
            ctx.client.delete(&format!("/tokens/{id}")).await?;
            if ctx.output == crate::Output::Table {
                println!("deleted token {id}");
            }
            Ok(())
        }
    }
}
