//! Command-line flags of `ferry-control-plane`, each with a `FERRY_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "ferry-control-plane", version, about = "Ferry's control plane")]
pub struct Config {
    /// Directory for the control plane's own files: the embedded PostgreSQL (when no
    /// database URL is given), `admin.token`, `join.token` and `ca.pem`.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
    pub data_dir: PathBuf,

    /// Use this PostgreSQL server instead of starting the embedded one.
    #[arg(long, env = "FERRY_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory of PostgreSQL's `initdb`/`pg_ctl`; default: the newest under
    /// `/usr/lib/postgresql/*/bin`.
    #[arg(long, env = "FERRY_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,

    /// REST API and dashboard listener.
    #[arg(long, env = "FERRY_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,

    /// TLS on the REST listener (API and dashboard): `auto` serves HTTPS unless it
    /// listens on a loopback address, `on` always, `off` never (plain HTTP beyond
    /// loopback only when asked this way: tokens then cross the network in clear).
    #[arg(long, env = "FERRY_HTTP_TLS", value_enum, default_value = "auto")]
    pub http_tls: HttpTls,

    /// Names or IP addresses for the REST certificate the cluster CA issues (besides
    /// `localhost`, `127.0.0.1`, `::1`, `control-plane.ferry` and the listener's own
    /// address when it is not a wildcard).
    #[arg(long = "http-san", env = "FERRY_HTTP_SANS", value_delimiter = ',')]
    pub http_sans: Vec<String>,

    /// Serve this certificate chain (PEM) on the REST listener instead of one the
    /// cluster CA issues; re-read when the file changes. Needs `--http-key`.
    #[arg(long, env = "FERRY_HTTP_CERT", requires = "http_key")]
    pub http_cert: Option<PathBuf>,

    /// The private key (PEM) of `--http-cert`.
    #[arg(long, env = "FERRY_HTTP_KEY", requires = "http_cert")]
    pub http_key: Option<PathBuf>,

    /// gRPC listener for host agents (TLS; mutual TLS for everything but joining).
    #[arg(long, env = "FERRY_GRPC_LISTEN", default_value = "127.0.0.1:9090")]
    pub grpc_listen: SocketAddr,

    /// Extra names or IP addresses to put in the gRPC server certificate.
    #[arg(long = "grpc-san", env = "FERRY_GRPC_SANS", value_delimiter = ',')]
    pub grpc_sans: Vec<String>,

    /// Token agents present to join; generated into `DATA_DIR/join.token` when absent.
    #[arg(long, env = "FERRY_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// A host with no heartbeat for this long becomes `disconnected`.
    #[arg(long, env = "FERRY_HOST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub host_timeout: Duration,

    /// How often the control plane pulls each connected host's facts (0s: never).
    #[arg(long, env = "FERRY_RECONCILE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// How migration streams travel between agents: `tls` (x509, the agents'
    /// CA-issued identities, both ends verified) or plain `tcp`.
    #[arg(
        long,
        env = "FERRY_MIGRATION_TRANSPORT",
        value_enum,
        default_value = "tls"
    )]
    pub migration_transport: Transport,

    /// A migration whose transfer makes no progress for this long has stalled:
    /// `auto` and `postcopy` escalate to post-copy, `precopy` gives up (the VM stays
    /// on its source).
    #[arg(long, env = "FERRY_MIGRATION_STALL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub migration_stall_timeout: Duration,

    /// Hold the frames that reach a VM's old host while it switches hosts and
    /// deliver them on the new one (`on`), or let them drop (`off`, QEMU's own
    /// behaviour: peers then wait out TCP's retransmission timeout).
    #[arg(long, env = "FERRY_FRAME_RELAY", value_enum, default_value = "on")]
    pub frame_relay: OnOff,

    /// Let the transfer begin while the destination's QEMU is still starting
    /// (`on`): the destination's migration tunnel holds the stream until it
    /// listens, which saves the QEMU's start (~0.1 s) on every TLS move. `off`
    /// starts the QEMU first, as raw QEMU must. Plain TCP moves always do.
    #[arg(
        long,
        env = "FERRY_OVERLAP_DESTINATION_START",
        value_enum,
        default_value = "on"
    )]
    pub overlap_destination_start: OnOff,

    /// Migrations a host takes part in at once (source or destination); more wait,
    /// `queued`, and start in order as slots free. 0 (the default) sizes it from
    /// the bandwidth the agents measured between the two hosts: each migration keeps
    /// at least 200 Mbit/s, at most 4 below 2 Gbit/s and 8 above (vMotion: 4 per
    /// host on 1 GbE, 8 on 10 GbE).
    #[arg(long, env = "FERRY_HOST_MIGRATION_BUDGET", default_value_t = 0)]
    pub host_migration_budget: u32,

    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "FERRY_DB_POOL", default_value_t = 32)]
    pub db_pool: u32,
}

/// TLS on the REST listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpTls {
    Auto,
    On,
    Off,
}

/// How migration streams travel between agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Tls,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

use ferry_common::duration::parse as parse_duration;
