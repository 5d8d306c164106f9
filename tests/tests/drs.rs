//! Balancing through the public API, on sim hosts whose VMs report the load their
//! command line sets (`sim.cpu`, `sim.mem_used_mib`): the imbalance, dry runs,
//! manual recommendations applied and dismissed, a VM's own `disabled` level, and
//! a fully automated pass that moves VMs through the ordinary migration path.

use std::time::Duration;

use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::wait_migration;
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// Four sim hosts; six busy VMs (6 cores each) all on the first.
async fn lopsided() -> (SimCluster, String, Vec<String>) {
    let c = SimCluster::start(4, 10_000, &[]).await;
    let cluster = c.api.ok("/clusters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut vms = Vec::new();
    for i in 0..6 {
        vms.push(
            c.vm(
                &format!("busy-{i}"),
                0,
                8192,
                "sim.cpu=6 sim.mem_used_mib=6144",
            )
            .await,
        );
    }
    // The agents' heartbeats carry the VMs' load.
    wait_for("the load to reach the control plane", T, || {
        let (api, cluster) = (c.api.clone(), cluster.clone());
        async move {
            let s = api.ok(&format!("/clusters/{cluster}/drs")).await;
            (s["vms"] == 6 && s["imbalance"]["cpu"].as_f64()? > 0.5).then_some(())
        }
    })
    .await;
    (c, cluster, vms)
}

/// Passes asked for through the API. The cluster's periodic pass also records one
/// (within its first 10 s tick, and then each `interval_s`), whenever the test
/// happens to be slow enough to meet it, so it is not counted here.
fn on_demand_passes(status: &Value) -> usize {
    status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["trigger"] == "on_demand")
        .count()
}

fn host_of(v: &Value) -> String {
    v["host_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn manual_balancing_recommends_and_moves_only_what_is_applied() {
    let (c, cluster, vms) = lopsided().await;
    let s = c.api.ok(&format!("/clusters/{cluster}/drs")).await;
    assert_eq!(s["settings"]["automation"], "manual");
    assert_eq!(s["hosts"], 4);
    let tol = s["tolerance"].as_f64().unwrap();
    assert!(s["imbalance"]["combined"].as_f64().unwrap() > tol, "{s}");

    // A dry run plans and records nothing.
    let r = c
        .api
        .post(
            &format!("/clusters/{cluster}/drs/run"),
            &json!({"dry_run": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let planned = r.body["recommendations"].as_array().unwrap().len();
    assert!(planned >= 2, "{r:?}");
    assert!(
        r.body["pass"]["after"]["combined"].as_f64()
            < r.body["pass"]["before"]["combined"].as_f64()
    );
    let s = c.api.ok(&format!("/clusters/{cluster}/drs")).await;
    assert_eq!(on_demand_passes(&s), 0);
    assert_eq!(s["recommendations"].as_array().unwrap().len(), 0);

    // A VM of its own level `disabled` is never recommended.
    let pinned = &vms[0];
    let p = c
        .api
        .patch(
            &format!("/vms/{pinned}"),
            &json!({"drs_automation": "disabled"}),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.body["drs_automation"], "disabled");
    c.api
        .patch(
            &format!("/vms/{pinned}"),
            &json!({"drs_automation": "sometimes"}),
        )
        .await
        .assert_problem(422, "invalid_body");

    // Manual: the pass records recommendations and moves nothing.
    let r = c
        .api
        .post(&format!("/clusters/{cluster}/drs/run"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["migrations"].as_array().unwrap().len(), 0);
    let recs: Vec<Value> = r.body["recommendations"].as_array().unwrap().clone();
    assert!(recs.len() >= 2, "{r:?}");
    assert!(
        recs.iter().all(|x| x["vm_id"] != pinned.as_str()),
        "{recs:?}"
    );
    assert!(recs.iter().all(|x| x["state"] == "pending"));
    assert!(recs[0]["reason"]
        .as_str()
        .unwrap()
        .contains("imbalance drops"));
    for vm in &vms {
        assert_eq!(
            host_of(&c.api.ok(&format!("/vms/{vm}")).await),
            c.host(0).to_string()
        );
    }
    let s = c.api.ok(&format!("/clusters/{cluster}/drs")).await;
    assert_eq!(on_demand_passes(&s), 1);
    assert_eq!(s["recommendations"].as_array().unwrap().len(), recs.len());

    // Apply one: it moves; dismiss another: it stays; neither can be acted on twice.
    let first = recs[0]["id"].as_str().unwrap();
    let a = c
        .api
        .post(&format!("/drs/recommendations/{first}/apply"), &json!({}))
        .await;
    assert_eq!(a.status, 202, "{a:?}");
    let m = wait_migration(&c.api, a.body["id"].as_str().unwrap()).await;
    assert_eq!(m["state"], "completed", "{m}");
    let moved = recs[0]["vm_id"].as_str().unwrap();
    assert_eq!(
        host_of(&c.api.ok(&format!("/vms/{moved}")).await),
        recs[0]["to_host_id"].as_str().unwrap()
    );
    let second = recs[1]["id"].as_str().unwrap();
    let d = c
        .api
        .post(
            &format!("/drs/recommendations/{second}/dismiss"),
            &json!({}),
        )
        .await;
    assert_eq!(d.status, 200, "{d:?}");
    assert_eq!(d.body["state"], "dismissed");
    for (id, verb) in [(first, "apply"), (second, "apply"), (second, "dismiss")] {
        c.api
            .post(&format!("/drs/recommendations/{id}/{verb}"), &json!({}))
            .await
            .assert_problem(409, "recommendation_not_pending");
    }
    let listed = c
        .api
        .ok(&format!("/clusters/{cluster}/drs/recommendations"))
        .await;
    let states: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"applied") && states.contains(&"dismissed"),
        "{states:?}"
    );

    // The same through ferryctl.
    let (ok, out, err) = c.ferryctl(&["drs", "show", "default"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("automation manual, threshold 3") && out.contains("tolerance"),
        "{out}"
    );
    let (ok, out, err) = c.ferryctl(&["drs", "run", "default", "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("dry run: imbalance"), "{out}");
    let (ok, out, err) = c.ferryctl(&["drs", "vm", "busy-1", "cluster"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("VM busy-1: balancing as its cluster's"),
        "{out}"
    );
    let (ok, _, err) = c
        .ferryctl(&["drs", "apply", &uuid::Uuid::new_v4().to_string()])
        .await;
    assert!(!ok && err.contains("not_found"), "{err}");

    // Bad input changes nothing.
    c.api
        .post(
            &format!("/clusters/{cluster}/drs/run"),
            &json!({"dry": true}),
        )
        .await
        .assert_problem(422, "invalid_body");
    c.api
        .post(
            &format!("/clusters/{}/drs/run", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await
        .assert_problem(404, "not_found");
    c.api
        .post(
            &format!("/drs/recommendations/{}/apply", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn fully_automated_balancing_moves_vms_and_evens_the_load() {
    let (c, cluster, vms) = lopsided().await;
    let pinned = &vms[5];
    assert_eq!(
        c.api
            .patch(
                &format!("/vms/{pinned}"),
                &json!({"drs_automation": "disabled"})
            )
            .await
            .status,
        200
    );
    let p = c
        .api
        .patch(
            &format!("/clusters/{cluster}"),
            &json!({"drs": {"automation": "fully_automated", "threshold": 3}}),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    let before = c.api.ok(&format!("/clusters/{cluster}/drs")).await["imbalance"]["combined"]
        .as_f64()
        .unwrap();
    let r = c
        .api
        .post(&format!("/clusters/{cluster}/drs/run"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let started: Vec<String> = r.body["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert!(started.len() >= 2, "{r:?}");
    assert_eq!(r.body["pass"]["applied"], started.len());
    for m in &started {
        assert_eq!(wait_migration(&c.api, m).await["state"], "completed");
    }
    assert_eq!(
        host_of(&c.api.ok(&format!("/vms/{pinned}")).await),
        c.host(0).to_string(),
        "the disabled VM stayed"
    );
    // The agents report the moved VMs' load from their new hosts.
    let after = wait_for("the new load to be measured", T, || {
        let (api, cluster) = (c.api.clone(), cluster.clone());
        async move {
            let s = api.ok(&format!("/clusters/{cluster}/drs")).await;
            let now = s["imbalance"]["combined"].as_f64()?;
            (now < before * 0.7).then_some(now)
        }
    })
    .await;
    assert!(after < before, "{after} < {before}");
}

#[tokio::test]
async fn placement_picks_the_host_that_leaves_the_cluster_best_balanced() {
    // sim0-0002 has the most memory (512 GiB) but is busy; sim0-0003 is idle.
    let c = SimCluster::start(3, 10_000, &[]).await;
    for i in 0..2 {
        c.vm(
            &format!("hog-{i}"),
            1,
            4096,
            "sim.cpu=60 sim.mem_used_mib=4096",
        )
        .await;
    }
    let mover = c.vm("mover", 0, 2048, "sim.cpu=4").await;
    let cluster = c.api.ok("/clusters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the hogs' load to be measured", T, || {
        let (api, cluster) = (c.api.clone(), cluster.clone());
        async move {
            let s = api.ok(&format!("/clusters/{cluster}/drs")).await;
            (s["imbalance"]["cpu"].as_f64()? > 0.3).then_some(())
        }
    })
    .await;
    // A migration without a destination goes where the cluster stays most even.
    let check = c
        .api
        .post(&format!("/vms/{mover}/migrate/check"), &json!({}))
        .await;
    assert_eq!(check.status, 200, "{check:?}");
    assert_eq!(
        check.body["destination_host_id"],
        c.host(2).to_string(),
        "{check:?}"
    );
    // So does a new VM without a host.
    let net = c.api.ok("/networks?name=vmnet").await["items"][0]["id"].clone();
    let r = c
        .api
        .post(
            "/vms",
            &json!({"name": "placed", "vcpus": 8, "memory_mib": 1024, "nics": [{"network_id": net}],
                    "boot": {"kernel": "/sim/vmlinuz"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_ne!(
        r.body["host_id"],
        c.host(1).to_string(),
        "not on the busy host"
    );
}
