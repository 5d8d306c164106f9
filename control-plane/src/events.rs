//! The event bus: every event is appended to the log in PostgreSQL, then fanned out
//! to live subscribers (the SSE stream). Recording an event never fails the
//! operation that caused it; a failure to record is logged.

use ferry_api::event::Event;
use tokio::sync::broadcast;

use crate::db::events::NewEvent;
use crate::db::Db;

#[derive(Clone, Debug)]
pub struct EventBus {
    db: Db,
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(db: Db) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { db, tx }
    }

    pub async fn record(&self, mut e: NewEvent) {
        if e.actor.is_none() {
            e.actor = crate::audit::current();
        }
        match self.db.event_insert(&e).await {
            Ok(ev) => {
                tracing::info!(kind = ev.kind, seq = ev.seq, "{}", ev.message);
                let _ = self.tx.send(ev);
            }
            Err(err) => tracing::error!(kind = e.kind, "failed to record event: {err}"),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
