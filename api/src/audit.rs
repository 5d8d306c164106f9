//! The audit trail: every request that changes something (or tried to), who made
//! it, from where, and how it ended. `GET /audit` (admin) lists it, newest first.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::token::Role;
use crate::TokenId;

/// Who acted: the token a request authenticated with (its name and role then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub token_id: TokenId,
    pub name: String,
    pub role: Role,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// 2xx: done (or, for 202, accepted and under way).
    Succeeded,
    /// 4xx: refused; nothing changed.
    Refused,
    /// 5xx: the control plane failed.
    Failed,
}

impl AuditOutcome {
    pub fn of_status(status: u16) -> Self {
        match status {
            500.. => Self::Failed,
            400.. => Self::Refused,
            _ => Self::Succeeded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => Self::Succeeded,
            "refused" => Self::Refused,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One recorded request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the trail (the cursor pages back from it).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `None`: the request had no valid token (it was refused with 401).
    pub actor: Option<Actor>,
    /// `METHOD /api/v1/path/{template}`, e.g. `POST /api/v1/vms/{id}/migrate`.
    pub operation: String,
    /// The ids the request acted on: those in its path, and what it created.
    pub target_ids: Vec<uuid::Uuid>,
    /// The request's body, secrets (tokens, tickets, keys, passwords) removed; a
    /// large body is summarised by its fields.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// The peer's address (`ip:port`).
    pub remote_addr: String,
    pub status: u16,
    pub outcome: AuditOutcome,
    /// The problem's `code` when refused or failed.
    pub code: Option<String>,
    pub duration_ms: u64,
}
