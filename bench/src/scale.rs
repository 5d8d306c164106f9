//! `ferry-bench-scale`: the control plane at vCenter's scale, on the sim backend.
//!
//! Joins 2,500 simulated hosts (one agent process, each host its own identity,
//! listener and mutual-TLS connection, heartbeating every 10 s), creates 40,000 VMs
//! through the REST API, then measures with 16 concurrent clients the latency of
//! `GET /hosts`, `GET /vms?limit=100` and `GET /vms/{id}` while the heartbeats go on.
//! Prints join time, heartbeats processed per second, p50/p99 latencies and the
//! control plane's peak RSS against their targets, and writes them as JSON.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ferry_tests::procs::{ControlPlane, CpOptions, Proc};
use ferry_tests::{bin, proc_status_kib, wait_for};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2500)]
    hosts: u32,
    #[arg(long, default_value_t = 40_000)]
    vms: u32,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of read load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value = "10s")]
    heartbeat: String,
    #[arg(long, default_value = "bench/results/scale.json")]
    out: std::path::PathBuf,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()
        .map(|r| r.text());
    let text = match text {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_tests::bin_dir_defaults_to_own();
    let dir = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
    println!(
        "== Ferry scale benchmark: {} sim hosts, {} VMs, {} clients",
        args.hosts, args.vms, args.clients
    );

    // The control plane with its embedded PostgreSQL, as a user would run it.
    let host_timeout = "60s".to_string();
    let cp = ControlPlane::start(
        dir.path(),
        CpOptions {
            args: vec!["--host-timeout".into(), host_timeout],
            ..Default::default()
        },
    )
    .await;
    let cp_pid = cp.proc.pid().context("control plane pid")?;
    let api = cp.api();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // Join.
    let t_join = Instant::now();
    let mut agent_cmd = std::process::Command::new(bin("ferry-agent"));
    agent_cmd
        .args(["--control-plane", &format!("https://{}", cp.grpc)])
        .args(["--join-token", &cp.join_token()])
        .arg("--ca-cert")
        .arg(cp.ca_path())
        .args([
            "--name",
            "sim",
            "--backend",
            "sim",
            "--count",
            &args.hosts.to_string(),
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            &args.heartbeat,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("agents"))
        .env("FERRY_LOG", "warn");
    let agent = Proc::spawn("sim agent", agent_cmd, dir.path().join("agent.log"));
    let hosts_target = args.hosts as usize;
    let host_ids: Vec<String> = wait_for(
        "every sim host to join and report",
        Duration::from_secs(600),
        || {
            let api = api.clone();
            async move {
                let mut ids = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let path = match &cursor {
                        Some(c) => format!("/hosts?limit=1000&cursor={c}"),
                        None => "/hosts?limit=1000".into(),
                    };
                    let page = api.get(&path).await.body;
                    for h in page["items"].as_array()? {
                        if h["state"] == "connected" && h["cpu"]["cores"].as_u64().unwrap_or(0) > 0
                        {
                            ids.push(h["id"].as_str()?.to_string());
                        }
                    }
                    match page["next_cursor"].as_str() {
                        Some(c) => cursor = Some(c.to_string()),
                        None => break,
                    }
                }
                (ids.len() >= hosts_target).then_some(ids)
            }
        },
    )
    .await;
    let join_s = t_join.elapsed().as_secs_f64();
    println!(
        "joined {} hosts in {join_s:.1} s ({:.0} hosts/s)",
        host_ids.len(),
        host_ids.len() as f64 / join_s
    );

    // Create the VMs: 16 clients, round-robin over hosts.
    let t_vms = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let host_ids = Arc::new(host_ids);
    let mut creators = Vec::new();
    for _ in 0..args.clients {
        let (api, next, host_ids, n) = (
            api.clone(),
            next.clone(),
            host_ids.clone(),
            args.vms as usize,
        );
        creators.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return ids;
                }
                let body = json!({
                    "name": format!("vm-{i:05}"), "vcpus": 1 + (i % 4) as u32, "memory_mib": 512 * (1 + (i % 8) as u64),
                    "host_id": host_ids[i % host_ids.len()]
                });
                let r = api.post("/vms", &body).await;
                assert_eq!(r.status, 201, "create vm-{i}: {r:?}");
                ids.push(r.body["id"].as_str().unwrap_or_default().to_string());
            }
        }));
    }
    let mut vm_ids = Vec::new();
    for c in creators {
        vm_ids.extend(c.await?);
    }
    let vms_s = t_vms.elapsed().as_secs_f64();
    println!(
        "created {} VMs in {vms_s:.1} s ({:.0} VMs/s)",
        vm_ids.len(),
        vm_ids.len() as f64 / vms_s
    );
    let vm_ids = Arc::new(vm_ids);

    // Read load while the heartbeats continue.
    let hb0 = metric(&http, &cp.http, "ferry_host_heartbeats_total").await;
    let t_load = Instant::now();
    let deadline = t_load + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for w in 0..args.clients {
        let (http, base, token, vm_ids) = (
            http.clone(),
            cp.http.clone(),
            api.token.clone(),
            vm_ids.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            let mut errors = 0u64;
            let mut i = w;
            while Instant::now() < deadline {
                let kind = i % 3;
                let path = match kind {
                    0 => "/api/v1/hosts".to_string(),
                    1 => "/api/v1/vms?limit=100".to_string(),
                    _ => format!("/api/v1/vms/{}", vm_ids[(i * 7919) % vm_ids.len()]),
                };
                let t = Instant::now();
                let ok = match http
                    .get(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat[kind].push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.await?;
        errors += e;
        for k in 0..3 {
            all[k].extend(&lat[k]);
        }
    }
    let load_s = t_load.elapsed().as_secs_f64();
    let hb1 = metric(&http, &cp.http, "ferry_host_heartbeats_total").await;
    let hb_rate = (hb1 - hb0) as f64 / load_s;
    let peak_rss_mib = proc_status_kib(cp_pid, "VmHWM") as f64 / 1024.0;
    let agent_rss_mib = agent
        .pid()
        .map(|p| proc_status_kib(p, "VmRSS"))
        .unwrap_or(0) as f64
        / 1024.0;
    let mut connected = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/hosts?limit=1000&cursor={c}"),
            None => "/hosts?limit=1000".into(),
        };
        let page = api.get(&path).await.body;
        connected += page["items"]
            .as_array()
            .map(|a| a.iter().filter(|h| h["state"] == "connected").count())
            .unwrap_or(0);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let names = ["GET /hosts", "GET /vms?limit=100", "GET /vms/{id}"];
    let mut endpoints = serde_json::Map::new();
    println!(
        "\n{:<22} {:>9} {:>9} {:>9} {:>9}",
        "endpoint", "requests", "p50 ms", "p99 ms", "target"
    );
    for (k, name) in names.iter().enumerate() {
        let v = &mut all[k];
        v.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (percentile(v, 0.5), percentile(v, 0.99));
        println!(
            "{name:<22} {:>9} {p50:>9.2} {p99:>9.2} {:>9}",
            v.len(),
            "p99<=50"
        );
        endpoints.insert(
            name.to_string(),
            json!({"requests": v.len(), "p50_ms": p50, "p99_ms": p99}),
        );
    }
    println!(
        "\njoin time:                 {join_s:.1} s for {} hosts",
        args.hosts
    );
    println!(
        "VM creation:               {vms_s:.1} s for {} VMs ({:.0}/s)",
        args.vms,
        args.vms as f64 / vms_s
    );
    println!(
        "heartbeats processed:      {hb_rate:.0}/s (expected {:.0}/s)",
        args.hosts as f64 / 10.0
    );
    println!("read errors:               {errors}");
    println!("hosts connected after:     {connected} of {}", args.hosts);
    println!("control plane peak RSS:    {peak_rss_mib:.0} MiB (target <= 1024 MiB)");
    println!(
        "sim agent RSS:             {agent_rss_mib:.0} MiB (all {} hosts, one process)",
        args.hosts
    );

    let worst_p99 = endpoints
        .values()
        .filter_map(|e| e["p99_ms"].as_f64())
        .fold(0.0, f64::max);
    let result: Value = json!({
        "benchmark": "scale",
        "hosts": args.hosts, "vms": args.vms, "clients": args.clients, "heartbeat_interval": args.heartbeat,
        "join_s": join_s, "vm_create_s": vms_s, "heartbeats_per_s": hb_rate,
        "read_seconds": load_s, "read_errors": errors, "endpoints": endpoints,
        "control_plane_peak_rss_mib": peak_rss_mib, "sim_agent_rss_mib": agent_rss_mib,
        "hosts_connected_after": connected,
        "targets": {"read_p99_ms": 50, "rss_mib": 1024},
        "met": {"read_p99": worst_p99 <= 50.0, "rss": peak_rss_mib <= 1024.0},
    });
    if let Some(p) = args.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    println!("\nwrote {}", args.out.display());
    drop(agent);
    Ok(())
}
