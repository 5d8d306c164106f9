//! The event log: append-only, ordered by `seq`.

use chrono::{DateTime, Utc};
use ferry_api::event::{Event, Severity};
use ferry_api::{HostId, TaskId, VmId};
use uuid::Uuid;

use super::{paginate, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub severity: String,
    pub message: String,
    pub host_id: Option<Uuid>,
    pub vm_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub data: serde_json::Value,
    pub actor: Option<serde_json::Value>,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Event {
            seq: r.seq,
            at: r.at,
            kind: r.kind,
            severity: match r.severity.as_str() {
                "warning" => Severity::Warning,
                "error" => Severity::Error,
                _ => Severity::Info,
            },
            message: r.message,
            host_id: r.host_id.map(HostId),
            vm_id: r.vm_id.map(VmId),
            task_id: r.task_id.map(TaskId),
            data: r.data,
            actor: r.actor.and_then(|a| serde_json::from_value(a).ok()),
        }
    }
}

/// A new event, before it has a `seq`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub severity: Severity,
    pub message: String,
    pub host_id: Option<HostId>,
    pub vm_id: Option<VmId>,
    pub task_id: Option<TaskId>,
    pub data: serde_json::Value,
    /// Who caused it (the bus fills in the caller of the request or operation
    /// it is recorded for).
    pub actor: Option<crate::audit::Acting>,
}

impl NewEvent {
    pub fn info(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            severity: Severity::Info,
            message: message.into(),
            host_id: None,
            vm_id: None,
            task_id: None,
            data: serde_json::json!({}),
            actor: None,
        }
    }

    pub fn warning(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::info(kind, message)
        }
    }

    pub fn host(mut self, id: HostId) -> Self {
        self.host_id = Some(id);
        self
    }

    pub fn vm(mut self, id: VmId) -> Self {
        self.vm_id = Some(id);
        self
    }

    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

const SELECT: &str =
    "SELECT seq, at, kind, severity, message, host_id, vm_id, task_id, data, actor FROM events";

impl Db {
    pub async fn event_insert(&self, e: &NewEvent) -> sqlx::Result<Event> {
        let severity = match e.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        let row: EventRow = sqlx::query_as(
            "INSERT INTO events (kind, severity, message, host_id, vm_id, task_id, data, actor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, \
               CASE WHEN $8::uuid IS NULL THEN NULL ELSE jsonb_build_object('token_id', $8::uuid, \
                 'name', coalesce((SELECT name FROM api_tokens WHERE id = $8::uuid), ''), 'role', $9::text) END) \
             RETURNING seq, at, kind, severity, message, host_id, vm_id, task_id, data, actor",
        )
        .bind(e.kind)
        .bind(severity)
        .bind(&e.message)
        .bind(e.host_id.map(|h| h.0))
        .bind(e.vm_id.map(|v| v.0))
        .bind(e.task_id.map(|t| t.0))
        .bind(&e.data)
        .bind(e.actor.map(|a| a.token_id.0))
        .bind(e.actor.map(|a| a.role.as_str()))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// Events after `seq` (oldest first), optionally of one kind prefix.
    /// Newest first: events before `page.after` (a `seq`), or the latest ones.
    /// The newest first, down to (not including) `since`.
    pub async fn event_list_newest(
        &self,
        page: PageReq<i64>,
        since: Option<i64>,
        kind_prefix: Option<&str>,
    ) -> sqlx::Result<ferry_api::Page<Event>> {
        let mut q = sqlx::QueryBuilder::new(format!("{SELECT} WHERE seq < "));
        q.push_bind(page.after.unwrap_or(i64::MAX));
        if let Some(s) = since {
            q.push(" AND seq > ").push_bind(s);
        }
        if let Some(k) = kind_prefix {
            q.push(" AND left(kind, ")
                .push_bind(k.chars().count() as i32)
                .push(") = ")
                .push_bind(k.to_string());
        }
        q.push(format!(
            " ORDER BY seq DESC LIMIT {}",
            u64::from(page.limit) + 1
        ));
        let rows: Vec<EventRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| r.seq.to_string(),
            Event::from,
        ))
    }

    pub async fn event_list(
        &self,
        page: PageReq<i64>,
        kind_prefix: Option<&str>,
    ) -> sqlx::Result<ferry_api::Page<Event>> {
        let mut q = sqlx::QueryBuilder::new(format!("{SELECT} WHERE seq > "));
        q.push_bind(page.after.unwrap_or(0));
        if let Some(k) = kind_prefix {
            q.push(" AND left(kind, ")
                .push_bind(k.chars().count() as i32)
                .push(") = ")
                .push_bind(k.to_string());
        }
        q.push(format!(" ORDER BY seq LIMIT {}", u64::from(page.limit) + 1));
        let rows: Vec<EventRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| r.seq.to_string(),
            Event::from,
        ))
    }
}
