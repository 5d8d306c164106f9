//! Networks (port groups): joined by name across the hosts that offer them.

use serde::{Deserialize, Serialize};

use crate::{HostId, NetworkId};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Network {
    pub id: NetworkId,
    pub name: String,
    pub host_ids: Vec<HostId>,
}
