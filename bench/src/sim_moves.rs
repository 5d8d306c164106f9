//! `ferry-bench-sim-moves`: many live migrations at once, on the sim backend.
//!
//! Starts the control plane (embedded PostgreSQL, as a user runs it) and one sim
//! agent process with 64 hosts on a modelled 10 Gbit/s link, creates 200 VMs
//! (2 GiB, dirtying 0–40 MiB/s) spread over the hosts, then asks for 200 moves at
//! once through `POST /vms/{id}/migrate` (each VM to the host 32 places on).
//! Each host may take part in `--budget` (2) moves at once; the rest queue.
//! Reports: how many completed and how long all took, the peak number of
//! migrations each host took part in at once against its budget, and the control
//! plane's CPU-seconds ÷ wall time during the moves (target < 1: the saga
//! executor and its polling must not eat a core per hundred moves).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ferry_tests::procs::{ControlPlane, CpOptions, Proc};
use ferry_tests::{bin, proc_cpu_seconds, wait_for};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 64)]
    hosts: u32,
    #[arg(long, default_value_t = 200)]
    vms: u32,
    /// Modelled migration link of each host, Mbit/s.
    #[arg(long, default_value_t = 10_000)]
    link_mbps: u64,
    #[arg(long, default_value_t = 2048)]
    memory_mib: u64,
    /// Migrations a host takes part in at once (`--host-migration-budget`); the
    /// rest wait, queued. Each host here is the source of ~3 moves and the
    /// destination of ~3, so a budget under 6 makes them queue.
    #[arg(long, default_value_t = 2)]
    budget: u32,
    #[arg(long, default_value = "bench/results/sim_moves.json")]
    out: std::path::PathBuf,
}

async fn all_pages(api: &ferry_tests::rest::Api, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let p = match &cursor {
            Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
            None => format!("{path}{sep}limit=1000"),
        };
        let page = api.ok(&p).await;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_tests::bin_dir_defaults_to_own();
    let dir = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
    println!(
        "== Ferry sim moves benchmark: {} VMs of {} MiB moving at once across {} sim hosts ({} Mbit/s links)",
        args.vms, args.memory_mib, args.hosts, args.link_mbps
    );
    let cp = ControlPlane::start(
        dir.path(),
        CpOptions {
            args: vec![
                "--host-timeout".into(),
                "60s".into(),
                "--host-migration-budget".into(),
                args.budget.to_string(),
            ],
            ..Default::default()
        },
    )
    .await;
    let cp_pid = cp.proc.pid().context("control plane pid")?;
    let api = cp.api();

    let mut agent_cmd = std::process::Command::new(bin("ferry-agent"));
    agent_cmd
        .args(["--control-plane", &format!("https://{}", cp.grpc)])
        .args(["--join-token", &cp.join_token()])
        .arg("--ca-cert")
        .arg(cp.ca_path())
        .args(["--name", "sim", "--backend", "sim"])
        .args(["--count", &args.hosts.to_string()])
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "3s"])
        .args(["--sim-link-mbps", &args.link_mbps.to_string()])
        .args(["--network", "vmnet"])
        .arg("--state-dir")
        .arg(dir.path().join("agents"))
        .env("FERRY_LOG", "warn");
    let _agent = Proc::spawn("sim agent", agent_cmd, dir.path().join("agent.log"));
    let want = args.hosts as usize;
    let mut hosts: Vec<(String, String)> = wait_for(
        "every sim host to join and report",
        Duration::from_secs(300),
        || {
            let api = api.clone();
            async move {
                let items = all_pages(&api, "/hosts").await;
                let ready: Vec<(String, String)> = items
                    .iter()
                    .filter(|h| {
                        h["state"] == "connected"
                            && !h["networks"].as_array().is_none_or(|n| n.is_empty())
                    })
                    .map(|h| {
                        (
                            h["name"].as_str().unwrap_or_default().to_string(),
                            h["id"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                (ready.len() == want).then_some(ready)
            }
        },
    )
    .await;
    hosts.sort();
    let net = api.ok("/networks?name=vmnet").await["items"][0]["id"].clone();

    // The VMs, powered on.
    println!("creating and starting {} VMs", args.vms);
    let mut vms = Vec::new();
    for i in 0..args.vms as usize {
        let h = i % hosts.len();
        let dirty = (i % 5) * 10;
        let r = api
            .post(
                "/vms",
                &json!({"name": format!("vm-{i:04}"), "host_id": hosts[h].1, "vcpus": 2,
                        "memory_mib": args.memory_mib, "nics": [{"network_id": net}],
                        "boot": {"kernel": "/sim/vmlinuz", "cmdline": format!("sim.dirty_mibps={dirty}")}}),
            )
            .await;
        anyhow::ensure!(r.status == 201, "create VM: {r:?}");
        let id = r.body["id"].as_str().unwrap_or_default().to_string();
        let p = api
            .post(&format!("/vms/{id}/power"), &json!({"action": "on"}))
            .await;
        anyhow::ensure!(p.status == 202, "power on: {p:?}");
        vms.push((id, h, p.body["id"].as_str().unwrap_or_default().to_string()));
    }
    for (_, _, task) in &vms {
        wait_for("the power-on tasks", Duration::from_secs(120), || {
            let (api, task) = (api.clone(), task.clone());
            async move {
                (api.ok(&format!("/tasks/{task}")).await["state"] == "succeeded").then_some(())
            }
        })
        .await;
    }

    // Every move at once.
    println!("moving all {} at once", args.vms);
    let cpu0 = proc_cpu_seconds(cp_pid);
    let t0 = Instant::now();
    let mut migrations = Vec::new();
    for (id, h, _) in &vms {
        let dest = &hosts[(h + hosts.len() / 2) % hosts.len()].1;
        let r = api
            .post(
                &format!("/vms/{id}/migrate"),
                &json!({"destination_host_id": dest}),
            )
            .await;
        anyhow::ensure!(r.status == 202, "migrate: {r:?}");
        migrations.push(r.body["id"].as_str().unwrap_or_default().to_string());
    }
    let requested = t0.elapsed();
    let mut peak: HashMap<String, usize> = HashMap::new();
    let mut peak_total = 0usize;
    let final_states = loop {
        let all = all_pages(&api, "/migrations").await;
        let mine: Vec<&Value> = all.iter().collect();
        let mut now: HashMap<String, usize> = HashMap::new();
        let mut active = 0;
        for m in &mine {
            if matches!(
                m["state"].as_str(),
                Some("preparing" | "transferring" | "switching_over")
            ) {
                active += 1;
                for side in ["source_host_id", "destination_host_id"] {
                    *now.entry(m[side].as_str().unwrap_or_default().to_string())
                        .or_default() += 1;
                }
            }
        }
        peak_total = peak_total.max(active);
        for (h, n) in now {
            let p = peak.entry(h).or_default();
            *p = (*p).max(n);
        }
        let done = mine
            .iter()
            .filter(|m| {
                matches!(
                    m["state"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
            })
            .count();
        if done == migrations.len() {
            break mine
                .iter()
                .map(|m| m["state"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>();
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(900),
            "moves did not finish in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds(cp_pid) - cpu0;
    let completed = final_states.iter().filter(|s| *s == "completed").count();
    let peak_host = peak.values().copied().max().unwrap_or(0);
    let budget = u64::from(args.budget);

    println!();
    println!(
        "moves requested:              {} in {:.2} s",
        migrations.len(),
        requested.as_secs_f64()
    );
    println!(
        "completed:                    {completed} of {} in {wall:.1} s",
        migrations.len()
    );
    println!("peak migrations at once:      {peak_total} in all; {peak_host} on one host (budget {budget} per host)");
    println!(
        "control plane CPU:            {cpu:.1} s over {wall:.1} s = {:.2} of a core (target < 1)",
        cpu / wall
    );
    let out = json!({
        "hosts": args.hosts, "vms": args.vms, "memory_mib": args.memory_mib, "link_mbps": args.link_mbps,
        "requested_s": requested.as_secs_f64(), "completed": completed, "total": migrations.len(),
        "wall_s": wall, "peak_concurrent_total": peak_total, "peak_concurrent_per_host": peak_host,
        "budget_per_host": budget, "control_plane_cpu_s": cpu, "cpu_per_wall": cpu / wall,
    });
    if let Some(d) = args.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", args.out.display());
    anyhow::ensure!(completed == migrations.len(), "not every move completed");
    anyhow::ensure!(
        peak_host as u64 <= budget.max(1),
        "a host went over its budget"
    );
    Ok(())
}
