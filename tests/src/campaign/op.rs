//! A round's operation, run beside the fault: a migration (cancelled after a
//! while, or not) or a power cycle, followed through outages of the control
//! plane until it ends.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Op, SETTLE};

/// Runs `op` on `vm_id`; says what became of it.
pub(super) async fn run_op(
    http: reqwest::Client,
    base: String,
    token: String,
    vm_id: String,
    dst_id: String,
    op: Op,
    cancel_after: Duration,
) -> String {
    let post = |path: String, body: Value| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{base}/api/v1{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let get = |path: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let r = http
                .get(format!("{base}/api/v1{path}"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())?;
            r.json::<Value>().await.ok()
        }
    };
    // Follows `path` until its `state` is one of `ends`, through outages.
    let follow = |path: String, ends: &'static [&'static str]| async move {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if let Some(v) = get(path.clone()).await {
                if let Some(s) = v["state"].as_str().filter(|s| ends.contains(s)) {
                    return s.to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        "unfinished".to_string()
    };
    match op {
        Op::Migrate | Op::MigrateThenCancel => {
            let Some((status, body)) = post(
                format!("/vms/{vm_id}/migrate"),
                json!({"destination_host_id": dst_id}),
            )
            .await
            else {
                return "not started: no answer".into();
            };
            if status != 202 {
                return format!("not started: {status} {}", body["code"]);
            }
            let mid = body["id"].as_str().unwrap_or_default().to_string();
            if op == Op::MigrateThenCancel {
                tokio::time::sleep(cancel_after).await;
                // Refused when the move is past its point of no return or over:
                // what became of it is read below either way.
                let _ = post(format!("/migrations/{mid}/cancel"), json!({})).await;
            }
            follow(
                format!("/migrations/{mid}"),
                &["completed", "failed", "cancelled"],
            )
            .await
        }
        Op::PowerOffOn => {
            let mut out = Vec::new();
            for action in ["off", "on"] {
                let Some((status, body)) =
                    post(format!("/vms/{vm_id}/power"), json!({"action": action})).await
                else {
                    out.push(format!("{action}: no answer"));
                    continue;
                };
                if status != 202 {
                    out.push(format!("{action}: {status} {}", body["code"]));
                    continue;
                }
                let task = body["id"].as_str().unwrap_or_default().to_string();
                let end = follow(
                    format!("/tasks/{task}"),
                    &["succeeded", "failed", "cancelled"],
                )
                .await;
                out.push(format!("{action}: {end}"));
            }
            out.join(", ")
        }
    }
}
