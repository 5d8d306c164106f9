//! `ferryctl datastores`, `ferryctl networks`.

use ferry_api::datastore::Datastore;
use ferry_api::network::Network;

use super::Ctx;
use crate::table::Table;

pub async fn datastores(ctx: &Ctx) -> anyhow::Result<()> {
    let mut items: Vec<Datastore> = ctx.list_all("/datastores").await?;
    items.sort_by(|a, b| a.name.cmp(&b.name));
    ctx.print(&items, |items| {
        let mut t = Table::new(&["NAME", "KIND", "FREE", "CAPACITY", "HOSTS", "ID"]);
        for d in items {
            t.row(vec![
                d.name.clone(),
                format!("{:?}", d.kind).to_lowercase(),
                format!("{} GiB", d.free_bytes >> 30),
                format!("{} GiB", d.capacity_bytes >> 30),
                d.host_ids.len().to_string(),
                d.id.to_string(),
            ]);
        }
        t.render()
    })
}

pub async fn networks(ctx: &Ctx) -> anyhow::Result<()> {
    let mut items: Vec<Network> = ctx.list_all("/networks").await?;
    items.sort_by(|a, b| a.name.cmp(&b.name));
    ctx.print(&items, |items| {
        let mut t = Table::new(&["NAME", "HOSTS", "ID"]);
        for n in items {
            t.row(vec![
                n.name.clone(),
                n.host_ids.len().to_string(),
                n.id.to_string(),
            ]);
        }
        t.render()
    })
}
