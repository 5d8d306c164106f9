//! Maintenance mode through the public API, on sim hosts (fast tier): the dry-run
//! plan, an evacuation that empties the host (powered-off VMs left or re-homed by
//! policy), placement that avoids the host, exit; a cancel mid-evacuation (the
//! finished moves stay, the host is connected again); bad requests.

use std::time::Duration;

use ferry_proto::v1::VmState;
use ferry_tests::sim::SimCluster;
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(90);

async fn host_state(c: &SimCluster, i: usize) -> String {
    c.api.ok(&format!("/hosts/{}", c.host(i))).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn maintenance(c: &SimCluster, i: usize) -> Value {
    c.api.ok(&format!("/hosts/{}/maintenance", c.host(i))).await
}

#[tokio::test]
async fn a_host_is_emptied_by_plan_and_left_again() {
    let c = SimCluster::start(3, 10_000, &[]).await;
    let mut running = Vec::new();
    for (i, mem) in [(0, 4096), (1, 1024), (2, 2048)] {
        running.push(c.vm(&format!("run-{i}"), 0, mem, "sim.cpu=1").await);
    }
    let stopped = c.vm("cold", 0, 1024, "").await;
    let off = c
        .api
        .post(&format!("/vms/{stopped}/power"), &json!({"action": "off"}))
        .await;
    assert_eq!(off.status, 202, "{off:?}");
    let task = off.body["id"].as_str().unwrap().to_string();
    wait_for("the cold VM to stop", T, || {
        let (api, id, task) = (c.api.clone(), stopped.clone(), task.clone());
        async move {
            (api.ok(&format!("/vms/{id}")).await["power_state"] == "stopped"
                && api.ok(&format!("/tasks/{task}")).await["state"] == "succeeded")
                .then_some(())
        }
    })
    .await;
    let h0 = c.host(0);

    // The dry run: every VM, its destination, small ones first, predicted times.
    let plan = c
        .api
        .post(
            &format!("/hosts/{h0}/maintenance"),
            &json!({"dry_run": true, "powered_off": "move"}),
        )
        .await;
    assert_eq!(plan.status, 200, "{plan:?}");
    assert_eq!(plan.body["feasible"], true);
    let steps = plan.body["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4, "{plan:?}");
    let names: Vec<&str> = steps
        .iter()
        .map(|s| s["vm_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["run-1", "run-2", "run-0", "cold"],
        "small first, running first"
    );
    for s in &steps[..3] {
        assert_eq!(s["action"], "migrate");
        assert_ne!(s["destination_host_id"], h0.to_string());
        assert!(s["predicted_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(steps[3]["action"], "rehome");
    assert!(plan.body["predicted_total_s"].as_f64().unwrap() > 0.0);
    // Nothing happened.
    assert_eq!(host_state(&c, 0).await, "connected");
    c.api
        .get(&format!("/hosts/{h0}/maintenance"))
        .await
        .assert_problem(404, "not_found");

    // Enter: it empties, then it is in maintenance.
    let r = c
        .api
        .post(
            &format!("/hosts/{h0}/maintenance"),
            &json!({"powered_off": "move"}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body["state"], "evacuating");
    c.api
        .post(&format!("/hosts/{h0}/maintenance"), &json!({}))
        .await
        .assert_problem(409, "maintenance_in_progress");
    let m = wait_for("the host to be in maintenance", T, || {
        let c = &c;
        async move {
            let m = maintenance(c, 0).await;
            (m["state"] == "in_maintenance").then_some(m)
        }
    })
    .await;
    assert_eq!(host_state(&c, 0).await, "maintenance");
    assert_eq!(
        (m["done"].clone(), m["total"].clone()),
        (json!(3), json!(3)),
        "{m}"
    );
    assert_eq!(m["remaining_running"], 0);
    for vm in running.iter().chain([&stopped]) {
        let v = c.api.ok(&format!("/vms/{vm}")).await;
        assert_ne!(v["host_id"], h0.to_string(), "{v}");
    }
    for vm in &running {
        let copies = c.copies(vm).await;
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_ne!(copies[0].0, 0);
    }
    // Placement never picks a host in maintenance.
    let net = c.api.ok("/networks?name=vmnet").await["items"][0]["id"].clone();
    for i in 0..3 {
        let r = c
            .api
            .post(
                "/vms",
                &json!({"name": format!("new-{i}"), "vcpus": 1, "memory_mib": 512,
                        "nics": [{"network_id": net}], "boot": {"kernel": "/sim/vmlinuz"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_ne!(r.body["host_id"], h0.to_string());
    }
    c.api
        .post(
            &format!("/vms/{}/migrate", running[0]),
            &json!({"destination_host_id": h0}),
        )
        .await
        .assert_problem(409, "incompatible_destination");

    // The same through ferryctl: the plan and progress, then exit.
    let (ok, out, err) = c
        .ferryctl(&["host", "maintenance", "sim0-0001", "show"])
        .await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("in_maintenance: 3 of 3 moved, 0 running VM(s) left"),
        "{out}"
    );
    assert!(out.contains("run-1") && out.contains("migrate"), "{out}");
    // Exit, moving back what the evacuation moved (all three running VMs).
    let (ok, out, err) = c
        .ferryctl(&["host", "maintenance", "sim0-0001", "exit", "--move-back"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "host sim0-0001 is connected; 3 VM(s) moving back"
    );
    assert_eq!(host_state(&c, 0).await, "connected");
    assert_eq!(maintenance(&c, 0).await["state"], "exited");
    wait_for("the VMs to be back", T, || {
        let (api, running, h0) = (c.api.clone(), running.clone(), h0.to_string());
        async move {
            for vm in &running {
                if api.ok(&format!("/vms/{vm}")).await["host_id"] != h0.as_str() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    c.api
        .delete(&format!("/hosts/{h0}/maintenance"))
        .await
        .assert_problem(409, "not_in_maintenance");
}

#[tokio::test]
async fn a_cancelled_evacuation_keeps_what_moved_and_reconnects_the_host() {
    // 100 Mbit/s: a 1 GiB move takes about 90 s, a 64 MiB one under a second.
    let c = SimCluster::start(2, 100, &[]).await;
    let small = c.vm("small", 0, 64, "").await;
    let big = c.vm("big", 0, 1024, "").await;
    let h0 = c.host(0);
    c.enter_maintenance(0, &json!({})).await;
    // The small VM goes first and arrives; the big one is under way.
    wait_for("the small VM to move and the big one to start", T, || {
        let (api, small, big) = (c.api.clone(), small.clone(), big.clone());
        async move {
            let s = api.ok(&format!("/vms/{small}")).await;
            let m = api.ok(&format!("/migrations?vm_id={big}")).await;
            let sent = m["items"][0]["progress"]["transferred_bytes"]
                .as_u64()
                .unwrap_or(0);
            (s["host_id"] != h0.to_string() && sent > 0).then_some(())
        }
    })
    .await;
    assert_eq!(host_state(&c, 0).await, "entering_maintenance");
    let r = c
        .api
        .post(&format!("/hosts/{h0}/maintenance/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let m = wait_for("the evacuation to stop", T, || {
        let c = &c;
        async move {
            let m = maintenance(c, 0).await;
            (m["state"] == "cancelled").then_some(m)
        }
    })
    .await;
    assert_eq!(host_state(&c, 0).await, "connected", "{m}");
    wait_for("the big VM's move to be cancelled", T, || {
        let (api, big) = (c.api.clone(), big.clone());
        async move {
            let m = api.ok(&format!("/migrations?vm_id={big}")).await;
            (m["items"][0]["state"] == "cancelled").then_some(())
        }
    })
    .await;
    // What moved stays; what did not runs where it was: one copy each.
    assert_eq!(c.copies(&small).await.len(), 1);
    assert_ne!(c.copies(&small).await[0].0, 0);
    assert_eq!(
        c.copies(&big).await,
        vec![(0, ferry_proto::v1::VmState::VmRunning)]
    );
    c.api
        .post(&format!("/hosts/{h0}/maintenance/cancel"), &json!({}))
        .await
        .assert_problem(409, "maintenance_not_running");
    // Bad input changes nothing.
    c.api
        .post(
            &format!("/hosts/{h0}/maintenance"),
            &json!({"unmovable": "explode"}),
        )
        .await
        .assert_problem(422, "invalid_body");
    c.api
        .post(
            &format!("/hosts/{}/maintenance", uuid::Uuid::new_v4()),
            &json!({"dry_run": true}),
        )
        .await
        .assert_problem(404, "not_found");
    assert_eq!(host_state(&c, 0).await, "connected");
}

#[tokio::test]
async fn a_vm_that_cannot_move_ends_as_its_policy_says_never_hangs() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    let cl = c.api.ok("/clusters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (h0, h1) = (c.host(0).to_string(), c.host(1).to_string());
    let stuck = c.vm("stuck", 0, 1024, "sim.cpu=1").await;
    let free = c.vm("free", 0, 1024, "sim.cpu=1").await;
    let pin = |host: &str| json!({"name": "pin", "kind": "must_run_on", "vms": ["stuck"], "hosts": [host]});
    let r = c
        .api
        .post(&format!("/clusters/{cl}/rules"), &pin(&h0))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let rule = r.body["id"].as_str().unwrap().to_string();
    let host_of = |vm: String| {
        let api = c.api.clone();
        async move {
            api.ok(&format!("/vms/{vm}")).await["host_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };

    // fail (the default): refused with the reason; nothing changes.
    let r = c
        .api
        .post(&format!("/hosts/{h0}/maintenance"), &json!({}))
        .await;
    r.assert_problem(409, "maintenance_infeasible");
    assert!(
        r.body["reasons"].to_string().contains("rule_violation"),
        "{r:?}"
    );
    assert_eq!(host_state(&c, 0).await, "connected");
    assert_eq!(host_of(free.clone()).await, h0);

    // wait: what can move moves; the evacuation waits (the host is not in
    // maintenance with a VM on it) until the VM can move, then ends.
    c.enter_maintenance(0, &json!({"unmovable": "wait"})).await;
    wait_for("the movable VM to leave and the other to wait", T, || {
        let (api, free, h0) = (c.api.clone(), free.clone(), h0.clone());
        async move {
            let m = api.ok(&format!("/hosts/{h0}/maintenance")).await;
            let v = api.ok(&format!("/vms/{free}")).await;
            (v["host_id"] != h0.as_str()
                && m["state"] == "evacuating"
                && m["remaining_running"] == 1)
                .then_some(())
        }
    })
    .await;
    assert_eq!(host_state(&c, 0).await, "entering_maintenance");
    let d = c.api.delete(&format!("/rules/{rule}")).await;
    assert_eq!(d.status, 204, "{d:?}");
    let m = c.maintenance_ended(0).await;
    assert_eq!(m["state"], "in_maintenance", "{m}");
    assert_eq!(host_of(stuck.clone()).await, h1);
    let e = c.api.delete(&format!("/hosts/{h0}/maintenance")).await;
    assert_eq!(e.status, 200, "{e:?}");

    // power_off: the VM that cannot move is powered off and stays; the host empties.
    let r = c
        .api
        .post(&format!("/clusters/{cl}/rules"), &pin(&h1))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    c.enter_maintenance(1, &json!({"unmovable": "power_off"}))
        .await;
    let m = c.maintenance_ended(1).await;
    assert_eq!(m["state"], "in_maintenance", "{m}");
    let s = c.api.ok(&format!("/vms/{stuck}")).await;
    assert_eq!(s["power_state"], "stopped", "{s}");
    assert_eq!(host_of(free.clone()).await, h0);
    assert!(c
        .copies(&stuck)
        .await
        .iter()
        .all(|(_, st)| *st != VmState::VmRunning));
}
