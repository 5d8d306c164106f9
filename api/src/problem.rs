//! The `application/problem+json` error body (RFC 9457) with Ferry's stable `code`.

use serde::{Deserialize, Serialize};

/// Every 4xx/5xx answer of the REST API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable reason, e.g. `not_found`, `duplicate_name`.
    pub code: String,
    /// Per-check reasons (compatibility failures and the like).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
    /// With `vm_busy`: the operation in flight on the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRef>,
}

/// An operation in flight on a VM: a `migration` (its id is the migration's) or a
/// `power` task (its id is the task's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationRef {
    pub kind: String,
    pub id: uuid::Uuid,
}

/// One machine-readable reason with a sentence a person can act on.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub code: String,
    pub detail: String,
}
