//! Placement rules through the public API, on sim hosts (fast tier): rules refused
//! when they contradict or cannot hold, a manual migration refused by the named
//! `rules` check, power-on and evacuation placing by the rules, and balancing
//! repairing a broken rule at threshold 1 (mandatory moves only).

use std::time::Duration;

use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::wait_migration;
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(90);

async fn cluster_id(c: &SimCluster) -> String {
    c.api.ok("/clusters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn host_of(c: &SimCluster, vm: &str) -> String {
    c.api.ok(&format!("/vms/{vm}")).await["host_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn rules(c: &SimCluster, cluster: &str) -> Vec<Value> {
    c.api
        .ok(&format!("/clusters/{cluster}/rules"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn rules_are_validated_and_bind_migrations_power_on_and_evacuation() {
    let c = SimCluster::start(4, 10_000, &[]).await;
    let cl = cluster_id(&c).await;
    let h: Vec<String> = (0..4).map(|i| c.host(i).to_string()).collect();
    let a = c.vm("web-a", 0, 1024, "sim.cpu=1").await;
    let b = c.vm("web-b", 1, 1024, "sim.cpu=1").await;
    let d = c.vm("db", 2, 1024, "sim.cpu=1").await;
    let e = c.vm("extra", 3, 1024, "sim.cpu=1").await;
    let rules_path = format!("/clusters/{cl}/rules");

    // Accepted: web-a and web-b apart; web-a never on host 3; db should stay off host 1.
    let spread = c
        .api
        .post(
            &rules_path,
            &json!({"name": "web-spread", "kind": "anti_affinity", "vms": ["web-a", "web-b"]}),
        )
        .await;
    assert_eq!(spread.status, 201, "{spread:?}");
    assert_eq!(spread.body["violations"], json!([]));
    let r = c
        .api
        .post(
            &rules_path,
            &json!({"name": "a-not-3", "kind": "must_not_run_on", "vms": [a], "hosts": [h[3]]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = c
        .api
        .post(
            &rules_path,
            &json!({"name": "db-soft", "kind": "should_not_run_on", "vms": ["db"], "hosts": [h[1]]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Refused, and nothing recorded: together and apart; pinned and kept off;
    // five kept apart on four hosts.
    for (body, code) in [
        (
            json!({"name": "x1", "kind": "affinity", "vms": ["web-a", "web-b"]}),
            "rule_contradiction",
        ),
        (
            json!({"name": "x2", "kind": "must_run_on", "vms": ["web-a"], "hosts": [h[3]]}),
            "rule_contradiction",
        ),
    ] {
        c.api
            .post(&rules_path, &body)
            .await
            .assert_problem(409, code);
    }
    let fifth = c.vm("fifth", 3, 1024, "sim.cpu=1").await;
    c.api
        .post(
            &rules_path,
            &json!({"name": "x4", "kind": "anti_affinity", "vms": [a, b, d, e, fifth]}),
        )
        .await
        .assert_problem(409, "rule_infeasible");
    // Malformed.
    for (body, status, code) in [
        (
            json!({"name": "y", "kind": "affinity", "vms": ["web-a"]}),
            422,
            "invalid_rule",
        ),
        (
            json!({"name": "y", "kind": "affinity", "vms": ["web-a", "nope"]}),
            422,
            "unknown_vm",
        ),
        (
            json!({"name": "y", "kind": "must_run_on", "vms": ["web-a"]}),
            422,
            "invalid_rule",
        ),
        (
            json!({"name": "y", "kind": "must_run_on", "vms": ["web-a"], "hosts": ["nope"]}),
            422,
            "unknown_host",
        ),
        (
            json!({"name": "y", "kind": "affinity", "vms": ["web-a", "db"], "hosts": [h[0]]}),
            422,
            "invalid_rule",
        ),
        (
            json!({"name": "y", "kind": "sometimes", "vms": ["web-a", "db"]}),
            422,
            "invalid_body",
        ),
        (
            json!({"name": "y", "kind": "anti_affinity", "vms": [a, "web-a"]}),
            422,
            "invalid_rule",
        ),
        (
            json!({"name": "web-spread", "kind": "affinity", "vms": ["db", "extra"]}),
            409,
            "name_taken",
        ),
    ] {
        c.api
            .post(&rules_path, &body)
            .await
            .assert_problem(status, code);
    }
    assert_eq!(rules(&c, &cl).await.len(), 3);

    // A manual migration that would break a must rule: refused by the `rules` check.
    let check = c
        .api
        .post(
            &format!("/vms/{a}/migrate/check"),
            &json!({"destination_host_id": h[1]}),
        )
        .await;
    assert_eq!(check.status, 200, "{check:?}");
    assert_eq!(check.body["compatible"], false);
    let rc = check.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "rules")
        .unwrap()
        .clone();
    assert_eq!(rc["code"], "rule_violation", "{rc}");
    assert!(
        rc["detail"].as_str().unwrap().contains("web-spread"),
        "{rc}"
    );
    for dest in [&h[1], &h[3]] {
        let r = c
            .api
            .post(
                &format!("/vms/{a}/migrate"),
                &json!({"destination_host_id": dest}),
            )
            .await;
        r.assert_problem(409, "incompatible_destination");
        assert_eq!(r.body["reasons"][0]["code"], "rule_violation", "{r:?}");
    }
    // Without a destination: the best host that keeps every rule (host 2).
    let m = c.api.post(&format!("/vms/{a}/migrate"), &json!({})).await;
    assert_eq!(m.status, 202, "{m:?}");
    assert_eq!(m.body["destination_host_id"], h[2].as_str(), "{m:?}");
    assert_eq!(
        wait_migration(&c.api, m.body["id"].as_str().unwrap()).await["state"],
        "completed"
    );

    // Power-on: a stopped VM whose host a new must rule forbids starts elsewhere.
    let off = c
        .api
        .post(&format!("/vms/{e}/power"), &json!({"action": "off"}))
        .await;
    assert_eq!(off.status, 202, "{off:?}");
    let task = off.body["id"].as_str().unwrap().to_string();
    wait_for("extra to stop", T, || {
        let (api, e, task) = (c.api.clone(), e.clone(), task.clone());
        async move {
            (api.ok(&format!("/vms/{e}")).await["power_state"] == "stopped"
                && api.ok(&format!("/tasks/{task}")).await["state"] == "succeeded")
                .then_some(())
        }
    })
    .await;
    let r = c
        .api
        .post(
            &rules_path,
            &json!({"name": "extra-off-3", "kind": "must_not_run_on", "vms": ["extra"], "hosts": [h[3], h[0]]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let on = c
        .api
        .post(&format!("/vms/{e}/power"), &json!({"action": "on"}))
        .await;
    assert_eq!(on.status, 202, "{on:?}");
    wait_for("extra to run elsewhere", T, || {
        let (api, e) = (c.api.clone(), e.clone());
        async move { (api.ok(&format!("/vms/{e}")).await["power_state"] == "running").then_some(()) }
    })
    .await;
    let now = host_of(&c, &e).await;
    assert!(now == h[1] || now == h[2], "extra runs on {now}");

    // Evacuating host 2 (web-a, db, maybe extra): web-a cannot go to host 1
    // (web-b) or 3 (its rule), so the plan must send it to host 0; db avoids host 1.
    let plan = c
        .api
        .post(
            &format!("/hosts/{}/maintenance", h[2]),
            &json!({"dry_run": true}),
        )
        .await;
    assert_eq!(plan.status, 200, "{plan:?}");
    let dest_of = |vm: &str| -> Value {
        plan.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["vm_id"] == vm)
            .map(|s| s["destination_host_id"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(dest_of(&a), json!(h[0]), "{:?}", plan.body);
    assert_ne!(dest_of(&d), json!(h[1]), "{:?}", plan.body);
    c.enter_maintenance(2, &json!({})).await;
    let m = c.maintenance_ended(2).await;
    assert_eq!(m["state"], "in_maintenance", "{m}");
    assert_eq!(host_of(&c, &a).await, h[0]);
    assert_ne!(host_of(&c, &d).await, h[1]);
    for r in rules(&c, &cl).await {
        assert_eq!(r["violations"], json!([]), "{r}");
    }

    // The same through ferryctl (as the admin).
    let (ok, out, err) = c.ferryctl(&["whoami"]).await;
    assert!(ok && out.contains("(admin), token "), "{out}{err}");
    let (ok, out, err) = c.ferryctl(&["rule", "list", "default"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("web-spread") && out.contains("anti_affinity"),
        "{out}"
    );
    let (ok, _, err) = c
        .ferryctl(&[
            "rule", "create", "default", "pair", "affinity", "--vm", "web-a", "--vm", "web-b",
        ])
        .await;
    assert!(!ok && err.contains("rule_contradiction"), "{err}");
    let (ok, out, err) = c
        .ferryctl(&[
            "rule",
            "create",
            "default",
            "fifth-on-3",
            "should_run_on",
            "--vm",
            "fifth",
            "--host",
            &h[3],
        ])
        .await;
    assert!(
        ok && out.contains("rule fifth-on-3 (should_run_on) created"),
        "{out}{err}"
    );
    let id = out.trim().rsplit(' ').next().unwrap().to_string();
    let (ok, _, err) = c.ferryctl(&["rule", "delete", &id]).await;
    assert!(ok, "{err}");
    c.api
        .get(&format!("/rules/{id}"))
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn balancing_repairs_a_broken_rule_first_even_at_threshold_1() {
    let c = SimCluster::start(3, 10_000, &[]).await;
    let cl = cluster_id(&c).await;
    let a = c.vm("a", 0, 1024, "sim.cpu=1").await;
    let b = c.vm("b", 0, 1024, "sim.cpu=1").await;
    // Manual first (the periodic pass, whenever it comes, only recommends).
    let p = c
        .api
        .patch(
            &format!("/clusters/{cl}"),
            &json!({"drs": {"automation": "manual", "threshold": 1}}),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    // A rule broken when it is made is accepted (it can hold) and shown broken.
    let r = c
        .api
        .post(
            &format!("/clusters/{cl}/rules"),
            &json!({"name": "apart", "kind": "anti_affinity", "vms": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["violations"].as_array().unwrap().len(), 1, "{r:?}");
    let s = c.api.ok(&format!("/clusters/{cl}/drs")).await;
    assert_eq!(s["rule_violations"].as_array().unwrap().len(), 1, "{s}");
    // A dry run plans the repair, at threshold 1 (no move for load at all).
    let dry = c
        .api
        .post(
            &format!("/clusters/{cl}/drs/run"),
            &json!({"dry_run": true}),
        )
        .await;
    assert_eq!(dry.status, 200, "{dry:?}");
    let recs = dry.body["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{dry:?}");
    assert!(
        recs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("repairs a broken must rule"),
        "{dry:?}"
    );
    // The pass recommends it; applied, it repairs the rule.
    let run = c
        .api
        .post(&format!("/clusters/{cl}/drs/run"), &json!({}))
        .await;
    assert_eq!(run.status, 200, "{run:?}");
    assert_eq!(run.body["migrations"], json!([]), "{run:?}");
    let rec = run.body["recommendations"][0]["id"].as_str().unwrap();
    let applied = c
        .api
        .post(&format!("/drs/recommendations/{rec}/apply"), &json!({}))
        .await;
    assert_eq!(applied.status, 202, "{applied:?}");
    assert_eq!(
        wait_migration(&c.api, applied.body["id"].as_str().unwrap()).await["state"],
        "completed"
    );
    assert_ne!(host_of(&c, &a).await, host_of(&c, &b).await);
    let rule = c
        .api
        .ok(&format!("/rules/{}", r.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(rule["violations"], json!([]), "{rule}");
    // Nothing more to do, at threshold 1.
    let again = c
        .api
        .post(
            &format!("/clusters/{cl}/drs/run"),
            &json!({"dry_run": true}),
        )
        .await;
    assert_eq!(again.body["recommendations"], json!([]), "{again:?}");

    // Fully automated: the periodic pass repairs a newly broken rule by itself, at
    // its next evaluation, without waiting for an imbalance to persist.
    let p = c
        .api
        .patch(
            &format!("/clusters/{cl}"),
            &json!({"drs": {"automation": "fully_automated", "interval_s": 10}}),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    let here = host_of(&c, &a).await;
    let r = c
        .api
        .post(
            &format!("/clusters/{cl}/rules"),
            &json!({"name": "a-off", "kind": "must_not_run_on", "vms": ["a"], "hosts": [here]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    wait_for(
        "the periodic pass to move a",
        Duration::from_secs(60),
        || {
            let (api, a, b, here) = (c.api.clone(), a.clone(), b.clone(), here.clone());
            async move {
                let ha = api.ok(&format!("/vms/{a}")).await["host_id"].clone();
                let hb = api.ok(&format!("/vms/{b}")).await["host_id"].clone();
                (ha != here.as_str() && ha != hb && ha.is_string()).then_some(())
            }
        },
    )
    .await;
}
