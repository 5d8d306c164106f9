//! The list queries the dashboard is built on (fast tier, sim hosts): VMs sorted by
//! name, memory or creation time in either direction, page by page with cursors
//! that belong to their order; tasks filtered by state, kind and target; the newest
//! events first; migrations still under way. Bad values are refused with 400.

use std::time::Duration;

use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::wait_migration;
use ferry_tests::wait_for;
use serde_json::{json, Value};

/// Every page of `path` (which has no `cursor`), two at a time.
async fn all_pages(c: &SimCluster, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = match &cursor {
            Some(cur) => format!("{path}&limit=2&cursor={cur}"),
            None => format!("{path}&limit=2"),
        };
        let page = c.api.ok(&p).await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cur) => cursor = Some(cur.to_string()),
            None => return out,
        }
    }
}

fn field<'a>(items: &'a [Value], f: &str) -> Vec<&'a Value> {
    items.iter().map(|v| &v[f]).collect()
}

#[tokio::test]
async fn vm_sorting_task_filters_newest_events_and_active_migrations() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    let mut ids = Vec::new();
    for (name, mib) in [
        ("charlie", 2048),
        ("alpha", 3072),
        ("echo", 512),
        ("bravo", 1024),
        ("delta", 1024),
    ] {
        ids.push(c.vm(name, 0, mib, "").await);
    }

    let by = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    let asc = all_pages(&c, "/vms?sort=name").await;
    assert_eq!(by(&asc), ["alpha", "bravo", "charlie", "delta", "echo"]);
    let desc = all_pages(&c, "/vms?sort=-name").await;
    assert_eq!(by(&desc), ["echo", "delta", "charlie", "bravo", "alpha"]);
    let mem = all_pages(&c, "/vms?sort=memory_mib").await;
    assert_eq!(
        field(&mem, "memory_mib"),
        [
            &json!(512),
            &json!(1024),
            &json!(1024),
            &json!(2048),
            &json!(3072)
        ]
    );
    let mem_desc = all_pages(&c, "/vms?sort=-memory_mib").await;
    assert_eq!(
        field(&mem_desc, "memory_mib"),
        [
            &json!(3072),
            &json!(2048),
            &json!(1024),
            &json!(1024),
            &json!(512)
        ]
    );
    // The two 1024 MiB VMs tie: both appear once across the pages.
    let mut tied = by(&mem_desc)[2..4].to_vec();
    tied.sort();
    assert_eq!(tied, ["bravo", "delta"]);
    // Created in the order above.
    assert_eq!(
        by(&all_pages(&c, "/vms?sort=created_at").await),
        ["charlie", "alpha", "echo", "bravo", "delta"]
    );
    assert_eq!(
        by(&all_pages(&c, "/vms?sort=-created_at&q=a").await),
        ["delta", "bravo", "alpha", "charlie"]
    );
    // A cursor of one order is not one of another; unknown orders are refused.
    let name_cursor = c.api.ok("/vms?sort=name&limit=1").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    c.api
        .get(&format!("/vms?sort=memory_mib&cursor={name_cursor}"))
        .await
        .assert_problem(400, "invalid_cursor");
    c.api
        .get(&format!("/vms?cursor={name_cursor}"))
        .await
        .assert_problem(400, "invalid_cursor");
    c.api
        .get("/vms?sort=vcpus")
        .await
        .assert_problem(400, "invalid_query");

    // Tasks: the five power-ons, then a failed one.
    let all_tasks = c.api.ok("/tasks?limit=100").await;
    assert_eq!(all_tasks["items"].as_array().unwrap().len(), 5);
    let on = c.api.ok("/tasks?kind=vm.power_on&state=succeeded").await;
    assert_eq!(on["items"].as_array().unwrap().len(), 5);
    let mine = c.api.ok(&format!("/tasks?target_id={}", ids[2])).await;
    let mine = mine["items"].as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["target"]["id"], ids[2].as_str());
    assert_eq!(
        c.api.ok("/tasks?state=failed").await["items"],
        json!([]),
        "no task failed"
    );
    let paged = all_pages(&c, "/tasks?kind=vm.power_on").await;
    assert_eq!(paged.len(), 5);
    c.api
        .get("/tasks?state=sleeping")
        .await
        .assert_problem(400, "invalid_query");
    c.api
        .get("/tasks?kind=")
        .await
        .assert_problem(400, "invalid_query");

    // Events, newest first, and paging back in time.
    let newest = c.api.ok("/events?newest_first=true&limit=3").await;
    let seqs: Vec<i64> = newest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let latest = c.api.ok("/events?limit=1000").await;
    let max = latest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(seqs[0], max);
    let cur = newest["next_cursor"].as_str().unwrap();
    let older = c
        .api
        .ok(&format!("/events?newest_first=true&limit=3&cursor={cur}"))
        .await;
    assert_eq!(
        older["items"][0]["seq"].as_i64().unwrap(),
        seqs[2] - 1,
        "the next page starts just before the last one"
    );
    // `since` bounds the newest-first pages from below.
    let recent = c.api.ok("/events?newest_first=true&since=3").await;
    let recent: Vec<i64> = recent["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(recent.last(), Some(&4), "{recent:?}");
    assert!(recent.windows(2).all(|w| w[0] > w[1]), "{recent:?}");

    // Migrations still under way, then none.
    let slow = c.vm("mover", 1, 1024, "sim.dirty_mibps=5").await;
    let shaped = c
        .api
        .post(
            &format!("/vms/{slow}/migrate"),
            &json!({"destination_host_id": c.host(0), "policy": {"max_bandwidth_mbps": 2000}}),
        )
        .await;
    assert_eq!(shaped.status, 202, "{shaped:?}");
    let mid = shaped.body["id"].as_str().unwrap().to_string();
    let active = c.api.ok("/migrations?active=true").await;
    assert_eq!(active["items"][0]["id"], mid.as_str(), "{active}");
    let done = wait_migration(&c.api, &mid).await;
    assert_eq!(done["state"], "completed");
    wait_for("no migration under way", Duration::from_secs(30), || {
        let api = c.api.clone();
        async move { (api.ok("/migrations?active=true").await["items"] == json!([])).then_some(()) }
    })
    .await;
    assert_eq!(
        c.api.ok("/migrations?active=false").await["items"][0]["id"],
        mid.as_str()
    );
}
