//! `ferryctl events [--since N] [--kind K] [--follow]`.

use clap::Args;
use ferry_api::event::Event;
use ferry_api::Page;
use futures::StreamExt;

use super::{urlencode, Ctx};
use crate::Output;

#[derive(Debug, Args)]
pub struct EventArgs {
    /// Keep streaming new events as they happen.
    #[arg(short, long)]
    pub follow: bool,
    /// Only events after this sequence number.
    #[arg(long)]
    pub since: Option<i64>,
    /// Only events whose kind starts with this (e.g. `host.`).
    #[arg(long)]
    pub kind: Option<String>,
}

fn line(e: &Event) -> String {
    format!(
        "{:>6}  {}  {:<8}  {:<18}  {}",
        e.seq,
        e.at.format("%H:%M:%S%.3f"),
        format!("{:?}", e.severity).to_lowercase(),
        e.kind,
        e.message
    )
}

fn emit(ctx: &Ctx, e: &Event) {
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string(e).unwrap_or_default()),
        Output::Table => println!("{}", line(e)),
    }
}

pub async fn run(ctx: &Ctx, a: EventArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(s) = a.since {
        query.push(format!("since={s}"));
    }
    if let Some(k) = &a.kind {
        query.push(format!("kind={}", urlencode(k)));
    }
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    if !a.follow {
        let sep = if q.is_empty() { "?" } else { "&" };
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("/events{q}{sep}limit=1000&cursor={c}"),
                None => format!("/events{q}{sep}limit=1000"),
            };
            let page: Page<Event> = ctx.client.get(&url).await?;
            for e in &page.items {
                emit(ctx, e);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }
    let resp = ctx.client.stream(&format!("/events/stream{q}")).await?;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for l in frame.lines() {
                if let Some(data) = l.strip_prefix("data:") {
                    if let Ok(e) = serde_json::from_str::<Event>(data.trim()) {
                        emit(ctx, &e);
                    }
                }
            }
        }
    }
    anyhow::bail!("the event stream ended (control plane stopped?)")
}
