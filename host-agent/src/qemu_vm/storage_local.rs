//! Storage-only moves (issue #12): a running VM's disks copied to another
//! datastore of its own host (`MirrorStart` with `local_targets`) into local qcow2
//! images (listed in the VM's `local-targets` file), and, once in sync, switched
//! to with `block-job-complete` while the guest runs (`MirrorPivot`); the spec
//! then names the new places. A cancel removes the copies no disk uses.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use ferry_proto::errors::ErrorCode;
use ferry_proto::v1::{MirrorStartRequest, MirrorStatusReply, VmDiskSpec};
use serde_json::json;

use super::storage::{create_image, drive_id, target_node, MIRRORING};
use super::{not_here, QemuVms, VmHandle};
use crate::error::coded;

/// The VM's file listing a storage-only move's target images (JSON).
pub const LOCAL_TARGETS: &str = "local-targets";

/// Node name of a storage-only move's target for disk `i` (unique per move: the
/// node of an earlier move's copy may still be the disk's).
fn local_node(i: usize, stamp: u64) -> String {
    format!("ferry-local{i}-{stamp}")
}

/// A storage-only move under way: its targets, and the stamp of its node names.
struct LocalMove {
    stamp: u64,
    targets: Vec<VmDiskSpec>,
}

fn local_move(dir: &Path) -> Option<LocalMove> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(LOCAL_TARGETS)).ok()?).ok()?;
    let targets = v["targets"]
        .as_array()?
        .iter()
        .map(|t| VmDiskSpec {
            datastore_id: t["datastore_id"].as_str().unwrap_or_default().into(),
            path: t["path"].as_str().unwrap_or_default().into(),
            size_bytes: t["size_bytes"].as_u64().unwrap_or(0),
        })
        .collect();
    Some(LocalMove {
        stamp: v["stamp"].as_u64()?,
        targets,
    })
}

fn write_local_move(dir: &Path, m: &LocalMove) -> anyhow::Result<()> {
    let targets: Vec<serde_json::Value> = m
        .targets
        .iter()
        .map(
            |t| json!({"datastore_id": t.datastore_id, "path": t.path, "size_bytes": t.size_bytes}),
        )
        .collect();
    std::fs::write(
        dir.join(LOCAL_TARGETS),
        json!({"stamp": m.stamp, "targets": targets}).to_string(),
    )?;
    Ok(())
}

impl QemuVms {
    /// Storage-only move: mirrors disk `i` into a new image `req.local_targets[i]`
    /// on this host (the caller holds the VM's operation lock).
    pub(super) async fn mirror_start_local(
        &self,
        h: &VmHandle,
        qmp: &crate::qmp::Qmp,
        req: &MirrorStartRequest,
        disks: usize,
    ) -> anyhow::Result<MirrorStatusReply> {
        if req.local_targets.len() != disks {
            return Err(coded(
                ErrorCode::Invalid,
                format!("{} targets for {disks} disks", req.local_targets.len()),
            ));
        }
        // A replayed request finds its own images (listed) and makes them again.
        let earlier = local_move(&h.dir);
        let mine: Vec<PathBuf> = earlier
            .iter()
            .flat_map(|m| m.targets.iter())
            .filter_map(|t| Some(self.datastore_path(&t.datastore_id).ok()?.join(&t.path)))
            .collect();
        let mut paths = Vec::new();
        for t in &req.local_targets {
            if t.path.contains('/') || t.path.starts_with('.') {
                return Err(coded(
                    ErrorCode::Invalid,
                    format!("bad disk path {:?}", t.path),
                ));
            }
            let path = self.datastore_path(&t.datastore_id)?.join(&t.path);
            if path.exists() && !mine.contains(&path) {
                bail!(
                    "disk {} already exists on the target datastore: not overwriting it",
                    path.display()
                );
            }
            paths.push(path);
        }
        if let Some(m) = &earlier {
            for i in 0..m.targets.len() {
                let _ = qmp
                    .execute("blockdev-del", json!({"node-name": local_node(i, m.stamp)}))
                    .await;
            }
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mv = LocalMove {
            stamp,
            targets: req.local_targets.clone(),
        };
        // Recorded before any image exists: a cancel removes exactly these.
        write_local_move(&h.dir, &mv)?;
        for (i, (t, path)) in req.local_targets.iter().zip(&paths).enumerate() {
            let _ = std::fs::remove_file(path);
            create_image(path, t.size_bytes).await?;
            qmp.execute(
                "blockdev-add",
                json!({"driver": "qcow2", "node-name": local_node(i, stamp),
                       "file": {"driver": "file", "filename": path.display().to_string()}}),
            )
            .await?;
            let mut mirror = json!({"job-id": target_node(i), "device": drive_id(i),
                "target": local_node(i, stamp), "sync": "full", "copy-mode": "write-blocking"});
            if req.max_bandwidth_bytes_per_s > 0 {
                mirror["speed"] = req.max_bandwidth_bytes_per_s.into();
            }
            qmp.execute("blockdev-mirror", mirror).await?;
        }
        std::fs::write(h.dir.join(MIRRORING), disks.to_string())?;
        self.status_of(h, qmp).await
    }

    /// The image file each disk uses now (`query-block`), by disk index.
    async fn disk_files(&self, qmp: &crate::qmp::Qmp, disks: usize) -> anyhow::Result<Vec<String>> {
        let v = qmp.execute("query-block", json!({})).await?;
        Ok((0..disks)
            .map(|i| {
                v.as_array()
                    .and_then(|a| a.iter().find(|b| b["device"] == drive_id(i).as_str()))
                    .and_then(|b| b["inserted"]["file"].as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect())
    }

    /// Storage-only move: switches each in-sync disk to its copy, then records
    /// the copies as the VM's disks. Safe to call again.
    pub async fn mirror_pivot(&self, vm_id: &str) -> anyhow::Result<MirrorStatusReply> {
        let h = self.get(vm_id).ok_or_else(|| not_here(vm_id))?;
        let _op = h.op.lock().await;
        let qmp = self.qmp_of(vm_id)?;
        let Some(mv) = local_move(&h.dir) else {
            return Err(coded(
                ErrorCode::WrongState,
                format!("VM {vm_id} has no storage-only move under way"),
            ));
        };
        let n = mv.targets.len();
        let mut targets = Vec::new();
        for t in &mv.targets {
            targets.push(
                self.datastore_path(&t.datastore_id)?
                    .join(&t.path)
                    .display()
                    .to_string(),
            );
        }
        let before = self.disk_files(&qmp, n).await?;
        let jobs = self.jobs(&qmp).await?;
        for i in 0..n {
            if before[i] == targets[i] {
                continue; // switched by an earlier call
            }
            match jobs.iter().find(|(j, _)| *j == i) {
                Some((_, j)) if j["ready"].as_bool() == Some(true) => {
                    if let Err(e) = qmp
                        .execute("block-job-complete", json!({"device": target_node(i)}))
                        .await
                    {
                        tracing::warn!(vm = %vm_id, "switch disk {i} to its copy: {e:#}");
                    }
                }
                Some(_) => tracing::warn!(vm = %vm_id, "disk {i}: its mirror is not in sync"),
                None => tracing::warn!(vm = %vm_id, "disk {i}: no mirror to complete"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.jobs(&qmp).await?.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let after = self.disk_files(&qmp, n).await?;
        let switched: Vec<bool> = (0..n).map(|i| after[i] == targets[i]).collect();
        let pivoted = switched.iter().filter(|s| **s).count();
        // The spec names each switched disk's new place (the next start, move or
        // clean-up reads it).
        let spec = {
            let mut spec = h.spec.lock().unwrap_or_else(|p| p.into_inner());
            for (i, t) in mv.targets.iter().enumerate() {
                if switched[i] {
                    if let Some(d) = spec.disks.get_mut(i) {
                        d.datastore_id = t.datastore_id.clone();
                        d.path = t.path.clone();
                    }
                }
            }
            spec.clone()
        };
        std::fs::write(
            h.dir.join("spec.json"),
            super::spec::spec_to_json(&spec).to_string(),
        )?;
        let mut reply = MirrorStatusReply {
            pivoted: pivoted as u32,
            ..Default::default()
        };
        if pivoted == n {
            let _ = std::fs::remove_file(h.dir.join(MIRRORING));
            let _ = std::fs::remove_file(h.dir.join(LOCAL_TARGETS));
            tracing::info!(vm = %vm_id, disks = n, "storage-only move: the disks use their copies");
        } else {
            reply.failed = true;
            reply.error = format!("{pivoted} of {n} disks switched to their copy");
        }
        Ok(reply)
    }

    /// Storage-only move cancelled: removes the copies no disk uses (the caller
    /// holds the operation lock; the mirrors have ended).
    pub(super) async fn drop_local_targets(
        &self,
        h: &VmHandle,
        qmp: &crate::qmp::Qmp,
    ) -> anyhow::Result<()> {
        let Some(mv) = local_move(&h.dir) else {
            return Ok(());
        };
        let n = h.spec.lock().map(|s| s.disks.len()).unwrap_or(0);
        let in_use = self.disk_files(qmp, n).await?;
        for (i, t) in mv.targets.iter().enumerate() {
            let _ = qmp
                .execute(
                    "blockdev-del",
                    json!({"node-name": local_node(i, mv.stamp)}),
                )
                .await;
            let path = self.datastore_path(&t.datastore_id)?.join(&t.path);
            if in_use.contains(&path.display().to_string()) {
                tracing::warn!(vm = %h.id, disk = %path.display(), "the disk already uses this copy: kept");
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(disk = %path.display(), "remove: {e}"),
            }
        }
        let _ = std::fs::remove_file(h.dir.join(LOCAL_TARGETS));
        Ok(())
    }
}
