//! Generic saga tests (DESIGN principle 3), driven by the executor's hooks and
//! looping over each saga's declared node list, so a new node is covered without a
//! new test. They run on the sim backend without root: the control plane in this
//! process, a sim agent process, a real PostgreSQL database. For every node of the
//! live-migration saga:
//! (a) the node fails right after its action: before the point of no return the
//!     saga unwinds (every started node undone, newest first) to one running copy
//!     on the source; after it, the node is retried and the move completes;
//! (b) every action runs twice (as a recovery would): the same outcome;
//! (c) the saga stops right after the node, as a crashed control plane would, and
//!     recovery finishes it;
//! (d) each database write of the whole saga fails in turn: each time the saga
//!     ends with exactly one running copy, recorded where it runs.
//!
//! The real-QEMU tier (`migration.rs`, `migration_faults.rs`) stays the proof on
//! real guests.

use std::time::Duration;

use ferry_api::SagaId;
use ferry_control_plane::saga::{Saga, SagaState};
use ferry_control_plane::sagas::migrate::Migrate;
use ferry_proto::v1::VmState;
use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::{start_migration, wait_migration};
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// An idle 1 GiB VM in step mode: the model advances a pass per status question,
/// so a move takes the same writes every time.
const STEP: &str = "sim.step=1";

fn node_names() -> Vec<&'static str> {
    Migrate::nodes().iter().map(|n| n.name).collect()
}

/// Migrates `vm` from host 0 to host 1 and waits for the saga itself to end.
async fn migrate(c: &SimCluster, vm: &str) -> Value {
    let mid = start_migration(
        &c.api,
        vm,
        &json!({"destination_host_id": c.host(1).to_string()}),
    )
    .await;
    wait_migration(&c.api, &mid).await;
    saga_ended(c, &mid).await;
    c.api.ok(&format!("/migrations/{mid}")).await
}

async fn saga_of(c: &SimCluster, mid: &str) -> SagaId {
    let pool = c.db.pool().await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT saga_id FROM migrations WHERE id = $1")
        .bind(mid.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    SagaId(id)
}

/// Waits until the migration's saga is done or failed.
async fn saga_ended(c: &SimCluster, mid: &str) -> SagaState {
    let saga = saga_of(c, mid).await;
    wait_for("the saga to end", T, || {
        let app = c.app.clone();
        async move {
            let s = app.db.saga_fetch(saga).await.ok()??.state;
            matches!(s, SagaState::Done | SagaState::Failed).then_some(s)
        }
    })
    .await
}

/// Node events of the migration's saga, as (node, event) strings.
async fn events(c: &SimCluster, mid: &str) -> Vec<(String, String)> {
    let saga = saga_of(c, mid).await;
    c.app
        .db
        .saga_events(saga)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.node, e.event.as_str().to_string()))
        .collect()
}

/// Exactly one copy of the VM exists on any host, it runs, and the inventory
/// records it there; returns its host's index.
async fn one_running_copy(c: &SimCluster, vm: &str) -> usize {
    let copies = c.copies(vm).await;
    assert_eq!(copies.len(), 1, "exactly one copy on all hosts: {copies:?}");
    assert_eq!(copies[0].1, VmState::VmRunning, "{copies:?}");
    let rec = c.api.ok(&format!("/vms/{vm}")).await;
    assert_eq!(
        rec["host_id"],
        c.host(copies[0].0).to_string(),
        "recorded where it runs: {rec}"
    );
    assert_eq!(rec["power_state"], "running", "{rec}");
    copies[0].0
}

#[tokio::test]
async fn a_failure_at_each_node_unwinds_before_the_point_of_no_return_and_retries_after() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    let nodes = node_names();
    for (k, node) in nodes.iter().enumerate() {
        let vm = c.vm(&format!("fail-{node}"), 0, 1024, STEP).await;
        c.hooks.set_fail_after(Some(node));
        let m = migrate(&c, &vm).await;
        let mid = m["id"].as_str().unwrap();
        let ev = events(&c, mid).await;
        if k < Migrate::NO_RETURN && m["state"] == "completed" {
            // The undo found the point of no return passed after all (the action
            // had completed the move), so the saga went forward: one copy, moved.
            assert_eq!(
                one_running_copy(&c, &vm).await,
                1,
                "{node}: on the destination"
            );
            let undo = ev
                .iter()
                .position(|e| *e == (node.to_string(), "undo_started".into()));
            let done = ev
                .iter()
                .rposition(|e| *e == (node.to_string(), "succeeded".into()));
            assert!(undo.is_some() && done > undo, "{node}: {ev:?}");
        } else if k < Migrate::NO_RETURN {
            assert_eq!(m["state"], "failed", "{node}: {m}");
            assert!(
                m["error"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("injected failure after {node}")),
                "{node}: {m}"
            );
            assert_eq!(one_running_copy(&c, &vm).await, 0, "{node}: on the source");
            // Every node that started was undone, newest first.
            let undone: Vec<String> = ev
                .into_iter()
                .filter(|(_, e)| e == "undo_finished")
                .map(|(n, _)| n)
                .collect();
            let expected: Vec<&str> = nodes[..=k].iter().rev().copied().collect();
            assert_eq!(undone, expected, "{node}");
        } else {
            assert_eq!(m["state"], "completed", "{node}: retried forward: {m}");
            assert_eq!(
                one_running_copy(&c, &vm).await,
                1,
                "{node}: on the destination"
            );
            let ev = events(&c, mid).await;
            assert!(
                ev.contains(&(node.to_string(), "failed".into())),
                "{node}: the failure is in the log: {ev:?}"
            );
            assert!(!ev.iter().any(|(_, e)| e.starts_with("undo")), "{ev:?}");
        }
    }
}

#[tokio::test]
async fn every_action_run_twice_ends_the_same() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    c.hooks
        .replay
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let vm = c.vm("replayed", 0, 1024, STEP).await;
    let m = migrate(&c, &vm).await;
    assert_eq!(m["state"], "completed", "{m}");
    assert_eq!(one_running_copy(&c, &vm).await, 1);
    let succeeded: Vec<String> = events(&c, m["id"].as_str().unwrap())
        .await
        .into_iter()
        .filter(|(_, e)| e == "succeeded")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(succeeded, node_names());
}

#[tokio::test]
async fn a_crash_after_each_node_is_recovered() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    for node in node_names() {
        let vm = c.vm(&format!("crash-{node}"), 0, 1024, STEP).await;
        c.hooks.set_crash_after(Some(node));
        let mid = start_migration(
            &c.api,
            &vm,
            &json!({"destination_host_id": c.host(1).to_string()}),
        )
        .await;
        // The saga stopped right after the node's outcome was recorded.
        wait_for(&format!("the saga to stop after {node}"), T, || {
            let (c, mid) = (&c, mid.clone());
            async move {
                events(c, &mid)
                    .await
                    .contains(&(node.to_string(), "succeeded".into()))
                    .then_some(())
            }
        })
        .await;
        ferry_control_plane::saga::recover_all(&c.app)
            .await
            .expect("recover");
        let m = wait_migration(&c.api, &mid).await;
        assert_eq!(m["state"], "completed", "{node}: {m}");
        assert_eq!(saga_ended(&c, &mid).await, SagaState::Done);
        assert_eq!(one_running_copy(&c, &vm).await, 1, "{node}");
    }
}

#[tokio::test]
async fn a_database_error_at_every_write_ends_with_one_running_copy() {
    // A 1 Gbit/s link and a guest dirtying 50 MiB/s: four passes, so progress is
    // written (and can fail) in the middle of the transfer too.
    let c = SimCluster::start(2, 1_000, &[]).await;
    let mut total = None;
    for n in 0..200usize {
        let vm = c
            .vm(
                &format!("dberr-{n}"),
                0,
                1024,
                "sim.step=1 sim.dirty_mibps=50",
            )
            .await;
        c.hooks.set_fail_write(Some(n));
        let m = migrate(&c, &vm).await;
        let seen = c.hooks.writes_seen();
        eprintln!(
            "write {n} failed ({:?}): migration {}",
            seen.get(n),
            m["state"]
        );
        let state = m["state"].as_str().unwrap().to_string();
        assert!(
            state == "completed" || state == "failed",
            "write {n} ({:?}): {m}",
            seen.get(n)
        );
        let host = one_running_copy(&c, &vm).await;
        assert_eq!(
            host,
            if state == "completed" { 1 } else { 0 },
            "write {n} ({:?})",
            seen.get(n)
        );
        if n >= seen.len() {
            // Nothing left to break: every write has failed once.
            assert_eq!(state, "completed");
            total = Some(seen.len());
            break;
        }
        if state == "failed" {
            assert!(
                m["error"].as_str().unwrap().contains("injected error"),
                "write {n}: {m}"
            );
        }
    }
    let total = total.expect("the loop covered every write");
    assert!(total >= 10, "a move makes more writes than {total}");
}

#[tokio::test]
async fn a_database_error_at_every_write_of_an_unwind_still_unwinds() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    let mut n = 0;
    loop {
        let vm = c.vm(&format!("unwind-{n}"), 0, 1024, STEP).await;
        // The transfer is never reached: `destination_start` fails after its action,
        // and then write n fails (forward writes first, then the unwind's).
        c.hooks.set_fail_after(Some("destination_start"));
        c.hooks.set_fail_write(Some(n));
        let m = migrate(&c, &vm).await;
        let seen = c.hooks.writes_seen();
        assert_eq!(m["state"], "failed", "write {n} ({:?}): {m}", seen.get(n));
        assert_eq!(
            one_running_copy(&c, &vm).await,
            0,
            "write {n} ({:?})",
            seen.get(n)
        );
        c.hooks.set_fail_after(None);
        if n >= seen.len() {
            break;
        }
        n += 1;
        assert!(n < 100, "an unwind makes fewer than 100 writes: {seen:?}");
    }
    assert!(n >= 8, "the unwind's writes were covered ({n})");
}

/// Enters maintenance on host 0 and waits for its saga to end; returns the
/// maintenance record.
async fn evacuate(c: &SimCluster) -> Value {
    c.enter_maintenance(0, &json!({})).await;
    c.maintenance_ended(0).await
}

/// Leaves maintenance if the host is in it, so the next round can enter again.
async fn reset_host(c: &SimCluster) {
    let h0 = c.host(0);
    if c.api.ok(&format!("/hosts/{h0}")).await["state"] == "maintenance" {
        assert_eq!(
            c.api
                .delete(&format!("/hosts/{h0}/maintenance"))
                .await
                .status,
            200
        );
    }
}

#[tokio::test]
async fn the_evacuation_saga_unwinds_retries_and_recovers_at_each_node() {
    use ferry_control_plane::sagas::evacuate::Evacuate;
    let c = SimCluster::start(3, 10_000, &[]).await;
    let names: Vec<&str> = Evacuate::nodes().iter().map(|n| n.name).collect();
    for (k, node) in names.iter().enumerate() {
        // (a) the node fails right after its action.
        let vm = c.vm(&format!("evac-fail-{node}"), 0, 512, STEP).await;
        c.hooks.set_fail_after(Some(node));
        let m = evacuate(&c).await;
        let host = c.api.ok(&format!("/hosts/{}", c.host(0))).await;
        if k < Evacuate::NO_RETURN {
            assert_eq!(m["state"], "failed", "{node}: {m}");
            assert_eq!(
                host["state"], "connected",
                "{node}: the host takes VMs again"
            );
        } else {
            assert_eq!(m["state"], "in_maintenance", "{node}: retried forward: {m}");
            assert_eq!(host["state"], "maintenance");
        }
        // Wherever it is, the VM runs exactly once.
        one_running_copy(&c, &vm).await;
        reset_host(&c).await;

        // (c) the saga stops right after the node, as a crash would; recovery ends it.
        let vm = c.vm(&format!("evac-crash-{node}"), 0, 512, STEP).await;
        c.hooks.set_crash_after(Some(node));
        let r = c.enter_maintenance(0, &json!({})).await;
        let saga: uuid::Uuid = {
            let pool = c.db.pool().await;
            sqlx::query_scalar("SELECT saga_id FROM maintenance WHERE id = $1")
                .bind(r["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap())
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        wait_for(&format!("the evacuation to stop after {node}"), T, || {
            let app = c.app.clone();
            async move {
                let ev = app.db.saga_events(SagaId(saga)).await.ok()?;
                ev.iter()
                    .any(|e| e.node == *node && e.event.as_str() == "succeeded")
                    .then_some(())
            }
        })
        .await;
        ferry_control_plane::saga::recover_all(&c.app)
            .await
            .expect("recover");
        let m = c.maintenance_ended(0).await;
        assert_eq!(m["state"], "in_maintenance", "{node}: {m}");
        assert_ne!(one_running_copy(&c, &vm).await, 0, "{node}: moved off");
        reset_host(&c).await;
    }
}

#[tokio::test]
async fn every_evacuation_action_run_twice_ends_the_same() {
    let c = SimCluster::start(3, 10_000, &[]).await;
    let vms = [
        c.vm("twice-a", 0, 512, STEP).await,
        c.vm("twice-b", 0, 1024, STEP).await,
    ];
    c.hooks
        .replay
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let m = evacuate(&c).await;
    assert_eq!(m["state"], "in_maintenance", "{m}");
    assert_eq!(
        c.api.ok(&format!("/hosts/{}", c.host(0))).await["state"],
        "maintenance"
    );
    for vm in &vms {
        assert_ne!(one_running_copy(&c, vm).await, 0);
    }
}
