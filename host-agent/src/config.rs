//! Command-line flags of `ferry-agent`, each with a `FERRY_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Real VMs: QEMU processes driven over QMP.
    Qemu,
    /// Modelled hosts and VMs, for control-plane scale and policy tests.
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM when it is real hardware virtualisation, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Who encrypts a live migration's stream when the control plane asks for TLS
/// (the two are the same on the wire, so the ends may differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum MigrationTls {
    /// A `ferry-agent migration-tunnel` process (rustls), QEMU migrating in the
    /// clear over a Unix socket to it: see `tunnel`.
    #[default]
    Agent,
    /// QEMU's own TLS channel (gnutls, one record per guest page).
    Qemu,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "ferry-agent", version, about = "Ferry's host agent")]
pub struct Config {
    /// The control plane's gRPC address, e.g. `https://10.0.0.1:9090`.
    #[arg(long, env = "FERRY_CONTROL_PLANE")]
    pub control_plane: String,

    /// The control plane's join token (needed for the first join only).
    #[arg(long, env = "FERRY_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// The cluster CA certificate (`ca.pem` in the control plane's data dir).
    #[arg(long, env = "FERRY_CA_CERT")]
    pub ca_cert: PathBuf,

    /// This host's name; with `--count` N > 1, hosts are NAME-0001 .. NAME-N.
    #[arg(long, env = "FERRY_HOST_NAME")]
    pub name: String,

    /// Cluster to join (created on first use).
    #[arg(long, env = "FERRY_CLUSTER", default_value = "default")]
    pub cluster: String,

    /// Where the agent serves its gRPC API (port 0: any free port).
    #[arg(long, env = "FERRY_AGENT_LISTEN", default_value = "127.0.0.1:9091")]
    pub listen: SocketAddr,

    /// The address to tell the control plane, when `--listen` is a wildcard.
    #[arg(long, env = "FERRY_AGENT_ADVERTISE")]
    pub advertise: Option<std::net::IpAddr>,

    #[arg(long, env = "FERRY_BACKEND", value_enum, default_value = "qemu")]
    pub backend: Backend,

    /// Accelerator for QEMU guests.
    #[arg(long, env = "FERRY_ACCEL", value_enum, default_value = "auto")]
    pub accel: AccelChoice,

    /// Simulated hosts to run in this process (sim backend only).
    #[arg(long, env = "FERRY_SIM_COUNT", default_value_t = 1)]
    pub count: u32,

    /// The modelled migration link of each simulated host, Mbit/s (sim backend): a
    /// move between two sim hosts runs at the slower of their two links.
    #[arg(long, env = "FERRY_SIM_LINK_MBPS", default_value_t = 10_000)]
    pub sim_link_mbps: u64,

    /// Identity (key, certificate) and runtime files.
    #[arg(
        long,
        env = "FERRY_AGENT_STATE_DIR",
        default_value = "/var/lib/ferry-agent"
    )]
    pub state_dir: PathBuf,

    /// A datastore: NAME=PATH (repeatable).
    #[arg(long = "datastore", env = "FERRY_DATASTORES", value_delimiter = ',', value_parser = parse_pair)]
    pub datastores: Vec<(String, String)>,

    /// A network: NAME=UPLINK, or NAME for a host-only network (repeatable).
    #[arg(long = "network", env = "FERRY_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub networks: Vec<(String, String)>,

    /// Seconds between heartbeats.
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL", default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How long `shutdown` waits for the guest before forcing it off.
    #[arg(long, env = "FERRY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// QEMU binary (qemu backend).
    #[arg(long, env = "FERRY_QEMU", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Memory this host offers to VMs, MiB (the rest is kept for the host); all of
    /// the machine's by default. Placement, evacuation and balancing count VMs
    /// (their RAM and QEMU's overhead) against it.
    #[arg(long, env = "FERRY_VM_MEMORY_MIB")]
    pub vm_memory_mib: Option<u64>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (port 0: any; the bound
    /// address is written to STATE_DIR/metrics.addr). Off unless given.
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Who encrypts outgoing and incoming live migrations: `agent` (a tunnel
    /// process; QEMU's own TLS costs a record and a system call per guest page)
    /// or `qemu`. Either works with either at the other end.
    #[arg(long, env = "FERRY_MIGRATION_TLS", value_enum, default_value = "agent")]
    pub migration_tls: MigrationTls,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (n, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    if n.is_empty() || v.is_empty() {
        return Err(format!("expected NAME=VALUE, got {s:?}"));
    }
    Ok((n.to_string(), v.to_string()))
}

fn parse_network(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, u)) if !n.is_empty() => Ok((
            n.to_string(),
            if u == "none" {
                String::new()
            } else {
                u.to_string()
            },
        )),
        Some(_) => Err(format!("expected NAME=UPLINK, got {s:?}")),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        None => Err("empty network".into()),
    }
}

use ferry_common::duration::parse_positive as parse_duration;
