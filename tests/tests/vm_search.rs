//! `GET /vms` filtered the way a dashboard asks (fast tier, sim hosts): a name
//! search in any case with `%` and `_` taken literally, a power state, both with
//! the host filter and paging; bad values refused.

use ferry_tests::sim::SimCluster;
use ferry_tests::wait_for;
use serde_json::{json, Value};

fn names(page: &Value) -> Vec<String> {
    let mut n: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn vms_are_found_by_name_state_and_host_page_by_page() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    for (name, host) in [
        ("web-1", 0),
        ("web-2", 1),
        ("Web_3", 0),
        ("db-1", 1),
        ("web100", 0),
    ] {
        c.vm(name, host, 512, "").await;
    }
    let stopped = c.api.ok("/vms?name=db-1").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let off = c
        .api
        .post(&format!("/vms/{stopped}/power"), &json!({"action": "off"}))
        .await;
    assert_eq!(off.status, 202, "{off:?}");
    wait_for("db-1 to stop", std::time::Duration::from_secs(30), || {
        let (api, id) = (c.api.clone(), stopped.clone());
        async move { (api.ok(&format!("/vms/{id}")).await["power_state"] == "stopped").then_some(()) }
    })
    .await;

    assert_eq!(
        names(&c.api.ok("/vms?q=WEB").await),
        ["Web_3", "web-1", "web-2", "web100"]
    );
    assert_eq!(
        names(&c.api.ok("/vms?q=_").await),
        ["Web_3"],
        "_ is literal"
    );
    assert_eq!(
        names(&c.api.ok("/vms?q=%25").await),
        Vec::<String>::new(),
        "% is literal"
    );
    assert_eq!(names(&c.api.ok("/vms?power_state=stopped").await), ["db-1"]);
    assert_eq!(
        names(
            &c.api
                .ok(&format!(
                    "/vms?q=web&power_state=running&host_id={}",
                    c.host(0)
                ))
                .await
        ),
        ["Web_3", "web-1", "web100"]
    );
    // Page by page, the same set.
    let mut seen = Vec::new();
    let mut path = "/vms?q=web&limit=1".to_string();
    loop {
        let page = c.api.ok(&path).await;
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(cur) => path = format!("/vms?q=web&limit=1&cursor={cur}"),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["Web_3", "web-1", "web-2", "web100"]);
    // Bad values.
    c.api
        .get("/vms?power_state=sleeping")
        .await
        .assert_problem(400, "invalid_query");
    c.api
        .get("/vms?q=")
        .await
        .assert_problem(400, "invalid_query");
    c.api
        .get(&format!("/vms?q={}", "x".repeat(64)))
        .await
        .assert_problem(400, "invalid_query");
}
