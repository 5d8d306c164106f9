//! Storage migration on the QEMU backend: moving a running VM's disks to a host
//! that does not share its datastore, coordinated with the memory migration (the
//! sequence libvirt uses with QEMU's NBD server).
//!
//! 1. Destination (`MigrateIn` with `mirror_disks`): creates each disk empty on its
//!    datastore (recorded in the VM's `incoming-disks` file, so a discard removes
//!    exactly those), starts QEMU waiting for the migration, and exports each disk
//!    over QEMU's NBD server, writable, in TLS with the host's CA-issued identity:
//!    by a migration tunnel in front of a Unix socket (`--migration-tls agent`,
//!    the default; `MigrateInReply.nbd_tunnel`), or by QEMU itself (NBD's STARTTLS).
//! 2. Source (`MirrorStart`): opens each export as an NBD node (through a tunnel
//!    of its own when the destination has one; TLS verifying the destination's
//!    name either way) and runs `blockdev-mirror` in `write-blocking` mode: the
//!    background copy proceeds while every guest write goes to both disks, so the
//!    mirror converges whatever the guest writes. `MirrorStatus` reports progress
//!    and readiness (in sync), holding the question until a block job changes
//!    (QEMU's `BLOCK_JOB_*` events) or `wait_ms` passes.
//! 3. Source (`MigrateOut` with `disks_mirrored`): the memory migration runs with
//!    `pause-before-switchover`; once the VM is paused there, the mirrors are
//!    completed (`block-job-cancel` on a ready mirror ends it with both disks the
//!    same), the NBD nodes dropped, and the migration continues to the switchover.
//!    The destination, running, stops its NBD server and forgets the record: the
//!    disks are now the VM's.
//! 4. The source's old images are removed only after the move committed
//!    (`RemoveDisks`, by the saga). Until then cancel or failure leaves the VM on
//!    its source with its disks untouched (`MirrorCancel`; the destination's copies
//!    go with its discard).
//!
//! A storage-only move (two datastores of one host) is `storage_local`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferry_proto::errors::ErrorCode;
use ferry_proto::v1::{
    DiskMirror, MirrorStartRequest, MirrorStatusReply, RemoveDisksRequest, VmSpec,
};
use serde_json::json;

use super::migrate_tls::TLS_OBJECT;
use super::{not_here, QemuVms, VmHandle};
use crate::error::coded;

/// The VM's file listing the disk images an incoming storage migration created.
pub const INCOMING_DISKS: &str = "incoming-disks";
/// The VM's file saying its disks are being mirrored away (how many).
pub const MIRRORING: &str = "mirroring";

/// Node name of disk `i` (set on `-drive`), also its NBD export's name.
pub fn disk_node(i: usize) -> String {
    format!("ferry-disk{i}")
}
/// The block backend (`-drive id=`) of disk `i`: names the disk whatever node
/// it is on now (a storage-only move replaces the node).
pub fn drive_id(i: usize) -> String {
    format!("disk{i}")
}
/// Node name of the NBD target of disk `i` on the source, and its mirror job's id.
pub(super) fn target_node(i: usize) -> String {
    format!("ferry-mirror{i}")
}
/// The NBD client's TLS credentials on the source (the migration's own object is
/// re-created for each migration, which an NBD node in use would forbid).
const NBD_TLS_OBJECT: &str = "ferry-tls-nbd";
/// Destination: QEMU's NBD server's socket when a tunnel carries the exports.
const NBD_IN: &str = "nbd-in.sock";
/// Source: this host's end of the tunnel to the destination's exports.
const NBD_OUT: &str = "nbd-out.sock";

/// Creates an empty qcow2 image of `size` bytes at `path`.
pub async fn create_image(path: &Path, size: u64) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size.to_string())
        .output()
        .await
        .context("run qemu-img")?;
    if !out.status.success() {
        bail!(
            "qemu-img create {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn listed(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(dir.join(INCOMING_DISKS))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl QemuVms {
    /// Destination: creates the spec's disks, empty, each recorded before it is
    /// made. An image already there that this move did not create is refused: it
    /// belongs to someone.
    pub(super) async fn create_incoming_disks(
        &self,
        h: &VmHandle,
        spec: &VmSpec,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&h.dir)?;
        let mut mine = listed(&h.dir);
        for d in &spec.disks {
            let path = self.datastore_path(&d.datastore_id)?.join(&d.path);
            if mine.contains(&path) {
                // A replayed request: ours, from the first attempt.
                let _ = std::fs::remove_file(&path);
            } else if path.exists() {
                bail!(
                    "disk {} already exists on this host's datastore: not overwriting it",
                    path.display()
                );
            } else {
                mine.push(path.clone());
                let text: String = mine.iter().map(|p| format!("{}\n", p.display())).collect();
                std::fs::write(h.dir.join(INCOMING_DISKS), text)?;
            }
            create_image(&path, d.size_bytes).await?;
        }
        Ok(())
    }

    /// Destination: exports each disk over NBD on `ip` (TLS with the migration's
    /// server credentials when `tls`); returns `host:port`.
    /// Destination: exports each disk over NBD on `ip`; returns the server's
    /// `host:port` and whether it is reached through a tunnel. With `tunnel`
    /// (TLS by the agent's tunnel, as the memory's stream), QEMU's server listens
    /// in the clear on a Unix socket in the VM's directory and a tunnel takes
    /// the TLS connections; else QEMU's server speaks TLS itself (NBD's
    /// STARTTLS), or plain TCP without `tls`.
    pub(super) async fn export_disks(
        &self,
        h: &VmHandle,
        qmp: &crate::qmp::Qmp,
        ip: &str,
        disks: usize,
        tls: bool,
        tunnel: bool,
    ) -> anyhow::Result<(String, bool)> {
        // A server an earlier, interrupted attempt left (none is the usual answer).
        let _ = qmp.execute("nbd-server-stop", json!({})).await;
        let tunneled = tls && tunnel;
        let sock = h.dir.join(NBD_IN);
        let port = if tunneled {
            let _ = std::fs::remove_file(&sock);
            qmp.execute(
                "nbd-server-start",
                json!({"addr": {"type": "unix", "data": {"path": sock.display().to_string()}}}),
            )
            .await?;
            None
        } else {
            let port = std::net::TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .with_context(|| format!("no free port on {ip}"))?
                .port();
            let mut args =
                json!({"addr": {"type": "inet", "data": {"host": ip, "port": port.to_string()}}});
            if tls {
                args["tls-creds"] = TLS_OBJECT.into();
            }
            qmp.execute("nbd-server-start", args).await?;
            Some(port)
        };
        for i in 0..disks {
            qmp.execute(
                "block-export-add",
                json!({"type": "nbd", "id": disk_node(i), "node-name": disk_node(i),
                       "name": disk_node(i), "writable": true}),
            )
            .await?;
        }
        let port = match port {
            Some(p) => p,
            None => {
                let sock = sock.display().to_string();
                let t = self
                    .spawn_tunnel(h, "nbd-in", &["in", "--listen", ip, "--unix", &sock])
                    .await?;
                t.ready
                    .strip_prefix("port ")
                    .and_then(|p| p.parse::<u16>().ok())
                    .with_context(|| format!("the NBD tunnel said {:?}", t.ready))?
            }
        };
        Ok((format!("{ip}:{port}"), tunneled))
    }

    /// Destination of a storage migration whose state has arrived (QEMU waits,
    /// `-S`, disks not yet activated): the NBD server stops (the source let go of
    /// its exports at the switchover), then `cont` activates the disks and runs
    /// the VM. Also run by an agent that restarted in between (`reattach`).
    pub(super) async fn finish_incoming_storage(
        &self,
        h: &VmHandle,
        qmp: &crate::qmp::Qmp,
    ) -> anyhow::Result<()> {
        if let Err(e) = qmp.execute("nbd-server-stop", json!({})).await {
            tracing::warn!(vm = %h.id, "stop the NBD server: {e:#}");
        }
        qmp.execute("cont", json!({})).await?;
        Ok(())
    }

    /// `finish_incoming_storage` for a re-attached destination whose migration
    /// has completed.
    pub(super) async fn finish_if_arrived(&self, h: &VmHandle) {
        let Some(qmp) = h.live.lock().ok().and_then(|l| l.qmp.clone()) else {
            return;
        };
        let arrived = qmp
            .execute("query-migrate", json!({}))
            .await
            .is_ok_and(|v| v["status"] == "completed");
        if arrived {
            if let Err(e) = self.finish_incoming_storage(h, &qmp).await {
                tracing::error!(vm = %h.id, "start the arrived VM: {e:#}");
            }
        }
    }

    /// Destination, once the VM runs here: the disks are its own now.
    pub(super) async fn incoming_disks_done(&self, h: &VmHandle) {
        if !h.dir.join(INCOMING_DISKS).exists() {
            return;
        }
        // (Its NBD server stopped before the `cont` that brought it here.)
        let _ = std::fs::remove_file(h.dir.join(INCOMING_DISKS));
        tracing::info!(vm = %h.id, "storage migration arrived: the disks are the VM's");
    }

    /// Destination, discarding an unfinished incoming move: removes the disks it made.
    pub(super) fn remove_incoming_disks(&self, dir: &Path) {
        for p in listed(dir) {
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(disk = %p.display(), "removed a disk an unfinished storage migration made")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(disk = %p.display(), "remove: {e}"),
            }
        }
        let _ = std::fs::remove_file(dir.join(INCOMING_DISKS));
    }

    /// Source: mirrors every disk to the destination's exports (idempotent).
    pub async fn mirror_start(
        self: &Arc<Self>,
        req: MirrorStartRequest,
    ) -> anyhow::Result<MirrorStatusReply> {
        let h = self.get(&req.vm_id).ok_or_else(|| not_here(&req.vm_id))?;
        let _op = h.op.lock().await;
        let qmp = self.qmp_of(&req.vm_id)?;
        let disks = h.spec.lock().map(|s| s.disks.len()).unwrap_or(0);
        if disks == 0 {
            return Err(coded(ErrorCode::Invalid, "the VM has no disk to mirror"));
        }
        if h.dir.join(MIRRORING).exists() && !self.jobs(&qmp).await?.is_empty() {
            return self.status_of(&h, &qmp).await;
        }
        if !req.local_targets.is_empty() {
            return self.mirror_start_local(&h, &qmp, &req, disks).await;
        }
        let (host, port) = req
            .nbd_address
            .rsplit_once(':')
            .with_context(|| format!("bad NBD address {:?}", req.nbd_address))?;
        // Through a tunnel (the destination's exports are behind one): QEMU's NBD
        // client connects in the clear to this host's end of it.
        let server = if req.nbd_tunnel {
            if req.tls_hostname.is_empty() {
                return Err(coded(
                    ErrorCode::Invalid,
                    "an NBD tunnel needs the destination's name (tls_hostname)",
                ));
            }
            let sock = h.dir.join(NBD_OUT).display().to_string();
            self.spawn_tunnel(
                &h,
                "nbd-out",
                &[
                    "out",
                    "--unix",
                    &sock,
                    "--connect",
                    &req.nbd_address,
                    "--server-name",
                    &req.tls_hostname,
                ],
            )
            .await?;
            json!({"type": "unix", "path": sock})
        } else {
            json!({"type": "inet", "host": host, "port": port})
        };
        let qemu_tls = !req.tls_hostname.is_empty() && !req.nbd_tunnel;
        if qemu_tls {
            let dir = self.tls_dir()?;
            // Replaced if an earlier attempt made it; absent is the usual answer.
            let _ = qmp
                .execute("object-del", json!({"id": NBD_TLS_OBJECT}))
                .await;
            qmp.execute(
                "object-add",
                json!({"qom-type": "tls-creds-x509", "id": NBD_TLS_OBJECT, "dir": dir.display().to_string(),
                       "endpoint": "client", "verify-peer": true}),
            )
            .await?;
        }
        for i in 0..disks {
            // A node an earlier attempt left; absent is the usual answer.
            let _ = qmp
                .execute("blockdev-del", json!({"node-name": target_node(i)}))
                .await;
            let mut node = json!({"driver": "nbd", "node-name": target_node(i),
                "server": server.clone(), "export": disk_node(i)});
            if qemu_tls {
                node["tls-creds"] = NBD_TLS_OBJECT.into();
                node["tls-hostname"] = req.tls_hostname.clone().into();
            }
            qmp.execute("blockdev-add", node).await?;
            let mut mirror = json!({"job-id": target_node(i), "device": drive_id(i),
                "target": target_node(i), "sync": "full", "copy-mode": "write-blocking"});
            if req.max_bandwidth_bytes_per_s > 0 {
                mirror["speed"] = req.max_bandwidth_bytes_per_s.into();
            }
            qmp.execute("blockdev-mirror", mirror).await?;
        }
        std::fs::write(h.dir.join(MIRRORING), disks.to_string())?;
        self.status_of(&h, &qmp).await
    }

    /// Source: the mirror jobs (`query-block-jobs`) of this VM, by disk.
    pub(super) async fn jobs(
        &self,
        qmp: &crate::qmp::Qmp,
    ) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
        let v = qmp.execute("query-block-jobs", json!({})).await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|j| {
                        let i = j["device"]
                            .as_str()?
                            .strip_prefix("ferry-mirror")?
                            .parse()
                            .ok()?;
                        Some((i, j.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub(super) async fn status_of(
        &self,
        h: &VmHandle,
        qmp: &crate::qmp::Qmp,
    ) -> anyhow::Result<MirrorStatusReply> {
        let want: usize = std::fs::read_to_string(h.dir.join(MIRRORING))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let jobs = self.jobs(qmp).await?;
        let mut reply = MirrorStatusReply::default();
        for (i, j) in &jobs {
            let u = |k: &str| j[k].as_u64().unwrap_or(0);
            reply.disks.push(DiskMirror {
                disk: *i as u32,
                done_bytes: u("offset"),
                total_bytes: u("len"),
                ready: j["ready"].as_bool().unwrap_or(false),
            });
            if j["status"] == "concluded" || j["status"] == "aborting" {
                reply.failed = true;
                reply.error = format!("the mirror of disk {i} stopped: {}", j["error"]);
            }
        }
        // A mirror that vanished before the switchover failed (QEMU dismisses a
        // failed job by itself).
        if want > 0 && jobs.len() < want && !reply.failed {
            reply.failed = true;
            reply.error = format!(
                "{} of {want} disk mirrors stopped (the destination's NBD server went away?)",
                want - jobs.len()
            );
        }
        reply.disks.sort_by_key(|d| d.disk);
        Ok(reply)
    }

    /// The mirrors' state; while one is not in sync, waits up to `wait` for a
    /// block job event first (registered before the first look: none is missed).
    pub async fn mirror_status(
        &self,
        vm_id: &str,
        wait: Duration,
    ) -> anyhow::Result<MirrorStatusReply> {
        let h = self.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        let qmp = self.qmp_of(vm_id)?;
        let changed = h.block_jobs.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let reply = self.status_of(&h, &qmp).await?;
        let settled = reply.failed || reply.disks.iter().all(|d| d.ready);
        if settled || wait.is_zero() {
            return Ok(reply);
        }
        if tokio::time::timeout(wait, changed).await.is_err() {
            return Ok(reply);
        }
        self.status_of(&h, &qmp).await
    }

    /// Source: stops the mirrors; the VM's own disks are as they were.
    pub async fn mirror_cancel(&self, vm_id: &str) -> anyhow::Result<MirrorStatusReply> {
        let Some(h) = self.get(vm_id) else {
            return Ok(MirrorStatusReply::default());
        };
        let _op = h.op.lock().await;
        let _ = std::fs::remove_file(h.dir.join(MIRRORING));
        let Ok(qmp) = self.qmp_of(vm_id) else {
            return Ok(MirrorStatusReply::default());
        };
        if self.jobs(&qmp).await?.is_empty() {
            self.drop_local_targets(&h, &qmp).await?;
            return Ok(MirrorStatusReply::default());
        }
        // Abandoned with the guest's writes drained first: the vCPUs pause for the
        // moment the cancel takes. A `write-blocking` mirror force-cancelled while
        // guest writes were in flight to a slow NBD target took QEMU 10.0.2 down
        // once in our tests (`make test`, the source's QMP closed mid-cancel).
        let running = qmp.status().await.is_ok_and(|s| s == "running");
        if running {
            qmp.execute("stop", json!({})).await?;
        }
        let ended = self.end_mirrors(&qmp, true).await;
        if running {
            qmp.execute("cont", json!({})).await?;
        }
        ended?;
        self.drop_local_targets(&h, &qmp).await?;
        Ok(MirrorStatusReply::default())
    }

    /// Ends every mirror job (`force`: abandon; else complete a ready one, both
    /// disks then the same) and drops the NBD nodes.
    async fn end_mirrors(&self, qmp: &crate::qmp::Qmp, force: bool) -> anyhow::Result<()> {
        let jobs = self.jobs(qmp).await?;
        for (i, _) in &jobs {
            if let Err(e) = qmp
                .execute(
                    "block-job-cancel",
                    json!({"device": target_node(*i), "force": force}),
                )
                .await
            {
                tracing::warn!("end the mirror of disk {i}: {e:#}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.jobs(qmp).await?.is_empty() {
            if Instant::now() > deadline {
                bail!("the disk mirrors did not end within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for (i, _) in &jobs {
            // Its job is gone; a node QEMU already dropped is no error here.
            let _ = qmp
                .execute("blockdev-del", json!({"node-name": target_node(*i)}))
                .await;
        }
        Ok(())
    }

    /// Source, the VM paused at `pre-switchover`: completes the mirrors, then lets
    /// the migration switch over. Safe to call twice.
    pub(super) async fn finish_mirrors(
        &self,
        h: &VmHandle,
        qmp: &crate::qmp::Qmp,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        self.end_mirrors(qmp, false).await?;
        let _ = std::fs::remove_file(h.dir.join(MIRRORING));
        match qmp
            .execute("migrate-continue", json!({"state": "pre-switchover"}))
            .await
        {
            Ok(_) => {
                tracing::info!(vm = %h.id, ms = t0.elapsed().as_millis() as u64, "disk mirrors complete; switching over")
            }
            Err(e) => tracing::debug!(vm = %h.id, "migrate-continue: {e:#} (already continued)"),
        }
        Ok(())
    }

    /// Source: watches an outgoing migration with mirrored disks and finishes the
    /// mirrors the moment it pauses before its switchover.
    pub(super) fn watch_switchover(self: &Arc<Self>, h: Arc<VmHandle>, qmp: Arc<crate::qmp::Qmp>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let st = match qmp.execute("query-migrate", json!({})).await {
                    Ok(v) => v["status"].as_str().unwrap_or("").to_string(),
                    Err(_) => return, // QEMU went away
                };
                match st.as_str() {
                    "pre-switchover" => {
                        if let Err(e) = me.finish_mirrors(&h, &qmp).await {
                            tracing::error!(vm = %h.id, "finish the disk mirrors: {e:#}");
                            // The move must not switch over with incomplete disks; the
                            // saga sees the cancelled migration and unwinds.
                            if let Err(e) = qmp.execute("migrate_cancel", json!({})).await {
                                tracing::error!(vm = %h.id, "cancel the migration: {e:#}");
                            }
                        }
                        return;
                    }
                    "completed" | "failed" | "cancelled" | "none" => return,
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
    }

    /// Removes disk images of `req.vm_id` that no QEMU here uses.
    pub async fn remove_disks(&self, req: RemoveDisksRequest) -> anyhow::Result<u32> {
        let mut paths = Vec::new();
        for d in &req.disks {
            if d.path.contains('/') || d.path.starts_with('.') {
                return Err(coded(
                    ErrorCode::Invalid,
                    format!("bad disk path {:?}", d.path),
                ));
            }
            paths.push(self.datastore_path(&d.datastore_id)?.join(&d.path));
        }
        // Never a disk a running QEMU here has open.
        let in_use: Vec<PathBuf> = {
            let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
            vms.values()
                .filter(|h| h.live.lock().is_ok_and(|l| l.pid.is_some()))
                .flat_map(|h| {
                    h.spec
                        .lock()
                        .map(|s| {
                            s.disks
                                .iter()
                                .filter_map(|d| {
                                    Some(self.datastore_path(&d.datastore_id).ok()?.join(&d.path))
                                })
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut removed = 0;
        for p in paths {
            if in_use.contains(&p) {
                return Err(coded(
                    ErrorCode::WrongState,
                    format!("{} is in use by a VM running here", p.display()),
                ));
            }
            match std::fs::remove_file(&p) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("remove {}", p.display())),
            }
        }
        tracing::info!(vm = %req.vm_id, removed, "removed the disks a storage migration left behind");
        Ok(removed)
    }
}
