//! The fast tier's world: a real PostgreSQL database, the control plane in this
//! test's own process (so a test drives the saga executor's hooks and its
//! recovery directly), and one `ferry-agent --backend sim --count N` process on
//! loopback. No root, no namespaces, no QEMU: seconds per test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ferry_api::HostId;
use ferry_control_plane::app::App;
use ferry_control_plane::config::Config;
use ferry_control_plane::saga::Hooks;
use ferry_proto::v1::{VmListRequest, VmState};
use serde_json::{json, Value};

use crate::pg::TestDb;
use crate::procs::Proc;
use crate::rest::Api;
use crate::{bin, wait_for};

const T: Duration = Duration::from_secs(30);

pub struct SimCluster {
    /// The sim agent processes.
    pub agents: Vec<Proc>,
    pub app: App,
    pub api: Api,
    pub hooks: Arc<Hooks>,
    /// host name → id, in index order (sim-0001, sim-0002, …).
    pub hosts: Vec<(String, HostId)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    cp: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The control plane's command line (for a restart on the same ports).
    cp_args: Vec<String>,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

type Launched = (
    App,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Starts the control plane in this process with `args`; once it is ready.
async fn launch(args: &[String], hooks: Arc<Hooks>) -> Launched {
    let config = Config::parse_from(args);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cp = tokio::spawn(ferry_control_plane::server::run_in_process(
        config,
        hooks,
        Some(ready_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let app = tokio::time::timeout(T, ready_rx)
        .await
        .expect("the control plane to start")
        .expect("the control plane started");
    (app, stop_tx, cp)
}

impl SimCluster {
    /// `hosts` sim hosts in one agent process, whose migration links run at
    /// `link_mbps`, and the control plane with `cp_args` (extra flags).
    pub async fn start(hosts: u32, link_mbps: u64, cp_args: &[&str]) -> Self {
        Self::start_split(&[hosts], link_mbps, cp_args).await
    }

    /// Sim hosts over several agent processes: `per_process[k]` hosts in process k
    /// (its hosts are named `simK-NNNN`, or `simK` alone).
    pub async fn start_split(per_process: &[u32], link_mbps: u64, cp_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ferry-sim-")
            .disable_cleanup(std::env::var_os("FERRY_TEST_KEEP").is_some())
            .tempdir()
            .expect("tempdir");
        let db = TestDb::new().await;
        let data_dir = dir.path().join("cp");
        let mut args = vec![
            "ferry-control-plane".to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--database-url".into(),
            db.url(),
            "--http-listen".into(),
            "127.0.0.1:0".into(),
            "--grpc-listen".into(),
            "127.0.0.1:0".into(),
            "--host-timeout".into(),
            "5s".into(),
        ];
        args.extend(cp_args.iter().map(|s| s.to_string()));
        let hooks = Arc::new(Hooks::default());
        let (app, stop_tx, cp) = launch(&args, hooks.clone()).await;
        let listen: Value = serde_json::from_str(
            &std::fs::read_to_string(data_dir.join("listen.json")).expect("listen.json"),
        )
        .expect("listen.json");
        // A restart listens where this one does (the agents and the tests know it).
        for (flag, key) in [("--http-listen", "http"), ("--grpc-listen", "grpc")] {
            let i = args.iter().position(|a| a == flag).expect("listen flag");
            args[i + 1] = listen[key].as_str().expect("listen address").to_string();
        }
        let http = format!("http://{}", listen["http"].as_str().unwrap());
        let grpc = listen["grpc"].as_str().unwrap().to_string();
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        let api = Api::new(&http, &token);
        let join = std::fs::read_to_string(data_dir.join("join.token"))
            .expect("join.token")
            .trim()
            .to_string();
        let mut agents = Vec::new();
        for (k, hosts) in per_process.iter().enumerate() {
            let mut cmd = std::process::Command::new(bin("ferry-agent"));
            cmd.args(["--control-plane", &format!("https://{grpc}")])
                .args(["--join-token", &join])
                .arg("--ca-cert")
                .arg(data_dir.join("ca.pem"))
                .args(["--name", &format!("sim{k}"), "--backend", "sim"])
                .args(["--count", &hosts.to_string()])
                .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"])
                .args(["--sim-link-mbps", &link_mbps.to_string()])
                .args(["--network", "vmnet"])
                .args(["--metrics-listen", "127.0.0.1:0"])
                .arg("--state-dir")
                .arg(dir.path().join(format!("agents-{k}")))
                .env("FERRY_LOG", "info");
            agents.push(Proc::spawn(
                &format!("sim agent {k}"),
                cmd,
                dir.path().join(format!("agents-{k}.log")),
            ));
        }
        let hosts: u32 = per_process.iter().sum();
        let want = hosts as usize;
        let listed = wait_for("every sim host to join and report", T, || {
            let api = api.clone();
            async move {
                let page = api.ok("/hosts?limit=1000").await;
                let items = page["items"].as_array()?.clone();
                let ready = items
                    .iter()
                    .filter(|h| {
                        h["state"] == "connected"
                            && h["cpu"]["cores"].as_u64().unwrap_or(0) > 0
                            && !h["networks"].as_array().is_none_or(|n| n.is_empty())
                    })
                    .count();
                (ready == want).then_some(items)
            }
        })
        .await;
        let mut hosts: Vec<(String, HostId)> = listed
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    h["id"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        hosts.sort();
        Self {
            agents,
            app,
            api,
            hooks,
            hosts,
            stop: Some(stop_tx),
            cp: Some(cp),
            cp_args: args,
            db,
            dir,
        }
    }

    pub fn host(&self, i: usize) -> HostId {
        self.hosts[i].1
    }

    /// Creates a VM on host `i` with the sim model's `cmdline` and powers it on;
    /// returns its id once it is recorded running.
    pub async fn vm(&self, name: &str, i: usize, memory_mib: u64, cmdline: &str) -> String {
        let net = self.api.ok("/networks?name=vmnet").await["items"][0]["id"].clone();
        let r = self
            .api
            .post(
                "/vms",
                &json!({"name": name, "host_id": self.host(i), "vcpus": 1, "memory_mib": memory_mib,
                        "nics": [{"network_id": net}],
                        "boot": {"kernel": "/sim/vmlinuz", "cmdline": cmdline}}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.body["id"].as_str().unwrap().to_string();
        let p = self
            .api
            .post(&format!("/vms/{id}/power"), &json!({"action": "on"}))
            .await;
        assert_eq!(p.status, 202, "{p:?}");
        let task = p.body["id"].as_str().unwrap().to_string();
        let api = self.api.clone();
        // Running, and the power-on task ended (it holds the VM until then).
        wait_for("the sim VM to run", T, || {
            let (api, id, task) = (api.clone(), id.clone(), task.clone());
            async move {
                let running = api.ok(&format!("/vms/{id}")).await["power_state"] == "running";
                let done = api.ok(&format!("/tasks/{task}")).await["state"] == "succeeded";
                (running && done).then_some(())
            }
        })
        .await;
        id
    }

    /// Every host's copy of the VM, as the agents report it: (host index, state).
    pub async fn copies(&self, vm_id: &str) -> Vec<(usize, VmState)> {
        let mut out = Vec::new();
        for (i, (_, host)) in self.hosts.iter().enumerate() {
            let addr = self
                .app
                .db
                .host_fetch(*host)
                .await
                .expect("host fetch")
                .expect("host")
                .address;
            let mut c = self.app.agents.connect(*host, &addr).await.expect("agent");
            let list = c
                .vm_list(VmListRequest {})
                .await
                .expect("vm list")
                .into_inner();
            for v in list.vms.iter().filter(|v| v.vm_id == vm_id) {
                out.push((i, v.state()));
            }
        }
        out
    }

    /// Stops the in-process control plane (its listeners; sagas it ran stop with
    /// this test's runtime).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(cp) = self.cp.take() {
            let _ = tokio::time::timeout(T, cp).await;
        }
    }

    /// Stops the control plane and starts it again on the same database, data
    /// directory and ports, as an operator's restart would (sagas recover).
    pub async fn restart(&mut self) {
        self.stop().await;
        let (app, stop, cp) = launch(&self.cp_args, self.hooks.clone()).await;
        self.app = app;
        self.stop = Some(stop);
        self.cp = Some(cp);
    }

    /// `POST /hosts/{host i}/maintenance` with `body`, expecting 202; the answer.
    pub async fn enter_maintenance(&self, i: usize, body: &Value) -> Value {
        let r = self
            .api
            .post(&format!("/hosts/{}/maintenance", self.host(i)), body)
            .await;
        assert_eq!(r.status, 202, "{r:?}");
        r.body
    }

    /// Waits until host i's latest maintenance is no longer evacuating; returns it.
    pub async fn maintenance_ended(&self, i: usize) -> Value {
        let path = format!("/hosts/{}/maintenance", self.host(i));
        wait_for("the evacuation to end", Duration::from_secs(90), || {
            let (api, path) = (self.api.clone(), path.clone());
            async move {
                let m = api.ok(&path).await;
                (m["state"] != "evacuating").then_some(m)
            }
        })
        .await
    }

    /// Runs `ferryctl` against this control plane: (success, stdout, stderr).
    /// Asynchronously: the control plane serves from this test's own runtime.
    pub async fn ferryctl(&self, args: &[&str]) -> (bool, String, String) {
        let token =
            std::fs::read_to_string(self.data_dir().join("admin.token")).expect("admin.token");
        let out = tokio::process::Command::new(bin("ferryctl"))
            .args(args)
            .env("FERRY_URL", &self.api.base)
            .env("FERRY_TOKEN", token.trim())
            .output()
            .await
            .expect("run ferryctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// `http://ADDR/metrics` of agent process `k` (every sim agent serves one).
    pub async fn agent_metrics_url(&self, k: usize) -> String {
        let file = self.dir.path().join(format!("agents-{k}/metrics.addr"));
        let addr = wait_for("the agent's metrics listener", T, || {
            let file = file.clone();
            async move { std::fs::read_to_string(&file).ok() }
        })
        .await;
        format!("http://{}/metrics", addr.trim())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("cp")
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.agents.clear();
    }
}
