//! The REST API keeps its own contract (issue #13): schemathesis (from PyPI, in
//! the virtual environment `make test` installs: `target/schemathesis`) runs every
//! operation of `/api/v1/openapi.json`, its examples, generated cases and its
//! stateful phase, against a real control plane with three sim hosts and a few
//! VMs, with its default checks. Expected: no server error, no contract failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ferry_tests::sim::SimCluster;

fn schemathesis() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("target/schemathesis/bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_contract_failure() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: `make test-deps` installs it",
        st.display()
    );
    let c = SimCluster::start(3, 10_000, &[]).await;
    for i in 0..3 {
        c.vm(&format!("contract-{i}"), i, 512, "").await;
    }
    let url = format!("{}/api/v1/openapi.json", c.api.base);
    let token = c.api.token.clone();
    // A fixed seed, so a failure replays; FERRY_CONTRACT_SEED and
    // FERRY_CONTRACT_EXAMPLES (per operation) search further.
    let seed = std::env::var("FERRY_CONTRACT_SEED").unwrap_or_else(|_| "1".into());
    let examples = std::env::var("FERRY_CONTRACT_EXAMPLES").unwrap_or_else(|_| "25".into());
    // Its caches and reports go to the test's directory, not the checkout.
    let dir = c.dir.path().to_path_buf();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemathesis.toml")
        .display()
        .to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(&dir)
            .args(["--config-file", &config])
            .args(["run", &url])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", &examples, "--seed", &seed, "--no-color"])
            .args(["--request-timeout", "20", "--generation-database", "none"])
            .output()
            .expect("run schemathesis")
    });
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("schemathesis to finish within 10 minutes")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
}

/// An undeclared method: 405 with `Allow` naming the declared ones; a problem's
/// `type` is a page of this control plane, served without a token.
#[tokio::test]
async fn a_wrong_method_names_the_allowed_ones_and_problem_types_are_served_here() {
    let c = SimCluster::start(1, 10_000, &[]).await;
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/api/v1/vms", c.api.base))
        .bearer_auth(&c.api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
    allowed.sort();
    assert_eq!(allowed, ["GET", "HEAD", "POST"], "{allow}");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "method_not_allowed");
    assert_eq!(problem["type"], "/api/v1/problems/method_not_allowed");
    // The type's page.
    // Without a token: plain GETs.
    let public = |path: String| {
        let (http, url) = (http.clone(), format!("{}{path}", c.api.base));
        async move {
            let v: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            v
        }
    };
    let page = public(problem["type"].as_str().unwrap().to_string()).await;
    assert_eq!(page["status"], 405, "{page}");
    assert!(page["description"].as_str().unwrap().contains("Allow"));
    let all = public("/api/v1/problems".into()).await;
    let all = all.as_array().unwrap();
    assert!(all.len() > 40, "{} problem types", all.len());
}
