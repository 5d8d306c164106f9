//! The agent's `/metrics` listener (`--metrics-listen`), in Prometheus' text format:
//! per VM its vCPU time, resident memory and last measured dirty rate; the QEMU
//! processes it runs; its VMs by power state; the frames its relays held at
//! switchovers and its sinks delivered. Every series carries the `host` label (a
//! sim process runs many hosts). No token: counts and timings only, like the
//! control plane's; bind it where only the scraper reaches.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::routing::get;
use ferry_common::prom::{Exposition, Labels};
use ferry_proto::v1::VmState;
use tokio_util::sync::CancellationToken;

use crate::hypervisor::Hypervisor;

/// The hosts this process runs, by name.
pub type Hosts = Arc<Vec<(String, Arc<dyn Hypervisor>)>>;

pub fn render(hosts: &Hosts) -> String {
    let mut e = Exposition::new();
    let host = |n: &str| -> Labels { vec![("host", n.to_string())] };
    e.gauge(
        "ferry_agent_build_info",
        "The agent's version.",
        &[(vec![("version", crate::VERSION.to_string())], 1.0)],
    );
    // One QEMU backend serves every host of a process: count it once. A sim
    // process runs none.
    let procs = hosts
        .iter()
        .find_map(|(_, h)| h.qemu_processes())
        .unwrap_or(0);
    e.gauge(
        "ferry_agent_qemu_processes",
        "QEMU processes the agent runs.",
        &[(Labels::new(), procs as f64)],
    );
    let mut by_state = Vec::new();
    for (n, h) in hosts.iter() {
        let list = h.vm_list();
        for (st, label) in [
            (VmState::VmRunning, "running"),
            (VmState::VmStopped, "stopped"),
            (VmState::VmPaused, "paused"),
        ] {
            let c = list.iter().filter(|v| v.state() == st).count();
            let mut l = host(n);
            l.push(("power_state", label.to_string()));
            by_state.push((l, c as f64));
        }
    }
    e.gauge(
        "ferry_agent_vms",
        "VMs the agent holds, by power state.",
        &by_state,
    );
    let (mut cpu, mut rss, mut dirty) = (Vec::new(), Vec::new(), Vec::new());
    for (n, h) in hosts.iter() {
        for v in h.vm_metrics() {
            let l = || {
                let mut l = host(n);
                l.push(("vm_id", v.vm_id.clone()));
                l.push(("vm", v.name.clone()));
                l
            };
            if let Some(s) = v.cpu_seconds {
                cpu.push((l(), s));
            }
            if let Some(b) = v.rss_bytes {
                rss.push((l(), b as f64));
            }
            if let Some(d) = v.dirty_rate_bps {
                dirty.push((l(), d as f64));
            }
        }
    }
    e.counter(
        "ferry_agent_vm_cpu_seconds_total",
        "CPU time a VM's vCPU threads used.",
        &cpu,
    );
    e.gauge(
        "ferry_agent_vm_resident_memory_bytes",
        "A VM's QEMU process resident memory.",
        &rss,
    );
    e.gauge(
        "ferry_agent_vm_dirty_rate_bytes_per_second",
        "The last dirty rate measured for a VM (for a prediction or during its migration).",
        &dirty,
    );
    e.counter(
        "ferry_agent_relay_frames_held_total",
        "Frames this agent's relays held while a VM was paused for its switchover, and forwarded.",
        &[(
            Labels::new(),
            crate::frames::FRAMES_HELD.load(Ordering::Relaxed) as f64,
        )],
    );
    e.counter(
        "ferry_agent_relay_frames_delivered_total",
        "Frames this agent's sinks wrote into arriving VMs' taps.",
        &[(
            Labels::new(),
            crate::frames::FRAMES_DELIVERED.load(Ordering::Relaxed) as f64,
        )],
    );
    e.finish()
}

/// Serves `GET /metrics` on `addr` until `stop`; the address it bound (port 0 picks
/// one) is written to `addr_file`.
pub async fn serve(
    addr: SocketAddr,
    addr_file: std::path::PathBuf,
    hosts: Hosts,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let hosts = hosts.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render(&hosts),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if let Some(dir) = addr_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&addr_file, bound.to_string())?;
    tracing::info!(addr = %bound, "metrics listener ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await?;
    Ok(())
}
