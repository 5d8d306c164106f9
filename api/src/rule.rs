//! Placement rules at the API: VM-VM affinity and anti-affinity, VM-host must /
//! must-not / should / should-not, a cluster's rules listed with whether they hold.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ClusterId, HostId, RuleId, VmId};

/// What a rule asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The VMs run on one host (a must rule).
    Affinity,
    /// No two of the VMs run on one host (a must rule).
    AntiAffinity,
    /// The VMs run only on the rule's hosts.
    MustRunOn,
    /// The VMs never run on the rule's hosts.
    MustNotRunOn,
    /// The VMs run on the rule's hosts when one can take them.
    ShouldRunOn,
    /// The VMs avoid the rule's hosts when another can take them.
    ShouldNotRunOn,
}

impl RuleKind {
    pub const ALL: [RuleKind; 6] = [
        Self::Affinity,
        Self::AntiAffinity,
        Self::MustRunOn,
        Self::MustNotRunOn,
        Self::ShouldRunOn,
        Self::ShouldNotRunOn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Affinity => "affinity",
            Self::AntiAffinity => "anti_affinity",
            Self::MustRunOn => "must_run_on",
            Self::MustNotRunOn => "must_not_run_on",
            Self::ShouldRunOn => "should_run_on",
            Self::ShouldNotRunOn => "should_not_run_on",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Placement, balancing and manual migrations never break it.
    pub fn is_must(self) -> bool {
        !matches!(self, Self::ShouldRunOn | Self::ShouldNotRunOn)
    }

    /// It names hosts (a VM-host rule) rather than only VMs.
    pub fn names_hosts(self) -> bool {
        !matches!(self, Self::Affinity | Self::AntiAffinity)
    }
}

/// A rule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: RuleId,
    pub cluster_id: ClusterId,
    pub name: String,
    pub kind: RuleKind,
    pub vm_ids: Vec<VmId>,
    /// The hosts of a VM-host rule; empty for affinity and anti-affinity.
    pub host_ids: Vec<HostId>,
    /// Where the cluster breaks it now (empty: it holds).
    pub violations: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// `POST /clusters/{id}/rules`. VMs and hosts by id or name.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCreate {
    /// Unique in the cluster; 1..=64 characters.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    pub kind: RuleKind,
    /// At least two VMs for affinity and anti-affinity, one for a VM-host rule.
    pub vms: Vec<String>,
    /// At least one host for a VM-host rule; none for affinity and anti-affinity.
    #[serde(default)]
    pub hosts: Vec<String>,
}
