//! `ferry-agent`: parses flags, builds the backend and runs one host (or, with the
//! sim backend and `--count N`, N simulated hosts, each with its own identity and
//! listener) until SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ferry_agent::config::{Backend, Config};
use ferry_agent::datastores::DatastoreSpec;
use ferry_agent::hypervisor::qemu::QemuBackend;
use ferry_agent::hypervisor::sim::SimHost;
use ferry_agent::hypervisor::Hypervisor;
use ferry_agent::runner::{run_host, HostSpec};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into())
    };
    // The agent starts this very binary as its migration tunnel (see `tunnel`),
    // whose standard output tells the agent it is ready: it logs to stderr.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == "migration-tunnel") {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init();
        return ferry_agent::tunnel::main(argv.collect());
    }
    tracing_subscriber::fmt().with_env_filter(filter()).init();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(agent()),
        Err(e) => {
            eprintln!("ferry-agent: start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn agent() -> std::process::ExitCode {
    let config = Config::parse();
    raise_nofile_limit();
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("agent failed: {e:#}");
            eprintln!("ferry-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(&config.ca_cert).with_context(|| {
        format!(
            "read the cluster CA certificate {}",
            config.ca_cert.display()
        )
    })?;
    if config.count == 0 || (config.count > 1 && config.backend != Backend::Sim) {
        anyhow::bail!("--count N > 1 is for the sim backend only, and N must be at least 1");
    }
    let datastores: Vec<DatastoreSpec> = config
        .datastores
        .iter()
        .map(|(n, p)| DatastoreSpec {
            name: n.clone(),
            path: p.into(),
        })
        .collect();
    let qemu: Option<Arc<dyn Hypervisor>> = match config.backend {
        Backend::Qemu => {
            let (bin, accel, ds, nets, timeout, tls) = (
                config.qemu.clone(),
                config.accel,
                datastores.clone(),
                config.networks.clone(),
                config.shutdown_timeout,
                config.migration_tls,
            );
            let run_dir = config.state_dir.join("vms");
            let mut backend = tokio::task::spawn_blocking(move || {
                QemuBackend::new(&bin, accel, run_dir, ds, &nets, timeout, tls)
            })
            .await??;
            backend.vm_memory_mib = config.vm_memory_mib;
            backend.vms.reattach().await?;
            Some(Arc::new(backend))
        }
        Backend::Sim => None,
    };

    let stop = CancellationToken::new();
    let mut hosts = tokio::task::JoinSet::new();
    let mut served: Vec<(String, Arc<dyn Hypervisor>)> = Vec::new();
    for i in 0..config.count {
        let (name, state_dir, port) = if config.count == 1 {
            (
                config.name.clone(),
                config.state_dir.clone(),
                config.listen.port(),
            )
        } else {
            let name = format!("{}-{:04}", config.name, i + 1);
            let port = if config.listen.port() == 0 {
                0
            } else {
                config.listen.port() + i as u16
            };
            (name.clone(), config.state_dir.join(&name), port)
        };
        let hypervisor = match &qemu {
            Some(q) => q.clone(),
            None => Arc::new(SimHost::new(i, config.sim_link_mbps * 1_000_000 / 8))
                as Arc<dyn Hypervisor>,
        };
        let spec = HostSpec {
            name,
            cluster: config.cluster.clone(),
            control_plane: config.control_plane.clone(),
            join_token: config.join_token.clone(),
            ca_pem: ca_pem.clone(),
            listen: std::net::SocketAddr::new(config.listen.ip(), port),
            advertise: config.advertise,
            state_dir,
            datastores: datastores.clone(),
            networks: config.networks.clone(),
            heartbeat: config.heartbeat_interval,
            hypervisor,
        };
        served.push((spec.name.clone(), spec.hypervisor.clone()));
        hosts.spawn(run_host(spec, stop.clone()));
    }
    if let Some(addr) = config.metrics_listen {
        let (file, hosts, stop) = (
            config.state_dir.join("metrics.addr"),
            Arc::new(served),
            stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = ferry_agent::metrics::serve(addr, file, hosts, stop).await {
                tracing::error!("metrics listener: {e:#}");
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        Some(r) = hosts.join_next() => r.context("host task")?,
    };
    stop.cancel();
    while hosts.join_next().await.is_some() {}
    result
}

/// Raises the open-files limit to its hard maximum: a sim process holds a listener
/// and a connection per host.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
