//! Real processes under test: the control plane and host agents, with their logs in
//! the test's directory (printed when a test fails), stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::Lab;
use crate::pg::TestDb;
use crate::rest::Api;
use crate::{bin, wait_for};

/// A child process with its log file; killed on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Has the process exited? Returns its exit code if so.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|s| s.code())
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns the exit code.
    pub async fn stop(&mut self, grace: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!(
                "----- last lines of {} ({}) -----",
                self.name,
                self.log.display()
            );
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill9();
    }
}

/// How to start the control plane.
#[derive(Clone, Default)]
pub struct CpOptions {
    /// `None`: the embedded database.
    pub database_url: Option<String>,
    /// Where agents reach gRPC (default 127.0.0.1).
    pub grpc_ip: Option<String>,
    /// The REST listener's address (default `127.0.0.1:0`: plain HTTP on loopback).
    pub http_listen: Option<String>,
    /// The CA the harness trusts for HTTPS (default: the cluster CA, `ca.pem`).
    pub http_ca: Option<PathBuf>,
    pub args: Vec<String>,
}

pub struct ControlPlane {
    pub proc: Proc,
    pub data_dir: PathBuf,
    /// The REST base URL: `http://` or, when the control plane serves TLS, `https://`.
    pub http: String,
    /// The REST listener's bound address (what a restart binds again).
    pub http_addr: String,
    pub grpc: String,
    opts: CpOptions,
}

impl ControlPlane {
    pub async fn start(dir: &Path, opts: CpOptions) -> Self {
        let grpc_ip = opts.grpc_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        let data_dir = dir.join("cp");
        // Port 0: the control plane binds free ports itself and names them in
        // listen.json. (Picking a "free" port here and passing it raced with parallel
        // tests: one lost the bind while /health was answered by another's process.)
        let http_listen = opts
            .http_listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let proc = Self::spawn(&data_dir, &http_listen, &format!("{grpc_ip}:0"), &opts);
        let mut cp = Self {
            proc,
            data_dir,
            http: String::new(),
            http_addr: String::new(),
            grpc: String::new(),
            opts,
        };
        let (url, http, grpc) = cp.wait_listening().await;
        cp.http = url;
        cp.http_addr = http;
        cp.grpc = grpc;
        cp.wait_ready().await;
        cp
    }

    /// Waits for `listen.json` (both listeners bound) and returns (REST URL, REST
    /// address, gRPC address).
    async fn wait_listening(&mut self) -> (String, String, String) {
        let path = self.data_dir.join("listen.json");
        let proc = &mut self.proc;
        wait_for(
            "the control plane to bind its listeners",
            Duration::from_secs(90),
            || {
                let exited = proc.exited();
                let text = std::fs::read_to_string(&path).ok();
                async move {
                    if let Some(code) = exited {
                        panic!("the control plane exited with {code:?} during start-up");
                    }
                    let v: serde_json::Value = serde_json::from_str(&text?).ok()?;
                    Some((
                        v["url"].as_str()?.to_string(),
                        v["http"].as_str()?.to_string(),
                        v["grpc"].as_str()?.to_string(),
                    ))
                }
            },
        )
        .await
    }

    fn spawn(data_dir: &Path, http: &str, grpc: &str, opts: &CpOptions) -> Proc {
        let mut cmd = Command::new(bin("ferry-control-plane"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("--http-listen")
            .arg(http)
            .arg("--grpc-listen")
            .arg(grpc)
            .env(
                "FERRY_LOG",
                "info,ferry_control_plane=debug,tower_http=warn",
            );
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(&opts.args);
        std::fs::create_dir_all(data_dir).expect("data dir");
        // A previous run's file would name ports before this process has bound them.
        let _ = std::fs::remove_file(data_dir.join("listen.json"));
        Proc::spawn("control-plane", cmd, data_dir.with_extension("log"))
    }

    /// Sets `flag` to `value` for the next (re)start: replaces the flag's value
    /// if it was given, else adds it.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        let args = &mut self.opts.args;
        match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => args[i + 1] = value.to_string(),
            _ => {
                args.push(flag.to_string());
                args.push(value.to_string());
            }
        }
    }

    /// Starts the process again with the same data dir, ports and database.
    pub async fn restart(&mut self) {
        assert!(
            self.proc.pid().is_none() || self.proc.exited().is_some(),
            "control plane still running"
        );
        self.proc = Self::spawn(&self.data_dir, &self.http_addr, &self.grpc, &self.opts);
        self.wait_listening().await;
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let health = format!("{}/api/v1/health", self.http);
        let client = self.client();
        let proc = &mut self.proc;
        wait_for(
            "the control plane to answer /health",
            Duration::from_secs(90),
            || {
                let (client, health) = (client.clone(), health.clone());
                let exited = proc.exited();
                async move {
                    if let Some(code) = exited {
                        panic!("the control plane exited with {code:?} during start-up");
                    }
                    client
                        .get(&health)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("join.token"))
            .expect("join.token")
            .trim()
            .to_string()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    pub fn api(&self) -> Api {
        Api::new(&self.http, &self.admin_token()).with_client(self.client())
    }

    /// An HTTP client for the REST API: trusting the cluster CA (`ca.pem`, and
    /// nothing else; or `CpOptions::http_ca`) when the control plane serves HTTPS.
    pub fn client(&self) -> reqwest::Client {
        if !self.http.starts_with("https://") {
            return reqwest::Client::new();
        }
        let ca = self.opts.http_ca.clone().unwrap_or_else(|| self.ca_path());
        let pem = std::fs::read(&ca).expect("the CA of the REST certificate");
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
            .build()
            .expect("client")
    }

    /// Graceful stop (SIGTERM), which also stops an embedded database.
    pub async fn stop(&mut self) -> Option<i32> {
        self.proc.stop(Duration::from_secs(30)).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.proc.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.proc.exited().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc.kill9();
        if self.opts.database_url.is_none() {
            let _ = ferry_control_plane::embedded_pg::stop_leftover(&self.data_dir);
        }
    }
}

/// How to start one agent.
#[derive(Clone)]
pub struct AgentOptions {
    pub name: String,
    pub backend: &'static str,
    pub heartbeat: &'static str,
    pub join_token: Option<String>,
    pub args: Vec<String>,
}

impl AgentOptions {
    pub fn qemu(name: &str) -> Self {
        Self {
            name: name.into(),
            backend: "qemu",
            heartbeat: "300ms",
            join_token: None,
            args: vec![],
        }
    }
}

/// A test's whole world: directory, database, lab network, control plane, agents.
/// Fields drop in order: agents, control plane, lab, database, directory.
pub struct Env {
    pub agents: Vec<Proc>,
    pub cp: ControlPlane,
    pub lab: Lab,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A lab with `hosts` namespaces and a control plane on a fresh database whose
    /// gRPC listens on the fabric. `cp_args` are extra control-plane flags.
    pub async fn new(hosts: u8, cp_args: &[&str]) -> Self {
        Self::start(hosts, cp_args, false).await
    }

    /// As `new`, but the control plane runs its own embedded PostgreSQL in its
    /// data dir (a test may stop and start it: `embedded_pg::EmbeddedPg`).
    pub async fn with_embedded_db(hosts: u8, cp_args: &[&str]) -> Self {
        Self::start(hosts, cp_args, true).await
    }

    async fn start(hosts: u8, cp_args: &[&str], embedded_db: bool) -> Self {
        // FERRY_TEST_KEEP=1 keeps each test's directory (logs, state) for a look.
        let dir = tempfile::Builder::new()
            .prefix("ferry-test-")
            .disable_cleanup(std::env::var_os("FERRY_TEST_KEEP").is_some())
            .tempdir()
            .expect("tempdir");
        let db = TestDb::new().await;
        let lab = Lab::new(hosts);
        let cp = ControlPlane::start(
            dir.path(),
            CpOptions {
                database_url: (!embedded_db).then(|| db.url()),
                grpc_ip: Some(lab.fabric_ip()),
                args: cp_args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .await;
        Self {
            agents: Vec::new(),
            cp,
            lab,
            db,
            dir,
        }
    }

    pub fn api(&self) -> Api {
        self.cp.api()
    }

    /// The directory of the datastore every host shares.
    pub fn shared_datastore(&self) -> PathBuf {
        self.dir.path().join("shared-ds")
    }

    /// The agent command for host `i` (in its namespace), without starting it.
    pub fn agent_command(&self, i: u8, o: &AgentOptions) -> Command {
        let mut cmd = self.lab.command(i, &bin("ferry-agent"));
        let token = o.join_token.clone().unwrap_or_else(|| self.cp.join_token());
        cmd.arg("--control-plane")
            .arg(format!("https://{}", self.cp.grpc))
            .arg("--join-token")
            .arg(token)
            .arg("--ca-cert")
            .arg(self.cp.ca_path())
            .arg("--name")
            .arg(&o.name)
            .arg("--listen")
            .arg(format!("{}:9091", self.lab.host_ip(i)))
            .arg("--backend")
            .arg(o.backend)
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("agent-{}", o.name)))
            .arg("--datastore")
            .arg(format!("shared={}", self.shared_datastore().display()))
            .arg("--datastore")
            .arg(format!(
                "local-{}={}",
                o.name,
                self.dir.path().join(format!("local-{}", o.name)).display()
            ))
            .arg("--network")
            .arg("vmnet=eth1")
            .arg("--heartbeat-interval")
            .arg(o.heartbeat)
            .args(&o.args)
            .env(
                "FERRY_LOG",
                std::env::var("FERRY_TEST_AGENT_LOG")
                    .unwrap_or_else(|_| "info,ferry_agent=debug".into()),
            );
        cmd
    }

    /// Starts an agent in host `i`'s namespace; returns its index in `agents`.
    pub fn start_agent(&mut self, i: u8, o: &AgentOptions) -> usize {
        let cmd = self.agent_command(i, o);
        let log = self.dir.path().join(format!("agent-{}.log", o.name));
        self.agents
            .push(Proc::spawn(&format!("agent {}", o.name), cmd, log));
        self.agents.len() - 1
    }

    /// Waits until the host called `name` is listed with `state`; returns it.
    pub async fn wait_host_state(
        &self,
        name: &str,
        state: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let api = self.api();
        wait_for(&format!("host {name} to be {state}"), timeout, || {
            let api = api.clone();
            async move {
                let r = api.get(&format!("/hosts?name={name}")).await;
                let h = r.body["items"].get(0)?.clone();
                (h["state"] == state && h["cpu"]["cores"].as_u64().unwrap_or(0) > 0).then_some(h)
            }
        })
        .await
    }
}
