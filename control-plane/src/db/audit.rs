//! The audit trail's table: appended once per answered change request
//! (`crate::audit::record`), read newest first by `GET /audit`.

use chrono::{DateTime, Utc};
use ferry_api::audit::{Actor, AuditEntry, AuditOutcome};
use ferry_api::token::Role;
use ferry_api::TokenId;
use uuid::Uuid;

use super::{paginate, unsigned, Db, PageReq};
use crate::audit::Acting;

/// A request to record.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor: Option<Acting>,
    pub method: String,
    pub route: String,
    pub target_ids: Vec<Uuid>,
    pub request: serde_json::Value,
    pub remote_addr: String,
    pub status: u16,
    pub outcome: AuditOutcome,
    pub code: Option<String>,
    pub duration_ms: u64,
}

/// `GET /audit`'s filters.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub token_id: Option<TokenId>,
    pub target_id: Option<Uuid>,
    pub outcome: Option<AuditOutcome>,
    /// Exact route template, e.g. `/api/v1/vms/{id}/migrate`.
    pub route: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    at: DateTime<Utc>,
    token_id: Option<Uuid>,
    token_name: Option<String>,
    role: Option<String>,
    method: String,
    route: String,
    target_ids: Vec<Uuid>,
    request: serde_json::Value,
    remote_addr: String,
    status: i32,
    outcome: String,
    code: Option<String>,
    duration_ms: i64,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        let actor = match (r.token_id, r.role.as_deref().and_then(Role::parse)) {
            (Some(id), Some(role)) => Some(Actor {
                token_id: TokenId(id),
                name: r.token_name.unwrap_or_default(),
                role,
            }),
            _ => None,
        };
        AuditEntry {
            seq: r.seq,
            at: r.at,
            actor,
            operation: format!("{} {}", r.method, r.route),
            target_ids: r.target_ids,
            request: r.request,
            remote_addr: r.remote_addr,
            status: r.status.clamp(0, 999) as u16,
            outcome: AuditOutcome::parse(&r.outcome).unwrap_or(AuditOutcome::Failed),
            code: r.code,
            duration_ms: unsigned(r.duration_ms),
        }
    }
}

impl Db {
    /// Appends `a`; the token's name is read as it is now (a later rename or
    /// revocation leaves the record as it was).
    pub async fn audit_insert(&self, a: &NewAudit) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO audit (token_id, token_name, role, method, route, target_ids, request, \
             remote_addr, status, outcome, code, duration_ms) \
             VALUES ($1, (SELECT name FROM api_tokens WHERE id = $1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(a.actor.map(|c| c.token_id.0))
        .bind(a.actor.map(|c| c.role.as_str()))
        .bind(&a.method)
        .bind(&a.route)
        .bind(&a.target_ids)
        .bind(&a.request)
        .bind(&a.remote_addr)
        .bind(i32::from(a.status))
        .bind(a.outcome.as_str())
        .bind(&a.code)
        .bind(a.duration_ms.min(i64::MAX as u64) as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first; the cursor pages back in time.
    pub async fn audit_list(
        &self,
        page: PageReq<i64>,
        f: &AuditFilter,
    ) -> sqlx::Result<ferry_api::Page<AuditEntry>> {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT seq, at, token_id, token_name, role, method, route, target_ids, request, \
             remote_addr, status, outcome, code, duration_ms FROM audit WHERE seq < ",
        );
        q.push_bind(page.after.unwrap_or(i64::MAX));
        if let Some(t) = f.token_id {
            q.push(" AND token_id = ").push_bind(t.0);
        }
        if let Some(t) = f.target_id {
            q.push(" AND target_ids @> ARRAY[")
                .push_bind(t)
                .push("]::uuid[]");
        }
        if let Some(o) = f.outcome {
            q.push(" AND outcome = ").push_bind(o.as_str());
        }
        if let Some(r) = &f.route {
            q.push(" AND route = ").push_bind(r.clone());
        }
        q.push(format!(
            " ORDER BY seq DESC LIMIT {}",
            u64::from(page.limit) + 1
        ));
        let rows: Vec<AuditRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| r.seq.to_string(),
            AuditEntry::from,
        ))
    }
}
