//! Helpers for tests that run real guests: finding a VM's QEMU processes and their
//! namespaces, a two-host lab with one guest booted, waiting for a migration.

use std::time::Duration;

use serde_json::{json, Value};

use crate::procs::{AgentOptions, Env};
use crate::rest::Api;
use crate::{guest, wait_for};

const T: Duration = Duration::from_secs(90);

/// Every QEMU running VM `id`, with the network namespace it runs in.
pub fn qemus(id: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let zombie =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        if !zombie
            && args
                .windows(2)
                .any(|w| w[0] == b"-uuid" && w[1] == id.as_bytes())
        {
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            out.push((pid, ns));
        }
    }
    out
}

pub fn netns_of(env: &Env, i: u8) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.lab.ns(i),
            "readlink",
            "/proc/self/ns/net",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A two-host lab (host-a, host-b) with one booted guest on host-a.
pub struct GuestLab {
    pub env: Env,
    pub api: Api,
    /// The guest's VM id.
    pub id: String,
    /// The guest's address on the fabric.
    pub ip: String,
    /// host-b's id.
    pub b: String,
}

/// Starts a [`GuestLab`]: `cp_args` for the control plane, `b_args` for host-b's agent;
/// the guest is `name`, with `memory_mib`, at the fabric address of guest `n`.
pub async fn two_hosts_and_guest(
    name: &str,
    n: u8,
    memory_mib: u64,
    cp_args: &[&str],
    b_args: Vec<String>,
) -> GuestLab {
    let mut env = Env::new(2, cp_args).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    let mut ob = AgentOptions::qemu("host-b");
    ob.args = b_args;
    env.start_agent(1, &ob);
    let a = env.wait_host_state("host-a", "connected", T).await;
    let b = env.wait_host_state("host-b", "connected", T).await;
    let api = env.api();
    let ip = env.lab.guest_ip(n);
    let id = boot_guest(
        &env,
        name,
        a["id"].as_str().unwrap_or_default(),
        memory_mib,
        &ip,
    )
    .await;
    GuestLab {
        env,
        api,
        id,
        ip,
        b: b["id"].as_str().unwrap_or_default().to_string(),
    }
}

/// Creates a guest of the test image on `host_id` at `ip`, powers it on, and waits
/// until it serves `/status`; returns its id.
pub async fn boot_guest(env: &Env, name: &str, host_id: &str, memory_mib: u64, ip: &str) -> String {
    boot_guest_with(env, name, host_id, memory_mib, ip, None, "").await
}

/// A guest's disk: on datastore `datastore_id`, `size_mib` big, the guest image
/// writing checksummed blocks over its first `write_mib` at `write_mbps`.
#[derive(Clone, Copy)]
pub struct GuestDisk<'a> {
    pub datastore_id: &'a str,
    pub size_mib: u64,
    pub write_mib: u64,
    pub write_mbps: u32,
}

/// As [`boot_guest`], with a disk the guest writes to (if any) and more kernel
/// arguments (`extra_cmdline`, e.g. [`crate::guest::SAME_BYTES_CMDLINE`]).
pub async fn boot_guest_with(
    env: &Env,
    name: &str,
    host_id: &str,
    memory_mib: u64,
    ip: &str,
    disk: Option<GuestDisk<'_>>,
    extra_cmdline: &str,
) -> String {
    let api = env.api();
    let (kernel, initrd) = guest::image();
    let net = api.ok("/networks?name=vmnet").await["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut cmdline = format!("console=ttyS0 quiet ferry.ip={ip}/24");
    let mut body = json!({"name": name, "host_id": host_id, "vcpus": 1, "memory_mib": memory_mib,
                    "nics": [{"network_id": net}]});
    if let Some(d) = disk {
        cmdline.push_str(&format!(
            " ferry.disk=/dev/vda ferry.disk_mib={} ferry.disk_mbps={}",
            d.write_mib, d.write_mbps
        ));
        body["disks"] = json!([{"datastore_id": d.datastore_id, "size_bytes": d.size_mib << 20}]);
    }
    if !extra_cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra_cmdline);
    }
    body["boot"] = json!({"kernel": kernel, "initrd": initrd, "cmdline": cmdline});
    let r = api.post("/vms", &body).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    let p = api
        .post(&format!("/vms/{id}/power"), &json!({"action": "on"}))
        .await;
    assert_eq!(p.status, 202, "{p:?}");
    guest_status(ip).await;
    id
}

/// The one QEMU that runs `vm` (pid, network namespace), once the one it left (a
/// move's source, a cancelled move's destination) has exited: there is never more
/// than one for long.
pub async fn one_qemu_of(vm: &str) -> (u32, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let q = qemus(vm);
        if q.len() == 1 {
            return q[0].clone();
        }
        // Say what runs instead: which copies, where, in which QEMU state.
        let seen: Vec<String> = q
            .iter()
            .map(|(pid, ns)| {
                let state: String = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(") ").next().map(|r| r.chars().take(1).collect()))
                    .unwrap_or_default();
                format!("pid {pid} in {ns} (process state {state})")
            })
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 30s waiting for exactly one QEMU to run VM {vm}: {} found {seen:?}",
            q.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The guest's `/status` now, or `None` when it does not answer within 2 s.
pub async fn try_guest_status(ip: &str) -> Option<Value> {
    reqwest::Client::new()
        .get(format!("http://{ip}/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The guest's `/status` once its memory verifier has checked a page: a test
/// that asserts the guest verified more after a move must not start counting
/// before the verifier runs (the guest fills its working set first, which on a
/// busy TCG host can outlast a move — seen: 0 pages verified before and after).
pub async fn guest_status_verifying(ip: &str) -> Value {
    wait_for("the guest's memory verifier to start", T, || async {
        let s = guest_status(ip).await;
        (s["pages_verified"].as_u64() > Some(0)).then_some(s)
    })
    .await
}

/// The guest's `/status`, waiting until it answers.
pub async fn guest_status(ip: &str) -> Value {
    let ip = ip.to_string();
    wait_for("the guest to serve /status", T, || {
        let ip = ip.clone();
        async move {
            let r = reqwest::Client::new()
                .get(format!("http://{ip}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            r.json::<Value>().await.ok()
        }
    })
    .await
}

pub async fn wait_migration(api: &Api, id: &str) -> Value {
    wait_for("the migration to finish", T, || {
        let (api, id) = (api.clone(), id.to_string());
        async move {
            let m = api.ok(&format!("/migrations/{id}")).await;
            matches!(
                m["state"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
            .then_some(m)
        }
    })
    .await
}

/// Starts a migration of `vm` with request `body` (202 expected); returns its id.
pub async fn start_migration(api: &Api, vm: &str, body: &Value) -> String {
    let r = api.post(&format!("/vms/{vm}/migrate"), body).await;
    assert_eq!(r.status, 202, "{r:?}");
    r.body["id"].as_str().expect("migration id").to_string()
}

/// Starts a migration of `vm` with request `body` (202 expected) and waits for it to
/// finish; returns the finished migration.
pub async fn migrate_and_wait(api: &Api, vm: &str, body: &Value) -> Value {
    let mid = start_migration(api, vm, body).await;
    wait_migration(api, &mid).await
}

/// Runs `tc qdisc <args>` on host `i`'s fabric link (`eth0`), which must succeed.
fn tc_qdisc(env: &Env, i: u8, args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &env.lab.ns(i), "tc", "qdisc"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shapes host `i`'s fabric link (where migration streams go) to `rate`.
pub fn shape(env: &Env, i: u8, rate: &str) {
    tc_qdisc(
        env,
        i,
        &[
            "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "512kb", "latency", "50ms",
        ],
    );
}

/// Removes [`shape`]'s limit from host `i`'s fabric link.
pub fn unshape(env: &Env, i: u8) {
    tc_qdisc(env, i, &["del", "dev", "eth0", "root"]);
}

/// What host `host`'s migration tunnel `name` (`in`, `out`, `nbd-in`,
/// `nbd-out`) for VM `id` carried, once it has ended (it writes its record then).
pub async fn tunnel_record(env: &Env, host: &str, id: &str, name: &str) -> Value {
    let path = env
        .dir
        .path()
        .join(format!("agent-{host}/vms/{id}/tunnel-{name}.json"));
    wait_for(
        "the migration tunnel's record",
        Duration::from_secs(90),
        || {
            let path = path.clone();
            async move { std::fs::read(&path).ok() }
        },
    )
    .await;
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}
