//! The saga executor (DESIGN principle 3; in the spirit of omicron's steno, written
//! for Ferry). A saga is a declared list of typed nodes, each an action and an
//! undo, with a point of no return; the executor runs them in order and writes
//! every node event to PostgreSQL, so a control plane that restarts resumes each
//! unfinished saga where it stood.
//!
//! ```text
//!            node 0 … node k-1 │ node k … node n-1          k = Saga::NO_RETURN
//!  running ──► action, action, │ action, action ──► done
//!     │ a node fails           │ a node fails: retried (backoff) until it succeeds
//!     ▼                        │
//!  unwinding ──► undo of every node that started, newest first ──► failed
//!        (an undo may find the point of no return already passed — e.g. a cancel
//!         that lost the race with completion — and send the saga forward again)
//! ```
//!
//! The rules every saga keeps, which the generic tests (`tests/tests/sagas.rs`)
//! check for every node of every saga by looping over [`Saga::nodes`]:
//! - An action may be run again after a crash (the executor resumes a node that
//!   started but has no recorded outcome by running it again), so it answers a
//!   replay with the same outcome.
//! - An undo is run for the node that failed too (an action that reaches an agent
//!   may have half-happened), so it must be harmless when its action did nothing.
//! - A node's state changes are [`Done::write`]s, applied in the same transaction as
//!   the node's `succeeded` event; a failed write fails the node. Every other
//!   database write goes through [`Ctx::write`], whose failure fails the node too.
//!   Nothing is ignored, and a database error is never read as an answer.

mod exec;
pub mod hooks;

use std::collections::HashMap;

use ferry_api::SagaId;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;

pub use exec::{recover_all, start, Outcome};
pub use hooks::Hooks;

use crate::app::App;

/// A saga's state (`sagas.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaState {
    Running,
    Unwinding,
    Done,
    Failed,
}

impl SagaState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Unwinding => "unwinding",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "unwinding" => Self::Unwinding,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// What happened to a node (`saga_events.event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    Started,
    Succeeded,
    Failed,
    UndoStarted,
    UndoFinished,
}

impl NodeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::UndoStarted => "undo_started",
            Self::UndoFinished => "undo_finished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "started" => Self::Started,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "undo_started" => Self::UndoStarted,
            "undo_finished" => Self::UndoFinished,
            _ => return None,
        })
    }
}

/// Why a node failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// The operation failed; the message is for people.
    Failed(String),
    /// The user cancelled it.
    Cancelled,
    /// Neither going forward nor back is safe (e.g. a post-copy that broke: the
    /// VM's state is split between hosts). The saga stops, failed, without undoing,
    /// and [`Saga::stuck`] records why for an operator.
    Stuck(String),
}

impl NodeError {
    pub fn failed(e: impl std::fmt::Display) -> Self {
        Self::Failed(e.to_string())
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(m) | Self::Stuck(m) => f.write_str(m),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl From<sqlx::Error> for NodeError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(format!("database: {e}"))
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

/// A database write applied in the transaction that records a node's outcome.
pub type Write =
    Box<dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, sqlx::Result<()>> + Send>;

/// A node's successful outcome: its output (kept with the event, readable by later
/// nodes and by recovery) and the state changes it makes.
pub struct Done {
    pub output: serde_json::Value,
    pub writes: Vec<Write>,
}

impl Done {
    pub fn new(output: impl Serialize) -> Self {
        Self {
            output: serde_json::to_value(output).unwrap_or(serde_json::Value::Null),
            writes: Vec::new(),
        }
    }

    pub fn nothing() -> Self {
        Self::new(serde_json::Value::Null)
    }

    /// Adds a write to the node's outcome transaction.
    pub fn write<F>(mut self, f: F) -> Self
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, sqlx::Result<()>> + Send + 'static,
    {
        self.writes.push(Box::new(f));
        self
    }
}

/// How an undo ended.
pub enum Undone {
    /// The node's effect is gone.
    Undone,
    /// The node's effect cannot be undone because the point of no return was passed
    /// after all (e.g. the move completed before the cancel): the node counts as
    /// succeeded with this outcome and the saga goes forward.
    Forward(Done),
}

/// What an action or undo sees.
pub struct Ctx<'a, S: Saga> {
    pub app: &'a App,
    pub saga: SagaId,
    pub params: &'a S::Params,
    /// Outputs of the nodes that succeeded, by name.
    pub outputs: &'a HashMap<String, serde_json::Value>,
    /// While unwinding: why.
    pub cause: Option<&'a NodeError>,
    pub(crate) writes: &'a hooks::WriteCounter<'a>,
}

impl<S: Saga> Ctx<'_, S> {
    /// A database write of the node; its failure (or an injected one) fails the node.
    pub async fn write<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = sqlx::Result<T>>,
    ) -> NodeResult<T> {
        self.writes.check(what)?;
        f.await
            .map_err(|e| NodeError::Failed(format!("database ({what}): {e}")))
    }

    /// The output of an earlier node.
    pub fn output<T: DeserializeOwned>(&self, node: &str) -> NodeResult<T> {
        let v = self
            .outputs
            .get(node)
            .ok_or_else(|| NodeError::Failed(format!("no output of node {node}")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| NodeError::Failed(format!("output of node {node}: {e}")))
    }
}

type ActionFn<S> = for<'a> fn(&'a Ctx<'a, S>) -> BoxFuture<'a, NodeResult<Done>>;
type UndoFn<S> = for<'a> fn(&'a Ctx<'a, S>) -> BoxFuture<'a, NodeResult<Undone>>;

/// One node: a name (stable: it is stored in the log), an action and an undo.
pub struct Node<S: Saga> {
    pub name: &'static str,
    pub action: ActionFn<S>,
    pub undo: UndoFn<S>,
}

/// A kind of saga.
pub trait Saga: Sized + Send + Sync + 'static {
    /// Stored in `sagas.kind`.
    const KIND: &'static str;
    /// Index of the first node that only goes forward: once every node before it
    /// has succeeded, a failure is retried, never unwound.
    const NO_RETURN: usize;
    type Params: Serialize + DeserializeOwned + Send + Sync + Clone + 'static;

    fn nodes() -> &'static [Node<Self>];

    /// A node failed with [`NodeError::Stuck`]: the writes that record it.
    fn stuck(ctx: &Ctx<'_, Self>, why: &str) -> Vec<Write>;

    /// After the saga ended (its end recorded): what to tell the world.
    fn after<'a>(app: &'a App, params: &'a Self::Params, outcome: &'a Outcome)
        -> BoxFuture<'a, ()>;
}

/// An undo for nodes whose action leaves nothing to undo.
pub fn nothing_to_undo<'a, S: Saga>(_: &'a Ctx<'a, S>) -> BoxFuture<'a, NodeResult<Undone>> {
    Box::pin(async { Ok(Undone::Undone) })
}
