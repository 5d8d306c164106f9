//! Typed IDs: newtypes over UUIDs so a host id can never be passed as a VM id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    )*};
}

typed_id!(
    /// A host (one agent identity).
    HostId,
    /// A virtual machine.
    VmId,
    /// A cluster of hosts.
    ClusterId,
    /// A datastore; its id is the identity stored inside the storage itself.
    DatastoreId,
    /// A network (port group).
    NetworkId,
    /// A task (a user-visible operation).
    TaskId,
    /// An API token.
    TokenId,
    /// A migration.
    MigrationId,
    /// A saga (a durable multi-step operation).
    SagaId,
    /// A placement rule (affinity, anti-affinity, VM-host).
    RuleId,
    /// A scheduled operation.
    ScheduleId,
);
