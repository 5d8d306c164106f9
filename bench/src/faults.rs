//! `ferry-bench-faults`: the randomized fault campaign (`ferry_tests::campaign`)
//! for as many rounds as asked, on three lab hosts with real guests. Prints each
//! round (its seed and number replay it: the plan is a function of them), then
//! the rounds run, the faults injected by kind, the violations and the longest
//! recovery; writes them as JSON. Exits 1 when any invariant was violated.
//!
//!     sudo target/release/ferry-bench-faults --seed 7 --rounds 40

use std::collections::BTreeMap;

use clap::Parser;
use ferry_tests::campaign::{plan, Campaign, Fault, RoundReport};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The campaign's seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Guests on the three hosts.
    #[arg(long, default_value_t = 2)]
    guests: u8,
    /// Run only round N of the seed's plan (after a failing campaign: the
    /// decisions are the same; the lab starts fresh).
    #[arg(long)]
    only_round: Option<u32>,
    /// Print the plan (each round's operation, fault and timings) and stop.
    #[arg(long)]
    plan_only: bool,
    #[arg(long, default_value = "bench/results/faults.json")]
    out: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let mut rounds = plan(seed, args.rounds.max(args.only_round.map_or(0, |r| r + 1)));
    if let Some(r) = args.only_round {
        rounds.retain(|p| p.round == r);
    }
    if args.plan_only {
        for p in &rounds {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    println!(
        "fault campaign: seed {seed}, {} rounds, {} guests",
        rounds.len(),
        args.guests
    );
    let mut campaign = Campaign::start(args.guests).await;
    let mut reports: Vec<RoundReport> = Vec::new();
    // Interrupted, the lab is still taken down (the campaign drops on return).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    for p in &rounds {
        let r = tokio::select! {
            r = campaign.round(p) => r,
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); break }
            _ = term.recv() => { eprintln!("terminated"); break }
        };
        println!(
            "round {:>3}  {:<22} {:<20} {} → {}  {:<40} op {:>6} ms{} recovery {:>6} ms  {}",
            r.round,
            format!("{:?}", r.fault),
            format!("{:?}", r.op),
            r.from,
            r.to,
            match r.fault {
                Fault::Loss => format!("{} ({} packets dropped)", r.outcome, r.injected),
                Fault::Delay => format!("{} ({} connections delayed)", r.outcome, r.injected),
                _ => r.outcome.clone(),
            },
            r.op_ms,
            if r.struck_in_flight {
                " (struck in flight)"
            } else {
                "                   "
            },
            r.recovery_ms,
            if r.violations.is_empty() {
                "ok".to_string()
            } else {
                format!("VIOLATED: {:?}", r.violations)
            }
        );
        reports.push(r);
    }
    let mut by_kind: BTreeMap<Fault, u32> = BTreeMap::new();
    for r in &reports {
        *by_kind.entry(r.fault).or_default() += 1;
    }
    let violations: usize = reports.iter().map(|r| r.violations.len()).sum();
    let in_flight = reports.iter().filter(|r| r.struck_in_flight).count();
    let longest = reports.iter().max_by_key(|r| r.recovery_ms);
    println!(
        "rounds: {}  faults that struck an operation in flight: {in_flight}  violations: {violations}",
        reports.len()
    );
    for (k, n) in &by_kind {
        println!("  {k:?}: {n}");
    }
    if let Some(l) = longest {
        println!(
            "longest recovery: {} ms (round {}, {:?} during {:?})",
            l.recovery_ms, l.round, l.fault, l.op
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json!({
            "seed": seed,
            "rounds": reports.len(),
            "guests": args.guests,
            "faults_by_kind": by_kind.iter().map(|(k, n)| (serde_json::to_value(k).unwrap_or_default().as_str().unwrap_or_default().to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "struck_in_flight": in_flight,
            "violations": violations,
            "longest_recovery_ms": longest.map(|l| l.recovery_ms),
            "round_reports": reports,
        }))?,
    )?;
    println!("wrote {}", args.out.display());
    drop(campaign);
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}
