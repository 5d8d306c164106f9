//! Placement rules, pure: which rules a VM would break on a host given where the
//! other VMs run (`breaches`), which rules a placement breaks now (`violations`),
//! and whether a set of rules can hold at all (`validate`).
//!
//! Affinity, anti-affinity and the VM-host `must` rules bind placement, balancing,
//! evacuation and manual migrations alike; the `should` rules bind balancing (it
//! never creates a violation of one) and order placement (hosts that keep them
//! first), but yield when no host that keeps them can take the VM.
//!
//! "Where the other VMs run" (`Placement`) is each running VM's host, or for a VM
//! under migration its destination; a VM absent from it counts as not running, so
//! an evacuation drops the VMs still on the host it empties (they are leaving) and
//! the first member of an affinity group to leave picks the host the rest follow.

pub mod validate;

use std::collections::HashMap;

use ferry_api::rule::{Rule, RuleKind};
use ferry_api::{HostId, RuleId, VmId};

use crate::drs::balance::VmRules;

/// Where each running VM is (or is going).
pub type Placement = HashMap<VmId, HostId>;

/// Names for messages (an id stands in for a name not known).
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub vms: HashMap<VmId, String>,
    pub hosts: HashMap<HostId, String>,
}

impl Names {
    pub fn vm(&self, id: VmId) -> String {
        self.vms.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }

    pub fn host(&self, id: HostId) -> String {
        self.hosts
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    pub fn hosts(&self, ids: &[HostId]) -> String {
        ids.iter()
            .map(|h| self.host(*h))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One rule a VM would break (or breaks).
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub rule: RuleId,
    pub kind: RuleKind,
    pub detail: String,
}

impl Breach {
    pub fn is_must(&self) -> bool {
        self.kind.is_must()
    }
}

/// A cluster's rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules naming `vm`.
    pub fn of(&self, vm: VmId) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.vm_ids.contains(&vm))
    }

    /// The rules `vm` would break running on `host`, the other VMs where `at` says.
    pub fn breaches(&self, vm: VmId, host: HostId, at: &Placement, names: &Names) -> Vec<Breach> {
        let mut out = Vec::new();
        for r in self.of(vm) {
            let others = || {
                r.vm_ids
                    .iter()
                    .filter(move |&&o| o != vm)
                    .filter_map(|o| at.get(o).map(|h| (*o, *h)))
            };
            let detail = match r.kind {
                RuleKind::Affinity => others().find(|(_, h)| *h != host).map(|(o, h)| {
                    format!(
                        "{} must run with {}, which runs on {} (affinity rule {})",
                        names.vm(vm),
                        names.vm(o),
                        names.host(h),
                        r.name
                    )
                }),
                RuleKind::AntiAffinity => others().find(|(_, h)| *h == host).map(|(o, _)| {
                    format!(
                        "{} must not run with {}, which runs on {} (anti-affinity rule {})",
                        names.vm(vm),
                        names.vm(o),
                        names.host(host),
                        r.name
                    )
                }),
                RuleKind::MustRunOn | RuleKind::ShouldRunOn if !r.host_ids.contains(&host) => {
                    Some(format!(
                        "{} {} run only on {}, not on {} (rule {})",
                        names.vm(vm),
                        if r.kind.is_must() { "must" } else { "should" },
                        names.hosts(&r.host_ids),
                        names.host(host),
                        r.name
                    ))
                }
                RuleKind::MustNotRunOn | RuleKind::ShouldNotRunOn if r.host_ids.contains(&host) => {
                    Some(format!(
                        "{} {} not run on {} (rule {})",
                        names.vm(vm),
                        if r.kind.is_must() { "must" } else { "should" },
                        names.host(host),
                        r.name
                    ))
                }
                _ => None,
            };
            if let Some(detail) = detail {
                out.push(Breach {
                    rule: r.id,
                    kind: r.kind,
                    detail,
                });
            }
        }
        out
    }

    /// What `vm`'s rules ask, in the pass's indices (hosts and VMs the pass does not
    /// see are left out: a host not connected takes nothing anyway).
    pub fn indexed(
        &self,
        vm: VmId,
        hosts: &HashMap<HostId, usize>,
        vms: &HashMap<VmId, usize>,
    ) -> VmRules {
        let mut out = VmRules::default();
        for r in self.of(vm) {
            let others = r
                .vm_ids
                .iter()
                .filter(|&&o| o != vm)
                .filter_map(|o| vms.get(o).copied());
            let named = |inside: bool| {
                hosts
                    .iter()
                    .filter(move |(h, _)| r.host_ids.contains(h) == inside)
                    .map(|(_, &i)| i)
            };
            match r.kind {
                RuleKind::Affinity => out.together.extend(others),
                RuleKind::AntiAffinity => out.apart.extend(others),
                RuleKind::MustRunOn => out.forbidden.extend(named(false)),
                RuleKind::MustNotRunOn => out.forbidden.extend(named(true)),
                RuleKind::ShouldRunOn => out.avoid.extend(named(false)),
                RuleKind::ShouldNotRunOn => out.avoid.extend(named(true)),
            }
        }
        for v in [
            &mut out.forbidden,
            &mut out.avoid,
            &mut out.apart,
            &mut out.together,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        out
    }

    /// The must rules `vm` would break on `host`.
    pub fn must_breaches(
        &self,
        vm: VmId,
        host: HostId,
        at: &Placement,
        names: &Names,
    ) -> Vec<Breach> {
        let mut b = self.breaches(vm, host, at, names);
        b.retain(Breach::is_must);
        b
    }

    /// Every rule the placement breaks now, each breach once per VM that breaks it
    /// (a pair breaking anti-affinity is reported once).
    pub fn violations(&self, at: &Placement, names: &Names) -> HashMap<RuleId, Vec<String>> {
        let mut out: HashMap<RuleId, Vec<String>> = HashMap::new();
        for r in &self.rules {
            let mut seen = Vec::new();
            for &vm in &r.vm_ids {
                let Some(&host) = at.get(&vm) else { continue };
                for b in self.breaches(vm, host, at, names) {
                    if b.rule != r.id {
                        continue;
                    }
                    // A split affinity group is one violation; VMs sharing a host
                    // against anti-affinity are one per host.
                    let repeat = match r.kind {
                        RuleKind::Affinity => !seen.is_empty(),
                        RuleKind::AntiAffinity => seen.contains(&host),
                        _ => false,
                    };
                    if repeat {
                        continue;
                    }
                    seen.push(host);
                    out.entry(r.id).or_default().push(b.detail);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
