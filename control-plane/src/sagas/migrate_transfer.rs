//! The migration saga's `transfer` node: starts the source's `migrate` (or, when
//! the node runs again after a crash, finds it) and follows it until it completes,
//! fails or is cancelled, recording honest progress (the percentage never goes
//! backwards) and acting on `auto`'s escalation (`escalation.rs`). Also the
//! source-side helpers its undo and the clean-up use.

use std::time::{Duration, Instant};

use ferry_api::migration::{MigrationProgress, MigrationResult, MigrationState};
use ferry_proto::errors::{ErrorCode, Failure};
use ferry_proto::v1::{
    MigrateOutRequest, MigrateTuneRequest, MigrationStatus as Qs, StatusRequest,
};

use super::escalation::{Action, Escalator, Plan, Sample};
use super::migrate::{Incoming, MCtx};
use crate::config::{OnOff, Transport};
use crate::saga::{NodeError, NodeResult};

/// How long the source agent may be unreachable before the transfer is given up.
const SOURCE_GRACE: Duration = Duration::from_secs(60);

/// How long the source holds a question about its migration while QEMU reports
/// no change (it answers at once on a new pass or status: the completion is
/// noticed when QEMU says it, not at the next question), and the least time
/// between two questions (an agent that answers at once: each is one small gRPC
/// call and one `query-migrate`, and the move's total paid up to this much).
const WAIT: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(20);

/// How often the database learns the progress, and a cancel or a lost
/// destination is looked for (each is a database round trip).
const HOUSEKEEPING: Duration = Duration::from_millis(200);

/// Past the switchover: the destination runs the VM (post-copy).
pub fn in_postcopy(s: Qs) -> bool {
    matches!(
        s,
        Qs::MigrationPostcopyActive | Qs::MigrationPostcopyPaused | Qs::MigrationPostcopyRecover
    )
}

/// Follows the source's migration to its end. `Err(Cancelled)` when the user
/// cancelled before the switchover, `Err(Stuck)` when it failed in post-copy.
pub async fn follow(ctx: &MCtx<'_>, incoming: &Incoming) -> NodeResult<MigrationResult> {
    let p = ctx.params;
    let app = ctx.app;
    let t0 = Instant::now();
    ctx.write(
        "migration_set_state",
        app.db
            .migration_set_state(p.migration, MigrationState::Transferring, "precopy"),
    )
    .await?;
    let mut source = ctx
        .agent(p.source)
        .await
        .map_err(|f| NodeError::Failed(format!("source: {f}")))?;
    let mut plan = Plan::new(&p.policy);
    // Mirrored disks cannot switch over by post-copy (the destination would run
    // before its disks are complete).
    let mirrored = !p.disks.is_empty();
    if mirrored {
        plan.postcopy = false;
    }
    // The disks' share of the move's progress, already done (`mirror`).
    let mirror_out: Option<super::migrate_storage::Mirrored> = ctx.output("mirror")?;
    let disk_share = mirror_out.map_or(0.0, |m| m.share);
    // A storage move's total counts its disk copy too.
    let mirror_ms = mirror_out.map_or(0, |m| m.ms);
    let mut esc = Escalator::new(plan);
    let bw = u64::from(p.policy.max_bandwidth_mbps) * 1_000_000 / 8;
    let request = MigrateOutRequest {
        vm_id: p.vm.to_string(),
        uri: incoming.uri.clone(),
        max_bandwidth_bytes_per_s: bw,
        downtime_limit_ms: esc.plan.downtime_ms,
        auto_converge: esc.plan.auto_converge,
        tls_hostname: if app.config.migration_transport == Transport::Tls {
            crate::ca::host_dns_name(&p.destination)
        } else {
            String::new()
        },
        postcopy: esc.plan.postcopy,
        channels: esc.plan.channels,
        frames_address: if app.config.frame_relay == OnOff::On {
            incoming.frames_address.clone()
        } else {
            String::new()
        },
        frames_token: incoming.frames_token.clone(),
        disks_mirrored: mirrored,
    };
    source
        .migrate_out(request)
        .await
        .map_err(|s| NodeError::Failed(format!("source: {}", Failure::of(&s))))?;
    ctx.note(
        "migration.started",
        format!("migration of {} started (pre-copy)", p.vm_name),
    )
    .await;
    let started = Instant::now();
    let mut progress = MigrationProgress::default();
    let mut unreachable_since: Option<Instant> = None;
    let mut last_event = Instant::now();
    let mut last_advance = (Instant::now(), 0u64);
    let mut last_housekeeping: Option<Instant> = None;
    let stall = app
        .config
        .migration_stall_timeout
        .max(Duration::from_secs(1));
    loop {
        let housekeeping = last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING);
        if housekeeping {
            last_housekeeping = Some(Instant::now());
        }
        if housekeeping && !esc.postcopy_started && ctx.cancel_requested().await? {
            return Err(NodeError::Cancelled);
        }
        // QEMU migrates on its own: an agent that restarts (or a blip) does not stop
        // it, so the source's status is asked again, over a new connection, for a
        // while before the transfer is given up (and then the undo asks once more).
        let asked = Instant::now();
        let st = match source.migration_status(status_of(ctx, WAIT)).await {
            Ok(s) => {
                unreachable_since = None;
                s.into_inner()
            }
            Err(s) => {
                let f = Failure::of(&s);
                if let Some(ErrorCode::NotFound | ErrorCode::WrongState) = f.code() {
                    // The source's copy is gone or stopped: not a blip to wait out.
                    let why = format!("the VM stopped on its source during the migration ({f})");
                    return Err(if esc.postcopy_started {
                        NodeError::Stuck(why)
                    } else {
                        NodeError::Failed(why)
                    });
                }
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > SOURCE_GRACE && !esc.postcopy_started {
                    return Err(NodeError::Failed(format!("source agent unreachable: {f}")));
                }
                tracing::warn!(vm = %p.vm, "source status: {f}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(c) = ctx.agent(p.source).await {
                    source = c;
                }
                continue;
            }
        };
        // A destination whose agent stopped heartbeating cannot be trusted to take
        // over: give up while the source still runs the VM.
        if housekeeping && !esc.postcopy_started {
            if let Some(dest) = app.db.host_fetch(p.destination).await? {
                if dest.state == ferry_api::host::HostState::Disconnected {
                    return Err(NodeError::Failed(format!(
                        "destination host {} disconnected",
                        dest.name
                    )));
                }
            }
        }
        let page = st.page_size.max(4096);
        let pct = if st.total_bytes > 0 {
            100.0 * (st.total_bytes.saturating_sub(st.remaining_bytes)) as f64
                / st.total_bytes as f64
        } else {
            0.0
        };
        let bandwidth = (st.mbps * 1_000_000.0 / 8.0) as u64;
        progress = MigrationProgress {
            iteration: st.iteration,
            transferred_bytes: st.transferred_bytes,
            remaining_bytes: st.remaining_bytes,
            total_bytes: st.total_bytes,
            dirty_rate_bps: st.dirty_pages_rate * page,
            bandwidth_bps: bandwidth,
            throttle_pct: st.throttle_pct,
            expected_downtime_ms: st.expected_downtime_ms,
            eta_ms: (st.remaining_bytes * 1000)
                .checked_div(bandwidth)
                .unwrap_or(0),
            percent: (100.0 * disk_share + pct * (1.0 - disk_share))
                .max(progress.percent)
                .min(100.0),
        };
        match st.status() {
            Qs::MigrationCompleted => {
                progress.percent = 100.0;
                ctx.write(
                    "migration_set_progress",
                    app.db.migration_set_progress(p.migration, &progress),
                )
                .await?;
                return Ok(MigrationResult {
                    total_ms: st.total_time_ms.max(t0.elapsed().as_millis() as u64) + mirror_ms,
                    downtime_ms: st.downtime_ms,
                    transferred_bytes: st.transferred_bytes,
                    iterations: st.iteration,
                    strategy: esc.plan.strategy(esc.postcopy_started, esc.throttled),
                    relay_frames: st.relay_frames,
                });
            }
            s @ (Qs::MigrationFailed | Qs::MigrationCancelled) => {
                let mut why = format!("migration {}: {}", s.as_str_name(), st.error);
                if incoming.held {
                    if let Some(dest) = destination_failure(ctx).await {
                        why = format!("{why} ({dest})");
                    }
                }
                return Err(if esc.postcopy_started {
                    NodeError::Stuck(why)
                } else {
                    NodeError::Failed(why)
                });
            }
            s if in_postcopy(s) && !esc.postcopy_started => {
                // Found in post-copy (the node runs again after a restart).
                esc.postcopy_started = true;
                mark_postcopy(ctx).await?;
            }
            _ => {}
        }
        if housekeeping {
            ctx.write(
                "migration_set_progress",
                app.db.migration_set_progress(p.migration, &progress),
            )
            .await?;
        }
        if st.transferred_bytes > last_advance.1 {
            last_advance = (Instant::now(), st.transferred_bytes);
        }
        let stalled = last_advance.0.elapsed() > stall;
        if stalled && !esc.plan.postcopy && !esc.postcopy_started {
            return Err(NodeError::Failed(format!(
                "no progress for {} s (stalled)",
                stall.as_secs()
            )));
        }
        let sample = Sample {
            iteration: st.iteration,
            remaining_bytes: st.remaining_bytes,
            total_bytes: st.total_bytes,
            dirty_bps: progress.dirty_rate_bps,
            bandwidth_bps: bandwidth,
            throttle_pct: st.throttle_pct,
            elapsed: started.elapsed(),
            stalled,
        };
        if st.status() == Qs::MigrationActive {
            for action in esc.observe(&sample) {
                match action {
                    Action::Note(msg) => {
                        ctx.note("migration.strategy", format!("{}: {msg}", p.vm_name))
                            .await
                    }
                    Action::Downtime(ms, msg) => {
                        ctx.note("migration.strategy", format!("{}: {msg}", p.vm_name))
                            .await;
                        if let Err(s) = source
                            .migrate_tune(MigrateTuneRequest {
                                vm_id: p.vm.to_string(),
                                downtime_limit_ms: ms,
                                start_postcopy: false,
                            })
                            .await
                        {
                            // Not fatal: the move goes on at the old target.
                            tracing::warn!(vm = %p.vm, "raise downtime target: {}", Failure::of(&s));
                        }
                    }
                    Action::Postcopy(why) => {
                        // Past this the destination holds the VM: no more cancel (the
                        // state change closes the door; a cancel that slipped in first
                        // is honoured instead).
                        mark_postcopy(ctx).await?;
                        if ctx.cancel_requested().await? {
                            return Err(NodeError::Cancelled);
                        }
                        ctx.note(
                            "migration.strategy",
                            format!("{}: switching to post-copy: {why}", p.vm_name),
                        )
                        .await;
                        if let Err(s) = source
                            .migrate_tune(MigrateTuneRequest {
                                vm_id: p.vm.to_string(),
                                downtime_limit_ms: 0,
                                start_postcopy: true,
                            })
                            .await
                        {
                            // QEMU refused the switch: pre-copy goes on, and may still
                            // end either way.
                            tracing::warn!(vm = %p.vm, "start post-copy: {}", Failure::of(&s));
                            esc.postcopy_started = false;
                            ctx.write(
                                "migration_set_state",
                                app.db.migration_set_state(
                                    p.migration,
                                    MigrationState::Transferring,
                                    "precopy",
                                ),
                            )
                            .await?;
                        }
                    }
                }
            }
        }
        if last_event.elapsed() >= Duration::from_secs(1) {
            last_event = Instant::now();
            let ev = crate::db::events::NewEvent::info(
                "migration.progress",
                format!(
                    "{}: {:.0}% (pass {}, {} MiB left)",
                    p.vm_name,
                    progress.percent,
                    progress.iteration,
                    progress.remaining_bytes >> 20
                ),
            )
            .vm(p.vm)
            .data(serde_json::json!({"migration_id": p.migration, "progress": progress}));
            app.events.record(ev).await;
        }
        tokio::time::sleep(POLL.saturating_sub(asked.elapsed())).await;
    }
}

/// Why the destination failed its side, if it knows: its QEMU, started behind
/// an early reply (`Incoming::held`), may not have got to listen.
async fn destination_failure(ctx: &MCtx<'_>) -> Option<String> {
    let mut dest = ctx.agent(ctx.params.destination).await.ok()?;
    let st = dest
        .migration_status(status_of(ctx, Duration::ZERO))
        .await
        .ok()?
        .into_inner();
    (st.status() == Qs::MigrationFailed && !st.error.is_empty())
        .then(|| format!("destination: {}", st.error))
}

/// A question about the source's migration, held up to `wait` for a change.
fn status_of(ctx: &MCtx<'_>, wait: Duration) -> StatusRequest {
    StatusRequest {
        vm_id: ctx.params.vm.to_string(),
        wait_ms: wait.as_millis() as u32,
    }
}

/// Records the migration past its switchover (post-copy): no cancel from here.
async fn mark_postcopy(ctx: &MCtx<'_>) -> NodeResult<()> {
    let p = ctx.params;
    ctx.write(
        "migration_set_state",
        ctx.app
            .db
            .migration_set_state(p.migration, MigrationState::SwitchingOver, "postcopy"),
    )
    .await
}

/// Post-copy: the destination runs the VM but pulls pages from the source until
/// QEMU reports `completed`; the source must live until then.
pub async fn wait_postcopy_done(ctx: &MCtx<'_>) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while Instant::now() < deadline {
        if let Ok(mut src) = ctx.agent(ctx.params.source).await {
            match src.migration_status(status_of(ctx, Duration::ZERO)).await {
                Ok(st) if in_postcopy(st.get_ref().status()) => {}
                Ok(_) => return,
                // The agent answered: whatever it is, there is no post-copy to wait for.
                Err(s) if Failure::of(&s).code().is_some() => return,
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cancels the migration on the source, insisting while its agent is unreachable:
/// the destination may be discarded only once the source is known to keep the VM.
/// Returns true when the migration had completed instead (go forward).
pub async fn cancel_on_source(ctx: &MCtx<'_>) -> bool {
    let p = ctx.params;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match ctx.agent(p.source).await {
            Ok(mut src) => match src.migrate_cancel(ctx.vm_ref()).await {
                Ok(_) => return false,
                Err(s) => match Failure::of(&s) {
                    Failure::Agent(ErrorCode::AlreadyDone | ErrorCode::PastSwitchover, _) => {
                        return true
                    }
                    Failure::Agent(code, msg) => {
                        // Not a connectivity problem (e.g. nothing to cancel): ask
                        // QEMU whether the state made it across.
                        tracing::warn!(vm = %p.vm, ?code, "cancel on source: {msg}");
                        return matches!(
                            src.migration_status(status_of(ctx, Duration::ZERO)).await,
                            Ok(st) if st.get_ref().status() == Qs::MigrationCompleted
                        );
                    }
                    f => tracing::warn!(vm = %p.vm, "cancel on source: {f}; retrying"),
                },
            },
            Err(f) => tracing::warn!(vm = %p.vm, "source unreachable for cancel ({f}); retrying"),
        }
        if Instant::now() > deadline {
            tracing::error!(vm = %p.vm, "source unreachable for 10 minutes; unwinding without its word");
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
