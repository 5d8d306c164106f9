//! One module per resource; `run` dispatches.

pub mod audit;
pub mod clusters;
pub mod drs;
pub mod events;
pub mod hosts;
pub mod inventory;
pub mod maintenance;
pub mod migrations;
pub mod rules;
pub mod schedules;
pub mod tasks;
pub mod tokens;
pub mod vms;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::{Cli, Command, Output};

pub struct Ctx {
    pub client: Client,
    pub output: Output,
}

impl Ctx {
    /// Prints `value` as JSON, or as the table `table` makes of it.
    pub fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Table => println!("{}", table(value)),
        }
        Ok(())
    }

    /// Every item of a paginated list.
    pub async fn list_all<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Vec<T>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page: ferry_api::Page<T> = self.client.get(&url).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(items),
            }
        }
    }

    /// Resolves a name or id of a resource under `collection` (e.g. `vms`) to its id.
    pub async fn resolve(&self, collection: &str, name_or_id: &str) -> anyhow::Result<uuid::Uuid> {
        if let Ok(id) = name_or_id.parse::<uuid::Uuid>() {
            return Ok(id);
        }
        #[derive(serde::Deserialize)]
        struct Item {
            id: uuid::Uuid,
        }
        let page: ferry_api::Page<Item> = self
            .client
            .get(&format!("/{collection}?name={}", urlencode(name_or_id)))
            .await?;
        page.items.first().map(|i| i.id).with_context(|| {
            format!(
                "no {} named {name_or_id:?}",
                collection.trim_end_matches('s')
            )
        })
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Short form of an optional time for tables.
pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("read token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let ca_pem = match &cli.ca_cert {
        Some(f) => {
            Some(std::fs::read(f).with_context(|| format!("read CA certificate {}", f.display()))?)
        }
        None => {
            let f = cli.data_dir.join("ca.pem");
            match std::fs::read(&f) {
                Ok(pem) => Some(pem),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("read {}", f.display())))
                }
            }
        }
    };
    let ctx = Ctx {
        client: Client::new(&cli.url, token, ca_pem.as_deref())?,
        output: cli.output,
    };
    match cli.command {
        Command::Hosts { cmd } => hosts::run(&ctx, cmd).await,
        Command::Vms { cmd } => vms::run(&ctx, cmd).await,
        Command::Clusters { cmd } => clusters::run(&ctx, cmd).await,
        Command::Drs { cmd } => drs::run(&ctx, cmd).await,
        Command::Rule { cmd } => rules::run(&ctx, cmd).await,
        Command::Schedule { cmd } => schedules::run(&ctx, cmd).await,
        Command::Datastores => inventory::datastores(&ctx).await,
        Command::Networks => inventory::networks(&ctx).await,
        Command::Tasks { cmd } => tasks::run(&ctx, cmd).await,
        Command::Events(args) => events::run(&ctx, args).await,
        Command::Audit(args) => audit::run(&ctx, args).await,
        Command::Tokens { cmd } => tokens::run(&ctx, cmd).await,
        Command::Migrations { cmd } => migrations::run(&ctx, cmd).await,
        Command::Health => {
            let h: ferry_api::Health = ctx.client.get("/health").await?;
            ctx.print(&h, |h| format!("{} (ferry {})", h.status, h.version))
        }
        Command::Whoami => {
            let w: ferry_api::token::Whoami = ctx.client.get("/whoami").await?;
            ctx.print(&w, |w| {
                format!("{} ({}), token {}", w.name, w.role.as_str(), w.token_id)
            })
        }
    }
}
