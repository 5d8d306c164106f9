//! `ferry-echo-client`: what a user of a guest feels during a migration. Keeps one
//! TCP connection to the guest's echo port, sends a numbered line every
//! `--interval-ms`, checks every line comes back in order, and prints (and writes
//! as JSON with `--out`) messages sent and received, losses, duplicates, whether
//! the connection held, and the longest gap between answers. Stops after
//! `--seconds` or on SIGINT/SIGTERM.

use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    /// The guest's echo address, e.g. 10.76.0.101:7.
    addr: String,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    #[arg(long, default_value_t = 3600)]
    seconds: u64,
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stream = tokio::net::TcpStream::connect(&args.addr).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    let (mut sent, mut received, mut lost, mut duplicated) = (0u64, 0u64, 0u64, 0u64);
    let mut last_answer = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut held = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = tick.tick(), if !stopping => {
                if Instant::now() > deadline {
                    stopping = true;
                } else if w.write_all(format!("{sent}\n").as_bytes()).await.is_err() {
                    held = false;
                    break;
                } else {
                    sent += 1;
                }
            }
            line = lines.next_line() => {
                match line {
                    Ok(Some(l)) => {
                        longest_gap = longest_gap.max(last_answer.elapsed());
                        last_answer = Instant::now();
                        match l.trim().parse::<u64>() {
                            Ok(n) if n == received => received += 1,
                            Ok(n) if n < received => duplicated += 1,
                            Ok(n) => { lost += n - received; received = n + 1; }
                            Err(_) => {}
                        }
                        if stopping && received >= sent {
                            break;
                        }
                    }
                    _ => { held = false; break; }
                }
            }
            _ = tokio::signal::ctrl_c(), if !stopping => stopping = true,
            _ = term.recv(), if !stopping => stopping = true,
            _ = tokio::time::sleep(Duration::from_secs(5)), if stopping => break,
        }
    }
    let summary = serde_json::json!({
        "sent": sent, "received": received, "lost": lost, "duplicated": duplicated,
        "connection_held": held, "longest_gap_ms": longest_gap.as_secs_f64() * 1000.0,
    });
    println!(
        "echo client: {sent} sent, {received} answered in order, {lost} lost, {duplicated} duplicated, connection {}, longest gap {:.0} ms",
        if held { "held" } else { "DROPPED" },
        longest_gap.as_secs_f64() * 1000.0
    );
    if let Some(out) = args.out {
        std::fs::write(out, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}
