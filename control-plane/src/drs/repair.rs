//! The mandatory part of a balancing pass: moves that repair broken placement
//! rules, before any move for load, at every threshold (threshold 1 makes only
//! these). Pure, like `balance.rs`.
//!
//! A VM breaks a must rule when it runs on a host a VM-host must rule keeps it
//! off, shares a host with a VM an anti-affinity rule keeps it apart from, or runs
//! apart from its affinity group (the group's place is the host most of it runs
//! on); it breaks a should rule when it runs on a host a should rule keeps it off.
//! Each is moved to the host that keeps all its rules, has room, and leaves the
//! cluster best balanced; a VM that cannot be moved (excluded from balancing,
//! busy, cooling down) or has no such host is reported, not forced.

use std::collections::HashMap;

use super::balance::{Host, Limits, Move, MoveKind, Vm};
use super::imbalance::{imbalance, HostLoad};

/// The cluster after the repairs, and what they could not repair.
pub struct Repaired {
    pub moves: Vec<Move>,
    pub unrepaired: Vec<(usize, String)>,
    /// The hosts' loads and the VMs' hosts after the moves; a VM repaired is not
    /// movable again in the same pass.
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
}

/// Where `vm`'s affinity group belongs: the host most of it runs on (ties: the
/// lowest index), if the group is split.
fn group_home(vms: &[Vm], vi: usize, at: &[usize]) -> Option<usize> {
    let together = &vms[vi].rules.together;
    if together.is_empty() || together.iter().all(|&o| at[o] == at[vi]) {
        return None;
    }
    let mut count: HashMap<usize, usize> = HashMap::new();
    for &m in together.iter().chain(std::iter::once(&vi)) {
        *count.entry(at[m]).or_default() += 1;
    }
    count
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(h, _)| h)
}

fn moved(h: &HostLoad, cpu: f64, mem: f64) -> HostLoad {
    HostLoad {
        cpu: h.cpu + cpu,
        mem_mib: h.mem_mib + mem,
        ..*h
    }
}

pub fn repair(hosts: &[Host], vms: &[Vm], limits: &Limits) -> Repaired {
    let mut loads: Vec<HostLoad> = hosts.iter().map(|h| h.load).collect();
    let mut at: Vec<usize> = vms.iter().map(|v| v.host).collect();
    let mut out = Repaired {
        moves: Vec::new(),
        unrepaired: Vec::new(),
        hosts: hosts.to_vec(),
        vms: vms.to_vec(),
    };
    for vi in 0..vms.len() {
        let v = &vms[vi];
        if v.rules.is_empty() {
            continue;
        }
        let here = at[vi];
        let home = group_home(vms, vi, &at);
        let must = v.rules.forbidden.contains(&here)
            || v.rules.apart.iter().any(|&o| at[o] == here)
            || home.is_some_and(|h| h != here);
        let should = v.rules.avoid.contains(&here);
        if !must && !should {
            continue;
        }
        // A must rule is repaired even right after a move; a should rule waits.
        if !v.movable || (!must && v.cooling) {
            out.unrepaired.push((
                vi,
                "it breaks a rule but is not movable now (balancing disabled for it, another operation in flight, or, for a should rule, cooling down after a move)".into(),
            ));
            continue;
        }
        let fits = |dst: usize, loads: &[HostLoad]| {
            let b = moved(&loads[dst], v.cpu, v.mem_mib);
            b.mem_mib <= b.mem_capacity_mib * limits.mem_fill
        };
        let keeps = |dst: usize, at: &[usize]| {
            dst != here
                && hosts[dst].eligible
                && !v.rules.forbidden.contains(&dst)
                && !v.rules.avoid.contains(&dst)
                && !v.rules.apart.iter().any(|&o| at[o] == dst)
                && home.is_none_or(|h| h == dst)
                && (v.rules.together.is_empty()
                    || home.is_some()
                    || v.rules.together.iter().all(|&o| at[o] == dst))
        };
        let mut best: Option<(f64, usize)> = None;
        for dst in (0..hosts.len()).filter(|&d| keeps(d, &at) && fits(d, &loads)) {
            let mut l = loads.clone();
            l[here] = moved(&l[here], -v.cpu, -v.mem_mib);
            l[dst] = moved(&l[dst], v.cpu, v.mem_mib);
            let after = imbalance(&l).combined;
            if best.is_none_or(|(b, _)| after < b) {
                best = Some((after, dst));
            }
        }
        let Some((after, dst)) = best else {
            let what = if must { "must" } else { "should" };
            out.unrepaired.push((
                vi,
                format!("it breaks a {what} rule and no host that keeps its rules has room for it"),
            ));
            continue;
        };
        let before = imbalance(&loads).combined;
        loads[here] = moved(&loads[here], -v.cpu, -v.mem_mib);
        loads[dst] = moved(&loads[dst], v.cpu, v.mem_mib);
        at[vi] = dst;
        out.moves.push(Move {
            vm: vi,
            from: here,
            to: dst,
            gain: before - after,
            cost_s: v.cost_s,
            kind: if must {
                MoveKind::RepairMust
            } else {
                MoveKind::RepairShould
            },
        });
    }
    for (h, l) in out.hosts.iter_mut().zip(&loads) {
        h.load = *l;
    }
    for m in &out.moves {
        out.vms[m.vm].host = m.to;
        out.vms[m.vm].movable = false;
    }
    out
}
