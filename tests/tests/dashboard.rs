//! The dashboard in a real browser (headless Chromium through ChromeDriver, both
//! from Debian, installed by `make test`) against a real control plane, real lab
//! hosts in namespaces and a QEMU guest: log in, see the hosts, migrate through the
//! dialog (checks and prediction shown first), watch the live view reach
//! `completed` with a progress bar that never goes backwards, see the new host and
//! the downtime on the VM's page, evacuate a host through its dry-run plan, survive
//! a control-plane restart without a reload, and show a viewer no action. Every
//! page passes axe-core with no serious violation. Screenshots of each step are
//! kept in `target/test-artifacts/dashboard/`.
//!
//! Also (no browser): the vendored chart library is the one the lockfile pins, and
//! every file under `web/` is embedded into the control plane.

use std::path::PathBuf;
use std::time::Duration;

use ferry_tests::browser::{self, Browser};
use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::vmtest::{boot_guest, one_qemu_of, shape};
use ferry_tests::{wait_for, workspace};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn artifacts() -> PathBuf {
    workspace().join("target/test-artifacts/dashboard")
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Fails the test with axe-core's serious and critical findings on the page.
async fn accessible(b: &Browser, page: &str) {
    let v = b.axe_serious().await;
    assert!(v.is_empty(), "axe-core on {page}: {v:#?}");
}

async fn login(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await;
    let input = b.find("#token").await;
    b.type_into(&input, token).await;
    b.click_css("form button[type=submit]").await;
    b.find("#live[data-state=live]").await;
}

async fn go(b: &Browser, hash: &str) {
    b.exec("location.hash = arguments[0]", json!([hash])).await;
}

#[tokio::test]
async fn migrate_evacuate_restart_and_viewer_in_a_real_browser() {
    assert!(
        browser::available(),
        "Chromium and ChromeDriver are missing: `make test-deps` installs them"
    );
    let mut env = Env::new(2, &[]).await;
    let names = ["dash-a", "dash-b"];
    for (i, n) in names.iter().enumerate() {
        let o = AgentOptions {
            args: vec![
                "--metrics-listen".into(),
                format!("{}:0", env.lab.host_ip(i as u8)),
            ],
            ..AgentOptions::qemu(n)
        };
        env.start_agent(i as u8, &o);
    }
    let mut hosts = Vec::new();
    for n in names {
        hosts.push(id(&env.wait_host_state(n, "connected", T).await));
    }
    let api = env.api();
    let ip = env.lab.guest_ip(0);
    let vm = boot_guest(&env, "dash-guest", &hosts[0], 256, &ip).await;
    // A slower path, so the live view has several seconds of progress to show.
    shape(&env, 0, "300mbit");
    let base = env.cp.http.clone();
    let b = Browser::start(&artifacts()).await;

    // Log in; the overview shows both hosts.
    login(&b, &base, &env.cp.admin_token()).await;
    b.wait("two host cards", T, || async {
        (b.find_all("#host-cards article").await.len() == 2).then_some(())
    })
    .await;
    b.wait_text("dash-a", T).await;
    b.shot("01-overview").await;
    // The accessibility check can fail: an unlabelled image is a critical finding.
    b.exec(
        "const i = document.createElement('img'); i.id = 'axe-probe'; i.src = '/ui/favicon.svg'; document.body.append(i);",
        json!([]),
    )
    .await;
    let probe = b.axe_serious().await;
    assert!(
        probe.iter().any(|v| v.starts_with("image-alt")),
        "axe-core did not flag an image without alt text: {probe:?}"
    );
    b.exec("document.getElementById('axe-probe').remove()", json!([]))
        .await;
    accessible(&b, "the overview").await;

    // The VM's page, then the migrate dialog: checks and prediction before confirming.
    go(&b, &format!("#/vms/{vm}")).await;
    b.find("#migrate").await;
    b.shot("02-vm").await;
    accessible(&b, "the VM page").await;
    b.click_css("#migrate").await;
    b.find("#mig-checks li.pass").await;
    b.wait("dash-b among the destinations", T, || async {
        b.exec(
            "return [...document.querySelectorAll('#mig-dest option')].some(o => o.textContent.startsWith('dash-b'))",
            json!([]),
        )
        .await
        .as_bool()
        .unwrap_or(false)
        .then_some(())
    })
    .await;
    b.select("#mig-dest", &hosts[1]).await;
    b.wait("the checks against dash-b with a prediction", T, || async {
        let text = b.text(&b.find("#mig-checks").await).await;
        let enabled = b
            .exec(
                "return !document.querySelector('#mig-confirm').disabled",
                json!([]),
            )
            .await;
        (text.contains("Compatible with dash-b") && enabled == true).then_some(())
    })
    .await;
    let checks = b.text(&b.find("#mig-checks").await).await;
    assert!(
        b.find_all("#mig-checks li").await.len() >= 3,
        "the dialog lists every check: {checks}"
    );
    assert!(checks.contains("Predicted total"), "{checks}");
    assert!(checks.contains("Predicted downtime"), "{checks}");
    b.shot("03-migrate-dialog").await;
    accessible(&b, "the migrate dialog").await;
    b.click_css("#mig-confirm").await;

    // The live view: the bar never goes backwards, and it ends `completed`.
    b.wait("the live migration view", T, || async {
        let hash = b.exec("return location.hash", json!([])).await;
        hash.as_str()?.starts_with("#/migrations/").then_some(())
    })
    .await;
    let mut seen: Vec<f64> = Vec::new();
    let deadline = std::time::Instant::now() + T;
    let final_state = loop {
        let v = b
            .exec(
                "const p = document.querySelector('#mig-progress');
                 const f = document.querySelector('#mig-final');
                 return [p ? Number(p.dataset.value || 0) : null, f ? f.dataset.state : null];",
                json!([]),
            )
            .await;
        if let Some(p) = v[0].as_f64() {
            seen.push(p);
        }
        if let Some(st) = v[1].as_str() {
            break st.to_string();
        }
        if seen.len() == 15 {
            b.shot("04a-live-migration-under-way").await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live view never showed the end: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(final_state, "completed");
    assert!(
        seen.windows(2).all(|w| w[1] >= w[0]),
        "the progress bar went backwards: {seen:?}"
    );
    assert_eq!(seen.last().copied(), Some(100.0), "{seen:?}");
    let summary = b.text(&b.find("#mig-final").await).await;
    assert!(summary.contains("Downtime"), "{summary}");
    b.shot("04-live-migration").await;
    accessible(&b, "the live migration view").await;
    let moved = api.ok(&format!("/vms/{vm}")).await;
    assert_eq!(moved["host_id"].as_str(), Some(hosts[1].as_str()));
    one_qemu_of(&vm).await;

    // The VM's page: the new host and the downtime in its history.
    go(&b, &format!("#/vms/{vm}")).await;
    b.wait(
        "the VM page to show dash-b and a measured downtime",
        T,
        || async {
            let head = b.text(&b.find("h1 + .sub").await).await;
            let dt = match b.try_find("#vm-migrations td.downtime").await {
                Some(el) => b.text(&el).await,
                None => String::new(),
            };
            (head.contains("dash-b") && (dt.ends_with("ms") || dt.ends_with(" s"))).then_some(())
        },
    )
    .await;
    b.shot("05-vm-after").await;

    // Maintenance on dash-b through the dry-run plan; the host empties.
    go(&b, &format!("#/hosts/{}", hosts[1])).await;
    b.click_css("#maint-enter").await;
    b.wait(
        "the dry-run plan naming the guest and dash-a",
        T,
        || async {
            let plan = b.text(&b.find("#maint-plan").await).await;
            (plan.contains("dash-guest") && plan.contains("dash-a")).then_some(plan)
        },
    )
    .await;
    b.shot("06-maintenance-plan").await;
    accessible(&b, "the maintenance plan").await;
    b.wait("the plan to be confirmable", T, || async {
        (b.exec(
            "return !document.querySelector('#maint-confirm').disabled",
            json!([]),
        )
        .await
            == true)
            .then_some(())
    })
    .await;
    b.click_css("#maint-confirm").await;
    b.wait("dash-b to be in maintenance on its page", T, || async {
        b.try_find("#maint-exit").await.map(|_| ())
    })
    .await;
    b.shot("07-maintenance-done").await;
    let back = api.ok(&format!("/vms/{vm}")).await;
    assert_eq!(back["host_id"].as_str(), Some(hosts[0].as_str()));
    assert_eq!(back["power_state"], "running");
    b.click_css("#maint-exit").await;
    b.wait("dash-b to leave maintenance", T, || async {
        b.try_find("#maint-enter").await.map(|_| ())
    })
    .await;
    env.wait_host_state("dash-b", "connected", T).await;

    // The control plane restarts; the page recovers by itself (no reload).
    go(&b, "#/activity").await;
    b.find("#event-log").await;
    b.exec("window.ferryNoReload = 42", json!([])).await;
    env.cp.proc.kill9();
    b.wait(
        "the page to notice the control plane is gone",
        T,
        || async { b.try_find("#live:not([data-state=live])").await.map(|_| ()) },
    )
    .await;
    env.cp.restart().await;
    b.find("#live[data-state=live]").await;
    let p = api
        .post(&format!("/vms/{vm}/power"), &json!({"action": "pause"}))
        .await;
    assert_eq!(p.status, 202, "{p:?}");
    b.wait("the pause to appear in the live log", T, || async {
        let log = b.text(&b.find("#event-log").await).await;
        log.contains("pause").then_some(())
    })
    .await;
    assert_eq!(
        b.exec("return window.ferryNoReload", json!([])).await,
        42,
        "the page reloaded"
    );
    b.shot("08-after-restart").await;
    accessible(&b, "tasks and events").await;
    go(&b, "#/balancing").await;
    b.find("#drs-run").await;
    b.shot("09-balancing").await;
    accessible(&b, "balancing").await;

    // A viewer sees no action buttons.
    let t = api
        .post("/tokens", &json!({"name": "dash-viewer", "role": "viewer"}))
        .await;
    assert_eq!(t.status, 201, "{t:?}");
    b.click_css("#logout").await;
    login(&b, &base, t.body["secret"].as_str().unwrap()).await;
    b.wait_text("dash-viewer", T).await;
    go(&b, &format!("#/vms/{vm}")).await;
    b.wait_text("Specification", T).await;
    b.find("#vm-migrations").await;
    assert!(b.find_all("#vm-actions button").await.is_empty());
    go(&b, &format!("#/hosts/{}", hosts[0])).await;
    b.wait_text("Entering maintenance moves", T).await;
    assert!(b.try_find("#maint-enter").await.is_none());
    go(&b, "#/balancing").await;
    b.find("#drs-automation").await;
    assert!(b.try_find("#drs-run").await.is_none());
    assert!(b.find_all("#recommendations button").await.is_empty());
    b.shot("10-viewer").await;
    drop(b);

    // The agent that runs the guest now says so on its metrics listener, which
    // promtool accepts.
    let addr = std::fs::read_to_string(env.dir.path().join("agent-dash-a/metrics.addr"))
        .expect("dash-a's metrics.addr");
    let text = reqwest::get(format!("http://{}/metrics", addr.trim()))
        .await
        .expect("scrape dash-a")
        .text()
        .await
        .unwrap();
    let lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("promtool");
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool on a QEMU agent: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(text.contains("\nferry_agent_qemu_processes 1\n"), "{text}");
    let cpu = text
        .lines()
        .find(|l| l.starts_with("ferry_agent_vm_cpu_seconds_total{") && l.contains(&vm))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no vCPU time for the guest: {text}"));
    assert!(cpu > 0.0, "{text}");
    assert!(
        text.contains("ferry_agent_vm_dirty_rate_bytes_per_second{host=\"dash-a\""),
        "the dirty rate measured for the moves is missing: {text}"
    );

    // The guest went through it all in one piece and runs once.
    let r = api
        .post(&format!("/vms/{vm}/power"), &json!({"action": "resume"}))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    wait_for("the guest to run again", T, || {
        let api = api.clone();
        let vm = vm.clone();
        async move { (api.ok(&format!("/vms/{vm}")).await["power_state"] == "running").then_some(()) }
    })
    .await;
    one_qemu_of(&vm).await;
}

#[test]
fn vendored_assets_match_the_lockfile_and_every_web_file_is_embedded() {
    let web = workspace().join("web");
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(web.join("package-lock.json")).unwrap())
            .unwrap();
    let pkg: Value =
        serde_json::from_str(&std::fs::read_to_string(web.join("package.json")).unwrap()).unwrap();
    let pinned = lock["packages"]["node_modules/uplot"]["version"]
        .as_str()
        .expect("uplot in the lockfile");
    assert_eq!(pkg["dependencies"]["uplot"].as_str(), Some(pinned));
    let installed = web.join("node_modules/uplot");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(installed.join("package.json"))
            .expect("web/node_modules/uplot: run make web-deps"),
    )
    .unwrap();
    assert_eq!(meta["version"].as_str(), Some(pinned));
    for f in ["uPlot.iife.min.js", "uPlot.min.css"] {
        let vendored = std::fs::read(web.join("vendor").join(f)).unwrap();
        let from_npm = std::fs::read(installed.join("dist").join(f)).unwrap();
        assert!(
            vendored == from_npm,
            "web/vendor/{f} differs from uplot {pinned} on the npm registry: run make web"
        );
    }
    let embedded: Vec<&str> = ferry_control_plane::api::web::asset_paths().collect();
    let mut files = Vec::new();
    for dir in ["", "js", "vendor"] {
        for e in std::fs::read_dir(web.join(dir)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && [".js", ".css", ".svg"].iter().any(|x| name.ends_with(x)) {
                files.push(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                });
            }
        }
    }
    files.sort();
    for f in &files {
        assert!(
            embedded.contains(&f.as_str()),
            "web/{f} is not embedded (api/web.rs)"
        );
    }
    assert_eq!(files.len(), embedded.len(), "{files:?} vs {embedded:?}");
}
