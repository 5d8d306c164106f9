//! Real VMs: QEMU guests (TCG is fine) booting Ferry's guest image on agents in
//! their own namespaces, reached over the lab fabric; power operations as tasks;
//! the shutdown fallback; an agent killed and restarted under running guests; and
//! every bad input refused with nothing created.

use std::time::Duration;

use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::rest::Api;
use ferry_tests::vmtest::guest_status;
use ferry_tests::{guest, wait_for};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(60);

/// The pid of the QEMU running VM `id`, if any (found by its `-uuid`).
fn qemu_pid(id: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let is_it = args.first()?.contains("qemu-system")
            && args.windows(2).any(|w| w[0] == "-uuid" && w[1] == id);
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()?
            .contains(") Z ");
        (is_it && !zombie).then_some(pid)
    })
}

async fn create_guest(env: &Env, name: &str, host_id: &str, ip: &str) -> String {
    create_guest_with(env, name, host_id, ip, json!([])).await
}

async fn create_guest_with(env: &Env, name: &str, host_id: &str, ip: &str, disks: Value) -> String {
    let (kernel, initrd) = guest::image();
    let api = env.api();
    let net = api.ok("/networks?name=vmnet").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .post(
            "/vms",
            &json!({
                "name": name, "host_id": host_id, "vcpus": 1, "memory_mib": 256,
                "nics": [{"network_id": net}], "disks": disks,
                "boot": {"kernel": kernel, "initrd": initrd, "cmdline": format!("console=ttyS0 quiet ferry.ip={ip}/24")}
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["id"].as_str().unwrap().to_string()
}

/// Runs a power action and waits for its task to finish; returns the task.
async fn power(api: &Api, id: &str, action: &str) -> Value {
    let r = api
        .post(&format!("/vms/{id}/power"), &json!({"action": action}))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let task = r.body["id"].as_str().unwrap().to_string();
    wait_for(&format!("power {action} to finish"), T, || {
        let (api, task) = (api.clone(), task.clone());
        async move {
            let t = api.ok(&format!("/tasks/{task}")).await;
            matches!(t["state"].as_str(), Some("succeeded" | "failed")).then_some(t)
        }
    })
    .await
}

async fn wait_power_state(api: &Api, id: &str, state: &str) {
    wait_for(&format!("VM {id} to be {state}"), T, || {
        let api = api.clone();
        async move { (api.ok(&format!("/vms/{id}")).await["power_state"] == state).then_some(()) }
    })
    .await;
}

async fn wait_ready(api: &Api, id: &str) {
    wait_for("ferry-guest's ready line on the console", T, || {
        let api = api.clone();
        async move {
            let r = api.get(&format!("/vms/{id}/console")).await;
            r.body
                .as_str()
                .is_some_and(|t| t.contains("ferry-guest: ready"))
                .then_some(())
        }
    })
    .await;
}

async fn echo_roundtrip(ip: &str) {
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((ip, 7)),
    )
    .await
    .expect("echo connect timed out")
    .expect("echo connect");
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    for n in 0..20 {
        w.write_all(format!("message {n}\n").as_bytes())
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.as_deref(), Some(format!("message {n}").as_str()));
    }
}

#[tokio::test]
async fn a_guest_boots_serves_and_power_cycles() {
    let mut env = Env::new(2, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    env.start_agent(1, &AgentOptions::qemu("host-b"));
    let a = env.wait_host_state("host-a", "connected", T).await;
    env.wait_host_state("host-b", "connected", T).await;
    let api = env.api();
    let ip = env.lab.guest_ip(0);
    let shared = api.ok("/datastores?name=shared").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let disks = json!([{"datastore_id": shared, "size_bytes": 64 * 1024 * 1024}]);
    let id = create_guest_with(&env, "g1", a["id"].as_str().unwrap(), &ip, disks).await;
    let disk_file = env.shared_datastore().join("g1-0.qcow2");

    let task = power(&api, &id, "on").await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["kind"], "vm.power_on");
    wait_power_state(&api, &id, "running").await;
    wait_ready(&api, &id).await;
    let pid = qemu_pid(&id).expect("a QEMU runs the VM");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U"])
        .arg(&disk_file)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("file format: qcow2") && info.contains("64 MiB"),
        "the disk was made with qemu-img: {info}"
    );
    let args = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .replace('\0', " ");
    assert!(
        args.contains("-name guest=g1") && args.contains(&format!("-uuid {id}")),
        "{args}"
    );

    // The VM bridge is layer 2 only: its MAC is the uplink's whatever taps join,
    // and the host does not answer ARP through it (a peer that learned the bridge's
    // MAC for the host's address lost its packets when a tap left).
    let ns_read = |path: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &env.lab.ns(0), "cat", path])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        ns_read("/sys/class/net/fbr-vmnet/address"),
        ns_read("/sys/class/net/eth1/address")
    );
    assert_eq!(ns_read("/proc/sys/net/ipv4/conf/fbr-vmnet/arp_ignore"), "1");
    assert_eq!(
        ns_read("/proc/sys/net/ipv6/conf/fbr-vmnet/disable_ipv6"),
        "1"
    );

    // From the fabric: echo and /status.
    echo_roundtrip(&ip).await;
    let s = guest_status(&ip).await;
    assert_eq!(s["integrity_errors"], 0, "{s}");
    // From the other host's namespace.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.lab.ns(1),
            "curl",
            "-s",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{ip}/status"))
        .output()
        .unwrap();
    let s2: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        s2["uptime_s"].as_f64().is_some(),
        "host-b reaches the guest: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reset: the same QEMU, a fresh boot of the guest.
    let before = guest_status(&ip).await["boot_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(before.len(), 36);
    assert_eq!(power(&api, &id, "reset").await["state"], "succeeded");
    let after = wait_for("the guest to come back after reset", T, || {
        let (ip, before) = (ip.clone(), before.clone());
        async move {
            let r = reqwest::Client::new()
                .get(format!("http://{ip}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            let boot = r.json::<Value>().await.ok()?["boot_id"]
                .as_str()?
                .to_string();
            (boot != before).then_some(boot)
        }
    })
    .await;
    assert_ne!(after, before);
    assert_eq!(qemu_pid(&id), Some(pid), "reset keeps the QEMU process");

    // Off: QEMU gone, tap gone; on again: a new QEMU, guest back.
    assert_eq!(power(&api, &id, "off").await["state"], "succeeded");
    wait_power_state(&api, &id, "stopped").await;
    assert_eq!(qemu_pid(&id), None);
    let taps = std::process::Command::new("ip")
        .args(["-n", &env.lab.ns(0), "-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&taps.stdout).contains(&format!("ft{}", &id[..8])),
        "tap removed"
    );
    assert_eq!(power(&api, &id, "on").await["state"], "succeeded");
    wait_power_state(&api, &id, "running").await;
    assert_ne!(qemu_pid(&id), Some(pid));
    // Running is QEMU's word; the guest serves once it has booted.
    guest_status(&ip).await;
    echo_roundtrip(&ip).await;

    // Pause and resume.
    assert_eq!(power(&api, &id, "pause").await["state"], "succeeded");
    wait_power_state(&api, &id, "paused").await;
    assert_eq!(power(&api, &id, "resume").await["state"], "succeeded");
    wait_power_state(&api, &id, "running").await;

    // A running VM cannot be deleted; a stopped one is removed from its host too.
    api.delete(&format!("/vms/{id}"))
        .await
        .assert_problem(409, "vm_not_stopped");
    assert_eq!(power(&api, &id, "off").await["state"], "succeeded");
    wait_power_state(&api, &id, "stopped").await;
    assert_eq!(api.delete(&format!("/vms/{id}")).await.status, 204);
    assert!(!disk_file.exists(), "deleting the VM removes its disk");
    assert!(!env
        .dir
        .path()
        .join(format!("agent-host-a/vms/{id}"))
        .exists());
}

#[tokio::test]
async fn shutdown_of_a_guest_that_ignores_acpi_falls_back_to_force() {
    let mut env = Env::new(1, &[]).await;
    let mut o = AgentOptions::qemu("host-a");
    o.args = vec!["--shutdown-timeout".into(), "2s".into()];
    env.start_agent(0, &o);
    let a = env.wait_host_state("host-a", "connected", T).await;
    let api = env.api();
    let id = create_guest(
        &env,
        "stubborn",
        a["id"].as_str().unwrap(),
        &env.lab.guest_ip(1),
    )
    .await;
    assert_eq!(power(&api, &id, "on").await["state"], "succeeded");
    wait_ready(&api, &id).await;
    // Through ferryctl: the console, then the shutdown (it waits for the task).
    let ctl = |args: &[&str]| {
        std::process::Command::new(ferry_tests::bin("ferryctl"))
            .args(args)
            .env("FERRY_URL", &env.cp.http)
            .env("FERRY_TOKEN", env.cp.admin_token())
            .output()
            .unwrap()
    };
    let console = ctl(&["vm", "console", "stubborn"]);
    assert!(String::from_utf8_lossy(&console.stdout).contains("ferry-guest: ready"));
    let t = std::time::Instant::now();
    let out = ctl(&["vm", "power", "stubborn", "shutdown"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "VM stubborn: shutdown done"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "it waited for the guest first"
    );
    wait_power_state(&api, &id, "stopped").await;
    assert_eq!(qemu_pid(&id), None);
    let ev = api.ok("/events?kind=vm.power").await;
    let msgs: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("shutdown") && m.contains("forced off")),
        "{msgs:?}"
    );
}

#[tokio::test]
async fn an_agent_killed_and_restarted_leaves_guests_untouched() {
    let mut env = Env::new(1, &[]).await;
    let o = AgentOptions::qemu("host-a");
    let i = env.start_agent(0, &o);
    let a = env.wait_host_state("host-a", "connected", T).await;
    let api = env.api();
    let ip = env.lab.guest_ip(2);
    let id = create_guest(&env, "survivor", a["id"].as_str().unwrap(), &ip).await;
    let on = power(&api, &id, "on").await;
    assert_eq!(on["state"], "succeeded", "{on}");
    wait_ready(&api, &id).await;
    let pid = qemu_pid(&id).unwrap();
    let s_before = guest_status(&ip).await;
    let up_before = s_before["uptime_s"].as_f64().unwrap();

    env.agents[i].kill9();
    // The guest keeps serving while its agent is gone.
    echo_roundtrip(&ip).await;
    // A QEMU nobody recorded, in the host's namespace: reported, never killed.
    let stray_id = "5a5a5a5a-0000-4000-8000-000000000001";
    let mut stray_cmd = std::process::Command::new("ip");
    stray_cmd
        .args([
            "netns",
            "exec",
            &env.lab.ns(0),
            "qemu-system-x86_64",
            "-uuid",
            stray_id,
        ])
        .args(["-machine", "none", "-nodefaults", "-display", "none", "-S"]);
    let stray =
        ferry_tests::procs::Proc::spawn("stray qemu", stray_cmd, env.dir.path().join("stray.log"));
    wait_for("the stray QEMU to run", T, || async {
        qemu_pid(stray_id).map(|_| ())
    })
    .await;

    env.start_agent(0, &o);
    env.wait_host_state("host-a", "connected", T).await;
    assert_eq!(qemu_pid(&id), Some(pid), "the same QEMU process");
    wait_for("the stray QEMU to be reported", T, || {
        let api = api.clone();
        async move {
            let ev = api.ok("/events?kind=vm.unmanaged").await;
            ev["items"]
                .as_array()?
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains(stray_id)))
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        qemu_pid(stray_id),
        stray.pid(),
        "the stray QEMU is left running"
    );
    let s_after = guest_status(&ip).await;
    let up_after = s_after["uptime_s"].as_f64().unwrap();
    assert!(
        up_after > up_before,
        "uptime continues: {up_before} -> {up_after}"
    );
    assert_eq!(
        s_after["boot_id"], s_before["boot_id"],
        "the same boot of the guest"
    );
    wait_power_state(&api, &id, "running").await;
    // Re-attached: the new agent controls the old QEMU.
    let off = power(&api, &id, "off").await;
    assert_eq!(off["state"], "succeeded", "{off}");
    wait_power_state(&api, &id, "stopped").await;
    assert_eq!(qemu_pid(&id), None);
}

#[tokio::test]
async fn bad_vm_input_is_refused_and_creates_nothing() {
    let mut env = Env::new(2, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    env.start_agent(1, &AgentOptions::qemu("host-b"));
    let a = env.wait_host_state("host-a", "connected", T).await;
    env.wait_host_state("host-b", "connected", T).await;
    let api = env.api();
    let a_id = a["id"].as_str().unwrap();
    let other_local = api.ok("/datastores?name=local-host-b").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let net = api.ok("/networks?name=vmnet").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = json!({"name": "bad", "host_id": a_id, "vcpus": 1, "memory_mib": 256});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    api.post(
        "/vms",
        &with(
            "nics",
            json!([{"network_id": "00000000-0000-4000-8000-000000000000"}]),
        ),
    )
    .await
    .assert_problem(422, "unknown_network");
    api.post(
        "/vms",
        &with(
            "disks",
            json!([{"datastore_id": other_local, "size_bytes": 1048576}]),
        ),
    )
    .await
    .assert_problem(409, "datastore_not_on_host");
    api.post("/vms", &with("memory_mib", json!(4 * 1024 * 1024)))
        .await
        .assert_problem(409, "insufficient_memory");
    api.post("/vms", &with("cpu_model", json!("Quantum-9000")))
        .await
        .assert_problem(409, "unsupported_cpu_model");
    let ok = with("nics", json!([{"network_id": net}]));
    assert_eq!(api.post("/vms", &ok).await.status, 201);
    api.post("/vms", &ok)
        .await
        .assert_problem(409, "duplicate_name");
    // Exactly the one good VM exists, nothing runs, no tap was made.
    assert_eq!(api.ok("/vms").await["items"].as_array().unwrap().len(), 1);
    for i in 0..2 {
        let links = std::process::Command::new("ip")
            .args(["-n", &env.lab.ns(i), "-o", "link"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&links.stdout).contains(" ft"),
            "no tap on host {i}"
        );
    }
    let id = api.ok("/vms?name=bad").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(qemu_pid(&id), None);
    // Power on of a VM without a boot source: the task is refused up front.
    api.post(&format!("/vms/{id}/power"), &json!({"action": "on"}))
        .await
        .assert_problem(409, "no_boot");
    api.post(&format!("/vms/{id}/power"), &json!({"action": "explode"}))
        .await
        .assert_problem(422, "invalid_body");
}

#[tokio::test]
async fn a_network_bridge_goes_when_its_network_does() {
    let mut env = Env::new(1, &[]).await;
    let mut o = AgentOptions::qemu("host-a");
    o.args = vec!["--network".into(), "backup".into()];
    let i = env.start_agent(0, &o);
    env.wait_host_state("host-a", "connected", T).await;
    let links = |env: &Env| {
        let out = std::process::Command::new("ip")
            .args(["-n", &env.lab.ns(0), "-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        links(&env).contains("fbr-backup") && links(&env).contains("fbr-vmnet"),
        "{}",
        links(&env)
    );
    // Restarted without the network: its bridge is removed, the other stays.
    env.agents[i].kill9();
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    wait_for("the stale bridge to go", T, || {
        let l = links(&env);
        async move { (!l.contains("fbr-backup") && l.contains("fbr-vmnet")).then_some(()) }
    })
    .await;
}
