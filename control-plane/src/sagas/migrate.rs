//! The live-migration saga (the vMotion sequence of DESIGN.md):
//!
//! ```text
//!  prepare ──► destination_start ──► transfer ──► switchover ──► commit ──► source_cleanup
//!                 undo: discard        undo: cancel  │ POINT OF NO RETURN
//!                 the destination      (source runs) │ QEMU reported `completed`: the
//!                                                     │ destination holds the whole state
//!                                                     │ and runs; the source is paused in
//!                                                     │ `postmigrate`. From here the saga
//!                                                     │ only goes forward.
//! ```
//!
//! The point of no return is QEMU's own: before `completed` the source still runs
//! the VM (or resumes it on cancel), so unwinding leaves exactly one copy, on the
//! source; after it only the destination's copy may run, so the saga commits the
//! move and discards the source. A control plane that restarts finds the saga
//! unfinished and asks the source's QEMU where it stands: `completed` (or a
//! recorded `switchover`) → forward; anything else → unwind.

use std::time::{Duration, Instant};

use ferry_api::migration::{MigrationProgress, MigrationResult, MigrationState};
use ferry_api::vm::MigrationPolicy;
use ferry_api::{HostId, MigrationId, SagaId, VmId};
use ferry_proto::v1::agent_client::AgentClient;
use ferry_proto::v1::{
    MigrateInReply, MigrateInRequest, MigrateOutRequest, MigrateTuneRequest, VmRef,
};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::escalation::{Action, Escalator, Plan, Sample};
use crate::app::App;
use crate::config::{OnOff, Transport};
use crate::db::events::NewEvent;
use ferry_proto::errors::{ErrorCode, Failure};
use ferry_proto::v1::MigrationStatus as Qs;

/// Past the switchover: the destination runs the VM (post-copy).
fn in_postcopy(s: Qs) -> bool {
    matches!(
        s,
        Qs::MigrationPostcopyActive | Qs::MigrationPostcopyPaused | Qs::MigrationPostcopyRecover
    )
}

pub const KIND: &str = "migrate";

/// How long the source agent may be unreachable before the transfer is given up.
const SOURCE_GRACE: Duration = Duration::from_secs(60);

/// The saga's parameters, persisted with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub migration: MigrationId,
    pub vm: VmId,
    pub vm_name: String,
    pub source: HostId,
    pub destination: HostId,
    pub policy: MigrationPolicy,
}

/// How the transfer ended.
enum Transfer {
    Completed(MigrationResult),
    Cancelled,
    Failed(String),
    /// Failed after post-copy began: the VM's state is split between the hosts.
    FailedInPostcopy(String),
}

struct Run<'a> {
    app: &'a App,
    saga: SagaId,
    p: &'a Params,
}

impl Run<'_> {
    async fn event(&self, step: &str, kind: &str) {
        if let Err(e) = self
            .app
            .db
            .saga_event(self.saga, step, kind, &serde_json::json!({}))
            .await
        {
            tracing::error!(saga = %self.saga, "saga log: {e}");
        }
    }

    async fn agent(&self, host: HostId) -> anyhow::Result<AgentClient<Channel>> {
        let h = self
            .app
            .db
            .host_fetch(host)
            .await?
            .ok_or_else(|| anyhow::anyhow!("host {host} is gone"))?;
        self.app.agents.connect(host, &h.address).await
    }

    /// The test hook of `--fault-inject`: true when `step` must fail now.
    fn fault(&self, step: &str) -> bool {
        let hit = self.app.config.fault_inject.as_deref() == Some(&format!("{KIND}.{step}"));
        if hit {
            tracing::warn!(step, "injected failure");
        }
        hit
    }

    async fn note(&self, kind: &'static str, msg: String) {
        let ev = NewEvent::info(kind, msg)
            .vm(self.p.vm)
            .data(serde_json::json!({"migration_id": self.p.migration}));
        self.app.events.record(ev).await;
    }
}

/// Runs a new migration saga to its end.
pub async fn run(app: App, saga: SagaId, p: Params) {
    let r = Run {
        app: &app,
        saga,
        p: &p,
    };
    let id = p.migration;
    // Queued until both hosts have a slot, in order of arrival.
    let budget = app.migration_budget(p.source, p.destination).await;
    loop {
        if app.db.migration_cancel_requested(id).await.unwrap_or(false) {
            let _ = app
                .db
                .migration_finish(id, MigrationState::Cancelled, None, None)
                .await;
            let _ = app.db.saga_set_state(saga, "failed").await;
            r.note(
                "migration.cancelled",
                format!("queued migration of {} cancelled", p.vm_name),
            )
            .await;
            return;
        }
        match app.db.migration_try_start(id, budget).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(migration = %id, "queue: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t0 = Instant::now();

    // destination_start
    r.event("destination_start", "started").await;
    let started = async {
        let vm = app
            .vm_get(p.vm)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        let spec = app
            .vm_spec(&vm)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        let mut dest = r.agent(p.destination).await?;
        let plan = Plan::new(&p.policy);
        let request = MigrateInRequest {
            spec: Some(spec.clone()),
            listen_ip: String::new(),
            tls: r.app.config.migration_transport == Transport::Tls,
            postcopy: plan.postcopy,
            channels: plan.channels,
        };
        let reply = dest
            .migrate_in(request.clone())
            .await
            .map_err(|s| anyhow::anyhow!("destination: {}", s.message()))?
            .into_inner();
        if r.app.config.replay_steps {
            let again = dest
                .migrate_in(request)
                .await
                .map_err(|s| anyhow::anyhow!("destination: {}", s.message()))?
                .into_inner();
            anyhow::ensure!(
                again == reply,
                "replayed destination_start answered {again:?}, not {reply:?}"
            );
        }
        anyhow::Ok(reply)
    }
    .await;
    let started = started.and_then(|reply| {
        if r.fault("destination_start") {
            anyhow::bail!("injected failure after destination_start")
        }
        Ok(reply)
    });
    let incoming = match started {
        Ok(reply) => {
            r.event("destination_start", "succeeded").await;
            reply
        }
        Err(e) => {
            r.event("destination_start", "failed").await;
            unwind(&r, false, MigrationState::Failed, &format!("{e:#}")).await;
            return;
        }
    };

    // transfer
    r.event("transfer", "started").await;
    let _ = app
        .db
        .migration_set_state(id, MigrationState::Transferring, "precopy")
        .await;
    r.note(
        "migration.started",
        format!("migration of {} started (pre-copy)", p.vm_name),
    )
    .await;
    let outcome = transfer(&r, &incoming, t0).await;
    match outcome {
        Transfer::Completed(result) => {
            // Point of no return.
            r.event("transfer", "succeeded").await;
            r.event("switchover", "succeeded").await;
            forward(&r, Some(result)).await;
        }
        Transfer::Cancelled => {
            r.event("transfer", "failed").await;
            unwind(&r, true, MigrationState::Cancelled, "cancelled").await;
        }
        Transfer::Failed(e) => {
            r.event("transfer", "failed").await;
            unwind(&r, true, MigrationState::Failed, &e).await;
        }
        Transfer::FailedInPostcopy(e) => {
            // Neither copy is whole: nothing may be discarded or resumed blindly.
            r.event("transfer", "failed").await;
            let _ = app
                .db
                .migration_finish(id, MigrationState::Failed, None, Some(&e))
                .await;
            let _ = app.db.saga_set_state(saga, "failed").await;
            let ev = NewEvent::warning(
                "migration.failed",
                format!(
                    "migration of {} failed in post-copy ({e}); the VM is paused on both hosts and needs an operator",
                    p.vm_name
                ),
            )
            .vm(p.vm)
            .data(serde_json::json!({"migration_id": p.migration}));
            app.events.record(ev).await;
        }
    }
}

/// Starts the source's `migrate` and follows it until it completes, fails or is
/// cancelled, recording honest progress (the percentage never goes backwards).
async fn transfer(r: &Run<'_>, incoming: &MigrateInReply, t0: Instant) -> Transfer {
    let p = r.p;
    let mut source = match r.agent(p.source).await {
        Ok(c) => c,
        Err(e) => return Transfer::Failed(format!("source unreachable: {e:#}")),
    };
    let mut esc = Escalator::new(Plan::new(&p.policy));
    let bw = u64::from(p.policy.max_bandwidth_mbps) * 1_000_000 / 8;
    let request = MigrateOutRequest {
        vm_id: p.vm.to_string(),
        uri: incoming.uri.clone(),
        max_bandwidth_bytes_per_s: bw,
        downtime_limit_ms: esc.plan.downtime_ms,
        auto_converge: esc.plan.auto_converge,
        tls_hostname: if r.app.config.migration_transport == Transport::Tls {
            crate::ca::host_dns_name(&p.destination)
        } else {
            String::new()
        },
        postcopy: esc.plan.postcopy,
        channels: esc.plan.channels,
        frames_address: if r.app.config.frame_relay == OnOff::On {
            incoming.frames_address.clone()
        } else {
            String::new()
        },
        frames_token: incoming.frames_token.clone(),
    };
    let times = if r.app.config.replay_steps { 2 } else { 1 };
    for _ in 0..times {
        if let Err(s) = source.migrate_out(request.clone()).await {
            return Transfer::Failed(format!("source: {}", s.message()));
        }
    }
    let started = Instant::now();
    let mut progress = MigrationProgress::default();
    let mut unreachable_since: Option<Instant> = None;
    let mut last_event = Instant::now();
    let mut last_advance = (Instant::now(), 0u64);
    let stall = r
        .app
        .config
        .migration_stall_timeout
        .max(Duration::from_secs(1));
    loop {
        if !esc.postcopy_started
            && r.app
                .db
                .migration_cancel_requested(p.migration)
                .await
                .unwrap_or(false)
        {
            return Transfer::Cancelled;
        }
        if r.fault("transfer") {
            return Transfer::Failed("injected failure during transfer".into());
        }
        // QEMU migrates on its own: an agent that restarts (or a blip) does not stop
        // it, so the source's status is asked again, over a new connection, for a
        // while before the transfer is given up (and then `unwind` asks once more).
        let st = match source
            .migration_status(VmRef {
                vm_id: p.vm.to_string(),
            })
            .await
        {
            Ok(s) => {
                unreachable_since = None;
                s.into_inner()
            }
            Err(s) => {
                let f = Failure::of(&s);
                if let Some(ErrorCode::NotFound | ErrorCode::WrongState) = f.code() {
                    // The source's copy is gone or stopped: not a blip to wait out.
                    let why = format!("the VM stopped on its source during the migration ({f})");
                    return if esc.postcopy_started {
                        Transfer::FailedInPostcopy(why)
                    } else {
                        Transfer::Failed(why)
                    };
                }
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > SOURCE_GRACE && !esc.postcopy_started {
                    return Transfer::Failed(format!("source agent unreachable: {}", s.message()));
                }
                tracing::warn!(vm = %p.vm, "source status: {}; asking again", s.message());
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(c) = r.agent(p.source).await {
                    source = c;
                }
                continue;
            }
        };
        // A destination whose agent stopped heartbeating cannot be trusted to take
        // over: give up while the source still runs the VM.
        if !esc.postcopy_started {
            if let Ok(Some(dest)) = r.app.db.host_fetch(p.destination).await {
                if dest.state == ferry_api::host::HostState::Disconnected {
                    return Transfer::Failed(format!(
                        "destination host {} disconnected",
                        dest.name
                    ));
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
            percent: pct.max(progress.percent).min(100.0),
        };
        match st.status() {
            Qs::MigrationCompleted => {
                progress.percent = 100.0;
                let _ = r
                    .app
                    .db
                    .migration_set_progress(p.migration, &progress)
                    .await;
                return Transfer::Completed(MigrationResult {
                    total_ms: st.total_time_ms.max(t0.elapsed().as_millis() as u64),
                    downtime_ms: st.downtime_ms,
                    transferred_bytes: st.transferred_bytes,
                    iterations: st.iteration,
                    strategy: esc.plan.strategy(esc.postcopy_started, esc.throttled),
                });
            }
            Qs::MigrationFailed | Qs::MigrationCancelled if esc.postcopy_started => {
                return Transfer::FailedInPostcopy(format!(
                    "migration {}: {}",
                    st.status().as_str_name(),
                    st.error
                ));
            }
            Qs::MigrationFailed | Qs::MigrationCancelled => {
                return Transfer::Failed(format!(
                    "migration {}: {}",
                    st.status().as_str_name(),
                    st.error
                ));
            }
            _ => {}
        }
        let _ = r
            .app
            .db
            .migration_set_progress(p.migration, &progress)
            .await;
        if st.transferred_bytes > last_advance.1 {
            last_advance = (Instant::now(), st.transferred_bytes);
        }
        let stalled = last_advance.0.elapsed() > stall;
        if stalled && !esc.plan.postcopy && !esc.postcopy_started {
            return Transfer::Failed(format!("no progress for {} s (stalled)", stall.as_secs()));
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
                        r.note("migration.strategy", format!("{}: {msg}", p.vm_name))
                            .await
                    }
                    Action::Downtime(ms, msg) => {
                        r.note("migration.strategy", format!("{}: {msg}", p.vm_name))
                            .await;
                        if let Err(s) = source
                            .migrate_tune(MigrateTuneRequest {
                                vm_id: p.vm.to_string(),
                                downtime_limit_ms: ms,
                                start_postcopy: false,
                            })
                            .await
                        {
                            tracing::warn!(vm = %p.vm, "raise downtime target: {}", s.message());
                        }
                    }
                    Action::Postcopy(why) => {
                        // Past this the destination holds the VM: no more cancel (the
                        // state change closes the door; a cancel that slipped in first
                        // is honoured instead).
                        let _ = r
                            .app
                            .db
                            .migration_set_state(
                                p.migration,
                                MigrationState::SwitchingOver,
                                "postcopy",
                            )
                            .await;
                        if r.app
                            .db
                            .migration_cancel_requested(p.migration)
                            .await
                            .unwrap_or(false)
                        {
                            return Transfer::Cancelled;
                        }
                        r.event("switchover", "started").await;
                        r.note(
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
                            tracing::warn!(vm = %p.vm, "start post-copy: {}", s.message());
                            esc.postcopy_started = false;
                            let _ = r
                                .app
                                .db
                                .migration_set_state(
                                    p.migration,
                                    MigrationState::Transferring,
                                    "precopy",
                                )
                                .await;
                        }
                    }
                }
            }
        }
        if last_event.elapsed() >= Duration::from_secs(1) {
            last_event = Instant::now();
            let ev = NewEvent::info(
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
            r.app.events.record(ev).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Post-copy: the destination runs the VM but pulls pages from the source until
/// QEMU reports `completed`; the source must live until then.
async fn wait_postcopy_done(r: &Run<'_>) {
    let p = r.p;
    let deadline = Instant::now() + Duration::from_secs(3600);
    while Instant::now() < deadline {
        if let Ok(mut src) = r.agent(p.source).await {
            match src
                .migration_status(VmRef {
                    vm_id: p.vm.to_string(),
                })
                .await
            {
                Ok(st) if in_postcopy(st.get_ref().status()) => {}
                Ok(_) => return,
                Err(s) if Failure::of(&s).code().is_some() => return,
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After the point of no return: record the new host, discard the source copy.
async fn forward(r: &Run<'_>, result: Option<MigrationResult>) {
    let p = r.p;
    let _ = r
        .app
        .db
        .migration_set_state(p.migration, MigrationState::SwitchingOver, "switchover")
        .await;
    r.event("commit", "started").await;
    // The commit must land: retry until the database takes it.
    if r.app.config.replay_steps {
        let _ = r.app.db.vm_commit_move(p.vm, p.destination).await;
    }
    while let Err(e) = r.app.db.vm_commit_move(p.vm, p.destination).await {
        tracing::error!(vm = %p.vm, "commit of migration failed, retrying: {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    r.event("commit", "succeeded").await;
    wait_postcopy_done(r).await;
    r.event("source_cleanup", "started").await;
    match r.agent(p.source).await {
        Ok(mut src) => {
            let times = if r.app.config.replay_steps { 2 } else { 1 };
            let mut outcome = Ok(());
            for _ in 0..times {
                outcome = src
                    .vm_discard(VmRef {
                        vm_id: p.vm.to_string(),
                    })
                    .await
                    .map(|_| ());
            }
            match outcome {
                Ok(()) => r.event("source_cleanup", "succeeded").await,
                Err(s) => tracing::warn!(vm = %p.vm, "discard source copy: {}", s.message()),
            }
        }
        Err(e) => {
            tracing::warn!(vm = %p.vm, "source unreachable for clean-up ({e:#}); its paused copy stays until it returns")
        }
    }
    let _ = r
        .app
        .db
        .migration_finish(
            p.migration,
            MigrationState::Completed,
            result.as_ref(),
            None,
        )
        .await;
    let _ = r.app.db.saga_set_state(r.saga, "done").await;
    let summary = result
        .map(|res| {
            format!(
                ": {} ms in all, {} ms downtime, {} MiB in {} passes",
                res.total_ms,
                res.downtime_ms,
                res.transferred_bytes >> 20,
                res.iterations
            )
        })
        .unwrap_or_default();
    r.note(
        "migration.completed",
        format!("{} now runs on its destination{summary}", p.vm_name),
    )
    .await;
}

/// Before the point of no return: the source keeps (or resumes) the VM, the
/// destination's copy is discarded.
async fn unwind(r: &Run<'_>, transfer_started: bool, end: MigrationState, why: &str) {
    let p = r.p;
    let _ = r.app.db.saga_set_state(r.saga, "unwinding").await;
    if transfer_started {
        r.event("transfer", "undo_started").await;
        if cancel_on_source(r).await {
            // Cancel lost the race with completion: the destination runs the VM and
            // the source is paused, so the only safe way is forward.
            tracing::warn!(vm = %p.vm, "the migration completed before the cancel; finishing it");
            r.event("switchover", "succeeded").await;
            forward(r, None).await;
            return;
        }
        r.event("transfer", "undo_finished").await;
    }
    r.event("destination_start", "undo_started").await;
    if let Ok(mut dst) = r.agent(p.destination).await {
        if let Err(s) = dst
            .vm_discard(VmRef {
                vm_id: p.vm.to_string(),
            })
            .await
        {
            tracing::warn!(vm = %p.vm, "discard destination copy: {}", s.message());
        }
    }
    r.event("destination_start", "undo_finished").await;
    let error = (end == MigrationState::Failed).then_some(why);
    let _ = r
        .app
        .db
        .migration_finish(p.migration, end, None, error)
        .await;
    let _ = r.app.db.saga_set_state(r.saga, "failed").await;
    let (kind, verb) = if end == MigrationState::Cancelled {
        ("migration.cancelled", "cancelled".to_string())
    } else {
        ("migration.failed", format!("failed ({why})"))
    };
    let ev = NewEvent::warning(
        kind,
        format!(
            "migration of {} {verb}; the VM keeps running on its source",
            p.vm_name
        ),
    )
    .vm(p.vm)
    .data(serde_json::json!({"migration_id": p.migration}));
    r.app.events.record(ev).await;
}

/// Cancels the migration on the source, insisting while its agent is unreachable:
/// the destination may be discarded only once the source is known to keep the VM.
/// Returns true when the migration had completed instead (go forward).
async fn cancel_on_source(r: &Run<'_>) -> bool {
    let p = r.p;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match r.agent(p.source).await {
            Ok(mut src) => match src
                .migrate_cancel(VmRef {
                    vm_id: p.vm.to_string(),
                })
                .await
            {
                Ok(_) => return false,
                Err(s)
                    if matches!(
                        Failure::of(&s).code(),
                        Some(ErrorCode::AlreadyDone | ErrorCode::PastSwitchover)
                    ) =>
                {
                    return true
                }
                Err(s) if Failure::of(&s).code().is_some() => {
                    // Not a connectivity problem (e.g. nothing to cancel): ask QEMU
                    // whether the state made it across.
                    tracing::warn!(vm = %p.vm, "cancel on source: {}", s.message());
                    return matches!(
                        src.migration_status(VmRef { vm_id: p.vm.to_string() }).await,
                        Ok(st) if st.get_ref().status() == Qs::MigrationCompleted
                    );
                }
                Err(s) => tracing::warn!(vm = %p.vm, "cancel on source: {}; retrying", s.message()),
            },
            Err(e) => tracing::warn!(vm = %p.vm, "source unreachable for cancel ({e:#}); retrying"),
        }
        if Instant::now() > deadline {
            tracing::error!(vm = %p.vm, "source unreachable for 10 minutes; unwinding without its word");
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Start-up recovery: finishes or unwinds every migration saga left running.
pub async fn recover(app: &App) -> anyhow::Result<()> {
    for (saga, params) in app.db.saga_unfinished(KIND).await? {
        let Ok(p) = serde_json::from_value::<Params>(params) else {
            tracing::error!(%saga, "unreadable migration saga; marking it failed");
            app.db.saga_set_state(saga, "failed").await?;
            continue;
        };
        let r = Run { app, saga, p: &p };
        let steps = app.db.saga_succeeded_steps(saga).await?;
        let mut past_no_return = steps.iter().any(|s| s == "switchover");
        if !past_no_return {
            // Ask the source's QEMU: it may have completed while nobody watched.
            if let Ok(mut src) = r.agent(p.source).await {
                if let Ok(st) = src
                    .migration_status(VmRef {
                        vm_id: p.vm.to_string(),
                    })
                    .await
                {
                    let st = st.into_inner().status();
                    past_no_return = st == Qs::MigrationCompleted || in_postcopy(st);
                }
            }
        }
        tracing::warn!(%saga, vm = %p.vm, past_no_return, "recovering a migration saga");
        if past_no_return {
            r.event("switchover", "succeeded").await;
            forward(&r, None).await;
        } else {
            unwind(
                &r,
                true,
                MigrationState::Failed,
                "the control plane restarted during the migration; rolled back",
            )
            .await;
        }
    }
    Ok(())
}
