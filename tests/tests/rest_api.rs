//! Every REST resource, and every error path: unknown ids, malformed JSON, wrong
//! types, unknown enum values, out-of-range numbers, missing or wrong tokens,
//! roles too weak. Errors are problem+json with a stable code and change nothing.

use std::time::Duration;

use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::rest::Api;
use reqwest::Method;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const NOPE: &str = "00000000-0000-4000-8000-000000000000";

/// An environment with one real agent (a datastore "shared" and network "vmnet").
async fn env_with_host() -> (Env, Value) {
    let mut env = Env::new(1, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    let host = env.wait_host_state("host-a", "connected", T).await;
    (env, host)
}

async fn token(api: &Api, name: &str, role: &str) -> String {
    let r = api
        .post("/tokens", &json!({"name": name, "role": role}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["secret"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn health_needs_no_token_everything_else_does() {
    let env = Env::new(0, &[]).await;
    let api = env.api();
    let r = api.raw(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
    assert!(!r.body["version"].as_str().unwrap().is_empty());

    for path in [
        "/hosts",
        "/vms",
        "/clusters",
        "/datastores",
        "/networks",
        "/tasks",
        "/events",
        "/tokens",
        "/openapi.json",
    ] {
        api.raw(Method::GET, path, None, None)
            .await
            .assert_problem(401, "unauthorized");
        api.raw(Method::GET, path, None, Some("ferry_wrong"))
            .await
            .assert_problem(401, "unauthorized");
    }
    // A malformed header is a 401 too, not a 400 or 500.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/hosts", env.cp.http))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The admin token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.cp.data_dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn roles_are_enforced() {
    let env = Env::new(0, &[]).await;
    let admin = env.api();
    let viewer = admin.with_token(&token(&admin, "viewer-1", "viewer").await);
    let operator = admin.with_token(&token(&admin, "operator-1", "operator").await);

    // Viewers and operators read.
    assert_eq!(viewer.get("/hosts").await.status, 200);
    assert_eq!(operator.get("/clusters").await.status, 200);
    // Inventory changes and tokens are the admin's.
    viewer
        .post("/clusters", &json!({"name": "c1"}))
        .await
        .assert_problem(403, "forbidden");
    operator
        .post("/clusters", &json!({"name": "c1"}))
        .await
        .assert_problem(403, "forbidden");
    viewer
        .post("/vms", &json!({"name": "v", "vcpus": 1, "memory_mib": 64}))
        .await
        .assert_problem(403, "forbidden");
    viewer.get("/tokens").await.assert_problem(403, "forbidden");
    operator
        .post("/tokens", &json!({"name": "x", "role": "admin"}))
        .await
        .assert_problem(403, "forbidden");
    // Nothing was created by the refused calls.
    assert_eq!(
        admin.ok("/clusters").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(admin.ok("/vms").await["items"].as_array().unwrap().len(), 0);
    assert_eq!(
        admin.post("/clusters", &json!({"name": "c1"})).await.status,
        201
    );
}

#[tokio::test]
async fn tokens_create_list_delete() {
    let env = Env::new(0, &[]).await;
    let admin = env.api();
    let r = admin
        .post("/tokens", &json!({"name": "ci", "role": "operator"}))
        .await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_string();
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert_eq!(r.body["role"], "operator");

    let list = admin.ok("/tokens").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "bootstrap admin + ci: {list}");
    assert!(
        items.iter().all(|t| t.get("secret").is_none()),
        "secrets are never listed"
    );

    let ci = admin.with_token(&secret);
    assert_eq!(ci.get("/hosts").await.status, 200);
    assert_eq!(admin.delete(&format!("/tokens/{id}")).await.status, 204);
    ci.get("/hosts").await.assert_problem(401, "unauthorized");
    admin
        .delete(&format!("/tokens/{id}"))
        .await
        .assert_problem(404, "not_found");
    admin
        .delete("/tokens/not-a-uuid")
        .await
        .assert_problem(400, "invalid_id");
    admin
        .post("/tokens", &json!({"name": "x", "role": "root"}))
        .await
        .assert_problem(422, "invalid_body");
    admin
        .post("/tokens", &json!({"name": "bad name!", "role": "viewer"}))
        .await
        .assert_problem(422, "invalid_name");
    // The admin cannot lock itself out by deleting its own token.
    let me = items
        .iter()
        .find(|t| t["name"] == "bootstrap-admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin
        .delete(&format!("/tokens/{me}"))
        .await
        .assert_problem(409, "token_in_use");
}

#[tokio::test]
async fn clusters_crud_and_errors() {
    let env = Env::new(0, &[]).await;
    let api = env.api();
    let r = api
        .post("/clusters", &json!({"name": "prod", "cpu_baseline": "Skylake-Server", "drs": {"automation": "fully_automated", "threshold": 4}}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["drs"]["automation"], "fully_automated");
    assert_eq!(r.body["drs"]["threshold"], 4);
    assert_eq!(r.body["drs"]["interval_s"], 300);
    assert_eq!(r.body["cpu_baseline"], "Skylake-Server");

    assert_eq!(api.ok(&format!("/clusters/{id}")).await["name"], "prod");
    assert_eq!(
        api.ok("/clusters?name=prod").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let p = api
        .patch(
            &format!("/clusters/{id}"),
            &json!({"drs": {"threshold": 2}, "cpu_baseline": null}),
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.body["drs"]["threshold"], 2);
    assert_eq!(
        p.body["drs"]["automation"], "fully_automated",
        "untouched fields stay"
    );
    assert_eq!(p.body["cpu_baseline"], Value::Null);

    api.post("/clusters", &json!({"name": "prod"}))
        .await
        .assert_problem(409, "duplicate_name");
    api.post("/clusters", &json!({"name": ""}))
        .await
        .assert_problem(422, "invalid_name");
    api.post(
        "/clusters",
        &json!({"name": "x", "drs": {"automation": "sometimes"}}),
    )
    .await
    .assert_problem(422, "invalid_body");
    api.post("/clusters", &json!({"name": "x", "drs": {"threshold": 9}}))
        .await
        .assert_problem(422, "out_of_range");
    api.post(
        "/clusters",
        &json!({"name": "x", "drs": {"threshold": 300}}),
    )
    .await
    .assert_problem(422, "invalid_body");
    api.post("/clusters", &json!({"name": "x", "colour": "blue"}))
        .await
        .assert_problem(422, "invalid_body");
    api.post("/clusters", &json!({"name": 5}))
        .await
        .assert_problem(422, "invalid_body");
    api.patch(
        &format!("/clusters/{id}"),
        &json!({"drs": {"interval_s": 1}}),
    )
    .await
    .assert_problem(422, "out_of_range");
    api.patch(&format!("/clusters/{NOPE}"), &json!({}))
        .await
        .assert_problem(404, "not_found");
    api.get(&format!("/clusters/{NOPE}"))
        .await
        .assert_problem(404, "not_found");
    api.get("/clusters/prod")
        .await
        .assert_problem(400, "invalid_id");
    let bad = api
        .raw(
            Method::POST,
            "/clusters",
            Some(("application/json", "{\"name\": ")),
            Some(&api.token),
        )
        .await;
    bad.assert_problem(400, "invalid_json");
    let text = api
        .raw(
            Method::POST,
            "/clusters",
            Some(("text/plain", "{}")),
            Some(&api.token),
        )
        .await;
    text.assert_problem(415, "unsupported_media_type");
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 100));
    let r = api
        .raw(
            Method::POST,
            "/clusters",
            Some(("application/json", &huge)),
            Some(&api.token),
        )
        .await;
    r.assert_problem(413, "payload_too_large");
    // Only the one cluster exists after all that.
    assert_eq!(
        api.ok("/clusters").await["items"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn vms_crud_validation_and_pagination() {
    let (env, host) = env_with_host().await;
    let api = env.api();
    let host_id = host["id"].as_str().unwrap();
    let ds = api.ok("/datastores?name=shared").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let net = api.ok("/networks?name=vmnet").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let spec = |name: &str| {
        json!({
            "name": name, "host_id": host_id, "vcpus": 2, "memory_mib": 512,
            "disks": [{"datastore_id": ds, "size_bytes": 1073741824u64}],
            "nics": [{"network_id": net}, {"network_id": net}],
            "boot": {"kernel": "/guest/vmlinuz", "initrd": "/guest/initrd.img", "cmdline": "console=ttyS0"},
            "migration_policy": {"max_downtime_ms": 50, "mode": "auto"}
        })
    };
    let r = api.post("/vms", &spec("web-1")).await;
    assert_eq!(r.status, 201, "{r:?}");
    let vm = r.body.clone();
    let id = vm["id"].as_str().unwrap().to_string();
    assert_eq!(vm["power_state"], "stopped");
    assert_eq!(vm["host_id"], host_id);
    assert_eq!(vm["cluster_id"], host["cluster_id"]);
    assert_eq!(vm["cpu_model"], "qemu64");
    assert_eq!(vm["machine_type"], "q35");
    assert_eq!(vm["disks"][0]["path"], "web-1-0.qcow2");
    let macs: Vec<&str> = vm["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["mac"].as_str().unwrap())
        .collect();
    assert_eq!(macs.len(), 2);
    assert_ne!(macs[0], macs[1], "MACs are unique");
    assert!(macs
        .iter()
        .all(|m| m.starts_with("52:54:00:") && m.len() == 17));
    assert_eq!(vm["migration_policy"]["max_downtime_ms"], 50);
    assert_eq!(vm["migration_policy"]["allow_throttle"], true);
    assert_eq!(api.ok(&format!("/vms/{id}")).await["name"], "web-1");
    assert_eq!(api.ok(&format!("/hosts/{host_id}")).await["vm_count"], 1);

    // Each bad input: its own code, and nothing created.
    let mut bad = spec("web-2");
    bad["disks"][0]["datastore_id"] = json!(NOPE);
    api.post("/vms", &bad)
        .await
        .assert_problem(422, "unknown_datastore");
    let mut bad = spec("web-2");
    bad["nics"][0]["network_id"] = json!(NOPE);
    api.post("/vms", &bad)
        .await
        .assert_problem(422, "unknown_network");
    let mut bad = spec("web-2");
    bad["host_id"] = json!(NOPE);
    api.post("/vms", &bad)
        .await
        .assert_problem(422, "unknown_host");
    let mut bad = spec("web-2");
    bad["cluster_id"] = json!(NOPE);
    bad.as_object_mut().unwrap().remove("host_id");
    api.post("/vms", &bad)
        .await
        .assert_problem(422, "unknown_cluster");
    api.post("/vms", &spec("web-1"))
        .await
        .assert_problem(409, "duplicate_name");
    for (field, value, code) in [
        ("vcpus", json!(0), "out_of_range"),
        ("vcpus", json!(100000), "out_of_range"),
        ("vcpus", json!(-1), "invalid_body"),
        ("vcpus", json!("two"), "invalid_body"),
        ("memory_mib", json!(1), "out_of_range"),
        ("name", json!("no/slashes"), "invalid_name"),
        ("boot", json!({"disk": 3}), "invalid_boot"),
        ("boot", json!({"floppy": true}), "invalid_body"),
        (
            "migration_policy",
            json!({"mode": "teleport"}),
            "invalid_body",
        ),
        (
            "migration_policy",
            json!({"max_downtime_ms": 0}),
            "out_of_range",
        ),
        (
            "nics",
            json!([{"network_id": "not-a-uuid"}]),
            "invalid_body",
        ),
    ] {
        let mut b = spec("web-2");
        b[field] = value.clone();
        api.post("/vms", &b).await.assert_problem(422, code);
    }
    let mut missing = spec("web-2");
    missing.as_object_mut().unwrap().remove("vcpus");
    api.post("/vms", &missing)
        .await
        .assert_problem(422, "invalid_body");
    assert_eq!(
        api.ok("/vms").await["items"].as_array().unwrap().len(),
        1,
        "bad input creates nothing"
    );

    // A VM with no host: placement picks the connected host that fits.
    let r = api
        .post(
            "/vms",
            &json!({"name": "db-1", "vcpus": 1, "memory_mib": 256}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["host_id"], host_id);
    for n in 2..=5 {
        assert_eq!(
            api.post(
                "/vms",
                &json!({"name": format!("db-{n}"), "vcpus": 1, "memory_mib": 64})
            )
            .await
            .status,
            201
        );
    }

    // Pagination walks every VM exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/vms?limit=2&cursor={c}"),
            None => "/vms?limit=2".to_string(),
        };
        let page = api.ok(&path).await;
        for v in page["items"].as_array().unwrap() {
            seen.push(v["name"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["db-1", "db-2", "db-3", "db-4", "db-5", "web-1"]);
    assert_eq!(
        api.ok(&format!("/vms?host_id={host_id}")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(api.ok("/vms?name=db-3").await["items"][0]["name"], "db-3");
    api.get("/vms?limit=0")
        .await
        .assert_problem(400, "out_of_range");
    api.get("/vms?limit=5000")
        .await
        .assert_problem(400, "out_of_range");
    api.get("/vms?limit=abc")
        .await
        .assert_problem(400, "invalid_query");
    api.get("/vms?cursor=garbage")
        .await
        .assert_problem(400, "invalid_cursor");
    api.get("/vms?host_id=garbage")
        .await
        .assert_problem(400, "invalid_query");

    // Delete.
    assert_eq!(api.delete(&format!("/vms/{id}")).await.status, 204);
    api.get(&format!("/vms/{id}"))
        .await
        .assert_problem(404, "not_found");
    api.delete(&format!("/vms/{id}"))
        .await
        .assert_problem(404, "not_found");
    api.get("/vms/123").await.assert_problem(400, "invalid_id");
    let events = api.ok("/events?kind=vm.").await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "vm.created").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "vm.deleted").count(), 1);
}

#[tokio::test]
async fn hosts_datastores_networks_tasks_read_and_404() {
    let (env, host) = env_with_host().await;
    let api = env.api();
    let host_id = host["id"].as_str().unwrap();
    assert_eq!(api.ok(&format!("/hosts/{host_id}")).await["name"], "host-a");
    assert_eq!(
        api.ok(&format!(
            "/hosts?cluster_id={}",
            host["cluster_id"].as_str().unwrap()
        ))
        .await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    api.get(&format!("/hosts/{NOPE}"))
        .await
        .assert_problem(404, "not_found");
    api.get("/hosts/xyz")
        .await
        .assert_problem(400, "invalid_id");

    let ds = api.ok("/datastores").await;
    let ds_id = ds["items"][0]["id"].as_str().unwrap();
    assert!(api.ok(&format!("/datastores/{ds_id}")).await["host_ids"]
        .as_array()
        .unwrap()
        .contains(&json!(host_id)));
    api.get(&format!("/datastores/{NOPE}"))
        .await
        .assert_problem(404, "not_found");

    let net_id = api.ok("/networks").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.ok(&format!("/networks/{net_id}")).await["name"],
        "vmnet"
    );
    api.get(&format!("/networks/{NOPE}"))
        .await
        .assert_problem(404, "not_found");

    let tasks = api.ok("/tasks").await;
    assert!(tasks["items"].is_array());
    api.get(&format!("/tasks/{NOPE}"))
        .await
        .assert_problem(404, "not_found");
    api.get("/tasks?cursor=nope")
        .await
        .assert_problem(400, "invalid_cursor");

    // Unknown paths and methods are problem+json too.
    api.get("/nothing-here")
        .await
        .assert_problem(404, "not_found");
    api.raw(Method::PUT, "/hosts", None, Some(&api.token))
        .await
        .assert_problem(405, "method_not_allowed");
}

#[tokio::test]
async fn events_list_since_and_stream() {
    let env = Env::new(0, &[]).await;
    let api = env.api();
    assert_eq!(
        api.post("/clusters", &json!({"name": "first"}))
            .await
            .status,
        201
    );
    let all = api.ok("/events").await;
    let first_seq = all["items"][0]["seq"].as_i64().unwrap();
    api.get("/events?since=-1")
        .await
        .assert_problem(400, "out_of_range");

    // The stream replays what came after `since`, then delivers new events live.
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/events/stream?since={}",
            env.cp.http,
            first_seq - 1
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = Box::pin(resp.bytes_stream());
    let mut text = String::new();
    // The replay first; once it has come the stream is live: a new event follows.
    read_until(&mut body, &mut text, "cluster first created").await;
    assert_eq!(
        api.post("/clusters", &json!({"name": "second"}))
            .await
            .status,
        201
    );
    read_until(&mut body, &mut text, "cluster second created").await;
    assert_eq!(
        text.matches("event: cluster.created").count(),
        2,
        "each event exactly once: {text}"
    );

    let after = api.ok(&format!("/events?since={first_seq}")).await;
    assert_eq!(after["items"][0]["message"], "cluster second created");
}

/// Reads an event stream into `text` until `what` has come (within `T`).
async fn read_until<S, B, E>(body: &mut S, text: &mut String, what: &str)
where
    S: futures::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures::StreamExt;
    tokio::time::timeout(T, async {
        while !text.contains(what) {
            match body.next().await {
                Some(Ok(chunk)) => text.push_str(&String::from_utf8_lossy(chunk.as_ref())),
                _ => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what:?} on the stream within the deadline: {text}"));
    assert!(
        text.contains(what),
        "the stream ended before {what:?}: {text}"
    );
}

#[tokio::test]
async fn openapi_spec_matches_the_routes() {
    let env = Env::new(0, &[]).await;
    let spec = env.api().ok("/openapi.json").await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/health", &["get"][..]),
        ("/api/v1/hosts", &["get"]),
        ("/api/v1/hosts/{id}", &["get"]),
        ("/api/v1/hosts/{id}/maintenance", &["get", "post", "delete"]),
        ("/api/v1/hosts/{id}/maintenance/cancel", &["post"]),
        ("/api/v1/clusters", &["get", "post"]),
        ("/api/v1/clusters/{id}", &["get", "patch"]),
        ("/api/v1/clusters/{id}/drs", &["get"]),
        ("/api/v1/clusters/{id}/drs/run", &["post"]),
        ("/api/v1/clusters/{id}/drs/recommendations", &["get"]),
        ("/api/v1/drs/recommendations/{id}/apply", &["post"]),
        ("/api/v1/drs/recommendations/{id}/dismiss", &["post"]),
        ("/api/v1/datastores", &["get"]),
        ("/api/v1/datastores/{id}", &["get"]),
        ("/api/v1/networks", &["get"]),
        ("/api/v1/networks/{id}", &["get"]),
        ("/api/v1/vms", &["get", "post"]),
        ("/api/v1/vms/{id}", &["get", "patch", "delete"]),
        ("/api/v1/vms/{id}/power", &["post"]),
        ("/api/v1/vms/{id}/console", &["get"]),
        ("/api/v1/vms/{id}/migrate", &["post"]),
        ("/api/v1/vms/{id}/migrate/check", &["post"]),
        ("/api/v1/migrations", &["get"]),
        ("/api/v1/migrations/{id}", &["get"]),
        ("/api/v1/migrations/{id}/cancel", &["post"]),
        ("/api/v1/tasks", &["get"]),
        ("/api/v1/tasks/{id}", &["get"]),
        ("/api/v1/events", &["get"]),
        ("/api/v1/events/stream", &["get"]),
        ("/api/v1/tokens", &["get", "post"]),
        ("/api/v1/tokens/{id}", &["delete"]),
        ("/api/v1/clusters/{id}/rules", &["get", "post"]),
        ("/api/v1/rules/{id}", &["get", "delete"]),
        ("/api/v1/schedules", &["get", "post"]),
        ("/api/v1/schedules/{id}", &["get", "patch"]),
        ("/api/v1/schedules/{id}/cancel", &["post"]),
        ("/api/v1/whoami", &["get"]),
        ("/api/v1/events/tickets", &["post"]),
        ("/api/v1/problems", &["get"]),
        ("/api/v1/problems/{code}", &["get"]),
        ("/api/v1/audit", &["get"]),
    ] {
        let p = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the spec"));
        for m in methods {
            assert!(p.get(*m).is_some(), "{m} {path} missing from the spec");
        }
    }
    assert_eq!(
        paths.len(),
        41,
        "the spec lists a route the server does not have (or the reverse)"
    );
    // Every documented operation answers (not 404/405) on the server.
    let api = env.api();
    for (path, ops) in paths {
        if path.contains('{') || path.ends_with("/stream") || ops.get("get").is_none() {
            continue;
        }
        let r = api.get(path.trim_start_matches("/api/v1")).await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
    }
    let ids: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "operation ids are unique: {ids:?}");
}

#[tokio::test]
async fn whoami_and_event_stream_tickets() {
    let env = Env::new(0, &[]).await;
    let admin = env.api();
    let me = admin.ok("/whoami").await;
    assert_eq!(me["role"], "admin", "{me}");
    assert!(me["name"].as_str().is_some_and(|n| !n.is_empty()), "{me}");
    let r = admin
        .post("/tokens", &json!({"name": "watcher", "role": "viewer"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let (viewer_id, secret) = (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    );
    let viewer = admin.with_token(&secret);
    let me = viewer.ok("/whoami").await;
    assert_eq!(
        (
            me["name"].as_str(),
            me["role"].as_str(),
            me["token_id"].as_str()
        ),
        (Some("watcher"), Some("viewer"), Some(viewer_id.as_str()))
    );

    // A ticket opens the stream without the header, once.
    let open = |ticket: String| {
        let url = format!("{}/api/v1/events/stream?ticket={ticket}", admin.base);
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("stream request");
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (r.status().as_u16(), ct)
        }
    };
    let t = viewer.post("/events/tickets", &json!({})).await;
    assert_eq!(t.status, 201, "{t:?}");
    let ticket = t.body["ticket"].as_str().unwrap().to_string();
    assert!(t.body["expires_at"].is_string());
    let (status, ct) = open(ticket.clone()).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    assert_eq!(open(ticket).await.0, 401, "a ticket works once");
    assert_eq!(open("fyst_nope".into()).await.0, 401);
    let bare = admin.raw(Method::GET, "/events/stream", None, None).await;
    bare.assert_problem(401, "unauthorized");
    // A ticket is for the stream only.
    let t = viewer.post("/events/tickets", &json!({})).await;
    let ticket = t.body["ticket"].as_str().unwrap().to_string();
    admin
        .raw(Method::GET, &format!("/hosts?ticket={ticket}"), None, None)
        .await
        .assert_problem(401, "unauthorized");
    // Deleting the token voids its unused tickets.
    assert_eq!(
        admin.delete(&format!("/tokens/{viewer_id}")).await.status,
        204
    );
    assert_eq!(open(ticket).await.0, 401);
    viewer
        .get("/whoami")
        .await
        .assert_problem(401, "unauthorized");
}
