//! The sim backend live-migrates through the public API (fast tier: no root, no
//! QEMU), its model agrees with the control plane's predictor, `auto` escalates on
//! it, and one operation per VM holds across a migration and power tasks.

use std::time::Duration;

use ferry_agent::hypervisor::sim_migration::{GuestModel, Move, MoveParams};
use ferry_api::vm::MigrationPolicy;
use ferry_control_plane::app::analysis::predict_precopy;
use ferry_proto::v1::{MigrationStatus, VmState};
use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::{start_migration, wait_migration};
use ferry_tests::wait_for;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sim_vms_move_between_hosts_of_one_and_of_two_agent_processes() {
    // Hosts sim0-0001 and sim0-0002 in one process, sim1 in another.
    let c = SimCluster::start_split(&[2, 1], 10_000, &[]).await;
    let names: Vec<&str> = c.hosts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sim0-0001", "sim0-0002", "sim1"]);
    let vm = c.vm("mover", 0, 2048, "sim.dirty_mibps=20").await;

    // Within one process, through POST /vms/{id}/migrate.
    let mid = start_migration(&c.api, &vm, &json!({"destination_host_id": c.host(1)})).await;
    let m = wait_migration(&c.api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    assert_eq!(c.copies(&vm).await, vec![(1, VmState::VmRunning)]);
    assert_eq!(
        c.api.ok(&format!("/vms/{vm}")).await["host_id"],
        c.host(1).to_string()
    );
    // 2 GiB at 10 Gbit/s: at least the memory went across, in at least one pass.
    let r = &m["result"];
    assert!(r["transferred_bytes"].as_u64().unwrap() >= 2 << 30, "{m}");
    assert!(r["iterations"].as_u64().unwrap() >= 1, "{m}");

    // Across processes.
    let mid = start_migration(&c.api, &vm, &json!({"destination_host_id": c.host(2)})).await;
    let m = wait_migration(&c.api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    assert_eq!(c.copies(&vm).await, vec![(2, VmState::VmRunning)]);

    // And back, with the destination left to placement.
    let mid = start_migration(&c.api, &vm, &json!({})).await;
    let m = wait_migration(&c.api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    let copies = c.copies(&vm).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_ne!(copies[0].0, 2, "moved off sim1");
}

/// The three cases the model is checked on: (memory MiB, dirty MiB/s, link Mbit/s).
const CASES: [(u64, u64, u64); 3] = [(1024, 0, 10_000), (1024, 50, 1_000), (4096, 100, 10_000)];

#[test]
fn the_sim_model_agrees_with_the_predictor() {
    let policy = MigrationPolicy::default();
    for (mem, dirty, link) in CASES {
        let link_bps = link * 1_000_000 / 8;
        let p = predict_precopy(mem << 20, link_bps, dirty << 20, &policy);
        let (passes, secs, status) = Move::new(
            MoveParams {
                memory: mem << 20,
                link_bps,
                cap_bps: 0,
                downtime_ms: policy.max_downtime_ms,
                auto_converge: false,
            },
            GuestModel {
                dirty_bps: dirty << 20,
                ..Default::default()
            },
        )
        .run_to_end();
        assert_eq!(status, MigrationStatus::MigrationCompleted);
        assert!(passes >= 1);
        let sim_ms = secs * 1000.0;
        let err = (sim_ms - p.total_ms as f64).abs() / p.total_ms as f64;
        assert!(
            err <= 0.10,
            "{mem} MiB, {dirty} MiB/s, {link} Mbit/s: sim {sim_ms:.0} ms vs predicted {} ms",
            p.total_ms
        );
    }
}

#[tokio::test]
async fn a_sim_move_takes_the_time_the_check_predicted() {
    // 512 MiB dirtying 30 MiB/s over 1 Gbit/s: several seconds, so the control
    // plane's own overhead is small beside it.
    let c = SimCluster::start(2, 1_000, &[]).await;
    let vm = c.vm("predicted", 0, 512, "sim.dirty_mibps=30").await;
    let body = json!({"destination_host_id": c.host(1)});
    let check = c.api.post(&format!("/vms/{vm}/migrate/check"), &body).await;
    assert_eq!(check.status, 200, "{check:?}");
    let predicted = check.body["prediction"]["total_ms"]
        .as_u64()
        .expect("a prediction");
    // The link the agents "measured" is the modelled 1 Gbit/s (to the probe's µs).
    let bw = check.body["prediction"]["bandwidth_bps"].as_u64().unwrap();
    assert!(bw.abs_diff(125_000_000) < 125_000, "{bw}");
    let mid = start_migration(&c.api, &vm, &body).await;
    let m = wait_migration(&c.api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    let took = m["result"]["total_ms"].as_u64().unwrap();
    let err = (took as f64 - predicted as f64).abs() / predicted as f64;
    assert!(err <= 0.10, "took {took} ms, predicted {predicted} ms");
}

#[tokio::test]
async fn the_link_is_measured_after_the_move_that_calls_for_it_not_during_it() {
    // No link known yet: the move's saga calls for a measurement, which waits
    // until no move has touched the two hosts for a few seconds (a probe during
    // the move would share its link). 512 MiB over the modelled 1 Gbit/s: a few
    // seconds of move.
    let c = SimCluster::start(2, 1_000, &[]).await;
    let vm = c.vm("first", 0, 512, "sim.dirty_mibps=5").await;
    let mid = start_migration(&c.api, &vm, &json!({"destination_host_id": c.host(1)})).await;
    let m = wait_migration(&c.api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    let seq_of = |kind: &'static str| {
        let api = c.api.clone();
        async move {
            let ev = api.ok(&format!("/events?kind={kind}&limit=10")).await;
            ev["items"].as_array().unwrap().first().cloned()
        }
    };
    let completed = seq_of("migration.completed")
        .await
        .expect("the move's event");
    let measured = wait_for("the link measured once the move is over", T, || {
        let seq_of = &seq_of;
        async move { seq_of("link.measured").await }
    })
    .await;
    assert!(
        measured["seq"].as_i64() > completed["seq"].as_i64(),
        "measured after the move: {measured} / {completed}"
    );
    assert_eq!(measured["host_id"], c.host(0).to_string(), "{measured}");
    let bw = measured["data"]["bytes_per_s"].as_u64().unwrap();
    assert!(
        bw.abs_diff(125_000_000) < 125_000,
        "the modelled link: {bw}"
    );
}

#[tokio::test]
async fn auto_escalates_when_the_guest_dirties_faster_than_the_link() {
    // 200 MiB/s of dirtying against a 125 MB/s link: pre-copy alone never ends.
    let c = SimCluster::start(2, 1_000, &[]).await;
    let vm = c.vm("dirty", 0, 256, "sim.dirty_mibps=200").await;
    let mid = start_migration(
        &c.api,
        &vm,
        &json!({"destination_host_id": c.host(1), "policy": {"mode": "auto"}}),
    )
    .await;
    let m = wait_migration(&c.api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    let strategy = m["result"]["strategy"].as_str().unwrap();
    assert_ne!(strategy, "precopy", "{m}");
    let events = c.api.ok(&format!("/events?vm_id={vm}&limit=200")).await;
    let said: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "migration.strategy")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        said.iter()
            .any(|s| s.contains("post-copy") || s.contains("throttl")),
        "a decision was recorded: {said:?}"
    );
    // One copy, on the destination, running (the sim's copy reports its resume
    // just after the switchover is recorded: a moment's wait).
    wait_for("one running copy on the destination", T, || {
        let (c, vm) = (&c, vm.clone());
        async move { (c.copies(&vm).await == vec![(1, VmState::VmRunning)]).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn one_operation_per_vm_and_force_off_cancels_the_migration_first() {
    // 1 GiB at 100 Mbit/s: a move of about 90 s, long enough to race.
    let c = SimCluster::start(2, 100, &[]).await;
    let vm = c.vm("busy", 0, 1024, "").await;
    let mid = start_migration(&c.api, &vm, &json!({"destination_host_id": c.host(1)})).await;
    wait_for("the transfer to start", T, || {
        let (api, mid) = (c.api.clone(), mid.clone());
        async move {
            let m = api.ok(&format!("/migrations/{mid}")).await;
            (m["progress"]["transferred_bytes"].as_u64().unwrap_or(0) > 0).then_some(())
        }
    })
    .await;
    for action in ["off", "reset", "pause", "shutdown"] {
        let r = c
            .api
            .post(&format!("/vms/{vm}/power"), &json!({"action": action}))
            .await;
        r.assert_problem(409, "vm_busy");
        assert_eq!(r.body["operation"]["kind"], "migration", "{action}: {r:?}");
        assert_eq!(r.body["operation"]["id"], mid.as_str(), "{action}: {r:?}");
        assert!(r.body["detail"].as_str().unwrap().contains(&mid), "{r:?}");
    }
    c.api
        .post(
            &format!("/vms/{vm}/migrate"),
            &json!({"destination_host_id": c.host(1)}),
        )
        .await
        .assert_problem(409, "migration_in_progress");
    c.api
        .delete(&format!("/vms/{vm}"))
        .await
        .assert_problem(409, "vm_busy");
    // Nothing changed: the move goes on.
    assert_eq!(
        c.api.ok(&format!("/migrations/{mid}")).await["state"],
        "transferring"
    );

    // `off` with force: the migration is cancelled first, then the VM powered off.
    let r = c
        .api
        .post(
            &format!("/vms/{vm}/power"),
            &json!({"action": "off", "force": true}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let task = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(wait_migration(&c.api, &mid).await["state"], "cancelled");
    wait_for("the power-off task to succeed", T, || {
        let (api, task) = (c.api.clone(), task.clone());
        async move { (api.ok(&format!("/tasks/{task}")).await["state"] == "succeeded").then_some(()) }
    })
    .await;
    assert_eq!(c.copies(&vm).await, vec![(0, VmState::VmStopped)]);
    let rec = c.api.ok(&format!("/vms/{vm}")).await;
    assert_eq!(rec["host_id"], c.host(0).to_string());
    wait_for("the VM recorded stopped", T, || {
        let (api, vm) = (c.api.clone(), vm.clone());
        async move { (api.ok(&format!("/vms/{vm}")).await["power_state"] == "stopped").then_some(()) }
    })
    .await;
    // The hold is gone with the task: the VM takes operations again.
    let r = c
        .api
        .post(&format!("/vms/{vm}/power"), &json!({"action": "on"}))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
}
