//! The randomized fault campaign's short run (issue #13): a fixed list of seeds
//! whose plans together inject every fault kind during every kind of operation,
//! on three lab hosts with two real guests, and no invariant violated after any
//! round. `ferry-bench-faults` runs the same rounds for as long as asked.

use std::collections::BTreeSet;

use ferry_tests::campaign::{plan, Campaign, Fault};

/// Seeds and their rounds: 16 rounds, all seven faults, all three operations.
const SEEDS: &[(u64, u32)] = &[(121, 8), (295, 8)];

#[tokio::test]
async fn random_operations_under_random_faults_violate_no_invariant() {
    let plans: Vec<_> = SEEDS.iter().flat_map(|&(s, n)| plan(s, n)).collect();
    let faults: BTreeSet<_> = plans.iter().map(|p| p.fault).collect();
    assert_eq!(
        faults.len(),
        Fault::ALL.len(),
        "the seeds cover every fault: {faults:?}"
    );
    let ops: BTreeSet<_> = plans.iter().map(|p| format!("{:?}", p.op)).collect();
    assert_eq!(ops.len(), 3, "the seeds cover every operation: {ops:?}");

    let mut campaign = Campaign::start(2).await;
    let mut reports = Vec::new();
    for p in &plans {
        let r = campaign.round(p).await;
        eprintln!(
            "seed {} round {}: {:?} during {:?} {} → {}: {} (op {} ms, in flight: {}, injected {}, recovery {} ms) {:?}",
            r.seed, r.round, r.fault, r.op, r.from, r.to, r.outcome, r.op_ms,
            r.struck_in_flight, r.injected, r.recovery_ms, r.violations
        );
        reports.push(r);
    }
    let violated: Vec<_> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    assert!(violated.is_empty(), "violations: {violated:#?}");
    // The faults took: packets dropped, connections delayed, operations struck.
    assert!(reports
        .iter()
        .any(|r| r.fault == Fault::Loss && r.injected > 0));
    assert!(reports
        .iter()
        .any(|r| r.fault == Fault::Delay && r.injected > 0));
    let in_flight = reports.iter().filter(|r| r.struck_in_flight).count();
    assert!(
        in_flight >= reports.len() / 3,
        "{in_flight} of {} struck in flight",
        reports.len()
    );

    // The checker itself sees a leak: a tap nobody owns.
    let ns = campaign.env.lab.ns(0);
    let tap = format!("fy{}leak", campaign.env.lab.k);
    let added = std::process::Command::new("ip")
        .args(["-n", &ns, "tuntap", "add", "dev", &tap, "mode", "tap"])
        .status()
        .unwrap();
    assert!(added.success());
    let seen = campaign.check().await;
    let _ = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "del", &tap])
        .status();
    assert!(
        seen.iter().any(|v| v.contains("taps for")),
        "a planted tap is reported: {seen:?}"
    );
}
