//! Running a saga: forward through its nodes, unwinding on a failure before the
//! point of no return, retrying after it; and resuming sagas after a restart.

use std::collections::HashMap;
use std::time::Duration;

use ferry_api::SagaId;

use super::hooks::WriteCounter;
use super::{Ctx, Done, NodeError, NodeEvent, Saga, SagaState, Undone};
use crate::app::App;
use crate::db::sagas::SagaRow;
use crate::db::Db;

/// How a saga run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every node succeeded.
    Done,
    /// A node failed and every node that had started was undone.
    Unwound(NodeError),
    /// A node was stuck: neither way was safe; recorded for an operator.
    Stuck(String),
    /// Stopped by the `crash_after` test hook (the saga stays unfinished).
    Crashed,
}

/// Retry pause for writes and undos that must eventually happen.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(8)).min(Duration::from_secs(30))
}

struct Run<'a, S: Saga> {
    app: &'a App,
    saga: SagaId,
    params: S::Params,
    outputs: HashMap<String, serde_json::Value>,
    /// Nodes whose action started (these are undone on unwind).
    started: Vec<bool>,
    /// Nodes whose undo finished.
    undone: Vec<bool>,
    writes: WriteCounter<'a>,
}

impl<'a, S: Saga> Run<'a, S> {
    fn new(app: &'a App, saga: SagaId, params: S::Params) -> Self {
        let n = S::nodes().len();
        Self {
            app,
            saga,
            params,
            outputs: HashMap::new(),
            started: vec![false; n],
            undone: vec![false; n],
            writes: WriteCounter::new(&app.saga_hooks),
        }
    }

    fn ctx<'c>(&'c self, cause: Option<&'c NodeError>) -> Ctx<'c, S> {
        Ctx {
            app: self.app,
            saga: self.saga,
            params: &self.params,
            outputs: &self.outputs,
            cause,
            writes: &self.writes,
        }
    }

    /// Appends a node event (a counted write).
    async fn log(
        &self,
        node: &str,
        ev: NodeEvent,
        data: serde_json::Value,
    ) -> Result<(), NodeError> {
        self.writes.check(&format!("{node}.{}", ev.as_str()))?;
        self.app
            .db
            .saga_event(self.saga, node, ev, &data)
            .await
            .map_err(NodeError::from)
    }

    /// A write that must land (on the undo path, or a state change): retried.
    async fn must<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), NodeError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(saga = %self.saga, what, "{e}; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn set_state(&self, state: SagaState) {
        self.must("saga state", || async {
            self.writes.check(&format!("saga.{}", state.as_str()))?;
            self.app
                .db
                .saga_set_state(self.saga, state)
                .await
                .map_err(NodeError::from)
        })
        .await
    }

    /// Records node `i`'s success: its writes, its event and (for the last node) the
    /// saga's end, in one transaction.
    async fn commit(&mut self, i: usize, done: Done) -> Result<(), NodeError> {
        let node = S::nodes()[i].name;
        let last = i + 1 == S::nodes().len();
        let mut tx = self.app.db.pool.begin().await?;
        for w in done.writes {
            self.writes.check(&format!("{node}.write"))?;
            w(&mut tx).await?;
        }
        self.writes.check(&format!("{node}.succeeded"))?;
        Db::saga_event_on(&mut tx, self.saga, node, NodeEvent::Succeeded, &done.output).await?;
        if last {
            Db::saga_set_state_on(&mut tx, self.saga, SagaState::Done).await?;
        }
        tx.commit().await?;
        self.outputs.insert(node.to_string(), done.output);
        self.step(node, "succeeded");
        Ok(())
    }

    /// Counts a node's run for `ferry_saga_steps_total`.
    fn step(&self, node: &'static str, result: &'static str) {
        self.app.metrics.saga_steps.inc(vec![
            ("saga", S::KIND.to_string()),
            ("node", node.to_string()),
            ("result", result.to_string()),
        ]);
    }

    /// Runs node `i`'s action (twice under the replay hook) and records it.
    async fn run_node(&mut self, i: usize) -> Result<(), NodeError> {
        let node = &S::nodes()[i];
        // Counted as started even if recording it fails: its undo is harmless then,
        // and some undo must record the saga's end (the first node's, here).
        self.started[i] = true;
        self.log(node.name, NodeEvent::Started, serde_json::Value::Null)
            .await?;
        let mut done = (node.action)(&self.ctx(None)).await?;
        if self
            .app
            .saga_hooks
            .replay
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            done = (node.action)(&self.ctx(None)).await?;
        }
        if self.app.saga_hooks.fail_after_now(node.name) {
            return Err(NodeError::Failed(format!(
                "injected failure after {}",
                node.name
            )));
        }
        self.commit(i, done).await
    }

    /// Forward from node `from` to the end.
    async fn forward(mut self, from: usize) -> Outcome {
        let nodes = S::nodes();
        let mut i = from;
        let mut attempt = 0;
        while i < nodes.len() {
            let name = nodes[i].name;
            match self.run_node(i).await {
                Ok(()) => {
                    attempt = 0;
                    if self.app.saga_hooks.crash_after_now(name) {
                        tracing::warn!(saga = %self.saga, node = name, "test hook: crashing here");
                        return Outcome::Crashed;
                    }
                    i += 1;
                }
                Err(NodeError::Stuck(why)) => return self.stuck(i, why).await,
                Err(e) if i >= S::NO_RETURN => {
                    self.step(name, "failed");
                    // Past the point of no return: only forward.
                    tracing::warn!(saga = %self.saga, node = name, "{e}; retrying (past the point of no return)");
                    let data = serde_json::json!({ "error": e.to_string() });
                    self.must("log failure", || {
                        self.log(name, NodeEvent::Failed, data.clone())
                    })
                    .await;
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.step(name, "failed");
                    tracing::warn!(saga = %self.saga, node = name, "{e}; unwinding");
                    let data = serde_json::json!({ "error": e.to_string() });
                    self.must("log failure", || {
                        self.log(name, NodeEvent::Failed, data.clone())
                    })
                    .await;
                    return self.unwind(e).await;
                }
            }
        }
        Outcome::Done
    }

    async fn stuck(self, i: usize, why: String) -> Outcome {
        let name = S::nodes()[i].name;
        tracing::error!(saga = %self.saga, node = name, "stuck: {why}");
        self.must("record stuck saga", || async {
            let writes = S::stuck(&self.ctx(None), &why);
            let mut tx = self.app.db.pool.begin().await?;
            for w in writes {
                self.writes.check(&format!("{name}.stuck"))?;
                w(&mut tx).await?;
            }
            Db::saga_event_on(
                &mut tx,
                self.saga,
                name,
                NodeEvent::Failed,
                &serde_json::json!({ "error": why, "stuck": true }),
            )
            .await?;
            Db::saga_set_state_on(&mut tx, self.saga, SagaState::Failed).await?;
            tx.commit().await?;
            Ok(())
        })
        .await;
        Outcome::Stuck(why)
    }

    /// Undoes every node that started, newest first.
    async fn unwind(mut self, cause: NodeError) -> Outcome {
        self.set_state(SagaState::Unwinding).await;
        let nodes = S::nodes();
        for j in (0..nodes.len()).rev() {
            if !self.started[j] || self.undone[j] {
                continue;
            }
            let name = nodes[j].name;
            self.must("log undo start", || {
                self.log(name, NodeEvent::UndoStarted, serde_json::Value::Null)
            })
            .await;
            let mut attempt = 0;
            loop {
                match (nodes[j].undo)(&self.ctx(Some(&cause))).await {
                    Ok(Undone::Undone) => break,
                    Ok(Undone::Forward(done)) => {
                        // The point of no return had been passed after all.
                        tracing::warn!(saga = %self.saga, node = name, "cannot be undone: it completed; going forward");
                        match self.commit(j, done).await {
                            Ok(()) => {
                                self.set_state(SagaState::Running).await;
                                return Box::pin(self.forward(j + 1)).await;
                            }
                            Err(e) => {
                                // Asked again, the undo answers the same.
                                tracing::error!(saga = %self.saga, "{e}; retrying");
                                tokio::time::sleep(backoff(attempt)).await;
                                attempt += 1;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(saga = %self.saga, node = name, "undo failed: {e}; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
            self.undone[j] = true;
            self.step(name, "undone");
            self.must("log undo end", || {
                self.log(name, NodeEvent::UndoFinished, serde_json::Value::Null)
            })
            .await;
        }
        self.set_state(SagaState::Failed).await;
        Outcome::Unwound(cause)
    }
}

/// Runs a new saga (its row already recorded) to its end.
pub async fn start<S: Saga>(app: &App, saga: SagaId, params: S::Params) -> Outcome {
    let outcome = Run::<S>::new(app, saga, params.clone()).forward(0).await;
    ended::<S>(app, &outcome);
    S::after(app, &params, &outcome).await;
    outcome
}

/// Counts a saga's end for `ferry_sagas_ended_total`.
fn ended<S: Saga>(app: &App, outcome: &Outcome) {
    let o = match outcome {
        Outcome::Done => "done",
        Outcome::Unwound(_) => "unwound",
        Outcome::Stuck(_) => "stuck",
        Outcome::Crashed => return,
    };
    app.metrics.sagas_ended.inc(vec![
        ("saga", S::KIND.to_string()),
        ("outcome", o.to_string()),
    ]);
}

/// Resumes one recorded saga from its log.
pub async fn resume<S: Saga>(app: &App, row: SagaRow) -> anyhow::Result<Outcome> {
    let params: S::Params = serde_json::from_value(row.params)?;
    let mut run = Run::<S>::new(app, row.id, params.clone());
    let nodes = S::nodes();
    let index = |name: &str| nodes.iter().position(|n| n.name == name);
    let mut cause = None;
    for ev in app.db.saga_events(row.id).await? {
        let Some(i) = index(&ev.node) else {
            anyhow::bail!("saga {} names an unknown node {}", row.id, ev.node);
        };
        match ev.event {
            NodeEvent::Started => run.started[i] = true,
            NodeEvent::Succeeded => {
                run.started[i] = true;
                run.outputs.insert(ev.node.clone(), ev.data);
            }
            NodeEvent::Failed => {
                cause = ev.data["error"]
                    .as_str()
                    .map(|s| NodeError::Failed(s.into()));
            }
            NodeEvent::UndoStarted => {}
            NodeEvent::UndoFinished => run.undone[i] = true,
        }
    }
    tracing::warn!(saga = %row.id, kind = row.kind, state = row.state.as_str(), "resuming a saga");
    app.metrics
        .saga_recoveries
        .inc(vec![("saga", S::KIND.to_string())]);
    let outcome = match row.state {
        SagaState::Running => {
            // The first node without an outcome runs (again: actions are replayable).
            let from = (0..nodes.len())
                .find(|&i| !run.outputs.contains_key(nodes[i].name))
                .unwrap_or(nodes.len());
            if from == nodes.len() {
                run.set_state(SagaState::Done).await;
                Outcome::Done
            } else {
                run.forward(from).await
            }
        }
        SagaState::Unwinding => {
            let cause = cause.unwrap_or_else(|| {
                NodeError::Failed("the control plane restarted while unwinding".into())
            });
            run.unwind(cause).await
        }
        SagaState::Done | SagaState::Failed => return Ok(Outcome::Done),
    };
    ended::<S>(app, &outcome);
    S::after(app, &params, &outcome).await;
    Ok(outcome)
}

/// Start-up recovery: resumes every unfinished saga, all at once (one stuck on an
/// unreachable agent does not hold the others).
pub async fn recover_all(app: &App) -> anyhow::Result<()> {
    let rows = app.db.saga_unfinished().await?;
    let mut set = tokio::task::JoinSet::new();
    for row in rows {
        let app = app.clone();
        set.spawn(async move {
            let id = row.id;
            let r = match row.kind.as_str() {
                crate::sagas::migrate::KIND => {
                    resume::<crate::sagas::migrate::Migrate>(&app, row).await
                }
                crate::sagas::evacuate::KIND => {
                    resume::<crate::sagas::evacuate::Evacuate>(&app, row).await
                }
                other => Err(anyhow::anyhow!("unknown saga kind {other}")),
            };
            match r {
                Ok(outcome) => tracing::info!(saga = %id, ?outcome, "recovered saga ended"),
                Err(e) => {
                    tracing::error!(saga = %id, "cannot resume: {e:#}; marking it failed");
                    let why = serde_json::json!({ "error": format!("cannot resume: {e:#}") });
                    if let Err(e) = app
                        .db
                        .saga_event(id, "recovery", NodeEvent::Failed, &why)
                        .await
                    {
                        tracing::error!(saga = %id, "record why: {e}");
                    }
                    if let Err(e) = app.db.saga_set_state(id, SagaState::Failed).await {
                        tracing::error!(saga = %id, "mark failed: {e}");
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(())
}
