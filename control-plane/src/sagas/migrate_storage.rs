//! The storage half of a migration saga (issue #12): the `mirror` node copies the
//! VM's disks to the destination's NBD exports while the guest runs, until every
//! mirror is in sync; its undo stops the mirrors (the source's disks untouched).
//! After the commit, `remove_source_disks` deletes the old images on the source.
//! A move without disk copies passes through both.

use std::time::{Duration, Instant};

use ferry_api::migration::{MigrationProgress, MigrationResult, MigrationState};
use ferry_proto::errors::Failure;
use ferry_proto::v1::{MirrorStartRequest, RemoveDisksRequest, StatusRequest, VmDiskSpec};

use super::migrate::{Incoming, MCtx};
use crate::config::Transport;
use crate::db::events::NewEvent;
use crate::saga::{NodeError, NodeResult};

/// How long the source may stay unreachable before the mirror fails.
const SOURCE_GRACE: Duration = Duration::from_secs(20);

/// How long the source holds a question about the mirrors while none changes
/// (it answers as soon as one does: their readiness is noticed when QEMU says
/// it), the least time between two questions, and how often the database
/// learns their progress.
const WAIT: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(20);
const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// What the mirror did, for the memory transfer that follows.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Mirrored {
    /// The disks' share of the move's bytes (the memory's progress follows it).
    pub share: f64,
    /// How long the mirror took to get in sync.
    pub ms: u64,
    /// What it copied.
    #[serde(default)]
    pub bytes: u64,
}

/// Mirrors the disks until they are in sync.
pub async fn mirror(ctx: &MCtx<'_>) -> NodeResult<Option<Mirrored>> {
    let p = ctx.params;
    if p.disks.is_empty() {
        return Ok(None);
    }
    let app = ctx.app;
    let incoming: Incoming = ctx.output("destination_start")?;
    let local = p.storage_only();
    if incoming.nbd_address.is_empty() && !local {
        return Err(NodeError::Failed(
            "the destination exported no disks (an agent without storage migration?)".into(),
        ));
    }
    ctx.write(
        "migration_set_state",
        app.db
            .migration_set_state(p.migration, MigrationState::Transferring, "mirroring"),
    )
    .await?;
    let mut source = ctx
        .agent(p.source)
        .await
        .map_err(|f| NodeError::Failed(format!("source: {f}")))?;
    source
        .mirror_start(MirrorStartRequest {
            vm_id: p.vm.to_string(),
            nbd_address: incoming.nbd_address.clone(),
            nbd_tunnel: incoming.nbd_tunnel && !local,
            // A storage-only move copies each disk to its new datastore here.
            local_targets: if local {
                p.disks
                    .iter()
                    .map(|d| VmDiskSpec {
                        datastore_id: d.to.to_string(),
                        path: d.path.clone(),
                        size_bytes: d.size_bytes,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            tls_hostname: if app.config.migration_transport == Transport::Tls && !local {
                crate::ca::host_dns_name(&p.destination)
            } else {
                String::new()
            },
            max_bandwidth_bytes_per_s: u64::from(p.policy.max_bandwidth_mbps) * 1_000_000 / 8,
        })
        .await
        .map_err(|s| {
            NodeError::Failed(format!(
                "source: start the disk mirrors: {}",
                Failure::of(&s)
            ))
        })?;
    let disk_bytes: u64 = p.disks.iter().map(|d| d.size_bytes).sum();
    let memory = app
        .vm_get(p.vm)
        .await
        .map(|v| v.memory_mib << 20)
        .unwrap_or(0);
    let share = if local {
        1.0
    } else {
        disk_bytes as f64 / (disk_bytes + memory).max(1) as f64
    };
    let gib = disk_bytes as f64 / (1u64 << 30) as f64;
    let n = p.disks.len();
    ctx.note(
        "migration.strategy",
        if local {
            format!(
                "{}: copying {n} disk(s), {gib:.1} GiB, to another datastore of its host while the VM runs; each disk switches to its copy once in sync",
                p.vm_name
            )
        } else {
            format!(
                "{}: copying {n} disk(s), {gib:.1} GiB, to the destination's datastore while the VM runs; the memory follows once they are in sync",
                p.vm_name
            )
        },
    )
    .await;
    let t0 = Instant::now();
    let (mut last, mut last_at) = (0u64, Instant::now());
    let mut unreachable_since: Option<Instant> = None;
    let mut progress = MigrationProgress::default();
    let mut last_housekeeping: Option<Instant> = None;
    loop {
        // The mirrors' state is asked often (their readiness starts the memory's
        // move); the database is written and a cancel looked for less often.
        let housekeeping = last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING);
        if housekeeping {
            last_housekeeping = Some(Instant::now());
        }
        if housekeeping && ctx.cancel_requested().await? {
            return Err(NodeError::Cancelled);
        }
        let asked = Instant::now();
        let st = match source
            .mirror_status(StatusRequest {
                vm_id: p.vm.to_string(),
                wait_ms: WAIT.as_millis() as u32,
            })
            .await
        {
            Ok(r) => {
                unreachable_since = None;
                r.into_inner()
            }
            Err(s) => {
                let f = Failure::of(&s);
                if let f @ Failure::Agent(..) = f {
                    return Err(NodeError::Failed(format!("source: {f}")));
                }
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > SOURCE_GRACE {
                    return Err(NodeError::Failed(format!("source agent unreachable: {f}")));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(c) = ctx.agent(p.source).await {
                    source = c;
                }
                continue;
            }
        };
        if st.failed {
            return Err(NodeError::Failed(st.error));
        }
        // A destination that stopped heartbeating will not take the VM.
        if housekeeping {
            if let Some(dest) = app.db.host_fetch(p.destination).await? {
                if dest.state == ferry_api::host::HostState::Disconnected {
                    return Err(NodeError::Failed(format!(
                        "destination host {} disconnected",
                        dest.name
                    )));
                }
            }
        }
        let done: u64 = st.disks.iter().map(|d| d.done_bytes).sum();
        let total: u64 = st
            .disks
            .iter()
            .map(|d| d.total_bytes)
            .sum::<u64>()
            .max(done);
        let ready = st.disks.len() == p.disks.len() && st.disks.iter().all(|d| d.ready);
        // Not in sync: asked again at once if the source held the question (an
        // agent that answers at once is not asked more often than every `POLL`).
        let pause = POLL.saturating_sub(asked.elapsed());
        if !housekeeping && !ready {
            tokio::time::sleep(pause).await;
            continue;
        }
        let dt = last_at.elapsed().as_secs_f64();
        let rate = if dt > 0.0 && done >= last {
            ((done - last) as f64 / dt) as u64
        } else {
            progress.bandwidth_bps
        };
        (last, last_at) = (done, Instant::now());
        let frac = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        progress = MigrationProgress {
            transferred_bytes: done,
            remaining_bytes: total - done,
            total_bytes: total,
            bandwidth_bps: rate,
            eta_ms: ((total - done) * 1000).checked_div(rate).unwrap_or(0),
            percent: (100.0 * share * frac).max(progress.percent).min(100.0),
            ..MigrationProgress::default()
        };
        ctx.write(
            "migration_set_progress",
            app.db.migration_set_progress(p.migration, &progress),
        )
        .await?;
        if ready {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    app.events
        .record(
            NewEvent::info(
                "migration.strategy",
                format!(
                    "{}: disks in sync after {:.1} s ({} MiB copied); {}",
                    p.vm_name,
                    t0.elapsed().as_secs_f64(),
                    last >> 20,
                    if local {
                        "switching them to their copies"
                    } else {
                        "moving the memory"
                    }
                ),
            )
            .vm(p.vm)
            .data(serde_json::json!({"migration_id": p.migration})),
        )
        .await;
    Ok(Some(Mirrored {
        share,
        ms: t0.elapsed().as_millis() as u64,
        bytes: last,
    }))
}

/// A storage-only move's switch: each disk to its in-sync copy (`MirrorPivot`),
/// while the guest runs. Before any disk switched, a failure unwinds (the copies
/// go); after, the move can only go forward, so a partial switch is stuck (an
/// operator decides), never unwound over a disk the guest now writes to.
pub async fn pivot(ctx: &MCtx<'_>) -> NodeResult<MigrationResult> {
    let p = ctx.params;
    let mirrored: Option<Mirrored> = ctx.output("mirror")?;
    let t0 = Instant::now();
    ctx.write(
        "migration_set_state",
        ctx.app
            .db
            .migration_set_state(p.migration, MigrationState::Transferring, "switchover"),
    )
    .await?;
    let mut attempt = 0u32;
    let reply = loop {
        let r = match ctx.agent(p.source).await {
            Ok(mut src) => src.mirror_pivot(ctx.vm_ref()).await.map_err(Failure::from),
            Err(f) => Err(f),
        };
        match r {
            Ok(r) => break r.into_inner(),
            Err(f @ Failure::Agent(..)) => {
                return Err(NodeError::Failed(format!("switch the disks: {f}")))
            }
            // The agent may have switched some disks before it went away: asked
            // again (the call is idempotent) until it answers.
            Err(f) if attempt < 40 => {
                tracing::warn!(vm = %p.vm, attempt, "switch the disks: {f}; asking again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(f) => {
                return Err(NodeError::Stuck(format!(
                    "the host did not answer the disk switch ({f}); some disks may use their copies"
                )))
            }
        }
    };
    if reply.failed {
        let why = format!("switch the disks: {}", reply.error);
        return Err(if reply.pivoted == 0 {
            NodeError::Failed(why)
        } else {
            NodeError::Stuck(why)
        });
    }
    let bytes = mirrored.map_or(0, |m| m.bytes);
    Ok(MigrationResult {
        total_ms: mirrored.map_or(0, |m| m.ms) + t0.elapsed().as_millis() as u64,
        downtime_ms: 0,
        transferred_bytes: bytes,
        iterations: 1,
        strategy: "storage-only".into(),
        relay_frames: 0,
    })
}

/// Undo of `mirror`: stops the mirrors on the source. A source that stays
/// unreachable stops them itself when its QEMU next leaves (nothing was switched).
pub async fn cancel_mirror(ctx: &MCtx<'_>) -> NodeResult<()> {
    let p = ctx.params;
    if p.disks.is_empty() {
        return Ok(());
    }
    for attempt in 0..10u32 {
        let r = match ctx.agent(p.source).await {
            Ok(mut src) => src
                .mirror_cancel(ctx.vm_ref())
                .await
                .map(|_| ())
                .map_err(Failure::from),
            Err(f) => Err(f),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(f @ Failure::Agent(..)) => {
                return Err(NodeError::Failed(format!("stop the disk mirrors: {f}")))
            }
            Err(f) => {
                tracing::warn!(vm = %p.vm, attempt, "stop the disk mirrors: {f}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::warn!(vm = %p.vm, "source unreachable: its disk mirrors stop when it returns");
    Ok(())
}

/// After the commit: the source's old images go (the VM's disks are now on the
/// destination's datastore).
pub async fn remove_source_disks(ctx: &MCtx<'_>) -> NodeResult<()> {
    let p = ctx.params;
    if p.disks.is_empty() {
        return Ok(());
    }
    let req = RemoveDisksRequest {
        vm_id: p.vm.to_string(),
        disks: p
            .disks
            .iter()
            .map(|d| VmDiskSpec {
                datastore_id: d.from.to_string(),
                path: d.path.clone(),
                size_bytes: d.size_bytes,
            })
            .collect(),
    };
    match ctx.agent(p.source).await {
        Ok(mut src) => match src.remove_disks(req).await {
            Ok(_) => Ok(()),
            Err(s) => match Failure::of(&s) {
                f @ Failure::Agent(..) => Err(NodeError::Failed(format!(
                    "remove the source's old disks: {f}"
                ))),
                f => {
                    tracing::warn!(vm = %p.vm, "source unreachable ({f}); its old disks stay");
                    Ok(())
                }
            },
        },
        Err(f) => {
            tracing::warn!(vm = %p.vm, "source unreachable ({f}); its old disks stay");
            Ok(())
        }
    }
}
