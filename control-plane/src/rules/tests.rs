//! The rules' meaning, their validation, and the property that balancing never
//! breaks a must rule (random clusters, rule sets and loads).

use std::collections::HashMap;

use chrono::Utc;
use ferry_api::rule::{Rule, RuleKind};
use ferry_api::{ClusterId, HostId, RuleId, VmId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::validate::{validate, HostCap};
use super::{Names, Placement, RuleSet};
use crate::drs::balance::{plan, with_vms, Host, Limits, MoveKind, Vm};
use crate::drs::imbalance::HostLoad;

fn ids<T: From<uuid::Uuid>>(n: usize) -> Vec<T> {
    (0..n)
        .map(|i| T::from(uuid::Uuid::from_u128(i as u128 + 1)))
        .collect()
}

fn rule(name: &str, kind: RuleKind, vms: &[VmId], hosts: &[HostId]) -> Rule {
    Rule {
        id: RuleId::new(),
        cluster_id: ClusterId(uuid::Uuid::nil()),
        name: name.into(),
        kind,
        vm_ids: vms.to_vec(),
        host_ids: hosts.to_vec(),
        violations: Vec::new(),
        created_at: Utc::now(),
    }
}

fn caps(hosts: &[HostId], mem: u64) -> Vec<HostCap> {
    hosts
        .iter()
        .map(|h| HostCap {
            id: *h,
            mem_mib: mem,
            eligible: true,
        })
        .collect()
}

#[test]
fn each_kind_says_where_a_vm_may_run() {
    let (v, h): (Vec<VmId>, Vec<HostId>) = (ids(3), ids(3));
    let set = RuleSet::new(vec![
        rule("together", RuleKind::Affinity, &[v[0], v[1]], &[]),
        rule("apart", RuleKind::AntiAffinity, &[v[0], v[2]], &[]),
        rule("pinned", RuleKind::MustRunOn, &[v[0]], &[h[0], h[1]]),
        rule("prefer", RuleKind::ShouldNotRunOn, &[v[0]], &[h[1]]),
    ]);
    let names = Names::default();
    let at: Placement = [(v[1], h[1]), (v[2], h[0])].into();
    let kinds = |host| -> Vec<RuleKind> {
        set.breaches(v[0], host, &at, &names)
            .iter()
            .map(|b| b.kind)
            .collect()
    };
    // h0: away from v1 (affinity), with v2 (anti-affinity).
    assert_eq!(
        kinds(h[0]),
        vec![RuleKind::Affinity, RuleKind::AntiAffinity]
    );
    // h1: with v1, apart from v2, pinned, but a should-not host.
    assert_eq!(kinds(h[1]), vec![RuleKind::ShouldNotRunOn]);
    // h2: not a pinned host, and away from v1.
    assert_eq!(kinds(h[2]), vec![RuleKind::Affinity, RuleKind::MustRunOn]);
    assert!(set.must_breaches(v[0], h[1], &at, &names).is_empty());
    // A VM no rule names breaks nothing anywhere.
    assert!(set.breaches(VmId::new(), h[2], &at, &names).is_empty());
}

#[test]
fn violations_are_reported_once_per_broken_rule_and_host() {
    let (v, h): (Vec<VmId>, Vec<HostId>) = (ids(4), ids(2));
    let set = RuleSet::new(vec![
        rule("apart", RuleKind::AntiAffinity, &v[..3], &[]),
        rule("together", RuleKind::Affinity, &[v[0], v[3]], &[]),
    ]);
    let at: Placement = [(v[0], h[0]), (v[1], h[0]), (v[2], h[1]), (v[3], h[1])].into();
    let found = set.violations(&at, &Names::default());
    assert_eq!(found[&set.rules[0].id].len(), 1, "{found:?}");
    assert_eq!(found[&set.rules[1].id].len(), 1, "{found:?}");
    let fixed: Placement = [(v[0], h[1]), (v[1], h[0]), (v[3], h[1])].into();
    assert!(set.violations(&fixed, &Names::default()).is_empty());
}

#[test]
fn contradictory_and_infeasible_rules_are_refused_with_the_reason() {
    let (v, h): (Vec<VmId>, Vec<HostId>) = (ids(4), ids(2));
    let names = Names::default();
    let running: HashMap<VmId, u64> = v.iter().map(|v| (*v, 4096)).collect();
    let check = |rules: Vec<Rule>, mem: u64| validate(&rules, &caps(&h, mem), &running, &names);

    // Together and apart.
    let r = check(
        vec![
            rule("a", RuleKind::Affinity, &[v[0], v[1]], &[]),
            rule("b", RuleKind::Affinity, &[v[1], v[2]], &[]),
            rule("c", RuleKind::AntiAffinity, &[v[0], v[2]], &[]),
        ],
        65536,
    )
    .unwrap_err();
    assert_eq!(r.code, "rule_contradiction");
    assert!(
        r.detail.contains("together") && r.detail.contains("c"),
        "{}",
        r.detail
    );

    // Pinned to a host and kept off it; an affinity group pinned two ways.
    let r = check(
        vec![
            rule("on", RuleKind::MustRunOn, &[v[0]], &[h[0]]),
            rule("off", RuleKind::MustNotRunOn, &[v[0]], &[h[0]]),
        ],
        65536,
    )
    .unwrap_err();
    assert_eq!(r.code, "rule_contradiction");
    assert!(r.detail.contains("on, off"), "{}", r.detail);
    let r = check(
        vec![
            rule("g", RuleKind::Affinity, &[v[0], v[1]], &[]),
            rule("p0", RuleKind::MustRunOn, &[v[0]], &[h[0]]),
            rule("p1", RuleKind::MustRunOn, &[v[1]], &[h[1]]),
        ],
        65536,
    )
    .unwrap_err();
    assert_eq!(r.code, "rule_contradiction");
    assert!(r.detail.contains("affinity group"), "{}", r.detail);

    // Three kept apart on two hosts.
    let r = check(
        vec![rule("spread", RuleKind::AntiAffinity, &v[..3], &[])],
        65536,
    )
    .unwrap_err();
    assert_eq!(r.code, "rule_infeasible");
    // Four 4 GiB VMs pinned to one 12 GiB host.
    let r = check(vec![rule("small", RuleKind::MustRunOn, &v, &[h[0]])], 12288).unwrap_err();
    assert_eq!(r.code, "rule_infeasible");
    // Two apart, two together and pinned, with room: accepted.
    check(
        vec![
            rule("spread", RuleKind::AntiAffinity, &v[..2], &[]),
            rule("pair", RuleKind::Affinity, &v[2..], &[]),
            rule("pin", RuleKind::MustRunOn, &v[2..], &[h[1]]),
            rule("soft", RuleKind::ShouldNotRunOn, &v[..1], &h[..1]),
        ],
        65536,
    )
    .unwrap();
    // Memory that is not running does not count.
    let stopped: HashMap<VmId, u64> = v.iter().map(|v| (*v, 0)).collect();
    validate(
        &[rule("small", RuleKind::MustRunOn, &v, &[h[0]])],
        &caps(&h, 12288),
        &stopped,
        &names,
    )
    .unwrap();
}

/// A random cluster for the property test: the pass's hosts and VMs, their ids,
/// and up to five random rules.
struct Case {
    hosts: Vec<Host>,
    vms: Vec<Vm>,
    host_ids: Vec<HostId>,
    vm_ids: Vec<VmId>,
    rules: Vec<Rule>,
}

fn random_case(rng: &mut StdRng) -> Case {
    let n = rng.gen_range(2..=7);
    let m = rng.gen_range(3..=24);
    let host_ids: Vec<HostId> = ids(n);
    let vm_ids: Vec<VmId> = ids(m);
    let hosts: Vec<Host> = (0..n)
        .map(|_| Host {
            load: HostLoad {
                cpu: 0.0,
                cpu_capacity: 16.0,
                mem_mib: 0.0,
                mem_capacity_mib: 64.0 * 1024.0,
            },
            eligible: true,
        })
        .collect();
    // Skewed: most VMs start on the first hosts.
    let vms: Vec<Vm> = (0..m)
        .map(|_| Vm {
            host: rng.gen_range(0..n).min(rng.gen_range(0..n)),
            cpu: rng.gen_range(0.2..4.0),
            mem_mib: f64::from(rng.gen_range(1..6u32) * 1024),
            movable: rng.gen_bool(0.9),
            cooling: false,
            cost_s: 5.0,
            left: Vec::new(),
            rules: Default::default(),
        })
        .collect();
    let mut rules = Vec::new();
    for i in 0..rng.gen_range(1..=5) {
        let kind = *RuleKind::ALL.choose(rng).unwrap_or(&RuleKind::AntiAffinity);
        let k = rng.gen_range(if kind.names_hosts() { 1 } else { 2 }..=4.min(m));
        let vms: Vec<VmId> = vm_ids.choose_multiple(rng, k).copied().collect();
        let hosts: Vec<HostId> = if kind.names_hosts() {
            let k = rng.gen_range(1..n);
            host_ids.choose_multiple(rng, k).copied().collect()
        } else {
            Vec::new()
        };
        rules.push(rule(&format!("r{i}"), kind, &vms, &hosts));
    }
    Case {
        hosts,
        vms,
        host_ids,
        vm_ids,
        rules,
    }
}

fn must_broken(set: &RuleSet, at: &Placement) -> usize {
    set.violations(at, &Names::default())
        .iter()
        .filter(|(id, _)| set.rules.iter().any(|r| r.id == **id && r.kind.is_must()))
        .map(|(_, v)| v.len())
        .sum()
}

/// Property: over random clusters, rule sets (those validation accepts) and
/// loads, no move of a pass breaks a must rule that held, and a pass never leaves
/// more must rules broken than it found; a cluster that starts with every must
/// rule kept keeps them through 5 passes.
#[test]
fn balancing_never_breaks_a_must_rule() {
    let mut checked = 0;
    let mut repaired = 0;
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let Case {
            hosts,
            mut vms,
            host_ids,
            vm_ids,
            rules,
        } = random_case(&mut rng);
        let demand: HashMap<VmId, u64> = vm_ids
            .iter()
            .zip(&vms)
            .map(|(id, v)| (*id, v.mem_mib as u64))
            .collect();
        let capacity = caps(&host_ids, 64 * 1024 * 9 / 10);
        if validate(&rules, &capacity, &demand, &Names::default()).is_err() {
            continue;
        }
        let set = RuleSet::new(rules);
        let hix: HashMap<HostId, usize> =
            host_ids.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        let vix: HashMap<VmId, usize> = vm_ids.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        for (i, id) in vm_ids.iter().enumerate() {
            vms[i].rules = set.indexed(*id, &hix, &vix);
        }
        let placement = |vms: &[Vm]| -> Placement {
            vm_ids
                .iter()
                .zip(vms)
                .map(|(id, v)| (*id, host_ids[v.host]))
                .collect()
        };
        let limits = Limits {
            threshold: rng.gen_range(1..=5),
            ..Limits::default()
        };
        let mut broken = must_broken(&set, &placement(&vms));
        let started_clean = broken == 0;
        for pass in 0..5 {
            let p = plan(&with_vms(&hosts, &vms), &vms, &limits);
            for mv in &p.moves {
                let before = placement(&vms);
                let mine_before = set
                    .must_breaches(vm_ids[mv.vm], host_ids[mv.from], &before, &Names::default())
                    .len();
                vms[mv.vm].host = mv.to;
                let after = placement(&vms);
                let mine_after = set
                    .must_breaches(vm_ids[mv.vm], host_ids[mv.to], &after, &Names::default())
                    .len();
                if mv.kind == MoveKind::Balance {
                    assert_eq!(
                        mine_after, 0,
                        "seed {seed} pass {pass}: a balancing move breaks a must rule: {mv:?}"
                    );
                } else {
                    assert!(
                        mine_after <= mine_before,
                        "seed {seed} pass {pass}: a repair breaks more than it mends: {mv:?}"
                    );
                }
            }
            let now = must_broken(&set, &placement(&vms));
            assert!(
                now <= broken,
                "seed {seed} pass {pass}: {broken} must violations became {now}"
            );
            if started_clean {
                assert_eq!(now, 0, "seed {seed} pass {pass}");
            }
            if now < broken {
                repaired += 1;
            }
            broken = now;
            if p.moves.is_empty() {
                break;
            }
        }
        checked += 1;
    }
    assert!(checked >= 150, "only {checked} rule sets were accepted");
    assert!(repaired >= 20, "only {repaired} passes repaired anything");
}
