//! The live-migration saga (the vMotion sequence of DESIGN.md) on the saga
//! executor (`crate::saga`):
//!
//! ```text
//!  queue ─► destination_start ─► transfer ─► commit ─► source_cleanup ─► finish
//!  undo:    undo: discard the    undo: cancel │ POINT OF NO RETURN (NO_RETURN = 3)
//!  record   destination's copy   on the source│ QEMU reported `completed`: the
//!  the end                       (it runs on) │ destination holds the whole state
//!                                             │ and runs; the source is paused in
//!                                             │ `postmigrate`. From here the saga
//!                                             │ only goes forward.
//! ```
//!
//! The point of no return is QEMU's own: before `completed` the source still runs
//! the VM (or resumes it on cancel), so unwinding leaves exactly one copy, on the
//! source; after it only the destination's copy may run, so the saga commits the
//! move and discards the source. A cancel that loses the race with completion
//! (the agent answers `ALREADY_DONE` or `PAST_SWITCHOVER`) sends the saga forward.
//! A control plane that restarts resumes the saga at its first node without an
//! outcome: `transfer` asked again finds QEMU's migration where it stands (the
//! agent answers a replayed `migrate_out` with the migration under way), so the
//! move goes on, or completes, or fails, as QEMU says.

use std::time::Duration;

use ferry_api::migration::{MigrationResult, MigrationState};
use ferry_api::vm::MigrationPolicy;
use ferry_api::{HostId, MigrationId, VmId};
use ferry_proto::errors::{ErrorCode, Failure};
use ferry_proto::v1::agent_client::AgentClient;
use ferry_proto::v1::{MigrateInReply, MigrateInRequest, VmRef};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::escalation::Plan;
use super::migrate_storage;
use super::migrate_transfer::{cancel_on_source, follow, wait_postcopy_done};
use crate::app::App;
use crate::config::{OnOff, Transport};
use crate::db::events::NewEvent;
use crate::db::Db;
use crate::saga::{Ctx, Done, Node, NodeError, NodeResult, Outcome, Saga, Undone, Write};

pub const KIND: &str = "migrate";

/// The saga's parameters, persisted with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub migration: MigrationId,
    pub vm: VmId,
    pub vm_name: String,
    pub source: HostId,
    pub destination: HostId,
    pub policy: MigrationPolicy,
    /// The disks it copies to the destination's datastore (none: shared storage).
    #[serde(default)]
    pub disks: Vec<crate::app::storage::DiskMove>,
}

impl Params {
    /// A storage-only move: the VM stays on its host, its disks change datastore
    /// (no second QEMU, no memory transfer).
    pub fn storage_only(&self) -> bool {
        self.source == self.destination
    }
}

/// The migration saga.
pub struct Migrate;

pub type MCtx<'a> = Ctx<'a, Migrate>;

static NODES: [Node<Migrate>; 7] = [
    Node {
        name: "queue",
        action: queue,
        undo: record_unwound,
    },
    Node {
        name: "destination_start",
        action: destination_start,
        undo: discard_destination,
    },
    Node {
        name: "mirror",
        action: mirror,
        undo: cancel_mirror,
    },
    Node {
        name: "transfer",
        action: transfer,
        undo: cancel_transfer,
    },
    Node {
        name: "commit",
        action: commit,
        undo: crate::saga::nothing_to_undo,
    },
    Node {
        name: "source_cleanup",
        action: source_cleanup,
        undo: crate::saga::nothing_to_undo,
    },
    Node {
        name: "finish",
        action: finish,
        undo: crate::saga::nothing_to_undo,
    },
];

impl Saga for Migrate {
    const KIND: &'static str = KIND;
    const NO_RETURN: usize = 4;
    type Params = Params;

    fn nodes() -> &'static [Node<Self>] {
        &NODES
    }

    fn stuck(ctx: &MCtx<'_>, why: &str) -> Vec<Write> {
        let (id, vm, why) = (ctx.params.migration, ctx.params.vm, why.to_string());
        vec![
            Box::new(move |c| {
                Box::pin(async move {
                    Db::migration_finish_on(c, id, MigrationState::Failed, None, Some(&why)).await
                })
            }),
            // An operator takes over (e.g. `off` with force); the VM is not held.
            Box::new(release(vm, id)),
        ]
    }

    fn after<'a>(app: &'a App, p: &'a Params, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(after(app, p, outcome))
    }
}

impl MCtx<'_> {
    pub async fn agent(&self, host: HostId) -> Result<AgentClient<Channel>, Failure> {
        let h = self
            .app
            .db
            .host_fetch(host)
            .await
            .map_err(|e| Failure::Unreachable(format!("database: {e}")))?
            .ok_or_else(|| Failure::Agent(ErrorCode::NotFound, format!("host {host} is gone")))?;
        self.app
            .agents
            .connect(host, &h.address)
            .await
            .map_err(|e| Failure::Unreachable(format!("{e:#}")))
    }

    pub async fn note(&self, kind: &'static str, msg: String) {
        self.event(NewEvent::info(kind, msg)).await
    }

    pub async fn event(&self, ev: NewEvent) {
        let ev = ev
            .vm(self.params.vm)
            .data(serde_json::json!({"migration_id": self.params.migration}));
        self.app.events.record(ev).await;
    }

    pub fn vm_ref(&self) -> VmRef {
        VmRef {
            vm_id: self.params.vm.to_string(),
        }
    }

    /// A cancel the user asked for (a database error is an error, not "no").
    pub async fn cancel_requested(&self) -> NodeResult<bool> {
        Ok(self
            .app
            .db
            .migration_cancel_requested(self.params.migration)
            .await?)
    }
}

/// A write of the migration's state, in a node's outcome transaction.
pub fn set_state(
    id: MigrationId,
    state: MigrationState,
    phase: &'static str,
) -> impl for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, sqlx::Result<()>> + Send + 'static
{
    move |c| Box::pin(Db::migration_set_state_on(c, id, state, phase))
}

/// Releases the VM's operation hold (the migration's end).
pub fn release(
    vm: VmId,
    id: MigrationId,
) -> impl for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, sqlx::Result<()>> + Send + 'static
{
    move |c| Box::pin(Db::vm_op_release_on(c, vm, id.0))
}

/// Waits, queued, until both hosts have a slot, in order of arrival.
fn queue<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let p = ctx.params;
        let budget = ctx.app.migration_budget(p.source, p.destination).await;
        // After this move (and any other on its hosts): see the function.
        ctx.app.measure_when_idle(p.source, p.destination);
        let mut said = false;
        loop {
            if ctx.cancel_requested().await? {
                return Err(NodeError::Cancelled);
            }
            let started = ctx
                .write(
                    "migration_try_start",
                    ctx.app.db.migration_try_start(p.migration, budget),
                )
                .await?;
            if started {
                ctx.app.move_begins(p.source, p.destination);
                return Ok(Done::nothing());
            }
            if !said {
                said = true;
                ctx.note(
                    "migration.queued",
                    format!(
                        "{}: waiting for a migration slot (its hosts' budget is {budget}); it starts when one frees, in order of arrival",
                        p.vm_name
                    ),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The end of an unwound migration: recorded, and said.
fn record_unwound<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async move {
        let p = ctx.params;
        let cancelled = matches!(ctx.cause, Some(NodeError::Cancelled));
        let why = ctx.cause.map(|c| c.to_string()).unwrap_or_default();
        let (state, error) = if cancelled {
            (MigrationState::Cancelled, None)
        } else {
            (MigrationState::Failed, Some(why.as_str()))
        };
        ctx.write(
            "migration_finish",
            ctx.app.db.migration_finish(p.migration, state, None, error),
        )
        .await?;
        ctx.write(
            "vm_op_release",
            ctx.app.db.vm_op_release(p.vm, p.migration.0),
        )
        .await?;
        let (kind, verb) = if cancelled {
            ("migration.cancelled", "cancelled".to_string())
        } else {
            ("migration.failed", format!("failed ({why})"))
        };
        ctx.event(NewEvent::warning(
            kind,
            format!(
                "migration of {} {verb}; the VM keeps running on its source",
                p.vm_name
            ),
        ))
        .await;
        Ok(Undone::Undone)
    })
}

/// The destination starts an identical QEMU waiting for the state.
fn destination_start<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let p = ctx.params;
        if p.storage_only() {
            return Ok(Done::new(Incoming::default()));
        }
        let vm = ctx
            .app
            .vm_get(p.vm)
            .await
            .map_err(|e| NodeError::Failed(e.detail))?;
        let mut spec = ctx
            .app
            .vm_spec(&vm)
            .await
            .map_err(|e| NodeError::Failed(e.detail))?;
        // A storage migration: the destination's copy uses its own datastore.
        for m in &p.disks {
            if let Some(d) = spec.disks.get_mut(m.disk as usize) {
                d.datastore_id = m.to.to_string();
            }
        }
        let plan = Plan::new(&p.policy);
        // Asked of the database each time the node runs: a source agent replaced
        // by an older one since the saga began must not be trusted with it.
        let source_return_path = ctx.app.db.host_opens_return_path(p.source).await?;
        let mut dest = ctx
            .agent(p.destination)
            .await
            .map_err(|f| NodeError::Failed(format!("destination: {f}")))?;
        let reply = dest
            .migrate_in(MigrateInRequest {
                spec: Some(spec),
                listen_ip: String::new(),
                tls: ctx.app.config.migration_transport == Transport::Tls,
                postcopy: plan.postcopy && p.disks.is_empty(),
                channels: plan.channels,
                mirror_disks: !p.disks.is_empty(),
                hold_stream: ctx.app.config.overlap_destination_start == OnOff::On,
                source_return_path,
            })
            .await
            .map_err(|s| NodeError::Failed(format!("destination: {}", Failure::of(&s))))?
            .into_inner();
        Ok(Done::new(Incoming::from(reply)))
    })
}

/// Where the destination listens (the `destination_start` output; empty for a
/// storage-only move).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Incoming {
    pub uri: String,
    pub frames_address: String,
    pub frames_token: String,
    /// The destination's NBD server (a storage migration).
    #[serde(default)]
    pub nbd_address: String,
    /// Reached through the destination's migration tunnel (see the proto).
    #[serde(default)]
    pub nbd_tunnel: bool,
    /// The destination replied before its QEMU listened (`hold_stream`): if the
    /// transfer fails, the destination may know why.
    #[serde(default)]
    pub held: bool,
}

impl From<MigrateInReply> for Incoming {
    fn from(r: MigrateInReply) -> Self {
        Self {
            uri: r.uri,
            frames_address: r.frames_address,
            frames_token: r.frames_token,
            nbd_address: r.nbd_address,
            nbd_tunnel: r.nbd_tunnel,
            held: r.held,
        }
    }
}

/// Discards the destination's waiting copy. A destination that stays unreachable
/// keeps its paused copy until it returns (it is never resumed: it has no state).
fn discard_destination<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async move {
        let p = ctx.params;
        if p.storage_only() {
            // Nothing was started: the only QEMU is the VM itself.
            return Ok(Undone::Undone);
        }
        discard_copy_on(ctx, p.destination, "the destination's copy").await?;
        Ok(Undone::Undone)
    })
}

/// How long a discard insists on a host that is still `connected` (a passing
/// failure: a control plane that just restarted, a loaded agent) before the copy
/// is left to the leftovers sweep (`app/leftovers.rs`).
const DISCARD_INSISTS: Duration = Duration::from_secs(120);

/// Discards the VM's copy on `host` (`VmDiscard`), asking again while the host is
/// connected: a copy the inventory does not place there must not outlive the move
/// by a transport hiccup. A host that is disconnected (or stays unreachable for
/// `DISCARD_INSISTS`) keeps the copy until it connects again, when its leftovers
/// are discarded; the reconcile loop sweeps them too.
async fn discard_copy_on(ctx: &MCtx<'_>, host: HostId, what: &str) -> NodeResult<()> {
    let p = ctx.params;
    let deadline = tokio::time::Instant::now() + DISCARD_INSISTS;
    let mut attempt = 0u32;
    loop {
        let result = match ctx.agent(host).await {
            Ok(mut agent) => agent
                .vm_discard(ctx.vm_ref())
                .await
                .map(|_| ())
                .map_err(Failure::from),
            Err(f) => Err(f),
        };
        let f = match result {
            Ok(()) => return Ok(()),
            Err(f @ Failure::Agent(..)) => {
                return Err(NodeError::Failed(format!("discard {what}: {f}")))
            }
            Err(f) => f,
        };
        // Entering or in maintenance, a host still heartbeats: only a host that
        // stopped (or left the inventory) is given up on.
        let connected = matches!(
            ctx.app.db.host_fetch(host).await?,
            Some(h) if h.state != ferry_api::host::HostState::Disconnected
        );
        if !connected || tokio::time::Instant::now() >= deadline {
            tracing::warn!(vm = %p.vm, %host, "discard {what}: {f}; it stays until its host connects again or the reconcile loop finds it");
            return Ok(());
        }
        attempt += 1;
        tracing::warn!(vm = %p.vm, %host, attempt, "discard {what}: {f}; asking again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Storage migration: the disks mirrored until in sync (a no-op without copies).
fn mirror<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move { Ok(Done::new(migrate_storage::mirror(ctx).await?)) })
}

fn cancel_mirror<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async move {
        migrate_storage::cancel_mirror(ctx).await?;
        Ok(Undone::Undone)
    })
}

/// Starts (or, replayed, finds) the source's `migrate` and follows it to its end.
fn transfer<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let result = if ctx.params.storage_only() {
            migrate_storage::pivot(ctx).await?
        } else {
            let incoming: Incoming = ctx.output("destination_start")?;
            follow(ctx, &incoming).await?
        };
        Ok(Done::new(Some(result)).write(set_state(
            ctx.params.migration,
            MigrationState::SwitchingOver,
            "switchover",
        )))
    })
}

/// Cancels on the source; if the migration completed first, the saga goes forward.
fn cancel_transfer<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async move {
        // A storage-only move's switch either did not happen (the mirrors' undo
        // ends them) or is past undoing (`pivot` says so: stuck).
        if ctx.params.storage_only() {
            return Ok(Undone::Undone);
        }
        if cancel_on_source(ctx).await {
            ctx.note(
                "migration.strategy",
                format!(
                    "{}: the migration completed before it could be stopped; finishing it",
                    ctx.params.vm_name
                ),
            )
            .await;
            return Ok(Undone::Forward(Done::new(None::<MigrationResult>).write(
                set_state(
                    ctx.params.migration,
                    MigrationState::SwitchingOver,
                    "switchover",
                ),
            )));
        }
        Ok(Undone::Undone)
    })
}

/// Records the VM's new host: the destination's copy is the VM from now on.
fn commit<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let (vm, dest) = (ctx.params.vm, ctx.params.destination);
        let disks = ctx.params.disks.clone();
        Ok(Done::nothing().write(move |c| {
            Box::pin(async move {
                Db::vm_commit_move_on(c, vm, dest).await?;
                Db::vm_disks_moved_on(c, vm, &disks).await
            })
        }))
    })
}

/// Discards the source's paused copy (after post-copy, once it has sent all).
fn source_cleanup<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let p = ctx.params;
        if p.storage_only() {
            // The VM stays: only its old images go.
            migrate_storage::remove_source_disks(ctx).await?;
            return Ok(Done::nothing());
        }
        wait_postcopy_done(ctx).await;
        discard_copy_on(ctx, p.source, "the source's copy").await?;
        migrate_storage::remove_source_disks(ctx).await?;
        Ok(Done::nothing())
    })
}

/// Records the outcome.
fn finish<'a>(ctx: &'a MCtx<'a>) -> BoxFuture<'a, NodeResult<Done>> {
    Box::pin(async move {
        let result: Option<MigrationResult> = ctx.output("transfer")?;
        let (id, vm) = (ctx.params.migration, ctx.params.vm);
        Ok(Done::new(&result)
            .write(move |c| {
                Box::pin(async move {
                    Db::migration_finish_on(c, id, MigrationState::Completed, result.as_ref(), None)
                        .await
                })
            })
            .write(release(vm, id)))
    })
}

/// Says that the move completed (after the saga's last node is recorded).
pub async fn announce_completed(app: &App, p: &Params, result: Option<MigrationResult>) {
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
    let ev = NewEvent::info(
        "migration.completed",
        format!("{} now runs on its destination{summary}", p.vm_name),
    )
    .vm(p.vm)
    .data(serde_json::json!({"migration_id": p.migration}));
    app.events.record(ev).await;
}

/// Runs a new migration saga (its rows already recorded) to its end.
pub async fn run(app: App, saga: ferry_api::SagaId, p: Params) -> Outcome {
    crate::saga::start::<Migrate>(&app, saga, p).await
}

/// What follows a saga's end outside it: the completion notice.
async fn after(app: &App, p: &Params, outcome: &Outcome) {
    let ended = match outcome {
        Outcome::Crashed => None,
        _ => app.db.migration_fetch(p.migration).await.ok().flatten(),
    };
    if let Some(m) = &ended {
        app.metrics.migration_ended(m.state, m.result.as_ref());
    }
    match outcome {
        Outcome::Done => {
            announce_completed(app, p, ended.and_then(|m| m.result)).await;
        }
        Outcome::Stuck(why) => {
            let ev = NewEvent::warning(
                "migration.failed",
                format!(
                    "migration of {} failed in post-copy ({why}); the VM is paused on both hosts and needs an operator",
                    p.vm_name
                ),
            )
            .vm(p.vm)
            .data(serde_json::json!({"migration_id": p.migration}));
            app.events.record(ev).await;
        }
        Outcome::Unwound(_) | Outcome::Crashed => {}
    }
}
