//! One host's life: bind the agent listener, get an identity (stored, or by
//! joining), serve the agent API with it, push facts, heartbeat. The loop is
//! idempotent and self-healing: a lost report is resent when the control plane's
//! heartbeat answer says it holds an older generation; an identity the control
//! plane no longer knows is dropped and the host joins again (by name, so it stays
//! the same host); an unreachable control plane is retried with backoff.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ferry_proto::v1::agent_server::AgentServer;
use ferry_proto::v1::control_plane_client::ControlPlaneClient;
use ferry_proto::v1::{HeartbeatRequest, HostReport, NetworkFacts};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::datastores::{self, DatastoreSpec};
use crate::generation::Generation;
use crate::hypervisor::Hypervisor;
use crate::identity::{self, Identity, JoinError};
use crate::service::AgentService;

/// What one host agent needs to run.
#[derive(Clone)]
pub struct HostSpec {
    pub name: String,
    pub cluster: String,
    pub control_plane: String,
    pub join_token: Option<String>,
    /// CA certificate for the first join.
    pub ca_pem: String,
    pub listen: SocketAddr,
    pub advertise: Option<std::net::IpAddr>,
    pub state_dir: PathBuf,
    pub datastores: Vec<DatastoreSpec>,
    pub networks: Vec<(String, String)>,
    pub heartbeat: Duration,
    pub hypervisor: Arc<dyn Hypervisor>,
}

/// The host's facts and identity, shared by the runner and the agent service.
pub struct HostState {
    spec: HostSpec,
    address: String,
    host_id: Mutex<String>,
    generation: Generation,
    last_facts: Mutex<Option<(Vec<u8>, HostReport)>>,
}

impl HostState {
    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.spec.hypervisor
    }

    /// The IP of this agent's address (its migration address too, for now).
    pub fn address_ip(&self) -> String {
        self.address
            .rsplit_once(':')
            .map(|(ip, _)| ip.to_string())
            .unwrap_or_default()
    }

    pub fn host_id(&self) -> String {
        self.host_id.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The current facts report. Its generation moves only when the facts change
    /// (free memory and load travel with heartbeats and do not count).
    pub fn report(&self) -> HostReport {
        let h = &self.spec.hypervisor;
        let accel = h.accel();
        let datastores = self
            .spec
            .datastores
            .iter()
            .filter_map(|d| match datastores::facts(d) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(datastore = %d.name, "datastore unavailable: {e:#}");
                    None
                }
            })
            .collect::<Vec<_>>();
        let mut report = HostReport {
            generation: 0,
            name: self.spec.name.clone(),
            agent_address: self.address.clone(),
            accel: accel.accel.to_string(),
            accel_reason: accel.reason,
            cpu: Some(h.cpu()),
            memory: Some(h.memory()),
            datastores,
            networks: self
                .spec
                .networks
                .iter()
                .map(|(name, uplink)| NetworkFacts {
                    name: name.clone(),
                    uplink: uplink.clone(),
                })
                .collect(),
            agent_version: crate::VERSION.to_string(),
            hypervisor_version: h.version(),
            host_id: String::new(),
            // `qemu_vm::migrate::set_capabilities` (the sim moves no stream).
            opens_return_path: true,
        };
        let mut fingerprint = report.clone();
        if let Some(m) = fingerprint.memory.as_mut() {
            m.free_mib = 0;
        }
        for d in &mut fingerprint.datastores {
            d.free_bytes = 0;
        }
        let key = fingerprint.encode_to_vec();
        let mut last = self.last_facts.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_ref() {
            Some((k, prev)) if *k == key => report.generation = prev.generation,
            _ => {
                report.generation = self.generation.next();
                *last = Some((key, report.clone()));
            }
        }
        report
    }
}

/// Runs one host until `stop` is cancelled; returns an error only for what retrying
/// cannot fix (a refused join, a port in use).
pub async fn run_host(spec: HostSpec, stop: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(spec.listen)
        .await
        .with_context(|| format!("bind agent listener {}", spec.listen))?;
    let bound = listener.local_addr()?;
    let ip = match spec.advertise {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            anyhow::bail!("--listen {bound} is a wildcard: pass --advertise")
        }
        None => bound.ip(),
    };
    let address = SocketAddr::new(ip, bound.port()).to_string();
    let state = Arc::new(HostState {
        spec: spec.clone(),
        address: address.clone(),
        host_id: Mutex::new(String::new()),
        generation: Generation::default(),
        last_facts: Mutex::new(None),
    });
    let mut listener = Some(listener);

    while !stop.is_cancelled() {
        let Some(identity) = obtain_identity(&spec, &address, &stop).await? else {
            break;
        };
        *state.host_id.lock().unwrap_or_else(|p| p.into_inner()) = identity.host_id.clone();
        tracing::info!(host = %spec.name, host_id = %identity.host_id, %address, "agent identity ready");

        let listener = match listener.take() {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(bound).await?,
        };
        let serve_stop = stop.child_token();
        let tls = ServerTlsConfig::new()
            .identity(identity.tls_identity())
            .client_ca_root(identity.ca());
        let server = Server::builder()
            .tls_config(tls)?
            .add_service(AgentServer::new(AgentService {
                state: state.clone(),
            }))
            .serve_with_incoming_shutdown(
                // `Server::tcp_nodelay` does not reach a listener passed in: without
                // it, Nagle held each reply's last segment for the caller's delayed
                // ACK, 40 ms on every call (a storage-only move made three).
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                serve_stop.clone().cancelled_owned(),
            );
        let server = tokio::spawn(server);

        let rejoin = report_loop(&spec, &state, &identity, &stop).await?;
        serve_stop.cancel();
        let _ = server.await;
        if rejoin {
            tracing::warn!(host = %spec.name, "the control plane does not know this identity; joining again");
            Identity::forget(&spec.state_dir);
        }
    }
    Ok(())
}

/// The stored identity, or a new one from joining (retried while unreachable).
async fn obtain_identity(
    spec: &HostSpec,
    address: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Identity>> {
    if let Some(id) = Identity::load(&spec.state_dir)? {
        return Ok(Some(id));
    }
    let token = spec
        .join_token
        .as_deref()
        .context("this host has no identity yet: pass --join-token (or FERRY_JOIN_TOKEN)")?;
    let mut backoff = Duration::from_millis(200);
    loop {
        match identity::join(
            &spec.control_plane,
            &spec.ca_pem,
            token,
            &spec.name,
            &spec.cluster,
            address,
        )
        .await
        {
            Ok(id) => {
                id.save(&spec.state_dir)?;
                return Ok(Some(id));
            }
            Err(JoinError::Refused(why)) => {
                anyhow::bail!("host {}: join refused: {why}", spec.name)
            }
            Err(JoinError::Unreachable(why)) => {
                tracing::warn!(host = %spec.name, "join: control plane unreachable ({why}); retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Pushes facts and heartbeats until stopped (`Ok(false)`) or until the control
/// plane no longer knows this host (`Ok(true)`: join again).
async fn report_loop(
    spec: &HostSpec,
    state: &HostState,
    identity: &Identity,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut client = ControlPlaneClient::new(identity.channel(&spec.control_plane)?);
    let mut sent_generation = 0u64;
    let mut force_report = true;
    let mut tick = tokio::time::interval(spec.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    let mut vm_events = spec.hypervisor.vm_events();
    // Tell the control plane about every VM once per connection (they may have
    // changed while it could not hear us); then each change as it happens.
    let mut pending_vms: Vec<ferry_proto::v1::VmRuntime> = spec.hypervisor.vm_list();
    loop {
        let mut ticked = false;
        tokio::select! {
            _ = tick.tick() => ticked = true,
            ev = vm_events.recv() => {
                match ev {
                    Ok(rt) => pending_vms.push(rt),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => pending_vms = spec.hypervisor.vm_list(),
                    Err(_) => {}
                }
            }
            _ = stop.cancelled() => return Ok(false),
        }
        while let Some(rt) = pending_vms.first().cloned() {
            match client.report_vm(rt).await {
                Ok(_) => {
                    pending_vms.remove(0);
                }
                Err(s) if s.code() == tonic::Code::Unauthenticated => return Ok(true),
                Err(s) => {
                    log_failure(spec, failures + 1, "VM report", &s);
                    break;
                }
            }
        }
        if !ticked {
            continue;
        }
        let report = state.report();
        if force_report || report.generation > sent_generation {
            let generation = report.generation;
            match client.report(report).await {
                Ok(_) => sent_generation = generation,
                Err(s) if s.code() == tonic::Code::Unauthenticated => return Ok(true),
                Err(s) => {
                    failures += 1;
                    log_failure(spec, failures, "report", &s);
                    continue;
                }
            }
        }
        let (cpu_pct, mem_pct) = spec.hypervisor.load();
        let hb = HeartbeatRequest {
            generation: sent_generation,
            cpu_pct,
            mem_pct,
            memory_free_mib: spec.hypervisor.memory().free_mib,
            vm_loads: spec.hypervisor.vm_loads(),
        };
        match client.heartbeat(hb).await {
            Ok(resp) => {
                if failures > 0 {
                    tracing::info!(host = %spec.name, "control plane reachable again");
                }
                failures = 0;
                force_report = resp.into_inner().resend_report;
            }
            Err(s) if s.code() == tonic::Code::Unauthenticated => return Ok(true),
            Err(s) => {
                failures += 1;
                force_report = true;
                log_failure(spec, failures, "heartbeat", &s);
            }
        }
    }
}

fn log_failure(spec: &HostSpec, failures: u32, what: &str, s: &tonic::Status) {
    if failures == 1 || failures.is_multiple_of(20) {
        tracing::warn!(host = %spec.name, failures, "{what} failed: {} {}", s.code(), s.message());
    }
}
