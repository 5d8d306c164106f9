//! Whether a cluster's rules can hold: refused when two rules contradict each other
//! (VMs kept both together and apart; a VM or an affinity group left without a
//! host by its VM-host must rules) or when no placement satisfies the must rules
//! within the hosts' memory (an anti-affinity group larger than the hosts that can
//! run VMs; VMs pinned to hosts too small for them). The search for a placement is
//! a depth-first search over affinity groups, most constrained first, bounded by
//! [`SEARCH_BUDGET`] steps (a cluster too large to decide within it is accepted).

use std::collections::{HashMap, HashSet};

use ferry_api::rule::{Rule, RuleKind};
use ferry_api::{HostId, VmId};

use super::Names;

/// Steps the placement search may take before it gives up and accepts.
pub const SEARCH_BUDGET: usize = 200_000;

/// A host as the check sees it.
#[derive(Debug, Clone)]
pub struct HostCap {
    pub id: HostId,
    /// Memory VMs may use, MiB.
    pub mem_mib: u64,
    /// Can run VMs now (connected, not in or entering maintenance).
    pub eligible: bool,
}

/// Why rules cannot hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// `rule_contradiction` or `rule_infeasible`.
    pub code: &'static str,
    pub detail: String,
}

fn contradiction(detail: String) -> Refusal {
    Refusal {
        code: "rule_contradiction",
        detail,
    }
}

fn infeasible(detail: String) -> Refusal {
    Refusal {
        code: "rule_infeasible",
        detail,
    }
}

/// Affinity groups: every VM's group root.
struct Groups {
    parent: HashMap<VmId, VmId>,
}

impl Groups {
    fn of(rules: &[Rule]) -> Self {
        let mut g = Groups {
            parent: HashMap::new(),
        };
        for r in rules.iter().filter(|r| r.kind == RuleKind::Affinity) {
            for w in r.vm_ids.windows(2) {
                g.union(w[0], w[1]);
            }
        }
        g
    }

    fn root(&self, mut v: VmId) -> VmId {
        while let Some(&p) = self.parent.get(&v) {
            if p == v {
                break;
            }
            v = p;
        }
        v
    }

    fn union(&mut self, a: VmId, b: VmId) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

/// Checks `rules` (all of a cluster's, the new one included) against the cluster's
/// `hosts` and the memory each VM needs (`demand`, MiB; 0 for one not running).
pub fn validate(
    rules: &[Rule],
    hosts: &[HostCap],
    demand: &HashMap<VmId, u64>,
    names: &Names,
) -> Result<(), Refusal> {
    let groups = Groups::of(rules);
    let affinity_of = |a: VmId, b: VmId| -> Vec<&str> {
        rules
            .iter()
            .filter(|r| {
                r.kind == RuleKind::Affinity
                    && r.vm_ids.iter().any(|v| {
                        groups.root(*v) == groups.root(a) || groups.root(*v) == groups.root(b)
                    })
            })
            .map(|r| r.name.as_str())
            .collect()
    };
    // Together and apart.
    for r in rules.iter().filter(|r| r.kind == RuleKind::AntiAffinity) {
        for (i, &a) in r.vm_ids.iter().enumerate() {
            for &b in &r.vm_ids[i + 1..] {
                if groups.root(a) == groups.root(b) {
                    return Err(contradiction(format!(
                        "{} and {} must run together (affinity {}) and apart (anti-affinity {})",
                        names.vm(a),
                        names.vm(b),
                        affinity_of(a, b).join(", "),
                        r.name
                    )));
                }
            }
        }
    }
    // Each group's hosts under its VM-host must rules.
    let all: Vec<HostId> = hosts.iter().map(|h| h.id).collect();
    let mut members: HashMap<VmId, Vec<VmId>> = HashMap::new();
    for v in rules.iter().flat_map(|r| r.vm_ids.iter()) {
        let m = members.entry(groups.root(*v)).or_default();
        if !m.contains(v) {
            m.push(*v);
        }
    }
    let mut allowed: HashMap<VmId, Vec<HostId>> = HashMap::new();
    for (root, vms) in &members {
        let mut ok: Vec<HostId> = all.clone();
        let mut why: Vec<&str> = Vec::new();
        for r in rules
            .iter()
            .filter(|r| r.vm_ids.iter().any(|v| vms.contains(v)))
        {
            match r.kind {
                RuleKind::MustRunOn => ok.retain(|h| r.host_ids.contains(h)),
                RuleKind::MustNotRunOn => ok.retain(|h| !r.host_ids.contains(h)),
                _ => continue,
            }
            why.push(&r.name);
        }
        if ok.is_empty() {
            let who = if vms.len() == 1 {
                names.vm(vms[0])
            } else {
                format!(
                    "the affinity group {}",
                    vms.iter()
                        .map(|v| names.vm(*v))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(contradiction(format!(
                "no host of the cluster is left for {who}: rules {} together exclude every one",
                why.join(", ")
            )));
        }
        allowed.insert(*root, ok);
    }
    // Enough hosts to keep anti-affine groups apart.
    let eligible: HashSet<HostId> = hosts.iter().filter(|h| h.eligible).map(|h| h.id).collect();
    for r in rules.iter().filter(|r| r.kind == RuleKind::AntiAffinity) {
        let mut can: HashSet<HostId> = HashSet::new();
        for v in &r.vm_ids {
            can.extend(
                allowed[&groups.root(*v)]
                    .iter()
                    .filter(|h| eligible.contains(h)),
            );
        }
        if r.vm_ids.len() > can.len() && !eligible.is_empty() {
            return Err(infeasible(format!(
                "anti-affinity {} keeps {} VMs apart, but only {} host(s) can run them",
                r.name,
                r.vm_ids.len(),
                can.len()
            )));
        }
    }
    if eligible.is_empty() {
        return Ok(());
    }
    // A placement of every group within the eligible hosts' memory.
    let roots: Vec<VmId> = members.keys().copied().collect();
    let index: HashMap<VmId, usize> = roots.iter().enumerate().map(|(i, r)| (*r, i)).collect();
    let need: Vec<u64> = roots
        .iter()
        .map(|r| {
            members[r]
                .iter()
                .map(|v| demand.get(v).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let host_ix: HashMap<HostId, usize> =
        hosts.iter().enumerate().map(|(i, h)| (h.id, i)).collect();
    let options: Vec<Vec<usize>> = roots
        .iter()
        .map(|r| {
            allowed[r]
                .iter()
                .filter(|h| eligible.contains(h))
                .map(|h| host_ix[h])
                .collect()
        })
        .collect();
    let mut apart: Vec<HashSet<usize>> = vec![HashSet::new(); roots.len()];
    for r in rules.iter().filter(|r| r.kind == RuleKind::AntiAffinity) {
        for a in &r.vm_ids {
            for b in &r.vm_ids {
                let (ga, gb) = (index[&groups.root(*a)], index[&groups.root(*b)]);
                if ga != gb {
                    apart[ga].insert(gb);
                }
            }
        }
    }
    // Most constrained first: fewest hosts, then most memory.
    let mut order: Vec<usize> = (0..roots.len()).collect();
    order.sort_by_key(|&g| (options[g].len(), std::cmp::Reverse(need[g])));
    let mut search = Search {
        free: hosts.iter().map(|h| h.mem_mib).collect(),
        at: vec![usize::MAX; roots.len()],
        steps: 0,
        options: &options,
        need: &need,
        apart: &apart,
        order: &order,
    };
    match search.place(0) {
        Some(true) | None => Ok(()),
        Some(false) => {
            let pinned: Vec<String> = members
                .values()
                .flatten()
                .filter(|v| demand.get(v).copied().unwrap_or(0) > 0)
                .map(|v| names.vm(*v))
                .collect();
            Err(infeasible(format!(
                "no placement of the running VMs {} keeps every must rule within the memory of the hosts that can run them",
                pinned.join(", ")
            )))
        }
    }
}

struct Search<'a> {
    free: Vec<u64>,
    at: Vec<usize>,
    steps: usize,
    options: &'a [Vec<usize>],
    need: &'a [u64],
    apart: &'a [HashSet<usize>],
    order: &'a [usize],
}

impl Search<'_> {
    /// Places groups `order[k..]`; `None` when the budget ran out.
    fn place(&mut self, k: usize) -> Option<bool> {
        let Some(&g) = self.order.get(k) else {
            return Some(true);
        };
        for &h in &self.options[g] {
            self.steps += 1;
            if self.steps > SEARCH_BUDGET {
                return None;
            }
            if self.free[h] < self.need[g] || self.apart[g].iter().any(|&o| self.at[o] == h) {
                continue;
            }
            self.free[h] -= self.need[g];
            self.at[g] = h;
            let r = self.place(k + 1);
            self.free[h] += self.need[g];
            self.at[g] = usize::MAX;
            if r != Some(false) {
                return r;
            }
        }
        Some(false)
    }
}
