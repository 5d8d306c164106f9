//! Events: what happened in the cluster, in order (`seq` is the stream position).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{HostId, TaskId, VmId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in the event log; pass it as `?since=` to read what came after.
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// Dotted kind, e.g. `host.connected`, `vm.created`.
    pub kind: String,
    pub severity: Severity,
    pub message: String,
    pub host_id: Option<HostId>,
    pub vm_id: Option<VmId>,
    pub task_id: Option<TaskId>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Who caused it: the token of the request that did (directly, or through the
    /// operation it started); `None` for what the system did on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<crate::audit::Actor>,
}
