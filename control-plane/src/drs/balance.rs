//! One balancing pass, as a pure function from the cluster's load to the moves
//! that even it out (no I/O: the caller gathers the load and applies the moves).
//!
//! Greedy, one move at a time, each the best candidate found by simulating it: for
//! every movable VM on the most loaded hosts and every host it may go to, the
//! imbalance after the move (computed incrementally from the loads' sums, so a
//! candidate costs O(1)) minus the move's cost (seconds on the link, from the
//! migration predictor, weighed by [`COST_WEIGHT`]). A move is kept only if it
//! pays for its cost and closes at least the threshold's minimum benefit ÷ n of the
//! excess over the tolerance (n hosts: one move in a big cluster does little); the
//! whole pass is kept only if it reduces the imbalance by at least the minimum
//! benefit. The pass stops at the threshold's tolerance, or when no move is worth
//! it, or at the per-pass and per-host move limits (vSphere DRS: at most 8 moves per
//! host per pass).
//!
//! What keeps it from throwing VMs around (the complaints about other balancers:
//! descheduler#994, ProxLB#390): a VM just moved is cooling down and not a
//! candidate; a VM never goes back to a host it left within the history window
//! (the caller passes `left`); a move must pay for itself; and the driver acts
//! only on an imbalance that persisted ([`Hysteresis`]).
//!
//! | threshold | tolerated spread of host loads (standard deviation ÷ mean) | minimum benefit of a pass |
//! | --- | --- | --- |
//! | 1 | never balances (mandatory moves only: rules, maintenance) | — |
//! | 2 | 40 % | 10 % of the imbalance |
//! | 3 | 25 % | 5 % |
//! | 4 | 15 % | 2.5 % |
//! | 5 | 8 % | 1 % |
//!
//! The tolerance is a spread (coefficient of variation) because that means the same
//! on 4 hosts and on 64; in the imbalance's own units (`imbalance.rs`: the spread ÷
//! √(n − 1)) it is that spread ÷ √(n − 1) for the cluster's n hosts. For scale: in 16
//! equal hosts, one host 80 % above the mean and the rest even is a 21 % spread.

use super::imbalance::{HostLoad, Imbalance};

/// What one second of transfer costs, in spread units (the imbalance × √(n − 1),
/// comparable across cluster sizes): a 10 s move must narrow the spread of host
/// loads by at least 0.1 percentage point.
pub const COST_WEIGHT: f64 = 1e-4;

/// The tolerated spread of host loads (standard deviation ÷ mean) of a threshold
/// (`None`: never balance).
pub fn tolerated_spread(threshold: u8) -> Option<f64> {
    match threshold {
        0 | 1 => None,
        2 => Some(0.40),
        3 => Some(0.25),
        4 => Some(0.15),
        _ => Some(0.08),
    }
}

/// The tolerated imbalance of a threshold on a cluster of `hosts` hosts, in the
/// imbalance's units (`None`: never balance).
pub fn tolerance(threshold: u8, hosts: usize) -> Option<f64> {
    let spread = tolerated_spread(threshold)?;
    Some(spread / ((hosts.max(2) - 1) as f64).sqrt())
}

/// The least relative reduction of the imbalance a move must bring.
pub fn min_benefit(threshold: u8) -> f64 {
    match threshold {
        0..=2 => 0.10,
        3 => 0.05,
        4 => 0.025,
        _ => 0.01,
    }
}

/// A host as the pass sees it.
#[derive(Debug, Clone)]
pub struct Host {
    pub load: HostLoad,
    /// May receive VMs (connected, not in or entering maintenance).
    pub eligible: bool,
}

/// A VM as the pass sees it.
#[derive(Debug, Clone)]
pub struct Vm {
    /// Index into the hosts.
    pub host: usize,
    /// vCPU demand (cores) and memory in use.
    pub cpu: f64,
    pub mem_mib: f64,
    /// Running, balancing not disabled for it, no operation in flight.
    pub movable: bool,
    /// Moved within the cooldown: balancing leaves it be; the repair of a broken
    /// must rule does not wait for it.
    pub cooling: bool,
    /// Predicted seconds of transfer (the migration predictor's total).
    pub cost_s: f64,
    /// Hosts it left within the history window: it never goes back to them.
    pub left: Vec<usize>,
    /// What placement rules ask of it.
    pub rules: VmRules,
}

/// What the placement rules ask of one VM, in the pass's indices (`crate::rules`
/// says what each rule means).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmRules {
    /// Hosts a must rule keeps it off.
    pub forbidden: Vec<usize>,
    /// Hosts a should rule keeps it off: balancing never moves it onto one.
    pub avoid: Vec<usize>,
    /// VMs an anti-affinity rule keeps it apart from.
    pub apart: Vec<usize>,
    /// VMs an affinity rule keeps it with. Balancing moves such a VM only to
    /// repair its rule (a group moves as a whole in an evacuation).
    pub together: Vec<usize>,
}

impl VmRules {
    pub fn is_empty(&self) -> bool {
        self.forbidden.is_empty()
            && self.avoid.is_empty()
            && self.apart.is_empty()
            && self.together.is_empty()
    }

    /// May go to `dst` for load, the VMs where `at` says.
    pub fn admit(&self, dst: usize, at: &[usize]) -> bool {
        self.together.is_empty()
            && !self.forbidden.contains(&dst)
            && !self.avoid.contains(&dst)
            && !self.apart.iter().any(|&o| at[o] == dst)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub threshold: u8,
    /// Moves in one pass.
    pub max_moves: usize,
    /// Moves one host takes part in (as source or destination) in one pass.
    pub max_per_host: usize,
    /// The share of a host's memory VMs may fill.
    pub mem_fill: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            threshold: 3,
            max_moves: 64,
            max_per_host: 8,
            mem_fill: 0.9,
        }
    }
}

/// Why a move is recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// It evens the load.
    Balance,
    /// It repairs a broken must rule (mandatory, at any threshold).
    RepairMust,
    /// It repairs a broken should rule.
    RepairShould,
}

/// One recommended move.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    /// The combined imbalance it removes.
    pub gain: f64,
    pub cost_s: f64,
    pub kind: MoveKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub before: Imbalance,
    pub after: Imbalance,
    /// Repairs first, then the balancing moves.
    pub moves: Vec<Move>,
    /// VMs breaking a rule no move can repair now, and why.
    pub unrepaired: Vec<(usize, String)>,
}

/// `hosts` with each VM's demand added to its host's load.
pub fn with_vms(hosts: &[Host], vms: &[Vm]) -> Vec<Host> {
    let mut out = hosts.to_vec();
    for v in vms {
        out[v.host].load.cpu += v.cpu;
        out[v.host].load.mem_mib += v.mem_mib;
    }
    out
}

/// Sums of loads and of their squares, per resource: the imbalance in O(1).
#[derive(Debug, Clone, Copy)]
struct Sums {
    n: f64,
    cpu: (f64, f64),
    mem: (f64, f64),
}

fn cv(n: f64, (s, sq): (f64, f64)) -> f64 {
    if n < 2.0 || s <= 0.0 {
        return 0.0;
    }
    let mean = s / n;
    let var = (sq / n - mean * mean).max(0.0);
    (var.sqrt() / mean / (n - 1.0).sqrt()).clamp(0.0, 1.0)
}

impl Sums {
    fn of(hosts: &[HostLoad]) -> Self {
        let mut s = Sums {
            n: hosts.len() as f64,
            cpu: (0.0, 0.0),
            mem: (0.0, 0.0),
        };
        for h in hosts {
            let (c, m) = (h.cpu_load(), h.mem_load());
            s.cpu.0 += c;
            s.cpu.1 += c * c;
            s.mem.0 += m;
            s.mem.1 += m * m;
        }
        s
    }

    fn imbalance(&self) -> Imbalance {
        let (cpu, memory) = (cv(self.n, self.cpu), cv(self.n, self.mem));
        Imbalance {
            cpu,
            memory,
            combined: ((cpu * cpu + memory * memory) / 2.0).sqrt(),
        }
    }

    /// The sums after host loads `a` and `b` change to `a2` and `b2`.
    fn swap(&self, a: &HostLoad, a2: &HostLoad, b: &HostLoad, b2: &HostLoad) -> Sums {
        let d = |s: (f64, f64), old: [f64; 2], new: [f64; 2]| {
            (
                s.0 - old[0] - old[1] + new[0] + new[1],
                s.1 - old[0] * old[0] - old[1] * old[1] + new[0] * new[0] + new[1] * new[1],
            )
        };
        Sums {
            n: self.n,
            cpu: d(
                self.cpu,
                [a.cpu_load(), b.cpu_load()],
                [a2.cpu_load(), b2.cpu_load()],
            ),
            mem: d(
                self.mem,
                [a.mem_load(), b.mem_load()],
                [a2.mem_load(), b2.mem_load()],
            ),
        }
    }
}

fn moved(h: &HostLoad, cpu: f64, mem: f64) -> HostLoad {
    HostLoad {
        cpu: h.cpu + cpu,
        mem_mib: h.mem_mib + mem,
        ..*h
    }
}

/// How many of the most loaded hosts the pass takes VMs from.
const SOURCES: usize = 8;

struct Swap {
    a: usize,
    b: usize,
    ha: usize,
    hb: usize,
    gain: f64,
    sums: Sums,
}

/// The best exchange of a VM on one of the most loaded hosts with a VM on one of
/// the least loaded, gaining at least `floor` beyond both moves' cost.
#[allow(clippy::too_many_arguments)]
fn best_swap(
    hosts: &[Host],
    vms: &[Vm],
    loads: &[HostLoad],
    sums: &Sums,
    at: &[usize],
    moved_vm: &[bool],
    per_host: &[usize],
    by_host: &[Vec<usize>],
    order: &[usize],
    limits: &Limits,
    floor: f64,
) -> Option<Swap> {
    let now = sums.imbalance().combined;
    let spread = (sums.n - 1.0).max(1.0).sqrt();
    let ok = |h: usize| hosts[h].eligible && per_host[h] + 1 < limits.max_per_host;
    let free = |vi: usize, h: usize| {
        vms[vi].movable
            && !vms[vi].cooling
            && !moved_vm[vi]
            && at[vi] == h
            && vms[vi].rules.together.is_empty()
    };
    // The two moves of a swap run one after the other: each must keep the rules
    // with the other VM still where it was.
    let admit = |vi: usize, dst: usize| vms[vi].rules.admit(dst, at);
    let mut best: Option<(f64, Swap)> = None;
    for &ha in order.iter().filter(|&&h| ok(h)).take(SOURCES / 2) {
        for &hb in order
            .iter()
            .rev()
            .filter(|&&h| ok(h) && h != ha)
            .take(SOURCES / 2)
        {
            for &a in by_host[ha]
                .iter()
                .filter(|&&a| free(a, ha) && !vms[a].left.contains(&hb))
            {
                for &b in by_host[hb]
                    .iter()
                    .filter(|&&b| free(b, hb) && !vms[b].left.contains(&ha))
                {
                    if !admit(a, hb) || !admit(b, ha) {
                        continue;
                    }
                    let (va, vb) = (&vms[a], &vms[b]);
                    let a2 = moved(&loads[ha], vb.cpu - va.cpu, vb.mem_mib - va.mem_mib);
                    let b2 = moved(&loads[hb], va.cpu - vb.cpu, va.mem_mib - vb.mem_mib);
                    if a2.mem_mib > a2.mem_capacity_mib * limits.mem_fill
                        || b2.mem_mib > b2.mem_capacity_mib * limits.mem_fill
                    {
                        continue;
                    }
                    let s2 = sums.swap(&loads[ha], &a2, &loads[hb], &b2);
                    let gain = now - s2.imbalance().combined;
                    let score = gain * spread - COST_WEIGHT * (va.cost_s + vb.cost_s);
                    if gain >= floor && score > 0.0 && best.as_ref().is_none_or(|b| score > b.0) {
                        best = Some((
                            score,
                            Swap {
                                a,
                                b,
                                ha,
                                hb,
                                gain,
                                sums: s2,
                            },
                        ));
                    }
                }
            }
        }
    }
    best.map(|(_, s)| s)
}

/// Look-ahead for small clusters, where one greedy step at a time gets stuck (a
/// big cluster has enough single moves and swaps): sequences of up to three moves
/// (the first ones may even worsen the imbalance) when there are at most this
/// many candidate moves, of up to two when there are at most
/// [`CHAIN_TWO_MOVES`].
const CHAIN_THREE_MOVES: usize = 64;
const CHAIN_TWO_MOVES: usize = 400;

struct Chain {
    moves: Vec<(usize, usize, usize)>,
    gain: f64,
    sums: Sums,
}

/// The search state of [`best_chain`].
struct ChainSearch<'a> {
    hosts: &'a [Host],
    vms: &'a [Vm],
    limits: &'a Limits,
    per_host: &'a [usize],
    now: f64,
    spread: f64,
    floor: f64,
    at: Vec<usize>,
    loads: Vec<HostLoad>,
    used: Vec<bool>,
    path: Vec<(usize, usize, usize)>,
    best: Option<(f64, Chain)>,
}

impl ChainSearch<'_> {
    fn can_go(&self, vi: usize, dst: usize) -> bool {
        let v = &self.vms[vi];
        v.movable
            && !v.cooling
            && !self.used[vi]
            && v.rules.together.is_empty()
            && dst != self.at[vi]
            && self.hosts[dst].eligible
            && self.per_host[dst] + 1 < self.limits.max_per_host
            && self.per_host[self.at[vi]] + 1 < self.limits.max_per_host
            && !v.left.contains(&dst)
            && v.rules.admit(dst, &self.at)
    }

    fn search(&mut self, sums: Sums, cost: f64, depth: usize) {
        if self.path.len() >= 2 {
            let gain = self.now - sums.imbalance().combined;
            let score = gain * self.spread - COST_WEIGHT * cost;
            let need = self.floor * self.path.len() as f64;
            if gain >= need && score > 0.0 && self.best.as_ref().is_none_or(|b| score > b.0) {
                self.best = Some((
                    score,
                    Chain {
                        moves: self.path.clone(),
                        gain,
                        sums,
                    },
                ));
            }
        }
        if depth == 0 {
            return;
        }
        for vi in 0..self.vms.len() {
            for dst in 0..self.hosts.len() {
                if !self.can_go(vi, dst) {
                    continue;
                }
                let (v, src) = (&self.vms[vi], self.at[vi]);
                let x = moved(&self.loads[src], -v.cpu, -v.mem_mib);
                let y = moved(&self.loads[dst], v.cpu, v.mem_mib);
                if y.mem_mib > y.mem_capacity_mib * self.limits.mem_fill {
                    continue;
                }
                let next = sums.swap(&self.loads[src], &x, &self.loads[dst], &y);
                let (old_x, old_y) = (self.loads[src], self.loads[dst]);
                self.loads[src] = x;
                self.loads[dst] = y;
                self.at[vi] = dst;
                self.used[vi] = true;
                self.path.push((vi, src, dst));
                self.search(next, cost + v.cost_s, depth - 1);
                self.path.pop();
                self.used[vi] = false;
                self.at[vi] = src;
                self.loads[src] = old_x;
                self.loads[dst] = old_y;
            }
        }
    }
}

/// The best sequence of two or three moves in a row that together gain at least
/// `floor` per move beyond their cost, when the candidate moves are few.
#[allow(clippy::too_many_arguments)]
fn best_chain(
    hosts: &[Host],
    vms: &[Vm],
    loads: &[HostLoad],
    sums: &Sums,
    at: &[usize],
    moved_vm: &[bool],
    per_host: &[usize],
    limits: &Limits,
    floor: f64,
) -> Option<Chain> {
    let mut s = ChainSearch {
        hosts,
        vms,
        limits,
        per_host,
        now: sums.imbalance().combined,
        spread: (sums.n - 1.0).max(1.0).sqrt(),
        floor,
        at: at.to_vec(),
        loads: loads.to_vec(),
        used: moved_vm.to_vec(),
        path: Vec::new(),
        best: None,
    };
    let candidates = (0..vms.len())
        .flat_map(|vi| (0..hosts.len()).map(move |d| (vi, d)))
        .filter(|&(vi, d)| s.can_go(vi, d))
        .count();
    let depth = if candidates <= CHAIN_THREE_MOVES {
        3
    } else if candidates <= CHAIN_TWO_MOVES {
        2
    } else {
        return None;
    };
    s.search(*sums, 0.0, depth);
    s.best.map(|(_, c)| c)
}

/// The pass's state as its moves change it.
struct Applied<'a> {
    vms: &'a [Vm],
    loads: &'a mut [HostLoad],
    at: &'a mut [usize],
    moved_vm: &'a mut [bool],
    per_host: &'a mut [usize],
    by_host: &'a mut [Vec<usize>],
    moves: &'a mut Vec<Move>,
}

impl Applied<'_> {
    /// Moves VM `vi` from host `from` to `to` (a balancing move of `gain`).
    fn apply(&mut self, vi: usize, from: usize, to: usize, gain: f64) {
        let v = &self.vms[vi];
        self.loads[from] = moved(&self.loads[from], -v.cpu, -v.mem_mib);
        self.loads[to] = moved(&self.loads[to], v.cpu, v.mem_mib);
        self.at[vi] = to;
        self.moved_vm[vi] = true;
        self.per_host[from] += 1;
        self.per_host[to] += 1;
        self.by_host[to].push(vi);
        self.moves.push(Move {
            vm: vi,
            from,
            to,
            gain,
            cost_s: v.cost_s,
            kind: MoveKind::Balance,
        });
    }
}

/// Plans one pass: first the repairs of broken rules (`super::repair`), then the
/// balancing moves on the cluster as the repairs leave it; the imbalance before
/// and after all of them.
pub fn plan(hosts: &[Host], vms: &[Vm], limits: &Limits) -> Plan {
    let before = super::imbalance::imbalance(&hosts.iter().map(|h| h.load).collect::<Vec<_>>());
    let repaired = super::repair::repair(hosts, vms, limits);
    let mut p = balance(&repaired.hosts, &repaired.vms, limits);
    p.before = before;
    p.unrepaired = repaired.unrepaired;
    let mut moves = repaired.moves;
    moves.append(&mut p.moves);
    p.moves = moves;
    p
}

/// The balancing moves alone.
fn balance(hosts: &[Host], vms: &[Vm], limits: &Limits) -> Plan {
    let mut loads: Vec<HostLoad> = hosts.iter().map(|h| h.load).collect();
    let start = Sums::of(&loads);
    let before = start.imbalance();
    let mut sums = start;
    let mut at: Vec<usize> = vms.iter().map(|v| v.host).collect();
    let mut moved_vm = vec![false; vms.len()];
    let mut per_host = vec![0usize; hosts.len()];
    let mut moves = Vec::new();
    let Some(tol) = tolerance(limits.threshold, hosts.len()) else {
        return Plan {
            before,
            after: before,
            moves,
            unrepaired: Vec::new(),
        };
    };
    // A move must close at least min_benefit ÷ n of the excess over the tolerance:
    // in a cluster of n hosts one move can only do so much, so the bar scales with n.
    let floor = min_benefit(limits.threshold) * (before.combined - tol).max(0.0)
        / hosts.len().max(1) as f64;
    // Imbalance → spread units (see COST_WEIGHT).
    let spread = ((hosts.len().max(2) - 1) as f64).sqrt();
    let mut by_host: Vec<Vec<usize>> = vec![Vec::new(); hosts.len()];
    for (i, v) in vms.iter().enumerate() {
        by_host[v.host].push(i);
    }
    while moves.len() < limits.max_moves && sums.imbalance().combined > tol {
        let now = sums.imbalance().combined;
        // The most loaded hosts (by their worse resource) give.
        let mut order: Vec<usize> = (0..hosts.len()).collect();
        order.sort_by(|&a, &b| {
            let la = loads[a].cpu_load().max(loads[a].mem_load());
            let lb = loads[b].cpu_load().max(loads[b].mem_load());
            lb.total_cmp(&la)
        });
        let mut best: Option<(f64, usize, usize, Sums, f64)> = None;
        for &src in order
            .iter()
            .filter(|&&h| per_host[h] < limits.max_per_host)
            .take(SOURCES)
        {
            for &vi in &by_host[src] {
                let v = &vms[vi];
                if !v.movable || v.cooling || moved_vm[vi] || at[vi] != src {
                    continue;
                }
                let a2 = moved(&loads[src], -v.cpu, -v.mem_mib);
                for dst in 0..hosts.len() {
                    if dst == src
                        || !hosts[dst].eligible
                        || per_host[dst] >= limits.max_per_host
                        || v.left.contains(&dst)
                        || !v.rules.admit(dst, &at)
                    {
                        continue;
                    }
                    let b2 = moved(&loads[dst], v.cpu, v.mem_mib);
                    if b2.mem_mib > b2.mem_capacity_mib * limits.mem_fill {
                        continue;
                    }
                    let s2 = sums.swap(&loads[src], &a2, &loads[dst], &b2);
                    let gain = now - s2.imbalance().combined;
                    let score = gain * spread - COST_WEIGHT * v.cost_s;
                    if gain >= floor && score > 0.0 && best.as_ref().is_none_or(|b| score > b.0) {
                        best = Some((score, vi, dst, s2, gain));
                    }
                }
            }
        }
        let mut pass = Applied {
            vms,
            loads: &mut loads,
            at: &mut at,
            moved_vm: &mut moved_vm,
            per_host: &mut per_host,
            by_host: &mut by_host,
            moves: &mut moves,
        };
        if let Some((_, vi, dst, s2, gain)) = best {
            let src = pass.at[vi];
            pass.apply(vi, src, dst, gain);
            sums = s2;
            continue;
        }
        // No single move helps: a swap of two VMs between a loaded host and a
        // light one may (two moves; each pays its own cost).
        let Some(sw) = best_swap(
            hosts,
            vms,
            pass.loads,
            &sums,
            pass.at,
            pass.moved_vm,
            pass.per_host,
            pass.by_host,
            &order,
            limits,
            2.0 * floor,
        ) else {
            // Nor a swap: a few moves in a row, in a small cluster (each paying
            // twice a single move's floor: the extra moves must be worth it).
            let Some(ch) = best_chain(
                hosts,
                vms,
                pass.loads,
                &sums,
                pass.at,
                pass.moved_vm,
                pass.per_host,
                limits,
                2.0 * floor,
            ) else {
                break;
            };
            let share = ch.gain / ch.moves.len() as f64;
            for (vi, from, to) in ch.moves {
                pass.apply(vi, from, to, share);
            }
            sums = ch.sums;
            continue;
        };
        for (vi, from, to) in [(sw.a, sw.ha, sw.hb), (sw.b, sw.hb, sw.ha)] {
            pass.apply(vi, from, to, sw.gain / 2.0);
        }
        sums = sw.sums;
    }
    // The sums drift by rounding over many moves: report the exact figure.
    let after = super::imbalance::imbalance(&loads);
    debug_assert!((after.combined - sums.imbalance().combined).abs() < 1e-6);
    // A pass that closes too little of the excess is not worth its moves.
    if before.combined - after.combined < min_benefit(limits.threshold) * (before.combined - tol) {
        return Plan {
            before,
            after: before,
            moves: Vec::new(),
            unrepaired: Vec::new(),
        };
    }
    Plan {
        before,
        after,
        moves,
        unrepaired: Vec::new(),
    }
}

/// Acts only on an imbalance that persisted: `rounds` consecutive evaluations above
/// the tolerance (Proxmox VE: 3).
#[derive(Debug, Clone, Default)]
pub struct Hysteresis {
    above: u32,
}

impl Hysteresis {
    pub const ROUNDS: u32 = 3;

    /// Records one evaluation of a cluster of `hosts`; true when it is time to act.
    pub fn observe(&mut self, imbalance: f64, threshold: u8, hosts: usize) -> bool {
        match tolerance(threshold, hosts) {
            Some(t) if imbalance > t => {
                self.above += 1;
                self.above >= Self::ROUNDS
            }
            _ => {
                self.above = 0;
                false
            }
        }
    }

    /// After acting, the count starts again.
    pub fn reset(&mut self) {
        self.above = 0;
    }

    /// Consecutive evaluations above the tolerance so far.
    pub fn rounds(&self) -> u32 {
        self.above
    }
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
