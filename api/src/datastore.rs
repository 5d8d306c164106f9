//! Datastores: storage for VM disks, shared between hosts or local to one.

use serde::{Deserialize, Serialize};

use crate::{DatastoreId, HostId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreKind {
    Shared,
    Local,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Datastore {
    pub id: DatastoreId,
    pub name: String,
    /// `shared` when more than one host reports the same storage identity.
    pub kind: DatastoreKind,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub host_ids: Vec<HostId>,
}
