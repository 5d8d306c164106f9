//! `ferry-bench-evacuate`: maintenance mode on real guests. A lab host running
//! `--guests` guests (default 8) is evacuated to two others over the tc-shaped
//! 1 Gbit/s lab path (`tbf` on every host's fabric link, so the link and not the
//! two cores is the limit), while a client talks to each guest; side by side, in
//! the same run, the same number of guests of the same image are moved one at a
//! time with raw QEMU (`migrate` with its defaults, alternating destinations).
//!
//! For each it prints and records: the total time (Ferry: `POST
//! /hosts/{id}/maintenance` to the host in maintenance; raw: first `migrate` to the
//! last guest running on its destination, destination QEMUs' start included),
//! the bytes moved, the raw TCP throughput measured between the hosts in the same
//! run, and total ÷ (bytes ÷ throughput) — the target for Ferry is ≤ 1.2 —
//! with the clients' longest gap and messages lost.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_bench::lab::{measure_link, qemu_version, status, tcp_probe, tcp_sink, Echo, RawVm};
use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::vmtest::{boot_guest, shape};
use ferry_tests::wait_for;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Guests on the host to evacuate.
    #[arg(long, default_value_t = 8)]
    guests: u8,
    /// Each guest's memory, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    /// The `tbf` rate of every host's fabric link.
    #[arg(long, default_value = "1gbit")]
    rate: String,
    /// Pages each guest's memory verifier reads per 10 ms at most (the test
    /// image's default, 512, keeps eight TCG guests busy enough to make the two
    /// cores, not the link, the limit).
    #[arg(long, default_value_t = 16)]
    verify_pages: u64,
    /// Ferry's migration transport (`tls`, the default, or `tcp`).
    #[arg(long, default_value = "tls")]
    transport: String,
    /// Ferry's per-host migration budget (`0`: sized from the measured link).
    #[arg(long, default_value_t = 0)]
    budget: u32,
    /// Skip raw QEMU.
    #[arg(long)]
    no_raw: bool,
    #[arg(long, default_value = "bench/results/evacuate.json")]
    out: PathBuf,
    #[arg(long, hide = true)]
    tcp_sink: Option<String>,
    #[arg(long, hide = true)]
    tcp_probe: Option<String>,
}

const T: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct Run {
    who: &'static str,
    guests: u8,
    completed: u8,
    total_s: f64,
    bytes: u64,
    /// bytes ÷ the measured link, seconds.
    bound_s: f64,
    total_over_bound: f64,
    client_gap_ms_max: f64,
    client_lost: u64,
    connections_held: u8,
    /// Each move: seconds from the run's start to its start and end, and bytes.
    moves: Vec<MoveTimes>,
}

impl Run {
    /// A run's figures; the bound from `bytes` and the measured `link` (bytes/s),
    /// the clients' `(longest gap ms, lost, held)`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        who: &'static str,
        guests: u8,
        completed: u8,
        total_s: f64,
        bytes: u64,
        link: f64,
        (gap, lost, held): (f64, u64, u8),
        moves: Vec<MoveTimes>,
    ) -> Self {
        let bound_s = bytes as f64 / link;
        Run {
            who,
            guests,
            completed,
            total_s,
            bytes,
            bound_s,
            total_over_bound: total_s / bound_s,
            client_gap_ms_max: gap,
            client_lost: lost,
            connections_held: held,
            moves,
        }
    }
}

#[derive(Serialize)]
struct MoveTimes {
    start_s: f64,
    end_s: f64,
    bytes: u64,
    downtime_ms: u64,
}

/// Quiets the guest's verifier (see `--verify-pages`).
async fn quiet(ip: &str, pages: u64) {
    let _ = reqwest::Client::new()
        .post(format!("http://{ip}/dirty?mbps=0&verify_pages={pages}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
}

fn secs_between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_millis())
    };
    match (t(a), t(b)) {
        (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
        _ => f64::NAN,
    }
}

fn print_run(r: &Run) {
    println!(
        "{:<6} {:>2}/{:<2} {:>8.1} {:>9} {:>8.1} {:>7.2} {:>9.0} {:>5} {:>5}",
        r.who,
        r.completed,
        r.guests,
        r.total_s,
        r.bytes >> 20,
        r.bound_s,
        r.total_over_bound,
        r.client_gap_ms_max,
        r.client_lost,
        r.connections_held
    );
    let spans: Vec<String> = r
        .moves
        .iter()
        .map(|m| format!("{:.1}-{:.1}s/{}MiB", m.start_s, m.end_s, m.bytes >> 20))
        .collect();
    println!("       moves: {}", spans.join(" "));
}

async fn finish_clients(clients: Vec<Echo>) -> (f64, u64, u8) {
    let (mut gap, mut lost, mut held) = (0f64, 0u64, 0u8);
    for c in clients {
        let (g, l, h) = c.finish().await;
        gap = gap.max(g);
        lost += l;
        held += u8::from(h);
    }
    (gap, lost, held)
}

async fn ferry(env: &Env, args: &Args, hosts: &[String], link: f64) -> anyhow::Result<Run> {
    let api = env.api();
    let mut ids = Vec::new();
    let mut ips = Vec::new();
    for i in 0..args.guests {
        let ip = env.lab.guest_ip(10 + i);
        ids.push(boot_guest(env, &format!("evac{i}"), &hosts[0], args.memory_mib, &ip).await);
        quiet(&ip, args.verify_pages).await;
        ips.push(ip);
    }
    // As in a cluster that has been running: the links are measured (a check
    // measures one when nothing newer than ten minutes is known).
    for h in &hosts[1..] {
        let _ = api
            .post(
                &format!("/vms/{}/migrate/check", ids[0]),
                &json!({"destination_host_id": h}),
            )
            .await;
    }
    let mut clients = Vec::new();
    for ip in &ips {
        clients.push(Echo::start(ip).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let r = api
        .post(&format!("/hosts/{}/maintenance", hosts[0]), &json!({}))
        .await;
    anyhow::ensure!(r.status == 202, "maintenance refused: {r:?}");
    let started_at = chrono::Utc::now().to_rfc3339();
    let m = wait_for("the evacuation to end", T, || {
        let (api, h) = (api.clone(), hosts[0].clone());
        async move {
            let m = api.ok(&format!("/hosts/{h}/maintenance")).await;
            (m["state"] != "evacuating").then_some(m)
        }
    })
    .await;
    let total_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gap, lost, held) = finish_clients(clients).await;
    let mut bytes = 0u64;
    let mut completed = 0u8;
    let mut moves = Vec::new();
    let t0_at = json!(started_at);
    for mv in m["moves"].as_array().cloned().unwrap_or_default() {
        let Some(mid) = mv["migration_id"].as_str() else {
            continue;
        };
        let mig = api.ok(&format!("/migrations/{mid}")).await;
        let b = mig["result"]["transferred_bytes"].as_u64().unwrap_or(0);
        bytes += b;
        completed += u8::from(mig["state"] == "completed");
        moves.push(MoveTimes {
            start_s: secs_between(&t0_at, &mig["started_at"]),
            end_s: secs_between(&t0_at, &mig["finished_at"]),
            bytes: b,
            downtime_ms: mig["result"]["downtime_ms"].as_u64().unwrap_or(0),
        });
    }
    if m["state"] != "in_maintenance" {
        eprintln!("evacuation ended {}: {}", m["state"], m["error"]);
    }
    // Free the CPU for the raw run.
    for id in &ids {
        let _ = api
            .post(&format!("/vms/{id}/power"), &json!({"action": "off"}))
            .await;
    }
    for id in &ids {
        let _ = wait_for("the guest to stop", T, || {
            let (api, id) = (api.clone(), id.clone());
            async move {
                (api.ok(&format!("/vms/{id}")).await["power_state"] == "stopped").then_some(())
            }
        })
        .await;
    }
    Ok(Run::new(
        "ferry",
        args.guests,
        completed,
        total_s,
        bytes,
        link,
        (gap, lost, held),
        moves,
    ))
}

async fn raw(env: &Env, args: &Args, link: f64) -> anyhow::Result<Run> {
    let scratch = tempfile::tempdir()?;
    let mut vms = Vec::new();
    let mut ips = Vec::new();
    for i in 0..args.guests {
        let ip = env.lab.guest_ip(40 + i);
        let mac = format!("52:54:00:fd:00:{i:02x}");
        let vm = RawVm::start(
            env,
            0,
            &format!("e{i}"),
            args.memory_mib,
            &ip,
            &mac,
            None,
            scratch.path(),
            "",
        )
        .await?;
        vms.push((vm, ip, mac));
    }
    for (_, ip, _) in &vms {
        let ip = ip.clone();
        wait_for("the raw guest to serve /status", T, || {
            let ip = ip.clone();
            async move { status(&ip).await.map(|_| ()) }
        })
        .await;
        quiet(&ip, args.verify_pages).await;
        ips.push(ip);
    }
    let mut clients = Vec::new();
    for ip in &ips {
        clients.push(Echo::start(ip).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let (mut bytes, mut completed) = (0u64, 0u8);
    let mut moves = Vec::new();
    let mut landed = Vec::new();
    for (i, (src, ip, mac)) in vms.into_iter().enumerate() {
        let to = 1 + (i % 2) as u8;
        let uri = format!("tcp:{}:{}", env.lab.host_ip(to), 47200 + i);
        let start_s = t0.elapsed().as_secs_f64();
        let dst = RawVm::start(
            env,
            to,
            &format!("e{i}"),
            args.memory_mib,
            &ip,
            &mac,
            Some((uri.as_str(), 0)),
            scratch.path(),
            "",
        )
        .await?;
        let _ = src.qmp.execute("migrate", json!({"uri": uri})).await;
        let st = loop {
            let st = src
                .qmp
                .execute("query-migrate", json!({}))
                .await
                .unwrap_or(Value::Null);
            if matches!(
                st["status"].as_str(),
                Some("completed" | "failed" | "cancelled") | None
            ) || t0.elapsed() > T
            {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let b = st["ram"]["transferred"].as_u64().unwrap_or(0);
        bytes += b;
        moves.push(MoveTimes {
            start_s,
            end_s: t0.elapsed().as_secs_f64(),
            bytes: b,
            downtime_ms: st["downtime"].as_u64().unwrap_or(0),
        });
        if st["status"] == "completed" {
            completed += 1;
            src.stop();
            landed.push(dst);
        } else {
            eprintln!("raw move {i}: {st}");
            dst.stop();
            landed.push(src);
        }
    }
    let total_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gap, lost, held) = finish_clients(clients).await;
    for vm in landed {
        vm.stop();
    }
    Ok(Run::new(
        "qemu",
        args.guests,
        completed,
        total_s,
        bytes,
        link,
        (gap, lost, held),
        moves,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(a) = &args.tcp_sink {
        return tcp_sink(a);
    }
    if let Some(a) = &args.tcp_probe {
        return tcp_probe(a);
    }
    ferry_tests::bin_dir_defaults_to_own();
    let budget = args.budget.to_string();
    let mut env = Env::new(
        3,
        &[
            "--migration-transport",
            &args.transport,
            "--host-migration-budget",
            &budget,
        ],
    )
    .await;
    let names = ["host-a", "host-b", "host-c"];
    for (i, n) in names.iter().enumerate() {
        env.start_agent(i as u8, &AgentOptions::qemu(n));
    }
    let mut hosts = Vec::new();
    let mut accel = Value::Null;
    for n in names {
        let h = env.wait_host_state(n, "connected", T).await;
        accel = h["accel"].clone();
        hosts.push(h["id"].as_str().unwrap_or_default().to_string());
    }
    for i in 0..3 {
        shape(&env, i, &args.rate);
    }
    let link = measure_link(&env, 0, 1)?;
    println!(
        "== evacuating a host of {} guests ({} MiB each) to two others over tbf {} (raw TCP {:.0} MB/s between the hosts; {}, {})",
        args.guests,
        args.memory_mib,
        args.rate,
        link / 1e6,
        accel.as_str().unwrap_or("?"),
        qemu_version()
    );
    println!(
        "{:<6} {:>5} {:>8} {:>9} {:>8} {:>7} {:>9} {:>5} {:>5}",
        "who", "moved", "total_s", "sent_MiB", "bound_s", "/bound", "gap_ms", "lost", "held"
    );
    let f = ferry(&env, &args, &hosts, link).await?;
    print_run(&f);
    let mut runs = vec![f];
    if !args.no_raw {
        let q = raw(&env, &args, link).await?;
        print_run(&q);
        runs.push(q);
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&json!({
            "accel": accel,
            "qemu": qemu_version(),
            "rate": args.rate,
            "link_bytes_per_s": link,
            "ferry_transport": args.transport,
            "ferry_budget": args.budget,
            "runs": runs,
        }))?,
    )?;
    println!("wrote {}", args.out.display());
    drop(env);
    Ok(())
}
