//! `/metrics` on the control plane and on an agent, as Prometheus and the tools
//! operators run read them (fast tier: sim hosts, no root). Both pass `promtool
//! check metrics` (Debian's prometheus package, installed by `make test`); the
//! figures agree with the API (VMs by state, a migration's time and bytes, a
//! balancing pass); routes are labelled by their template, never by an id; and
//! every metric the Grafana dashboard and the alert rules in `deploy/` query
//! appears in a live scrape.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::wait_migration;
use ferry_tests::{wait_for, workspace};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

async fn scrape(url: &str) -> String {
    let r = reqwest::get(url).await.expect("scrape");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    r.text().await.unwrap()
}

/// `promtool check metrics` on `text`: passes, with no lint finding.
fn promtool(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; make test-deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Metric families (`# TYPE` names) of an exposition.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `ferry_…` metric name an expression uses, its histogram suffix removed.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(k) = expr[i..].find("ferry_") {
        let start = i + k;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_string());
        i = end;
    }
    out
}

#[tokio::test]
async fn control_plane_and_agent_metrics_are_valid_true_and_cover_the_dashboard() {
    let c = SimCluster::start(3, 10_000, &[]).await;
    let api = c.api.clone();
    let base = api.base.clone();
    let a = c.vm("metrics-a", 0, 2048, "sim.dirty_mibps=12").await;
    c.vm("metrics-b", 1, 1024, "").await;
    // A migration, a balancing pass, a refused request and a 404 to count.
    let m = api
        .post(
            &format!("/vms/{a}/migrate"),
            &json!({"destination_host_id": c.host(2)}),
        )
        .await;
    assert_eq!(m.status, 202, "{m:?}");
    let done = wait_migration(&api, m.body["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "completed", "{done}");
    let cluster = api.ok("/clusters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pass = api
        .post(
            &format!("/clusters/{cluster}/drs/run"),
            &json!({"dry_run": false}),
        )
        .await;
    assert_eq!(pass.status, 200, "{pass:?}");
    assert_eq!(
        api.get(&format!("/vms/{}", uuid::Uuid::new_v4()))
            .await
            .status,
        404
    );
    assert_eq!(api.get("/no/such/path").await.status, 404);

    // The migration's end is counted just after its saga's last step (which the
    // API shows as completed a moment before): wait for it.
    let text = wait_for("the migration's end to be counted", T, || {
        let url = format!("{base}/metrics");
        async move {
            let t = scrape(&url).await;
            sample(&t, r#"ferry_migrations_ended_total{state="completed"}"#).map(|_| t)
        }
    })
    .await;
    promtool(&text, "the control plane");
    // The inventory, as the API lists it.
    let vms = api.ok("/vms?limit=1000").await;
    let running = vms["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["power_state"] == "running")
        .count();
    assert_eq!(running, 2);
    assert_eq!(
        sample(&text, r#"ferry_vms{power_state="running"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"ferry_vms{power_state="stopped"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"ferry_hosts{state="connected"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"ferry_migrations{state="completed"}"#),
        Some(1.0)
    );
    // The migration's end and its result.
    assert_eq!(
        sample(&text, r#"ferry_migrations_ended_total{state="completed"}"#),
        Some(1.0)
    );
    let result = &done["result"];
    let strategy = result["strategy"].as_str().unwrap();
    let total_s = result["total_ms"].as_f64().unwrap() / 1e3;
    assert_eq!(
        sample(
            &text,
            &format!(r#"ferry_migration_duration_seconds_count{{strategy="{strategy}"}}"#)
        ),
        Some(1.0)
    );
    let sum = sample(
        &text,
        &format!(r#"ferry_migration_duration_seconds_sum{{strategy="{strategy}"}}"#),
    )
    .unwrap();
    assert!((sum - total_s).abs() < 1e-6, "{sum} vs {total_s}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"ferry_migration_transferred_bytes_sum{{strategy="{strategy}"}}"#)
        ),
        result["transferred_bytes"].as_f64()
    );
    assert_eq!(
        sample(
            &text,
            r#"ferry_sagas_ended_total{saga="migrate",outcome="done"}"#
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            r#"ferry_saga_steps_total{saga="migrate",node="transfer",result="succeeded"}"#
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"ferry_drs_passes_total{trigger="on_demand"}"#),
        Some(1.0)
    );
    let imbalance = pass.body["pass"]["before"]["combined"].as_f64().unwrap();
    let shown = sample(&text, r#"ferry_drs_imbalance{cluster="default"}"#).unwrap();
    assert!((shown - imbalance).abs() < 1e-9, "{shown} vs {imbalance}");
    // Routes by template; the 404s under their own labels; never an id.
    assert!(text.contains(
        r#"ferry_http_request_duration_seconds_count{method="GET",route="/api/v1/vms/{id}",status="404"}"#
    ));
    assert!(
        text.contains(r#"route="unmatched",status="404"}"#),
        "{text}"
    );
    assert!(text.contains(
        r#"ferry_http_request_duration_seconds_count{method="POST",route="/api/v1/vms/{id}/migrate",status="202"}"#
    ));
    assert!(
        !text.contains(&a),
        "a VM id leaked into the control plane's labels"
    );

    // The agent's listener: valid, and its VMs as the inventory has them.
    let agent_text = wait_for("the agent to report both VMs running", T, || {
        let url = c.agent_metrics_url(0);
        async move {
            let t = scrape(&url.await).await;
            let running: f64 = t
                .lines()
                .filter(|l| {
                    l.starts_with("ferry_agent_vms{") && l.contains(r#"power_state="running""#)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (running == 2.0).then_some(t)
        }
    })
    .await;
    promtool(&agent_text, "the agent");
    let host2 = api.ok(&format!("/hosts/{}", c.host(2))).await["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sample(
            &agent_text,
            &format!(
                r#"ferry_agent_vm_dirty_rate_bytes_per_second{{host="{host2}",vm_id="{a}",vm="metrics-a"}}"#
            )
        ),
        Some(12.0 * 1048576.0),
        "{agent_text}"
    );
    for family in [
        "ferry_agent_relay_frames_held_total",
        "ferry_agent_relay_frames_delivered_total",
        "ferry_agent_vm_cpu_seconds_total",
    ] {
        assert!(families(&agent_text).contains(family), "{family}");
    }

    // Everything the dashboard and the alerts query is there.
    let live: BTreeSet<String> = families(&text)
        .union(&families(&agent_text))
        .cloned()
        .collect();
    let deploy = workspace().join("deploy");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/ferry-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let rules = std::fs::read_to_string(deploy.join("prometheus/ferry-alerts.yml")).unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_string),
    );
    let mut used = BTreeSet::new();
    for e in &exprs {
        used.extend(names_in(e));
    }
    let missing: Vec<_> = used.difference(&live).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}

#[test]
fn names_in_finds_metrics_and_drops_histogram_suffixes() {
    assert_eq!(
        names_in(
            "histogram_quantile(0.95, sum by (le) (rate(ferry_x_seconds_bucket[5m]))) / ferry_y"
        ),
        vec!["ferry_x_seconds", "ferry_y"]
    );
}
