//! Live migration on the QEMU backend. The destination starts an identical QEMU
//! with `-incoming defer` and listens (`migrate-incoming`); the source sets the
//! policy's parameters and runs `migrate`; QEMU's own semantics keep exactly one
//! copy running: the destination resumes only after the whole state arrived, the
//! source stays paused (`postmigrate`) until it is discarded. Before switchover a
//! cancel leaves the source running and the destination is discarded.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_proto::errors::ErrorCode;
use ferry_proto::v1::{
    MigrateInReply, MigrateInRequest, MigrateOutRequest, MigrateTuneRequest, MigrationStatus,
    MigrationStatusReply, VmRuntime, VmState,
};

use crate::config::MigrationTls;
use crate::error::coded;
use serde_json::json;

use super::migrate_tls::TLS_OBJECT;
use super::{not_here, PowerState, QemuVms};

/// A source's copy is removed once no frame for the guest has reached its taps
/// for this long after the switchover ([`crate::frames::Relay::settle`]), and at
/// the latest after the second.
const RELAY_QUIET: Duration = Duration::from_millis(20);
const RELAY_SETTLE_MAX: Duration = Duration::from_millis(500);

/// QEMU's `query-migrate` status as the wire's enum.
pub fn status_of(qemu: &str) -> MigrationStatus {
    use MigrationStatus as S;
    match qemu {
        "none" => S::MigrationNone,
        "setup" => S::MigrationSetup,
        "active" => S::MigrationActive,
        "postcopy-active" => S::MigrationPostcopyActive,
        "postcopy-paused" => S::MigrationPostcopyPaused,
        "postcopy-recover" | "postcopy-recover-setup" => S::MigrationPostcopyRecover,
        "device" | "pre-switchover" | "wait-unplug" | "colo" => S::MigrationSwitchingOver,
        "completed" => S::MigrationCompleted,
        "cancelling" => S::MigrationCancelling,
        "cancelled" => S::MigrationCancelled,
        _ => S::MigrationFailed,
    }
}

/// Past the switchover: the destination runs the VM.
pub fn in_postcopy(s: MigrationStatus) -> bool {
    use MigrationStatus as S;
    matches!(
        s,
        S::MigrationPostcopyActive | S::MigrationPostcopyPaused | S::MigrationPostcopyRecover
    )
}

/// Marks (in the VM's directory, so it outlives an agent restart) that this QEMU
/// has sent its state away. Without it `query-migrate` describes whatever migration
/// QEMU knows, and a QEMU that *arrived* by migration reports that incoming one as
/// `completed` — which must never pass for an outgoing move that finished.
pub const OUTGOING: &str = "outgoing-migration";

/// The Unix sockets, in the VM's directory, between QEMU and its migration tunnel.
pub(super) const TUNNEL_IN: &str = "mig-in.sock";
const TUNNEL_OUT: &str = "mig-out.sock";

pub(super) fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl QemuVms {
    pub(super) fn qmp_of(&self, vm_id: &str) -> anyhow::Result<Arc<crate::qmp::Qmp>> {
        let h = self.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        let qmp = h.live.lock().ok().and_then(|l| l.qmp.clone());
        qmp.ok_or_else(|| {
            coded(
                ErrorCode::WrongState,
                format!("VM {vm_id} is not running here"),
            )
        })
    }

    /// Destination: starts the waiting QEMU, its frame sink, and returns where the
    /// source sends the state and the frames.
    pub async fn migrate_in(
        self: &Arc<Self>,
        req: MigrateInRequest,
    ) -> anyhow::Result<MigrateInReply> {
        let spec = req.spec.clone().context("spec is required")?;
        let h = self.handle(&spec);
        let op = h.op.clone().lock_owned().await;
        let already = || {
            coded(
                ErrorCode::WrongState,
                format!("VM {} already runs on this host", spec.vm_id),
            )
        };
        // Asked again (a replayed saga step): the same waiting QEMU, the same URI.
        let unfinished = {
            let mut l = h.live.lock().unwrap_or_else(|p| p.into_inner());
            l.start_failed = None;
            if let (Some(reply), PowerState::Paused) = (&l.incoming, l.state) {
                return Ok(reply.clone());
            }
            match (l.state, &l.qmp, &l.incoming) {
                (PowerState::Stopped, _, _) => None,
                (_, Some(qmp), None) => Some(qmp.clone()),
                _ => return Err(already()),
            }
        };
        // A waiting QEMU that an earlier call left without its reply (its caller
        // went away mid-call, so the call was dropped): it has received nothing,
        // so it is replaced by a fresh one.
        if let Some(qmp) = unfinished {
            let st = qmp.execute("query-status", json!({})).await?;
            if st["status"] != "inmigrate" {
                return Err(already());
            }
            tracing::warn!(vm = %spec.vm_id, "replacing a waiting QEMU an interrupted call left");
            self.force_off(&h).await?;
        }
        let tunnel = req.tls && self.migration_tls == MigrationTls::Agent;
        if tunnel && holds(&req) {
            return self.held_start(h, op, spec, req).await;
        }
        // Where a destination's start goes (debug log): images, QEMU, the rest.
        let t0 = std::time::Instant::now();
        if req.mirror_disks {
            self.create_incoming_disks(&h, &spec).await?;
        }
        let disks_ms = t0.elapsed().as_millis();
        self.start_qemu(&h, &spec, true).await?;
        let qemu_ms = t0.elapsed().as_millis() - disks_ms;
        let listen_ip = req.listen_ip.as_str();
        let qmp = receiving(&h, &req).await?;
        if req.mirror_disks {
            // The disks are activated by `cont`, after the NBD server stops (the
            // QEMU was started with `-S`: see `start_qemu`).
            qmp.execute(
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "late-block-activate", "state": true}]}),
            )
            .await?;
        }
        if req.tls {
            // QEMU's own identity: for its TLS channel, and for the NBD exports
            // of a storage migration (which QEMU always encrypts itself).
            self.tls_object(&qmp, "server").await?;
        }
        let uri = if tunnel {
            // QEMU listens in the clear on a socket only this host reaches; the
            // tunnel takes the TLS connections (see `crate::tunnel`).
            let sock = h.dir.join(TUNNEL_IN);
            let _ = std::fs::remove_file(&sock);
            qmp.execute(
                "migrate-incoming",
                json!({"uri": format!("unix:{}", sock.display())}),
            )
            .await?;
            let t = self
                .spawn_tunnel(
                    &h,
                    "in",
                    &["in", "--listen", listen_ip, "--unix", &path_str(&sock)],
                )
                .await?;
            let port = t
                .ready
                .strip_prefix("port ")
                .and_then(|p| p.parse::<u16>().ok())
                .with_context(|| format!("the migration tunnel said {:?}", t.ready))?;
            format!("tcp:{listen_ip}:{port}")
        } else {
            if req.tls {
                qmp.execute("migrate-set-parameters", json!({"tls-creds": TLS_OBJECT}))
                    .await?;
            }
            let port = std::net::TcpListener::bind((listen_ip, 0))
                .and_then(|l| l.local_addr())
                .with_context(|| format!("no free port on {listen_ip}"))?
                .port();
            let uri = format!("tcp:{listen_ip}:{port}");
            qmp.execute("migrate-incoming", json!({"uri": uri})).await?;
            uri
        };
        let (nbd_address, nbd_tunnel) = if req.mirror_disks {
            self.export_disks(&h, &qmp, listen_ip, spec.disks.len(), req.tls, tunnel)
                .await?
        } else {
            (String::new(), false)
        };
        let taps = (0..spec.nics.len())
            .map(|i| crate::netdev::tap_name(&spec.vm_id, i))
            .collect();
        let sink = match crate::frames::Sink::start(listen_ip, taps) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(vm = %spec.vm_id, "no frame relay for this move: {e:#}");
                None
            }
        };
        let reply = MigrateInReply {
            uri,
            frames_address: sink.as_ref().map(|s| s.address.clone()).unwrap_or_default(),
            frames_token: sink.as_ref().map(|s| s.token.clone()).unwrap_or_default(),
            nbd_address,
            nbd_tunnel,
            held: false,
        };
        if let Ok(mut l) = h.live.lock() {
            l.incoming = Some(reply.clone());
            l.sink = sink;
        }
        tracing::debug!(vm = %spec.vm_id, disks_ms, qemu_ms,
            ms = t0.elapsed().as_millis(), "waiting for the migration");
        drop(op);
        Ok(reply)
    }

    /// Source: starts sending the VM's state (and relaying its frames once it
    /// pauses).
    pub async fn migrate_out(
        self: &Arc<Self>,
        req: MigrateOutRequest,
    ) -> anyhow::Result<VmRuntime> {
        let vm_id = req.vm_id.as_str();
        let h = self.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        let _op = h.op.lock().await;
        let qmp = self.qmp_of(vm_id)?;
        // Asked again (a replayed saga step): a migration already under way or done
        // is that migration, not a new one.
        let marker = h.dir.join(OUTGOING);
        let st = qmp.execute("query-migrate", json!({})).await?;
        if marker.exists()
            && matches!(
                st["status"].as_str(),
                Some(
                    "setup"
                        | "active"
                        | "pre-switchover"
                        | "device"
                        | "completed"
                        | "postcopy-active"
                        | "postcopy-paused"
                        | "postcopy-recover"
                )
            )
        {
            return Ok(self.runtime(&h));
        }
        set_capabilities(&qmp, req.auto_converge, req.postcopy, req.channels).await?;
        // Mirrored disks: stop before the switchover until the mirrors complete.
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "pause-before-switchover", "state": req.disks_mirrored},
            ]}),
        )
        .await?;
        // No cap: as fast as the link goes (QEMU's default caps it at 128 MiB/s).
        let bandwidth = if req.max_bandwidth_bytes_per_s == 0 {
            64u64 << 30
        } else {
            req.max_bandwidth_bytes_per_s
        };
        qmp.execute(
            "migrate-set-parameters",
            json!({"max-bandwidth": bandwidth, "downtime-limit": req.downtime_limit_ms.max(1)}),
        )
        .await?;
        let tunnel = !req.tls_hostname.is_empty() && self.migration_tls == MigrationTls::Agent;
        if req.tls_hostname.is_empty() || tunnel {
            qmp.execute("migrate-set-parameters", json!({"tls-creds": ""}))
                .await?;
        } else {
            self.tls_object(&qmp, "client").await?;
            qmp.execute(
                "migrate-set-parameters",
                json!({"tls-creds": TLS_OBJECT, "tls-hostname": req.tls_hostname}),
            )
            .await?;
        }
        if !req.frames_address.is_empty() {
            let spec = h.spec.lock().map(|s| s.clone()).unwrap_or_default();
            let taps = spec
                .nics
                .iter()
                .enumerate()
                .map(|(i, n)| (crate::netdev::tap_name(vm_id, i), n.mac.clone()))
                .collect();
            match crate::frames::Relay::start(&req.frames_address, &req.frames_token, taps) {
                Ok(r) => {
                    if let Ok(mut l) = h.live.lock() {
                        if let Some(old) = l.relay.replace(r) {
                            old.stop();
                        }
                    }
                }
                Err(e) => tracing::warn!(vm = %vm_id, "no frame relay for this move: {e:#}"),
            }
        }
        let uri = if tunnel {
            // QEMU sends in the clear to the tunnel on a socket only this host
            // reaches; the tunnel carries it to the destination in TLS.
            let to = req
                .uri
                .strip_prefix("tcp:")
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(ip, port)| {
                    let ip = ip.trim_start_matches('[').trim_end_matches(']');
                    Some(std::net::SocketAddr::new(
                        ip.parse().ok()?,
                        port.parse().ok()?,
                    ))
                })
                .ok_or_else(|| {
                    coded(
                        ErrorCode::Invalid,
                        format!("{:?} is not a tcp:HOST:PORT migration address", req.uri),
                    )
                })?;
            let sock = h.dir.join(TUNNEL_OUT);
            let to = to.to_string();
            self.spawn_tunnel(
                &h,
                "out",
                &[
                    "out",
                    "--unix",
                    &path_str(&sock),
                    "--connect",
                    &to,
                    "--server-name",
                    &req.tls_hostname,
                ],
            )
            .await?;
            format!("unix:{}", sock.display())
        } else {
            req.uri.clone()
        };
        std::fs::write(&marker, &req.uri)?;
        qmp.execute("migrate", json!({"uri": uri})).await?;
        if req.disks_mirrored {
            self.watch_switchover(h.clone(), qmp.clone());
        }
        Ok(self.runtime(&h))
    }

    /// Starts a migration tunnel for the VM's QEMU (it ends with that QEMU, or
    /// when the connections it carried have all closed); what it carried is
    /// written to `tunnel-<name>.json` in the VM's directory.
    pub(super) async fn spawn_tunnel(
        &self,
        h: &super::VmHandle,
        name: &str,
        args: &[&str],
    ) -> anyhow::Result<crate::tunnel::Tunnel> {
        // The QEMU it serves: the one running, or the one about to start, by the
        // pid file it will write (a destination's tunnel that takes the stream
        // before its QEMU listens, `migrate_held`).
        let pid = h
            .live
            .lock()
            .ok()
            .filter(|l| l.state != PowerState::Stopped)
            .and_then(|l| l.pid);
        let qemu = match pid {
            Some(pid) => ["--qemu-pid".to_string(), pid.to_string()],
            None => [
                "--qemu-pidfile".to_string(),
                path_str(&h.dir.join(super::QEMU_PIDFILE)),
            ],
        };
        let state = self.root.parent().context("no state dir")?;
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let record = h.dir.join(format!("tunnel-{name}.json"));
        let _ = std::fs::remove_file(&record);
        all.extend([
            "--state-dir".into(),
            path_str(state),
            "--record".into(),
            path_str(&record),
        ]);
        all.extend(qemu);
        crate::tunnel::spawn(&all).await
    }

    /// Source: escalates a running migration — a new downtime target, or the move
    /// to post-copy (the VM then runs on the destination and pulls what it lacks).
    pub async fn migrate_tune(
        &self,
        req: MigrateTuneRequest,
    ) -> anyhow::Result<MigrationStatusReply> {
        let h = self.get(&req.vm_id).ok_or_else(|| not_here(&req.vm_id))?;
        let _op = h.op.lock().await;
        let qmp = self.qmp_of(&req.vm_id)?;
        if req.downtime_limit_ms > 0 {
            qmp.execute(
                "migrate-set-parameters",
                json!({"downtime-limit": req.downtime_limit_ms}),
            )
            .await?;
        }
        if req.start_postcopy {
            let st = self.query_status(&h).await?.status();
            if !in_postcopy(st) && st != MigrationStatus::MigrationCompleted {
                qmp.execute("migrate-start-postcopy", json!({})).await?;
            }
        }
        self.query_status(&h).await
    }

    /// Source: the outgoing migration's state (`query-migrate`, in turn with the
    /// VM's other operations); while it runs, waits up to `wait` for QEMU to
    /// report a change first (registered before the first look: none is missed),
    /// without holding the VM's operation lock meanwhile.
    pub async fn migration_status(
        &self,
        vm_id: &str,
        wait: Duration,
    ) -> anyhow::Result<MigrationStatusReply> {
        let h = self.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        // A destination whose QEMU did not start behind an early reply: why.
        let failed = h.live.lock().ok().and_then(|l| l.start_failed.clone());
        if let Some(why) = failed {
            return Ok(MigrationStatusReply {
                status: MigrationStatus::MigrationFailed as i32,
                error: why,
                ..Default::default()
            });
        }
        let changed = h.migration.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let reply = {
            let _op = h.op.lock().await;
            self.query_status(&h).await?
        };
        let over = matches!(
            reply.status(),
            MigrationStatus::MigrationNone
                | MigrationStatus::MigrationCompleted
                | MigrationStatus::MigrationFailed
                | MigrationStatus::MigrationCancelled
        );
        if over || wait.is_zero() {
            return Ok(reply);
        }
        if tokio::time::timeout(wait, changed).await.is_err() {
            return Ok(reply);
        }
        let _op = h.op.lock().await;
        self.query_status(&h).await
    }

    /// `query-migrate` for a VM whose operation lock the caller holds.
    async fn query_status(&self, h: &super::VmHandle) -> anyhow::Result<MigrationStatusReply> {
        let vm_id = h.id.as_str();
        if !h.dir.join(OUTGOING).exists() {
            return Ok(MigrationStatusReply {
                status: MigrationStatus::MigrationNone as i32,
                ..Default::default()
            });
        }
        let v = self
            .qmp_of(vm_id)?
            .execute("query-migrate", json!({}))
            .await?;
        // Paused before the switchover with mirrors still to finish (the watcher
        // died with an agent restart): finish them now.
        if v["status"] == "pre-switchover" && h.dir.join(super::storage::MIRRORING).exists() {
            let qmp = self.qmp_of(vm_id)?;
            self.finish_mirrors(h, &qmp).await?;
        }
        let ram = &v["ram"];
        let u = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
        if v["status"] == "completed" {
            tracing::debug!(vm = %vm_id, total_ms = u(&v["total-time"]), setup_ms = u(&v["setup-time"]),
                downtime_ms = u(&v["downtime"]), mbps = ram["mbps"].as_f64().unwrap_or(0.0),
                "outgoing migration completed");
        }
        let rate = u(&ram["dirty-pages-rate"]) * u(&ram["page-size"]);
        if rate > 0 {
            self.note_dirty_rate(vm_id, rate);
        }
        Ok(MigrationStatusReply {
            status: status_of(v["status"].as_str().unwrap_or("none")) as i32,
            transferred_bytes: u(&ram["transferred"]),
            remaining_bytes: u(&ram["remaining"]),
            total_bytes: u(&ram["total"]),
            iteration: u(&ram["dirty-sync-count"]),
            dirty_pages_rate: u(&ram["dirty-pages-rate"]),
            page_size: u(&ram["page-size"]),
            mbps: ram["mbps"].as_f64().unwrap_or(0.0),
            expected_downtime_ms: u(&v["expected-downtime"]),
            downtime_ms: u(&v["downtime"]),
            total_time_ms: u(&v["total-time"]),
            throttle_pct: u(&v["cpu-throttle-percentage"]) as u32,
            error: v["error-desc"].as_str().unwrap_or_default().to_string(),
            relay_frames: h
                .live
                .lock()
                .ok()
                .and_then(|l| l.relay.as_ref().map(|r| r.forwarded()))
                .unwrap_or(0),
        })
    }

    /// Source: cancels an unfinished migration; the VM keeps (or resumes) running.
    pub async fn migrate_cancel(self: &Arc<Self>, vm_id: &str) -> anyhow::Result<VmRuntime> {
        use MigrationStatus as S;
        let h = self.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        let _op = h.op.lock().await;
        let qmp = self.qmp_of(vm_id)?;
        let now = self.query_status(&h).await?.status();
        if in_postcopy(now) {
            return Err(coded(
                ErrorCode::PastSwitchover,
                "the migration is in post-copy: the VM runs on the destination; it cannot be cancelled",
            ));
        }
        qmp.execute("migrate_cancel", json!({})).await?;
        for _ in 0..200 {
            let st = self.query_status(&h).await?.status();
            if st == S::MigrationCompleted {
                return Err(coded(
                    ErrorCode::AlreadyDone,
                    "the migration had already completed; it cannot be cancelled",
                ));
            }
            if matches!(
                st,
                S::MigrationCancelled | S::MigrationFailed | S::MigrationNone
            ) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = std::fs::remove_file(h.dir.join(OUTGOING));
        if qmp.status().await? != "running" {
            qmp.execute("cont", json!({})).await?;
            self.set_state(&h, PowerState::Running, "running (migration cancelled)");
        }
        Ok(self.runtime(&h))
    }

    /// Stops this host's copy and removes its taps and files, keeping the disks.
    pub async fn discard(self: &Arc<Self>, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let Some(h) = self.get(vm_id) else {
            return Ok(VmRuntime {
                vm_id: vm_id.into(),
                state: VmState::VmStopped as i32,
                ..Default::default()
            });
        };
        let _op = h.op.lock().await;
        // The source's copy after a switchover: its taps stay until frames for the
        // guest stop reaching them (each is relayed to the destination).
        let relay = h.live.lock().ok().and_then(|l| l.relay.clone());
        if let Some(r) = relay {
            if !r.settle(RELAY_QUIET, RELAY_SETTLE_MAX).await {
                tracing::warn!(vm = %vm_id, "frames for the guest still reach this host's taps {} ms after the switchover; removing them anyway", RELAY_SETTLE_MAX.as_millis());
            }
        }
        if h.live
            .lock()
            .map(|l| l.state != PowerState::Stopped)
            .unwrap_or(false)
        {
            self.force_off(&h).await?;
        }
        let spec = h.spec.lock().map(|s| s.clone()).unwrap_or_default();
        self.cleanup_taps(&spec);
        self.remove_incoming_disks(&h.dir);
        let _ = std::fs::remove_dir_all(&h.dir);
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vm_id);
        Ok(VmRuntime {
            vm_id: vm_id.into(),
            state: VmState::VmStopped as i32,
            generation: self.generation.next(),
            ..Default::default()
        })
    }

    /// Samples the guest's dirty-page rate for `calc_time` (QMP `calc-dirty-rate`).
    pub async fn sample_dirty_rate(&self, vm_id: &str, calc_time: Duration) -> anyhow::Result<u64> {
        let qmp = self.qmp_of(vm_id)?;
        qmp.execute(
            "calc-dirty-rate",
            json!({"calc-time": calc_time.as_secs().max(1)}),
        )
        .await?;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let v = qmp.execute("query-dirty-rate", json!({})).await?;
            if v["status"] == "measured" {
                // QEMU reports MiB/s.
                let bps = v["dirty-rate"].as_u64().unwrap_or(0) << 20;
                self.note_dirty_rate(vm_id, bps);
                return Ok(bps);
            }
        }
        Err(coded(
            ErrorCode::QemuFailed,
            "the dirty rate was not measured in time",
        ))
    }
}

/// Whether a `MigrateIn` the tunnel carries may take the stream before its QEMU
/// listens: asked to (`hold_stream`), with QEMU's return path open — by post-copy
/// or by a source agent that opens it on every move — and no disks to mirror
/// (their NBD export needs the QEMU first). With the return path the source
/// reports the move complete only once this QEMU has loaded the state; without
/// it a source could send its last byte into the hold before this QEMU had even
/// started, and its copy be discarded on a completion the destination never
/// reached.
pub(super) fn holds(req: &MigrateInRequest) -> bool {
    req.hold_stream && (req.postcopy || req.source_return_path) && !req.mirror_disks
}

/// The QMP of the QEMU just started on `h` to receive the VM, with the
/// capabilities both sides must agree on set as `req` asks.
pub(super) async fn receiving(
    h: &super::VmHandle,
    req: &MigrateInRequest,
) -> anyhow::Result<Arc<crate::qmp::Qmp>> {
    let qmp = h
        .live
        .lock()
        .ok()
        .and_then(|l| l.qmp.clone())
        .context("no QMP")?;
    set_capabilities(&qmp, false, req.postcopy, req.channels).await?;
    Ok(qmp)
}

/// The migration capabilities both sides must agree on (and the source's throttle).
pub(super) async fn set_capabilities(
    qmp: &crate::qmp::Qmp,
    auto_converge: bool,
    postcopy: bool,
    channels: u32,
) -> anyhow::Result<()> {
    let multifd = channels > 1;
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [
            {"capability": "events", "state": true},
            // QEMU's return path, on every move (post-copy opens it anyway): the
            // source then reports a move complete only once the destination has
            // loaded the whole state, and fails it — resuming the guest — when the
            // destination could not. Without it a source completes as soon as its
            // last byte is written, and a destination that then failed to load
            // (a device it lacks, say) took the VM with it: the saga commits and
            // discards the source on that completion.
            {"capability": "return-path", "state": true},
            {"capability": "auto-converge", "state": auto_converge},
            {"capability": "postcopy-ram", "state": postcopy},
            {"capability": "multifd", "state": multifd},
        ]}),
    )
    .await?;
    if multifd {
        qmp.execute(
            "migrate-set-parameters",
            json!({"multifd-channels": channels.min(16)}),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(postcopy: bool, source_return_path: bool, mirror_disks: bool) -> MigrateInRequest {
        MigrateInRequest {
            hold_stream: true,
            postcopy,
            source_return_path,
            mirror_disks,
            ..Default::default()
        }
    }

    #[test]
    fn the_stream_is_held_only_with_the_return_path_open_and_no_disks_to_mirror() {
        assert!(holds(&req(true, false, false)), "post-copy opens it");
        assert!(
            holds(&req(false, true, false)),
            "the source's agent opens it"
        );
        assert!(holds(&req(true, true, false)));
        assert!(
            !holds(&req(false, false, false)),
            "an older source agent without post-copy could complete into the hold"
        );
        assert!(!holds(&req(true, true, true)), "disks to mirror");
        let not_asked = MigrateInRequest {
            hold_stream: false,
            ..req(true, true, false)
        };
        assert!(!holds(&not_asked));
    }
}
