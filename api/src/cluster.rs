//! Clusters: a group of hosts sharing a CPU baseline and a DRS policy.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ClusterId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrsAutomation {
    Manual,
    PartiallyAutomated,
    FullyAutomated,
}

impl DrsAutomation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::PartiallyAutomated => "partially_automated",
            Self::FullyAutomated => "fully_automated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "manual" => Self::Manual,
            "partially_automated" => Self::PartiallyAutomated,
            "fully_automated" => Self::FullyAutomated,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drs {
    pub automation: DrsAutomation,
    /// 1 (conservative) ..= 5 (aggressive).
    pub threshold: u8,
    /// Seconds between DRS passes.
    pub interval_s: u32,
}

impl Default for Drs {
    fn default() -> Self {
        Self {
            automation: DrsAutomation::Manual,
            threshold: 3,
            interval_s: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cluster {
    pub id: ClusterId,
    pub name: String,
    /// The CPU model every VM in the cluster must be able to run on every host (like EVC).
    pub cpu_baseline: Option<String>,
    pub drs: Drs,
    pub host_count: u32,
    pub vm_count: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterCreate {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub cpu_baseline: Option<String>,
    #[serde(default)]
    pub drs: Option<DrsPatch>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrsPatch {
    pub automation: Option<DrsAutomation>,
    #[schema(minimum = 1, maximum = 5)]
    pub threshold: Option<u8>,
    #[schema(minimum = 10, maximum = 86400)]
    pub interval_s: Option<u32>,
}

/// `PATCH /clusters/{id}`: only the fields given change. `cpu_baseline: null` clears it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterPatch {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: Option<String>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub cpu_baseline: Option<Option<String>>,
    pub drs: Option<DrsPatch>,
}

/// Tells "absent" (`None`) apart from "null" (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}
