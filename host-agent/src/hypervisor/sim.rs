//! The simulated backend: a modelled host with fixed, plausible facts (varied by the
//! host's index so a fleet is not uniform), a gently moving load, VMs whose power
//! transitions complete at once, and live migration by the model of
//! `sim_migration`. It exists for control-plane scale and policy tests and the fast
//! tier of saga tests; no feature that touches guests is proven on it alone.
//!
//! A move between two sim hosts — in one agent process or in two — follows QEMU's
//! shape: the destination defines the VM paused and listens on a TCP port of its
//! agent address (`sim:IP:PORT:LINK_BPS`); the source runs the model, and at the
//! switchover (or the start of post-copy) tells the destination over that
//! connection to run the VM, and only when it answered counts the move completed,
//! pausing its own copy (`postmigrate`). A destination that is gone fails the move
//! and the source keeps running, as QEMU's would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::errors::ErrorCode;
use ferry_proto::v1::{
    CpuFacts, MemoryFacts, MigrateInReply, MigrateInRequest, MigrateOutRequest, MigrateTuneRequest,
    MigrationStatus, MigrationStatusReply, PowerAction, VmRuntime, VmSpec, VmState,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

use super::sim_migration::{GuestModel, Move, MoveParams};
use super::{AccelChoice, Hypervisor};
use crate::error::coded;
use crate::generation::Generation;

/// How often a running modelled migration advances.
const TICK: Duration = Duration::from_millis(10);

struct SimVm {
    spec: VmSpec,
    state: VmState,
    detail: &'static str,
    generation: u64,
    /// The outgoing move, kept after it ends (as QEMU keeps `query-migrate`).
    outgoing: Option<Arc<Mutex<Outgoing>>>,
}

struct Outgoing {
    uri: String,
    m: Move,
    /// The destination was told to run the VM.
    handed_over: bool,
    error: String,
}

pub struct SimHost {
    index: u32,
    link_bps: u64,
    tick: AtomicU32,
    vms: Arc<Mutex<HashMap<String, SimVm>>>,
    generation: Arc<Generation>,
    events: broadcast::Sender<VmRuntime>,
}

impl SimHost {
    /// Host `index` of its process, with a migration link of `link_bps` bytes/s.
    pub fn new(index: u32, link_bps: u64) -> Self {
        Self {
            index,
            link_bps: link_bps.max(1),
            tick: AtomicU32::new(0),
            vms: Arc::default(),
            generation: Arc::default(),
            events: broadcast::channel(256).0,
        }
    }

    fn total_mib(&self) -> u64 {
        if self.index.is_multiple_of(2) {
            256 * 1024
        } else {
            512 * 1024
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimVm>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes a VM's state with a new generation and announces it.
    fn set(&self, vm_id: &str, state: VmState, detail: &'static str) -> Option<VmRuntime> {
        set_state(
            &self.vms,
            &self.generation,
            &self.events,
            vm_id,
            state,
            detail,
        )
    }

    fn runtime_of(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        self.lock()
            .get(vm_id)
            .map(|v| runtime(vm_id, v))
            .ok_or_else(|| not_here(vm_id))
    }

    fn outgoing(&self, vm_id: &str) -> anyhow::Result<Option<Arc<Mutex<Outgoing>>>> {
        let vms = self.lock();
        let vm = vms.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        Ok(vm.outgoing.clone())
    }
}

fn not_here(vm_id: &str) -> anyhow::Error {
    coded(
        ErrorCode::NotFound,
        format!("VM {vm_id} is not on this host"),
    )
}

fn runtime(vm_id: &str, v: &SimVm) -> VmRuntime {
    VmRuntime {
        vm_id: vm_id.to_string(),
        state: v.state as i32,
        generation: v.generation,
        pid: 0,
        detail: v.detail.into(),
        name: v.spec.name.clone(),
    }
}

fn set_state(
    vms: &Mutex<HashMap<String, SimVm>>,
    generation: &Generation,
    events: &broadcast::Sender<VmRuntime>,
    vm_id: &str,
    state: VmState,
    detail: &'static str,
) -> Option<VmRuntime> {
    let rt = {
        let mut vms = vms.lock().unwrap_or_else(|p| p.into_inner());
        let v = vms.get_mut(vm_id)?;
        v.state = state;
        v.detail = detail;
        v.generation = generation.next();
        runtime(vm_id, v)
    };
    let _ = events.send(rt.clone());
    Some(rt)
}

fn status_reply(o: &Outgoing) -> MigrationStatusReply {
    let m = &o.m;
    MigrationStatusReply {
        status: m.status as i32,
        transferred_bytes: m.transferred,
        remaining_bytes: m.remaining,
        total_bytes: m.p.memory,
        iteration: m.iteration,
        dirty_pages_rate: (m.dirty_rate() / 4096.0) as u64,
        page_size: 4096,
        mbps: m.bandwidth() * 8.0 / 1e6,
        expected_downtime_ms: m.downtime_ms,
        downtime_ms: m.downtime_ms,
        total_time_ms: (m.elapsed * 1000.0) as u64,
        throttle_pct: m.throttle_pct,
        error: o.error.clone(),
        // Simulated VMs have no taps: nothing to relay.
        relay_frames: 0,
    }
}

/// Parses `sim:IP:PORT:LINK_BPS`.
fn parse_uri(uri: &str) -> anyhow::Result<(String, u64)> {
    let rest = uri.strip_prefix("sim:").ok_or_else(|| {
        coded(
            ErrorCode::Invalid,
            format!("not a sim migration URI: {uri}"),
        )
    })?;
    let (addr, link) = rest.rsplit_once(':').ok_or_else(|| {
        coded(
            ErrorCode::Invalid,
            format!("not a sim migration URI: {uri}"),
        )
    })?;
    let link = link.parse().map_err(|_| {
        coded(
            ErrorCode::Invalid,
            format!("not a sim migration URI: {uri}"),
        )
    })?;
    Ok((addr.to_string(), link))
}

/// Tells the destination at `addr` to run the VM; true when it answered.
async fn hand_over(addr: &str, vm_id: &str) -> bool {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("run {vm_id}\n").as_bytes()).await?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await?;
        anyhow::Ok(line.trim() == "ok")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), talk).await,
        Ok(Ok(true))
    )
}

pub const SIM_CPU_MODELS: &[&str] = &[
    "Cascadelake-Server",
    "Haswell",
    "Icelake-Server",
    "Skylake-Server",
    "qemu64",
];

#[tonic::async_trait]
impl Hypervisor for SimHost {
    fn accel(&self) -> AccelChoice {
        AccelChoice {
            accel: "sim",
            reason: "simulated host (--backend sim)".into(),
        }
    }

    fn cpu(&self) -> CpuFacts {
        let flags = [
            "aes", "avx", "avx2", "avx512f", "fpu", "pdpe1gb", "sse2", "sse4_2", "vmx",
        ];
        CpuFacts {
            vendor: "GenuineIntel".into(),
            model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz (simulated)".into(),
            cores: if self.index.is_multiple_of(2) {
                64
            } else {
                128
            },
            flags: flags.iter().map(|s| s.to_string()).collect(),
            supported_models: SIM_CPU_MODELS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn memory(&self) -> MemoryFacts {
        let total = self.total_mib();
        MemoryFacts {
            total_mib: total,
            free_mib: total - total / 16,
        }
    }

    fn load(&self) -> (f32, f32) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        let cpu = 5.0 + ((self.index * 7 + t) % 10) as f32;
        (cpu, 6.25)
    }

    fn version(&self) -> String {
        format!("ferry-sim {}", crate::VERSION)
    }

    fn vm_loads(&self) -> Vec<ferry_proto::v1::VmLoad> {
        self.lock()
            .iter()
            .filter(|(_, v)| v.state == VmState::VmRunning)
            .map(|(id, v)| {
                let g = GuestModel::from_cmdline(&v.spec.cmdline);
                ferry_proto::v1::VmLoad {
                    vm_id: id.clone(),
                    cpu_cores: g.cpu_cores.unwrap_or(0.1),
                    mem_used_mib: g.mem_used_mib.unwrap_or(v.spec.memory_mib / 2),
                }
            })
            .collect()
    }

    fn vm_metrics(&self) -> Vec<super::VmMetrics> {
        self.lock()
            .iter()
            .filter(|(_, v)| v.state == VmState::VmRunning)
            .map(|(id, v)| super::VmMetrics {
                vm_id: id.clone(),
                name: v.spec.name.clone(),
                // A simulated guest has no process: only its model's dirty rate.
                cpu_seconds: None,
                rss_bytes: None,
                dirty_rate_bps: Some(GuestModel::from_cmdline(&v.spec.cmdline).dirty_bps),
            })
            .collect()
    }

    async fn vm_power(
        &self,
        vm_id: &str,
        action: PowerAction,
        spec: Option<VmSpec>,
        _shutdown_timeout: Option<Duration>,
    ) -> anyhow::Result<VmRuntime> {
        use PowerAction as A;
        use VmState as S;
        let state = {
            let mut vms = self.lock();
            if let Some(s) = spec {
                let e = vms.entry(vm_id.to_string()).or_insert_with(|| SimVm {
                    spec: s.clone(),
                    state: S::VmStopped,
                    detail: "simulated",
                    generation: self.generation.next(),
                    outgoing: None,
                });
                e.spec = s;
            }
            let vm = vms.get(vm_id).ok_or_else(|| not_here(vm_id))?;
            vm.state
        };
        let (next, detail) = match (action, state) {
            (A::PowerOn, _) => (S::VmRunning, "simulated"),
            (A::PowerResume, S::VmPaused) | (A::PowerReset, S::VmRunning) => {
                (S::VmRunning, "simulated")
            }
            (A::PowerOff | A::PowerShutdown, _) => (S::VmStopped, "simulated"),
            (A::PowerPause, S::VmRunning | S::VmPaused) => (S::VmPaused, "paused"),
            (A::Unspecified, _) => return Err(coded(ErrorCode::Invalid, "no power action given")),
            (a, s) => {
                return Err(coded(
                    ErrorCode::WrongState,
                    format!("cannot {} a {} VM", a.as_str_name(), s.as_str_name()),
                ))
            }
        };
        if next == state && matches!(action, A::PowerOn | A::PowerOff | A::PowerShutdown) {
            // Already so: no change, no new generation.
            return self.runtime_of(vm_id);
        }
        self.set(vm_id, next, detail).ok_or_else(|| not_here(vm_id))
    }

    async fn vm_delete(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let removed = self.lock().remove(vm_id);
        Ok(VmRuntime {
            vm_id: vm_id.into(),
            state: VmState::VmStopped as i32,
            generation: self.generation.next(),
            name: removed.map(|v| v.spec.name).unwrap_or_default(),
            ..Default::default()
        })
    }

    fn vm_list(&self) -> Vec<VmRuntime> {
        self.lock().iter().map(|(id, v)| runtime(id, v)).collect()
    }

    fn vm_console(&self, vm_id: &str, _max_bytes: usize) -> anyhow::Result<String> {
        self.runtime_of(vm_id)?;
        Ok(format!("[simulated console of {vm_id}]\n"))
    }

    fn vm_events(&self) -> broadcast::Receiver<VmRuntime> {
        self.events.subscribe()
    }

    async fn migrate_in(&self, req: MigrateInRequest) -> anyhow::Result<MigrateInReply> {
        let spec = req
            .spec
            .ok_or_else(|| coded(ErrorCode::Invalid, "spec is required"))?;
        let vm_id = spec.vm_id.clone();
        {
            let mut vms = self.lock();
            if let Some(v) = vms.get(&vm_id) {
                match (v.state, v.outgoing.is_some()) {
                    // Asked again (a replayed saga step): the same waiting copy.
                    (VmState::VmPaused, false) if v.detail == INCOMING_DETAIL => {}
                    _ => {
                        return Err(coded(
                            ErrorCode::WrongState,
                            format!("VM {vm_id} already runs on this host"),
                        ))
                    }
                }
            } else {
                vms.insert(
                    vm_id.clone(),
                    SimVm {
                        spec,
                        state: VmState::VmPaused,
                        detail: INCOMING_DETAIL,
                        generation: self.generation.next(),
                        outgoing: None,
                    },
                );
            }
        }
        let listener = tokio::net::TcpListener::bind((req.listen_ip.as_str(), 0))
            .await
            .map_err(|e| {
                coded(
                    ErrorCode::Internal,
                    format!("no port on {}: {e}", req.listen_ip),
                )
            })?;
        let port = listener.local_addr()?.port();
        let (vms, generation, events) = (
            self.vms.clone(),
            self.generation.clone(),
            self.events.clone(),
        );
        // The incoming side: waits (a while) for the source's word to run the VM.
        tokio::spawn(async move {
            let accept = tokio::time::timeout(Duration::from_secs(3600), async {
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        return;
                    };
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    if r.read_line(&mut line).await.is_err() {
                        continue;
                    }
                    let Some(id) = line.trim().strip_prefix("run ") else {
                        continue;
                    };
                    let ran = set_state(
                        &vms,
                        &generation,
                        &events,
                        id,
                        VmState::VmRunning,
                        "running (migrated in)",
                    )
                    .is_some();
                    let mut s = r.into_inner();
                    if let Err(e) = s.write_all(if ran { b"ok\n" } else { b"no\n" }).await {
                        // The source then counts the move as failed and keeps the VM.
                        tracing::warn!(vm = id, "answer the source's hand-over: {e}");
                    }
                    if ran {
                        return;
                    }
                }
            });
            if accept.await.is_err() {
                tracing::debug!("no source handed a VM over within an hour; listener closed");
            }
        });
        Ok(MigrateInReply {
            uri: format!("sim:{}:{port}:{}", req.listen_ip, self.link_bps),
            frames_address: String::new(),
            frames_token: String::new(),
            nbd_address: String::new(),
            nbd_tunnel: false,
            held: false,
        })
    }

    async fn migrate_out(&self, req: MigrateOutRequest) -> anyhow::Result<VmRuntime> {
        let vm_id = req.vm_id.clone();
        let (addr, dest_link) = parse_uri(&req.uri)?;
        let out = {
            let mut vms = self.lock();
            let vm = vms.get_mut(&vm_id).ok_or_else(|| not_here(&vm_id))?;
            if let Some(o) = &vm.outgoing {
                let o = o.lock().unwrap_or_else(|p| p.into_inner());
                // Asked again (a replayed saga step): that migration, not a new one.
                if o.uri == req.uri
                    && !matches!(
                        o.m.status,
                        MigrationStatus::MigrationFailed | MigrationStatus::MigrationCancelled
                    )
                {
                    return Ok(runtime(&vm_id, vm));
                }
            }
            if vm.state != VmState::VmRunning {
                return Err(coded(
                    ErrorCode::WrongState,
                    format!("VM {vm_id} is not running here"),
                ));
            }
            let params = MoveParams {
                memory: vm.spec.memory_mib << 20,
                link_bps: self.link_bps.min(dest_link),
                cap_bps: req.max_bandwidth_bytes_per_s,
                downtime_ms: req.downtime_limit_ms.max(1),
                auto_converge: req.auto_converge,
            };
            let guest = GuestModel::from_cmdline(&vm.spec.cmdline);
            let out = Arc::new(Mutex::new(Outgoing {
                uri: req.uri.clone(),
                m: Move::new(params, guest),
                handed_over: false,
                error: String::new(),
            }));
            vm.outgoing = Some(out.clone());
            out
        };
        let step = out.lock().unwrap_or_else(|p| p.into_inner()).m.guest.step;
        if !step {
            let (vms, generation, events) = (
                self.vms.clone(),
                self.generation.clone(),
                self.events.clone(),
            );
            tokio::spawn(drive(out, addr, vm_id.clone(), vms, generation, events));
        }
        self.runtime_of(&vm_id)
    }

    async fn migrate_tune(&self, req: MigrateTuneRequest) -> anyhow::Result<MigrationStatusReply> {
        let out = self.outgoing(&req.vm_id)?.ok_or_else(|| {
            coded(
                ErrorCode::NotFound,
                format!("VM {} has no outgoing migration", req.vm_id),
            )
        })?;
        let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
        if req.downtime_limit_ms > 0 {
            o.m.p.downtime_ms = req.downtime_limit_ms;
        }
        if req.start_postcopy && o.m.status == MigrationStatus::MigrationActive {
            o.m.start_postcopy();
        }
        Ok(status_reply(&o))
    }

    /// Answers at once (`_wait` is not simulated: the caller paces its questions).
    async fn migration_status(
        &self,
        vm_id: &str,
        _wait: std::time::Duration,
    ) -> anyhow::Result<MigrationStatusReply> {
        let Some(out) = self.outgoing(vm_id)? else {
            return Ok(MigrationStatusReply {
                status: MigrationStatus::MigrationNone as i32,
                ..Default::default()
            });
        };
        let (step, addr) = {
            let o = out.lock().unwrap_or_else(|p| p.into_inner());
            (
                o.m.guest.step && !o.m.done(),
                parse_uri(&o.uri).map(|(a, _)| a),
            )
        };
        if step {
            // Step mode: one pass (or the switchover) per question.
            let need_handover = {
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                let b = o.m.bandwidth();
                let pass = o.m.remaining as f64 / b + 1e-9;
                o.m.advance(pass);
                matches!(
                    o.m.status,
                    MigrationStatus::MigrationSwitchingOver
                        | MigrationStatus::MigrationPostcopyActive
                ) && !o.handed_over
            };
            if need_handover {
                if let Ok(addr) = addr {
                    switch_over(
                        &out,
                        &addr,
                        vm_id,
                        &self.vms,
                        &self.generation,
                        &self.events,
                    )
                    .await;
                }
            }
        }
        let o = out.lock().unwrap_or_else(|p| p.into_inner());
        Ok(status_reply(&o))
    }

    async fn migrate_cancel(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let Some(out) = self.outgoing(vm_id)? else {
            return Err(coded(
                ErrorCode::NotFound,
                format!("VM {vm_id} has no outgoing migration"),
            ));
        };
        {
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            match o.m.status {
                MigrationStatus::MigrationCompleted => {
                    return Err(coded(
                        ErrorCode::AlreadyDone,
                        "the migration had already completed; it cannot be cancelled",
                    ))
                }
                MigrationStatus::MigrationPostcopyActive => {
                    return Err(coded(
                        ErrorCode::PastSwitchover,
                        "the migration is in post-copy: the VM runs on the destination; it cannot be cancelled",
                    ))
                }
                MigrationStatus::MigrationFailed | MigrationStatus::MigrationCancelled => {}
                _ => o.m.status = MigrationStatus::MigrationCancelled,
            }
        }
        let mut vms = self.lock();
        if let Some(v) = vms.get_mut(vm_id) {
            v.outgoing = None;
        }
        drop(vms);
        let running = self.runtime_of(vm_id)?;
        if running.state() != VmState::VmRunning {
            return self
                .set(vm_id, VmState::VmRunning, "running (migration cancelled)")
                .ok_or_else(|| not_here(vm_id));
        }
        Ok(running)
    }

    async fn sample_dirty_rate(&self, vm_id: &str) -> anyhow::Result<u64> {
        let vms = self.lock();
        let v = vms.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        if v.state != VmState::VmRunning {
            return Err(coded(
                ErrorCode::WrongState,
                format!("VM {vm_id} is not running here"),
            ));
        }
        Ok(GuestModel::from_cmdline(&v.spec.cmdline).dirty_bps)
    }

    async fn vm_discard(&self, vm_id: &str) -> anyhow::Result<VmRuntime> {
        if let Some(v) = self.lock().remove(vm_id) {
            if let Some(o) = v.outgoing {
                let mut o = o.lock().unwrap_or_else(|p| p.into_inner());
                if !o.m.done() {
                    o.m.status = MigrationStatus::MigrationCancelled;
                }
            }
        }
        Ok(VmRuntime {
            vm_id: vm_id.into(),
            state: VmState::VmStopped as i32,
            generation: self.generation.next(),
            ..Default::default()
        })
    }

    async fn bandwidth_sink(&self, _listen_ip: &str) -> anyhow::Result<String> {
        Ok(format!("sim-link:{}", self.link_bps))
    }

    async fn bandwidth_probe(&self, address: &str, bytes: u64) -> anyhow::Result<(u64, Duration)> {
        let dest: u64 = address
            .strip_prefix("sim-link:")
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| coded(ErrorCode::Invalid, format!("not a sim sink: {address}")))?;
        let link = self.link_bps.min(dest).max(1);
        Ok((bytes, Duration::from_secs_f64(bytes as f64 / link as f64)))
    }
}

/// The detail of a copy waiting for an incoming migration.
const INCOMING_DETAIL: &str = "waiting for an incoming migration";

/// At the switchover (or post-copy's start): pause here, tell the destination to
/// run, and complete only when it answered; else the move fails and the VM runs on.
async fn switch_over(
    out: &Mutex<Outgoing>,
    addr: &str,
    vm_id: &str,
    vms: &Mutex<HashMap<String, SimVm>>,
    generation: &Generation,
    events: &broadcast::Sender<VmRuntime>,
) {
    let postcopy = out.lock().unwrap_or_else(|p| p.into_inner()).m.status
        == MigrationStatus::MigrationPostcopyActive;
    set_state(
        vms,
        generation,
        events,
        vm_id,
        VmState::VmPaused,
        "migrating (switchover)",
    );
    let ok = hand_over(addr, vm_id).await;
    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
    if o.m.status == MigrationStatus::MigrationCancelled {
        return;
    }
    if ok {
        o.handed_over = true;
        if !postcopy {
            o.m.complete();
        }
        drop(o);
        set_state(
            vms,
            generation,
            events,
            vm_id,
            VmState::VmPaused,
            "migrated away (postmigrate)",
        );
    } else {
        o.error = format!("the destination {addr} did not take the VM");
        o.m.status = if postcopy {
            MigrationStatus::MigrationPostcopyPaused
        } else {
            MigrationStatus::MigrationFailed
        };
        drop(o);
        if !postcopy {
            set_state(
                vms,
                generation,
                events,
                vm_id,
                VmState::VmRunning,
                "running (migration failed)",
            );
        }
    }
}

/// Runs a modelled migration with the clock until it ends.
async fn drive(
    out: Arc<Mutex<Outgoing>>,
    addr: String,
    vm_id: String,
    vms: Arc<Mutex<HashMap<String, SimVm>>>,
    generation: Arc<Generation>,
    events: broadcast::Sender<VmRuntime>,
) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let (done, handover) = {
            let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
            let due = |o: &Outgoing| {
                !o.handed_over
                    && matches!(
                        o.m.status,
                        MigrationStatus::MigrationSwitchingOver
                            | MigrationStatus::MigrationPostcopyActive
                    )
            };
            // A post-copy begun since the last tick (`migrate_tune`) hands over
            // before it advances: what is left may all cross within one tick, and
            // a move that completed so never handed the VM over (the destination's
            // copy stayed paused; `sim_migration` flaked on it under load).
            if due(&o) {
                (false, true)
            } else {
                o.m.advance(dt);
                (o.m.done(), due(&o))
            }
        };
        if handover {
            switch_over(&out, &addr, &vm_id, &vms, &generation, &events).await;
        }
        if done {
            return;
        }
    }
}
