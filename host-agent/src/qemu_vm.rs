//! VMs as QEMU processes. Each VM has a directory under the agent's state dir
//! (`vms/<id>/`: `spec.json`, `qmp.sock`, `qemu.pid`, `console.log`, `qemu.log`),
//! and a handle whose operation lock serialises everything done to it (one owner at
//! a time, like an actor) while a watcher task turns QMP events into runtime
//! state.
//!
//! ```text
//!            on                         pause
//!  stopped ──────► running ◄──────────────────► paused
//!     ▲             │  │ reset (stays running)     │
//!     │   off/      │  └──────────┘                │
//!     └─ shutdown ──┴──────────────────────────────┘
//!        (QEMU exits; guest poweroff, `quit`, or SIGKILL after the timeout)
//! ```
//!
//! QEMU runs in its own process group and outlives the agent: a restarted agent
//! finds each VM by its pidfile, checks the process is that VM's QEMU (its
//! `-uuid`), reconnects QMP and reports it again, without touching the guest.
//! A QEMU in this host's network namespace with no record is reported as
//! `unmanaged`, never killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_proto::errors::ErrorCode;
use ferry_proto::v1::{PowerAction, VmRuntime, VmSpec, VmState};
use serde_json::json;
use tokio::sync::broadcast;

mod load;
mod memory;
mod migrate;
mod migrate_held;
mod migrate_tls;
mod reattach;
mod spec;
mod storage;
mod storage_local;

pub use memory::{memory_arg, needs_tcg_dirty_padding};

use spec::spec_to_json;

use crate::datastores::DatastoreSpec;
use crate::generation::Generation;
use crate::netdev;
use crate::qmp::Qmp;

/// The state detail of a QEMU waiting for (or receiving) a migration.
const INCOMING: &str = "waiting for an incoming migration";
/// The file in the VM's directory QEMU writes its pid to (`-pidfile`).
const QEMU_PIDFILE: &str = "qemu.pid";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Running,
    Paused,
    Stopped,
}

impl PowerState {
    pub fn wire(self) -> VmState {
        match self {
            Self::Running => VmState::VmRunning,
            Self::Paused => VmState::VmPaused,
            Self::Stopped => VmState::VmStopped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

struct Live {
    state: PowerState,
    pid: Option<u32>,
    qmp: Option<Arc<Qmp>>,
    generation: u64,
    detail: String,
    /// Where an incoming migration listens, while it waits (and its frame sink).
    incoming: Option<ferry_proto::v1::MigrateInReply>,
    /// Destination: receives the frames the source held at switchover.
    sink: Option<Arc<crate::frames::Sink>>,
    /// Source: holds and forwards the frames that arrive during switchover.
    relay: Option<Arc<crate::frames::Relay>>,
    /// Destination: why the QEMU an early-replied `MigrateIn` went on to start
    /// did not get to listen (`migrate::held_start`); told by `MigrationStatus`.
    start_failed: Option<String>,
}

struct VmHandle {
    id: String,
    dir: PathBuf,
    spec: Mutex<VmSpec>,
    live: Mutex<Live>,
    /// Serialises operations on this VM (owned by a task that goes on after its
    /// call replied: a destination's QEMU started behind an early reply).
    op: Arc<tokio::sync::Mutex<()>>,
    /// Woken when a block job changes (QEMU's `BLOCK_JOB_*` events): a mirror's
    /// state is awaited on it rather than polled.
    block_jobs: tokio::sync::Notify,
    /// Woken when an outgoing migration changes (QEMU's `MIGRATION` and
    /// `MIGRATION_PASS` events): its completion is awaited on it, not polled.
    migration: tokio::sync::Notify,
}

pub struct QemuVms {
    qemu: String,
    accel: &'static str,
    /// Give TCG guests one page more RAM than asked ([`memory_arg`]).
    pub pad_tcg_memory: bool,
    root: PathBuf,
    datastores: Vec<DatastoreSpec>,
    bridges: HashMap<String, String>,
    vms: Mutex<HashMap<String, Arc<VmHandle>>>,
    events: broadcast::Sender<VmRuntime>,
    generation: Generation,
    pub shutdown_timeout: Duration,
    /// Who encrypts migrations when asked for TLS (`--migration-tls`).
    pub migration_tls: crate::config::MigrationTls,
    load_sampler: load::LoadSampler,
    /// The last dirty rate measured per VM (bytes/s), for `/metrics`.
    dirty_rates: Mutex<HashMap<String, u64>>,
}

/// Resolves when `child` has exited, with how.
async fn exit_of(child: &mut std::process::Child) -> std::process::ExitStatus {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn same_netns(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/net")),
        std::fs::read_link("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The `-uuid` of a QEMU process, if it is one.
fn qemu_uuid(pid: u32) -> Option<String> {
    let args = cmdline(pid);
    if !args.first().is_some_and(|a| a.contains("qemu-system")) {
        return None;
    }
    args.iter()
        .position(|a| a == "-uuid")
        .and_then(|i| args.get(i + 1))
        .cloned()
}

impl QemuVms {
    pub fn new(
        qemu: &str,
        accel: &'static str,
        root: PathBuf,
        datastores: Vec<DatastoreSpec>,
        networks: &[(String, String)],
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&root)?;
        let mut bridges = HashMap::new();
        for (name, uplink) in networks {
            bridges.insert(name.clone(), netdev::ensure_bridge(name, uplink)?);
        }
        // A network that left this host's configuration takes its bridge with it.
        let keep: Vec<String> = bridges.values().cloned().collect();
        for gone in netdev::remove_stale_bridges(&keep) {
            tracing::info!(bridge = %gone, "removed the bridge of a network this host no longer offers");
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Self {
            qemu: qemu.to_string(),
            accel,
            pad_tcg_memory: accel == "tcg",
            root,
            datastores,
            bridges,
            vms: Mutex::default(),
            events,
            generation: Generation::default(),
            shutdown_timeout: Duration::from_secs(30),
            migration_tls: crate::config::MigrationTls::default(),
            load_sampler: load::LoadSampler::default(),
            dirty_rates: Mutex::default(),
        }))
    }

    /// Memory given to the VMs with a QEMU process here (their RAM and QEMU's own
    /// overhead each), MiB.
    pub fn committed_mib(&self) -> u64 {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.values()
            .filter(|h| h.live.lock().is_ok_and(|l| l.pid.is_some()))
            .map(|h| h.spec.lock().map_or(0, |s| s.memory_mib) + ferry_common::QEMU_OVERHEAD_MIB)
            .sum()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<VmRuntime> {
        self.events.subscribe()
    }

    fn handle(&self, spec: &VmSpec) -> Arc<VmHandle> {
        let mut vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        let h = vms.entry(spec.vm_id.clone()).or_insert_with(|| {
            Arc::new(VmHandle {
                id: spec.vm_id.clone(),
                dir: self.root.join(&spec.vm_id),
                spec: Mutex::new(spec.clone()),
                live: Mutex::new(Live {
                    state: PowerState::Stopped,
                    pid: None,
                    qmp: None,
                    generation: 0,
                    detail: String::new(),
                    incoming: None,
                    sink: None,
                    relay: None,
                    start_failed: None,
                }),
                op: Arc::new(tokio::sync::Mutex::new(())),
                block_jobs: tokio::sync::Notify::new(),
                migration: tokio::sync::Notify::new(),
            })
        });
        *h.spec.lock().unwrap_or_else(|p| p.into_inner()) = spec.clone();
        h.clone()
    }

    fn get(&self, id: &str) -> Option<Arc<VmHandle>> {
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn runtime(&self, h: &VmHandle) -> VmRuntime {
        let live = h.live.lock().unwrap_or_else(|p| p.into_inner());
        VmRuntime {
            vm_id: h.id.clone(),
            state: live.state.wire() as i32,
            generation: live.generation,
            pid: live.pid.unwrap_or(0),
            detail: live.detail.clone(),
            name: h.spec.lock().map(|s| s.name.clone()).unwrap_or_default(),
        }
    }

    /// Records a new runtime state with a new generation and announces it.
    fn set(
        &self,
        h: &VmHandle,
        state: PowerState,
        pid: Option<u32>,
        qmp: Option<Arc<Qmp>>,
        detail: &str,
    ) {
        {
            let mut live = h.live.lock().unwrap_or_else(|p| p.into_inner());
            live.state = state;
            live.pid = pid;
            live.qmp = qmp;
            live.detail = detail.to_string();
            live.generation = self.generation.next();
        }
        let _ = self.events.send(self.runtime(h));
    }

    fn set_state(&self, h: &VmHandle, state: PowerState, detail: &str) {
        let (pid, qmp) = {
            let live = h.live.lock().unwrap_or_else(|p| p.into_inner());
            (live.pid, live.qmp.clone())
        };
        self.set(h, state, pid, qmp, detail);
    }

    /// Turns QMP events into state; when QMP closes, QEMU is gone: clean up.
    fn watch(
        self: &Arc<Self>,
        h: Arc<VmHandle>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<crate::qmp::QmpEvent>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                tracing::debug!(vm = %h.id, event = %ev.name, "QMP event");
                if let "MIGRATION" | "MIGRATION_PASS" = ev.name.as_str() {
                    h.migration.notify_waiters();
                }
                match ev.name.as_str() {
                    "STOP" => {
                        me.set_state(&h, PowerState::Paused, "paused");
                        if let Some(r) = h.live.lock().ok().and_then(|l| l.relay.clone()) {
                            r.paused(ev.at.unwrap_or_else(std::time::SystemTime::now));
                        }
                    }
                    "RESUME" => {
                        // Running here again after an outgoing migration was
                        // cancelled: nothing more to relay.
                        if let Some(r) = h.live.lock().ok().and_then(|mut l| l.relay.take()) {
                            r.stop();
                        }
                        let was_incoming = h
                            .live
                            .lock()
                            .map(|l| l.detail.starts_with(INCOMING))
                            .unwrap_or(false);
                        me.set_state(&h, PowerState::Running, "running");
                        if was_incoming {
                            // A storage migration's disks are the VM's own now.
                            me.incoming_disks_done(&h).await;
                            // Arrived by migration: announce the VM's MACs at once, and
                            // densely, so the fabric learns its new port before the
                            // peers' retransmissions back off.
                            let qmp = h.live.lock().ok().and_then(|l| l.qmp.clone());
                            if let Some(q) = qmp {
                                let args =
                                    json!({"initial": 0, "max": 100, "rounds": 8, "step": 20});
                                if let Err(e) = q.execute("announce-self", args).await {
                                    tracing::warn!(vm = %h.id, "announce-self: {e:#}");
                                }
                            }
                        }
                    }
                    "RESET" => me.set_state(&h, PowerState::Running, "reset"),
                    "BLOCK_JOB_READY"
                    | "BLOCK_JOB_COMPLETED"
                    | "BLOCK_JOB_CANCELLED"
                    | "BLOCK_JOB_ERROR" => h.block_jobs.notify_waiters(),
                    // A storage migration's state is in (the destination waits,
                    // `-S`): stop the exports, then run.
                    "MIGRATION"
                        if ev.data["status"] == "completed"
                            && h.dir.join(storage::INCOMING_DISKS).exists() =>
                    {
                        let qmp = h.live.lock().ok().and_then(|l| l.qmp.clone());
                        if let Some(q) = qmp {
                            if let Err(e) = me.finish_incoming_storage(&h, &q).await {
                                tracing::error!(vm = %h.id, "start the arrived VM: {e:#}");
                            }
                        }
                    }
                    _ => {}
                }
            }
            // QMP closed: QEMU exited (guest poweroff, quit, kill).
            if let Ok(mut l) = h.live.lock() {
                if let Some(r) = l.relay.take() {
                    r.stop();
                }
                l.sink = None;
                l.incoming = None;
            }
            let pid = h.live.lock().map(|l| l.pid).unwrap_or(None);
            if let Some(pid) = pid {
                // Polled finely: a migration's source clean-up waits on this.
                for _ in 0..1000 {
                    if !pid_alive(pid) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let spec = h.spec.lock().map(|s| s.clone()).unwrap_or_default();
            me.cleanup_taps(&spec);
            let _ = std::fs::remove_file(h.dir.join(QEMU_PIDFILE));
            me.set(&h, PowerState::Stopped, None, None, "QEMU exited");
        });
    }

    fn cleanup_taps(&self, spec: &VmSpec) {
        for i in 0..spec.nics.len() {
            netdev::delete_tap(&netdev::tap_name(&spec.vm_id, i));
        }
    }

    fn datastore_path(&self, id: &str) -> anyhow::Result<PathBuf> {
        for d in &self.datastores {
            if crate::datastores::identity(&d.path)
                .map(|i| i.to_string())
                .ok()
                .as_deref()
                == Some(id)
            {
                return Ok(d.path.clone());
            }
        }
        bail!("datastore {id} is not mounted on this host")
    }

    /// The QEMU command line for `spec`.
    fn command(&self, spec: &VmSpec, dir: &Path) -> anyhow::Result<std::process::Command> {
        let mut c = std::process::Command::new(&self.qemu);
        let machine = if spec.machine_type.is_empty() {
            "q35"
        } else {
            &spec.machine_type
        };
        c.args(["-name", &format!("guest={},debug-threads=on", spec.name)])
            .args(["-uuid", &spec.vm_id])
            .args(["-machine", &format!("{machine},accel={}", self.accel)])
            .args([
                "-cpu",
                if spec.cpu_model.is_empty() {
                    "qemu64"
                } else {
                    &spec.cpu_model
                },
            ])
            .args(["-smp", &spec.vcpus.max(1).to_string()])
            .args(["-m", &memory_arg(spec.memory_mib, self.pad_tcg_memory)])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=qmp,path={},server=on,wait=off",
                dir.join("qmp.sock").display()
            ))
            .args(["-mon", "chardev=qmp,mode=control"])
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={},append=on",
                dir.join("console.log").display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-pidfile")
            .arg(dir.join(QEMU_PIDFILE));
        if spec.boot_disk < 0 {
            c.arg("-kernel").arg(&spec.kernel);
            if !spec.initrd.is_empty() {
                c.arg("-initrd").arg(&spec.initrd);
            }
            let mut append = spec.cmdline.clone();
            if !append.contains("console=") {
                append = format!("console=ttyS0 {append}");
            }
            c.args(["-append", append.trim()]);
        }
        for (i, d) in spec.disks.iter().enumerate() {
            let path = self.datastore_path(&d.datastore_id)?.join(&d.path);
            c.arg("-drive").arg(format!(
                "file={},if=none,id=disk{i},format=qcow2,node-name={}",
                path.display(),
                storage::disk_node(i)
            ));
            let boot = if spec.boot_disk == i as i32 {
                ",bootindex=1"
            } else {
                ""
            };
            c.args(["-device", &format!("virtio-blk-pci,drive=disk{i}{boot}")]);
        }
        for (i, n) in spec.nics.iter().enumerate() {
            let tap = netdev::tap_name(&spec.vm_id, i);
            c.args([
                "-netdev",
                &format!("tap,id=net{i},ifname={tap},script=no,downscript=no"),
            ]);
            c.args([
                "-device",
                &format!("virtio-net-pci,netdev=net{i},mac={}", n.mac),
            ]);
        }
        Ok(c)
    }

    async fn start(self: &Arc<Self>, h: &Arc<VmHandle>, spec: &VmSpec) -> anyhow::Result<()> {
        self.start_qemu(h, spec, false).await
    }

    /// Starts QEMU for `spec`; with `incoming`, it waits for a migration stream
    /// (`-incoming defer`) and the disks must already exist.
    async fn start_qemu(
        self: &Arc<Self>,
        h: &Arc<VmHandle>,
        spec: &VmSpec,
        incoming: bool,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&h.dir)?;
        let _ = std::fs::remove_file(h.dir.join(migrate::OUTGOING));
        std::fs::write(h.dir.join("spec.json"), spec_to_json(spec).to_string())?;
        // Disks: created on first use, kept across power cycles.
        for d in &spec.disks {
            let path = self.datastore_path(&d.datastore_id)?.join(&d.path);
            if incoming && !path.exists() {
                bail!(
                    "disk {} is not on this host's datastore: is the storage really shared?",
                    path.display()
                );
            }
            if !path.exists() {
                storage::create_image(&path, d.size_bytes).await?;
            }
        }
        for (i, n) in spec.nics.iter().enumerate() {
            let bridge = self
                .bridges
                .get(&n.network)
                .with_context(|| format!("network {} is not on this host", n.network))?;
            netdev::create_tap(&netdev::tap_name(&spec.vm_id, i), bridge)?;
        }
        let _ = std::fs::remove_file(h.dir.join("qmp.sock"));
        let _ = std::fs::remove_file(h.dir.join(QEMU_PIDFILE));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.dir.join("qemu.log"))?;
        let mut cmd = self.command(spec, &h.dir)?;
        if incoming {
            cmd.args(["-incoming", "defer"]);
            // A storage migration's destination does not run by itself once the
            // state is in: its disks are NBD exports until then, and are activated
            // (`late-block-activate`) only by the `cont` that follows stopping the
            // NBD server (`storage::finish_incoming_storage`), libvirt's order.
            // Else QEMU activates them at once and warns of a permission conflict
            // with the export's writer.
            if h.dir.join(storage::INCOMING_DISKS).exists() {
                cmd.arg("-S");
            }
        }
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a signal to the agent's group does not reach it.
            cmd.process_group(0);
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.cleanup_taps(spec);
                return Err(e).context("start QEMU");
            }
        };
        let pid = child.id();
        let spawned = std::time::Instant::now();
        // A QEMU that exits at once (a bad argument, a file it cannot open) says so
        // now, not when its QMP socket has been waited for in vain.
        let qmp_sock = h.dir.join("qmp.sock");
        let connected = tokio::select! {
            c = Qmp::connect(&qmp_sock, Duration::from_secs(15)) => c,
            status = exit_of(&mut child) => Err(anyhow::anyhow!("QEMU exited ({status})")),
        };
        tracing::debug!(vm = %spec.vm_id, ms = spawned.elapsed().as_millis(), "QEMU's QMP answers");
        let (qmp, events) = match connected {
            Ok(c) => c,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                self.cleanup_taps(spec);
                let log = std::fs::read_to_string(h.dir.join("qemu.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "QEMU did not start: {e:#}; {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
        };
        // Reap the child when it exits (the agent is its parent until it restarts).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        if incoming {
            self.set(h, PowerState::Paused, Some(pid), Some(qmp), INCOMING);
        } else {
            self.set(h, PowerState::Running, Some(pid), Some(qmp), "started");
        }
        self.watch(h.clone(), events);
        Ok(())
    }

    async fn wait_stopped(&self, h: &VmHandle, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if h.live
                .lock()
                .map(|l| l.state == PowerState::Stopped)
                .unwrap_or(false)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    async fn force_off(&self, h: &VmHandle) -> anyhow::Result<()> {
        let (qmp, pid) = {
            let l = h.live.lock().unwrap_or_else(|p| p.into_inner());
            (l.qmp.clone(), l.pid)
        };
        if let Some(q) = qmp {
            let _ = q.execute("quit", json!({})).await;
        }
        if !self.wait_stopped(h, Duration::from_secs(5)).await {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if !self.wait_stopped(h, Duration::from_secs(10)).await {
                bail!("QEMU did not exit");
            }
        }
        Ok(())
    }

    /// A power operation; `spec` is required for `on`.
    pub async fn power(
        self: &Arc<Self>,
        id: &str,
        action: PowerAction,
        spec: Option<VmSpec>,
        shutdown_timeout: Option<Duration>,
    ) -> anyhow::Result<VmRuntime> {
        use PowerAction as A;
        let h = match (&spec, self.get(id)) {
            (Some(s), _) => self.handle(s),
            (None, Some(h)) => h,
            (None, None) => {
                return Err(crate::error::coded(
                    ErrorCode::NotFound,
                    format!("VM {id} is not defined on this host"),
                ))
            }
        };
        let _op = h.op.lock().await;
        let state = h
            .live
            .lock()
            .map(|l| l.state)
            .unwrap_or(PowerState::Stopped);
        let qmp = h.live.lock().ok().and_then(|l| l.qmp.clone());
        match (action, state) {
            (A::PowerOn, PowerState::Stopped) => {
                let spec = spec.context("power on needs the VM's spec")?;
                self.start(&h, &spec).await?;
            }
            (A::PowerOn, _) => {}
            (A::PowerOff, PowerState::Stopped) | (A::PowerShutdown, PowerState::Stopped) => {}
            (A::PowerOff, _) => self.force_off(&h).await?,
            (A::PowerShutdown, _) => {
                let timeout = shutdown_timeout.unwrap_or(self.shutdown_timeout);
                if let Some(q) = &qmp {
                    let _ = q.execute("system_powerdown", json!({})).await;
                }
                if !self.wait_stopped(&h, timeout).await {
                    tracing::info!(vm = %id, "guest ignored ACPI shutdown for {timeout:?}; forcing it off");
                    self.force_off(&h).await?;
                    self.set_state(
                        &h,
                        PowerState::Stopped,
                        &format!(
                            "guest ignored shutdown for {} s; forced off",
                            timeout.as_secs()
                        ),
                    );
                }
            }
            (A::PowerReset, PowerState::Stopped)
            | (A::PowerPause, PowerState::Stopped)
            | (A::PowerResume, PowerState::Stopped) => {
                return Err(crate::error::coded(
                    ErrorCode::WrongState,
                    format!("VM {id} is stopped"),
                ))
            }
            (A::PowerReset, _) => {
                qmp.context("no QMP")?
                    .execute("system_reset", json!({}))
                    .await?;
            }
            (A::PowerPause, _) => {
                qmp.context("no QMP")?.execute("stop", json!({})).await?;
                self.set_state(&h, PowerState::Paused, "paused");
            }
            (A::PowerResume, _) => {
                qmp.context("no QMP")?.execute("cont", json!({})).await?;
                self.set_state(&h, PowerState::Running, "running");
            }
            (A::Unspecified, _) => {
                return Err(crate::error::coded(
                    ErrorCode::Invalid,
                    "no power action given",
                ))
            }
        }
        Ok(self.runtime(&h))
    }

    /// Stops the VM if it runs and removes its disks, taps and directory.
    pub async fn delete(self: &Arc<Self>, id: &str) -> anyhow::Result<VmRuntime> {
        let Some(h) = self.get(id) else {
            return Ok(VmRuntime {
                vm_id: id.into(),
                state: VmState::VmStopped as i32,
                ..Default::default()
            });
        };
        if h.live
            .lock()
            .map(|l| l.state != PowerState::Stopped)
            .unwrap_or(false)
        {
            self.power(id, PowerAction::PowerOff, None, None).await?;
        }
        let _op = h.op.lock().await;
        let spec = h.spec.lock().map(|s| s.clone()).unwrap_or_default();
        for d in &spec.disks {
            if let Ok(p) = self.datastore_path(&d.datastore_id) {
                let _ = std::fs::remove_file(p.join(&d.path));
            }
        }
        self.cleanup_taps(&spec);
        let _ = std::fs::remove_dir_all(&h.dir);
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(VmRuntime {
            vm_id: id.into(),
            state: VmState::VmStopped as i32,
            generation: self.generation.next(),
            ..Default::default()
        })
    }

    /// Every VM's runtime, plus QEMUs in this namespace that have no record.
    pub fn list(&self) -> Vec<VmRuntime> {
        let handles: Vec<Arc<VmHandle>> = self
            .vms
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let known: std::collections::HashSet<String> =
            handles.iter().map(|h| h.id.clone()).collect();
        let mut out: Vec<VmRuntime> = handles.iter().map(|h| self.runtime(h)).collect();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Some(uuid) = qemu_uuid(pid) else { continue };
                if !known.contains(&uuid) && same_netns(pid) && pid_alive(pid) {
                    out.push(VmRuntime {
                        vm_id: uuid,
                        state: VmState::VmUnmanaged as i32,
                        pid,
                        detail: "a QEMU this agent has no record of (left running, not killed)"
                            .into(),
                        ..Default::default()
                    });
                }
            }
        }
        out
    }

    pub fn console(&self, id: &str, max_bytes: usize) -> anyhow::Result<String> {
        let h = self.get(id).ok_or_else(|| not_here(id))?;
        let text = std::fs::read(h.dir.join("console.log")).unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        Ok(String::from_utf8_lossy(&text[start..]).into_owned())
    }
}

/// The VM is not on this host (a typed `NOT_FOUND`).
fn not_here(id: &str) -> anyhow::Error {
    crate::error::coded(ErrorCode::NotFound, format!("VM {id} is not on this host"))
}
