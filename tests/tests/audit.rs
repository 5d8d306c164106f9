//! The audit trail (issue #13): every change request recorded with who, what,
//! from where, when and how it ended; events carry the actor of the request
//! behind them; `GET /audit` is admin only, paged and filtered; `ferryctl audit`;
//! no secret in the trail or in the control plane's log.

use std::process::Command;
use std::time::Duration;

use ferry_tests::procs::Env;
use ferry_tests::sim::SimCluster;
use ferry_tests::{bin, wait_for};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

async fn token(api: &ferry_tests::rest::Api, name: &str, role: &str) -> (String, String) {
    let r = api
        .post("/tokens", &json!({"name": name, "role": role}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    )
}

fn entries(page: &Value) -> Vec<Value> {
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_change_is_recorded_with_who_what_where_and_how_it_ended() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    let (ops_id, ops_secret) = token(&c.api, "ops", "operator").await;
    let (watcher_id, watcher_secret) = token(&c.api, "watcher", "viewer").await;
    let ops = c.api.with_token(&ops_secret);
    let watcher = c.api.with_token(&watcher_secret);
    let vm = c.vm("audited", 0, 512, "").await;

    // An operator powers it off; a viewer may not power it on; no token at all.
    let off = ops
        .post(&format!("/vms/{vm}/power"), &json!({"action": "off"}))
        .await;
    assert_eq!(off.status, 202, "{off:?}");
    let task = off.body["id"].as_str().unwrap().to_string();
    watcher
        .post(&format!("/vms/{vm}/power"), &json!({"action": "on"}))
        .await
        .assert_problem(403, "forbidden");
    c.api
        .with_token("")
        .post("/clusters", &json!({"name": "nobody"}))
        .await
        .assert_problem(401, "unauthorized");
    // Reads are not changes: not recorded.
    ops.get(&format!("/vms/{vm}")).await;

    // Only an admin reads the trail.
    ops.get("/audit").await.assert_problem(403, "forbidden");
    let all = entries(&c.api.ok("/audit?limit=1000").await);
    assert!(
        all.iter()
            .all(|e| !e["operation"].as_str().unwrap().starts_with("GET ")),
        "a read was recorded"
    );
    // Newest first.
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");

    let power = |who: &str| {
        all.iter()
            .find(|e| e["operation"] == "POST /api/v1/vms/{id}/power" && e["actor"]["name"] == who)
            .unwrap_or_else(|| panic!("no power request by {who}: {all:?}"))
            .clone()
    };
    let by_ops = power("ops");
    assert_eq!(by_ops["actor"]["role"], "operator", "{by_ops}");
    assert_eq!(by_ops["actor"]["token_id"], ops_id.as_str());
    assert_eq!(by_ops["status"], 202);
    assert_eq!(by_ops["outcome"], "succeeded");
    assert_eq!(by_ops["request"], json!({"action": "off"}));
    assert!(by_ops["target_ids"]
        .as_array()
        .unwrap()
        .contains(&json!(vm)));
    // The task it started is a target too (the answer's id).
    assert!(by_ops["target_ids"]
        .as_array()
        .unwrap()
        .contains(&json!(task)));
    assert!(
        by_ops["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{by_ops}"
    );
    let by_watcher = power("watcher");
    assert_eq!(by_watcher["outcome"], "refused");
    assert_eq!(by_watcher["status"], 403);
    assert_eq!(by_watcher["code"], "forbidden");
    let anonymous = all
        .iter()
        .find(|e| e["operation"] == "POST /api/v1/clusters" && e["status"] == 401)
        .expect("the refused anonymous request");
    assert!(anonymous["actor"].is_null(), "{anonymous}");
    assert_eq!(anonymous["code"], "unauthorized");
    // A creation names what it made.
    let created = all
        .iter()
        .find(|e| e["operation"] == "POST /api/v1/vms")
        .expect("the VM's creation");
    assert_eq!(created["actor"]["role"], "admin");
    assert!(created["target_ids"]
        .as_array()
        .unwrap()
        .contains(&json!(vm)));
    assert_eq!(created["request"]["name"], "audited");

    // No secret is in the trail (the tokens' creations are, without them).
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        all.iter()
            .filter(|e| e["operation"] == "POST /api/v1/tokens")
            .count()
            >= 2
    );
    for secret in [&ops_secret, &watcher_secret, &c.api.token] {
        assert!(!text.contains(secret.as_str()), "a secret is in the trail");
    }

    // Filters.
    let mine = entries(&c.api.ok(&format!("/audit?token_id={ops_id}")).await);
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|e| e["actor"]["name"] == "ops"));
    let on_vm = entries(&c.api.ok(&format!("/audit?target_id={vm}")).await);
    assert!(on_vm.len() >= 3, "{on_vm:?}"); // created, on, off (and refused on)
    let refused = entries(&c.api.ok("/audit?outcome=refused").await);
    assert!(refused.len() >= 2);
    assert!(refused.iter().all(|e| e["outcome"] == "refused"));
    let route = entries(
        &c.api
            .ok("/audit?route=%2Fapi%2Fv1%2Fvms%2F%7Bid%7D%2Fpower")
            .await,
    );
    assert!(route.len() >= 3);
    c.api
        .get("/audit?outcome=maybe")
        .await
        .assert_problem(400, "invalid_query");
    // Pages back in time, each entry once.
    let first = c.api.ok("/audit?limit=2").await;
    let next = first["next_cursor"].as_str().unwrap();
    let second = c.api.ok(&format!("/audit?limit=2&cursor={next}")).await;
    assert!(
        second["items"][0]["seq"].as_i64().unwrap() < first["items"][1]["seq"].as_i64().unwrap()
    );

    // Events carry the actor: the request's own, and those of the power task it
    // started (recorded later, by that task).
    wait_for("the power-off task to end", T, || {
        let (api, task) = (c.api.clone(), task.clone());
        async move { (api.ok(&format!("/tasks/{task}")).await["state"] == "succeeded").then_some(()) }
    })
    .await;
    let events = entries(&c.api.ok("/events?newest_first=true&limit=1000").await);
    let of_task: Vec<&Value> = events
        .iter()
        .filter(|e| e["task_id"] == task.as_str())
        .collect();
    assert!(!of_task.is_empty(), "{events:?}");
    for e in &of_task {
        assert_eq!(e["actor"]["name"], "ops", "{e}");
        assert_eq!(e["actor"]["role"], "operator", "{e}");
    }
    // What the system does on its own has no actor (a host joining).
    let joined = events
        .iter()
        .find(|e| e["kind"] == "host.joined")
        .expect("a host.joined event");
    assert!(joined.get("actor").is_none(), "{joined}");
    // And the token the viewer holds is still its own.
    assert_eq!(watcher.ok("/whoami").await["token_id"], watcher_id.as_str());

    // ferryctl audit: the same trail, filtered by token name (run off the
    // runtime: the control plane serves on it).
    let ctl = |args: &'static [&'static str]| {
        let (url, token) = (c.api.base.clone(), c.api.token.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(bin("ferryctl"))
                .args(args)
                .env("FERRY_URL", url)
                .env("FERRY_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let out = ctl(&["-o", "json", "audit", "--by", "ops"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), mine.len());
    let table = ctl(&["audit", "--vm", "audited", "--outcome", "refused"])
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("watcher"), "{table}");
    assert!(table.contains("forbidden"), "{table}");
    assert!(!table.contains("ops "), "{table}");
}

/// The control plane's own log (a process, at debug for the control plane) holds
/// no token secret and no event-stream ticket.
#[tokio::test]
async fn no_secret_reaches_the_log() {
    let env = Env::new(0, &[]).await;
    let api = env.api();
    let (_, secret) = token(&api, "logged", "operator").await;
    let op = api.with_token(&secret);
    op.post("/clusters", &json!({"name": "by-operator"})).await;
    let ticket = api.post("/events/tickets", &json!({})).await;
    assert_eq!(ticket.status, 201, "{ticket:?}");
    let ticket = ticket.body["ticket"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/api/v1/events/stream?ticket={ticket}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    let log = env.cp.proc.log_text();
    assert!(log.contains("token logged"), "the log is empty?\n{log}");
    for s in [&secret, &ticket, &env.cp.admin_token()] {
        assert!(!log.contains(s.as_str()), "a secret is in the log");
    }
    let trail = api.ok("/audit?limit=1000").await.to_string();
    for s in [&secret, &ticket] {
        assert!(!trail.contains(s.as_str()), "a secret is in the trail");
    }
}
