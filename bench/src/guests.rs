//! `ferry-bench-guests`: figures for real QEMU guests on one lab host.
//!
//! Boots Ferry's guest image five times (one after another) and measures the time
//! from the power-on API call to `ferry-guest: ready` on the console and to the
//! first `/status` answer over the fabric; measures the RSS of an idle guest's
//! QEMU; then keeps booting idle 256 MiB guests up to `--capacity` and checks every
//! one answers, to report what one host runs and what each costs the host.

use std::time::{Duration, Instant};

use clap::Parser;
use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::{guest, proc_status_kib, wait_for};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Guests to boot for the boot-time median.
    #[arg(long, default_value_t = 5)]
    boots: u8,
    /// Idle guests to run at once on the host.
    #[arg(long, default_value_t = 20)]
    capacity: u8,
    #[arg(long, default_value = "bench/results/guests.json")]
    out: std::path::PathBuf,
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn qemu_pid(id: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        args.windows(2)
            .any(|w| w[0] == b"-uuid" && w[1] == id.as_bytes())
            .then_some(pid)
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_tests::bin_dir_defaults_to_own();
    let (kernel, initrd) = guest::image();
    let mut env = Env::new(1, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    let host = env
        .wait_host_state("host-a", "connected", Duration::from_secs(60))
        .await;
    let api = env.api();
    let net = api.ok("/networks?name=vmnet").await["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let accel = host["accel"].as_str().unwrap_or("?").to_string();
    println!(
        "== Ferry guest figures: one lab host ({accel}), guest image {}",
        kernel.display()
    );

    let mut ready_s = Vec::new();
    let mut status_s = Vec::new();
    let mut ids = Vec::new();
    let avail_before = mem_available_mib();
    let total = args.boots.max(args.capacity);
    for n in 0..total {
        let ip = env.lab.guest_ip(n);
        let r = api
            .post(
                "/vms",
                &json!({"name": format!("g{n}"), "host_id": host["id"], "vcpus": 1, "memory_mib": 256,
                        "nics": [{"network_id": net}],
                        "boot": {"kernel": kernel, "initrd": initrd, "cmdline": format!("console=ttyS0 quiet ferry.ip={ip}/24")}}),
            )
            .await;
        anyhow::ensure!(r.status == 201, "create g{n}: {:?}", r.body);
        let id = r.body["id"].as_str().unwrap_or_default().to_string();
        let t0 = Instant::now();
        let p = api
            .post(&format!("/vms/{id}/power"), &json!({"action": "on"}))
            .await;
        anyhow::ensure!(p.status == 202, "power on g{n}: {:?}", p.body);
        let (api2, id2) = (api.clone(), id.clone());
        wait_for("ready line", Duration::from_secs(120), || {
            let (api, id) = (api2.clone(), id2.clone());
            async move {
                let c = api.get(&format!("/vms/{id}/console")).await;
                c.body
                    .as_str()
                    .is_some_and(|t| t.contains("ferry-guest: ready"))
                    .then_some(())
            }
        })
        .await;
        let ready = t0.elapsed().as_secs_f64();
        wait_for("status", Duration::from_secs(60), || {
            let ip = ip.clone();
            async move {
                let r = reqwest::Client::new()
                    .get(format!("http://{ip}/status"))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .ok()?;
                r.json::<Value>().await.ok()
            }
        })
        .await;
        let reachable = t0.elapsed().as_secs_f64();
        if n < args.boots {
            ready_s.push(ready);
            status_s.push(reachable);
            println!("boot g{n}: ready on the console {ready:.2} s, /status over the fabric {reachable:.2} s");
        }
        ids.push((id, ip));
    }
    // Let them settle idle, then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut rss = Vec::new();
    for (id, _) in &ids {
        if let Some(pid) = qemu_pid(id) {
            rss.push(proc_status_kib(pid, "VmRSS") as f64 / 1024.0);
        }
    }
    let mut answering = 0;
    for (_, ip) in &ids {
        let ok = reqwest::Client::new()
            .get(format!("http://{ip}/status"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if ok.is_ok_and(|r| r.status().is_success()) {
            answering += 1;
        }
    }
    let avail_after = mem_available_mib();
    let per_guest = (avail_before.saturating_sub(avail_after)) as f64 / ids.len() as f64;
    let rss_median = median(&mut rss.clone());
    let ready_median = median(&mut ready_s);
    let status_median = median(&mut status_s);
    let fits_by_memory = (avail_before as f64 / per_guest.max(1.0)).floor();
    let admitted =
        (host["memory"]["free_mib"].as_u64().unwrap_or(0) as f64 / (256.0 + 64.0)).floor();
    println!();
    println!(
        "boot to ready (median of {}):        {ready_median:.2} s",
        args.boots
    );
    println!("boot to /status over the network:    {status_median:.2} s");
    println!(
        "QEMU RSS per idle 256 MiB guest:     {rss_median:.0} MiB (median of {})",
        rss.len()
    );
    println!(
        "host memory per running guest:       {per_guest:.0} MiB (MemAvailable drop / guests)"
    );
    println!(
        "idle guests running and answering:   {answering} of {}",
        ids.len()
    );
    println!("idle 256 MiB guests this host holds: ~{fits_by_memory} by measured cost; placement admits {admitted} (256 MiB + 64 MiB QEMU overhead each)");
    let result = json!({
        "benchmark": "guests", "accel": accel, "boots": args.boots,
        "boot_ready_s": ready_s, "boot_ready_median_s": ready_median,
        "boot_status_median_s": status_median,
        "qemu_rss_mib_median": rss_median, "host_mib_per_guest": per_guest,
        "guests_running": ids.len(), "guests_answering": answering,
        "host_mem_available_mib_before": avail_before,
        "guests_fit_by_measured_cost": fits_by_memory, "guests_admitted_by_placement": admitted,
    });
    if let Some(p) = args.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}
