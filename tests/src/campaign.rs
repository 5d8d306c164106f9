//! The randomized fault campaign (issue #13): rounds of random operations on real
//! lab guests (migrate, migrate then cancel, power off and on) under one random
//! fault each — the control plane or an agent SIGKILLed and restarted, the
//! embedded PostgreSQL stopped and started, a host's links down, loss (an
//! nftables `numgen random` drop rule) or delay (`delay_relay`) on the migration
//! path — and after each round the invariants: every VM runs in exactly one QEMU,
//! on the host the inventory names (or is stopped, as recorded); the guest's
//! integrity counter is zero and it did not reboot unless told to; no QEMU, tap,
//! bridge or migration listener leaked; no migration or task left unfinished
//! past its deadline; the inventory agrees with what each agent reports running
//! (its `/metrics`: the VMs it holds and its QEMU processes). A round's plan is a pure function of the seed and its
//! number, so a failing round is replayed by running the same seed again.
//! `ferry-bench-faults` runs it for as many rounds as asked; `make test` runs
//! `tests/tests/fault_campaign.rs`, a fixed list of seeds covering every fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::delay_relay::{nft, DelayRelay};
use crate::procs::{AgentOptions, Env};
use crate::vmtest::{boot_guest, netns_of, qemus};

/// The faults, one per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    ControlPlaneKill,
    SourceAgentKill,
    DestinationAgentKill,
    DatabaseRestart,
    LinksDown,
    Loss,
    Delay,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::ControlPlaneKill,
        Fault::SourceAgentKill,
        Fault::DestinationAgentKill,
        Fault::DatabaseRestart,
        Fault::LinksDown,
        Fault::Loss,
        Fault::Delay,
    ];

    /// Faults on the migration path need a migration to act on.
    fn on_the_path(self) -> bool {
        matches!(self, Fault::Loss | Fault::Delay)
    }
}

/// The operations a round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Migrate,
    MigrateThenCancel,
    PowerOffOn,
}

/// What one round does, drawn from (seed, round) alone.
#[derive(Debug, Clone, Serialize)]
pub struct RoundPlan {
    pub seed: u64,
    pub round: u32,
    pub op: Op,
    pub fault: Fault,
    /// Index of the guest to act on.
    pub guest: usize,
    /// Which of the other hosts is the destination.
    pub destination: usize,
    /// When the fault strikes after the operation starts.
    pub fault_after_ms: u64,
    /// How long a process stays dead, the database stopped, the links down.
    pub fault_for_ms: u64,
    /// Links down on the destination (else the source).
    pub links_of_destination: bool,
    pub loss_pct: u32,
    pub delay_ms: u64,
    pub cancel_after_ms: u64,
}

/// The rounds `seed` plans.
pub fn plan(seed: u64, rounds: u32) -> Vec<RoundPlan> {
    (0..rounds)
        .map(|round| {
            let mut rng =
                StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round as u64);
            let fault = Fault::ALL[rng.gen_range(0..Fault::ALL.len())];
            let op = match rng.gen_range(0..4) {
                _ if fault.on_the_path() => Op::Migrate,
                0 => Op::PowerOffOn,
                1 => Op::MigrateThenCancel,
                _ => Op::Migrate,
            };
            RoundPlan {
                seed,
                round,
                op,
                fault,
                guest: rng.gen_range(0..16),
                destination: rng.gen_range(0..16),
                fault_after_ms: rng.gen_range(0..1500),
                fault_for_ms: rng.gen_range(500..6000),
                links_of_destination: rng.gen_bool(0.5),
                loss_pct: rng.gen_range(1..=8),
                delay_ms: rng.gen_range(5..=40),
                cancel_after_ms: rng.gen_range(0..2000),
            }
        })
        .collect()
}

/// What a round did and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub seed: u64,
    pub round: u32,
    pub op: Op,
    pub fault: Fault,
    pub vm: String,
    pub from: String,
    pub to: String,
    /// The migration's end state, or why none started.
    pub outcome: String,
    /// Whether the fault struck while the operation was still under way.
    pub struck_in_flight: bool,
    /// Loss: packets the rule dropped; delay: connections the relay carried.
    pub injected: u64,
    /// From the operation's start to its end.
    pub op_ms: u64,
    /// From the fault's end (process restarted, database up, links up, rule
    /// removed) until every host was connected, nothing in flight and every
    /// guest serving.
    pub recovery_ms: u64,
    pub round_ms: u64,
    pub violations: Vec<String>,
}

const HOSTS: u8 = 3;
/// Each guest's memory load: MB/s written over a working set of MiB.
const DIRTY_MBPS: u32 = 30;
const DIRTY_WSS_MIB: u32 = 48;
/// Each guest's memory (the image's rootfs lives in it too).
const GUEST_MIB: u64 = 256;
const NAMES: [&str; 3] = ["host-a", "host-b", "host-c"];
/// How long a round may take to settle; past it, whatever is unfinished is a
/// violation (longer than any saga's own deadlines).
const SETTLE: Duration = Duration::from_secs(240);

#[derive(Debug, Clone)]
struct Guest {
    id: String,
    ip: String,
    boot_id: String,
}

/// A lab of three QEMU hosts, guests on them, and the control plane on its
/// embedded PostgreSQL.
pub struct Campaign {
    pub env: Env,
    /// Host index → its current agent in `env.agents`.
    agent_of: Vec<usize>,
    host_ids: Vec<String>,
    guests: Vec<Guest>,
    /// Bridges in each host's namespace once the guests run.
    bridges: Vec<usize>,
    http: reqwest::Client,
}

/// Host `i`'s agent, serving its metrics (what it reports holding) on the fabric.
fn agent_options(env: &Env, i: u8) -> AgentOptions {
    let mut o = AgentOptions::qemu(NAMES[i as usize]);
    o.args = vec![
        "--metrics-listen".into(),
        format!("{}:{AGENT_METRICS_PORT}", env.lab.host_ip(i)),
    ];
    o
}

const AGENT_METRICS_PORT: u16 = 9102;

/// What host `ip`'s agent reports: the ids of the VMs it runs, and its QEMU
/// processes (from its `/metrics`).
async fn agent_report(http: &reqwest::Client, ip: &str) -> Option<(Vec<String>, u64)> {
    let text = http
        .get(format!("http://{ip}:{AGENT_METRICS_PORT}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut running = Vec::new();
    let mut processes = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ferry_agent_vm_cpu_seconds_total{") {
            let id = rest.split("vm_id=\"").nth(1)?.split('"').next()?;
            running.push(id.to_string());
        } else if let Some(v) = line.strip_prefix("ferry_agent_qemu_processes ") {
            processes = v.trim().parse::<f64>().ok().map(|v| v as u64);
        }
    }
    running.sort();
    Some((running, processes?))
}

fn ip_cmd(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Devices of namespace `ns` that have `/sys/class/net/<dev>/<marker>`
/// (`tun_flags`: a tap; `bridge`: a bridge).
fn devices_with(ns: &str, marker: &str) -> usize {
    ip_cmd(&[
        "netns",
        "exec",
        ns,
        "sh",
        "-c",
        &format!("ls -d /sys/class/net/*/{marker} 2>/dev/null || true"),
    ])
    .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
    .unwrap_or(0)
}

/// TCP listeners owned by QEMU processes in namespace `ns`.
fn qemu_listeners(ns: &str) -> Vec<String> {
    ip_cmd(&["netns", "exec", ns, "ss", "-Hltnp"])
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("qemu"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default()
}

impl Campaign {
    /// Three hosts, `guests` guests spread over them, each serving.
    pub async fn start(guests: u8) -> Self {
        let mut env = Env::with_embedded_db(HOSTS, &["--host-timeout", "5s"]).await;
        let mut agent_of = Vec::new();
        for i in 0..HOSTS {
            agent_of.push(env.start_agent(i, &agent_options(&env, i)));
        }
        let mut host_ids = Vec::new();
        for name in NAMES {
            let h = env
                .wait_host_state(name, "connected", Duration::from_secs(60))
                .await;
            host_ids.push(h["id"].as_str().unwrap_or_default().to_string());
        }
        let mut list = Vec::new();
        for g in 0..guests {
            let ip = env.lab.guest_ip(g + 1);
            let host = &host_ids[g as usize % host_ids.len()];
            let id = boot_guest(&env, &format!("chaos-{g}"), host, GUEST_MIB, &ip).await;
            list.push(Guest {
                id,
                ip,
                boot_id: String::new(),
            });
        }
        let bridges = (0..HOSTS)
            .map(|i| devices_with(&env.lab.ns(i), "bridge"))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let mut c = Self {
            env,
            agent_of,
            host_ids,
            guests: list,
            bridges,
            http,
        };
        for i in 0..c.guests.len() {
            let s = c.guest_status(i).await.expect("a guest serving");
            c.guests[i].boot_id = s["boot_id"].as_str().unwrap_or_default().to_string();
            c.load(i).await;
        }
        c
    }

    /// Sets guest `i` dirtying (and verifying) its memory, so that moves take
    /// several passes and faults find them in flight.
    async fn load(&self, i: usize) {
        let url = format!(
            "http://{}/dirty?mbps={DIRTY_MBPS}&wss_mib={DIRTY_WSS_MIB}",
            self.guests[i].ip
        );
        let answer = async { self.http.post(&url).send().await?.json::<Value>().await }.await;
        match answer {
            Ok(s) if s["dirty_mbps_target"] == DIRTY_MBPS => {}
            other => eprintln!("campaign: {url}: the load was not set: {other:?}"),
        }
    }

    /// `GET /api/v1{path}`, `None` while the control plane or its database is away.
    async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/api/v1{path}", self.env.cp.http))
            .bearer_auth(self.env.cp.admin_token())
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    async fn post(&self, path: &str, body: &Value) -> Option<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}/api/v1{path}", self.env.cp.http))
            .bearer_auth(self.env.cp.admin_token())
            .json(body)
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn guest_status(&self, i: usize) -> Option<Value> {
        self.http
            .get(format!("http://{}/status", self.guests[i].ip))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    fn host_index(&self, id: &str) -> Option<usize> {
        self.host_ids.iter().position(|h| h == id)
    }

    /// Runs one round and checks the invariants after it.
    pub async fn round(&mut self, p: &RoundPlan) -> RoundReport {
        let t0 = Instant::now();
        let gi = p.guest % self.guests.len();
        let guest = self.guests[gi].clone();
        let vm = self
            .get(&format!("/vms/{}", guest.id))
            .await
            .unwrap_or(Value::Null);
        let src = vm["host_id"]
            .as_str()
            .and_then(|h| self.host_index(h))
            .unwrap_or(0);
        let others: Vec<usize> = (0..HOSTS as usize).filter(|&i| i != src).collect();
        let dst = others[p.destination % others.len()];
        let mut report = RoundReport {
            seed: p.seed,
            round: p.round,
            op: p.op,
            fault: p.fault,
            vm: format!("chaos-{gi}"),
            from: NAMES[src].into(),
            to: NAMES[dst].into(),
            outcome: String::new(),
            struck_in_flight: false,
            injected: 0,
            op_ms: 0,
            recovery_ms: 0,
            round_ms: 0,
            violations: Vec::new(),
        };

        // A fault on the path is in place before the migration opens its streams.
        let lab = &self.env.lab;
        let (src_ns, dst_ip) = (lab.ns(src as u8), lab.host_ip(dst as u8));
        let loss_table = format!("ferry_loss_{}", p.round);
        let mut relay = None;
        match p.fault {
            Fault::Loss => {
                let rule = format!(
                    "table inet {loss_table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
                     oifname \"eth0\" ip daddr {dst_ip} numgen random mod 100 < {} counter drop\n }}\n}}\n",
                    p.loss_pct
                );
                if let Err(e) = nft(&src_ns, &rule) {
                    report
                        .violations
                        .push(format!("could not install the loss rule: {e}"));
                }
            }
            Fault::Delay => {
                match DelayRelay::start(
                    &src_ns,
                    &lab.host_ip(src as u8),
                    &dst_ip,
                    Duration::from_millis(p.delay_ms),
                ) {
                    Ok(r) => relay = Some(r),
                    Err(e) => report
                        .violations
                        .push(format!("could not start the delay relay: {e}")),
                }
            }
            _ => {}
        }

        // The operation, in the background: the fault strikes while it runs.
        let op_task = {
            let (http, base, token) = (
                self.http.clone(),
                self.env.cp.http.clone(),
                self.env.cp.admin_token(),
            );
            let (vm_id, dst_id, op, cancel_after) = (
                guest.id.clone(),
                self.host_ids[dst].clone(),
                p.op,
                Duration::from_millis(p.cancel_after_ms),
            );
            tokio::spawn(async move {
                let t = Instant::now();
                let outcome = run_op(http, base, token, vm_id, dst_id, op, cancel_after).await;
                (outcome, t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(p.fault_after_ms)).await;
        report.struck_in_flight = p.fault.on_the_path() || !op_task.is_finished();
        let fault_for = Duration::from_millis(p.fault_for_ms);
        match p.fault {
            Fault::ControlPlaneKill => {
                self.env.cp.proc.kill9();
                tokio::time::sleep(fault_for).await;
                self.env.cp.restart().await;
            }
            Fault::SourceAgentKill | Fault::DestinationAgentKill => {
                let i = if p.fault == Fault::SourceAgentKill {
                    src
                } else {
                    dst
                };
                self.env.agents[self.agent_of[i]].kill9();
                tokio::time::sleep(fault_for).await;
                self.agent_of[i] = self
                    .env
                    .start_agent(i as u8, &agent_options(&self.env, i as u8));
            }
            Fault::DatabaseRestart => {
                let dir = self.env.cp.data_dir.clone();
                let stopped = tokio::task::spawn_blocking(move || {
                    ferry_control_plane::embedded_pg::EmbeddedPg::start(&dir, None)?.stop()
                })
                .await;
                if !matches!(stopped, Ok(Ok(()))) {
                    report
                        .violations
                        .push(format!("could not stop PostgreSQL: {stopped:?}"));
                }
                tokio::time::sleep(fault_for).await;
                let dir = self.env.cp.data_dir.clone();
                let started = tokio::task::spawn_blocking(move || {
                    ferry_control_plane::embedded_pg::EmbeddedPg::start(&dir, None).map(|_| ())
                })
                .await;
                if !matches!(started, Ok(Ok(()))) {
                    report
                        .violations
                        .push(format!("could not start PostgreSQL: {started:?}"));
                }
            }
            Fault::LinksDown => {
                let i = if p.links_of_destination { dst } else { src };
                let ns = self.env.lab.ns(i as u8);
                for dev in ["eth0", "eth1"] {
                    let _ = ip_cmd(&["-n", &ns, "link", "set", dev, "down"]);
                }
                tokio::time::sleep(fault_for).await;
                for dev in ["eth0", "eth1"] {
                    if let Err(e) = ip_cmd(&["-n", &ns, "link", "set", dev, "up"]) {
                        report
                            .violations
                            .push(format!("could not set {dev} up: {e}"));
                    }
                }
            }
            Fault::Loss | Fault::Delay => {}
        }
        let mut restored = Instant::now();
        // The operation's own end (it reports what became of the migration).
        let op_result = tokio::time::timeout(SETTLE, op_task).await;
        if p.fault == Fault::Loss {
            // The rule's counter: the fault took (packets were dropped).
            let listing =
                nft(&src_ns, &format!("list table inet {loss_table}\n")).unwrap_or_default();
            report.injected = listing
                .split("counter packets ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let _ = nft(&src_ns, &format!("delete table inet {loss_table}\n"));
            restored = Instant::now();
        }
        if let Some(r) = relay.take() {
            report.injected = r.connections();
            drop(r);
            restored = Instant::now();
        }
        report.outcome = match op_result {
            Ok(Ok((o, took))) => {
                report.op_ms = took.as_millis() as u64;
                o
            }
            Ok(Err(e)) => format!("operation task failed: {e}"),
            Err(_) => {
                report
                    .violations
                    .push("the operation did not end within the deadline".into());
                "unfinished".into()
            }
        };

        // Settled: hosts connected, nothing in flight, guests running and serving.
        let settled = self.settle(p.op == Op::PowerOffOn).await;
        report.recovery_ms = restored.elapsed().as_millis() as u64;
        if let Err(e) = settled {
            report.violations.push(e);
        }
        report
            .violations
            .extend(self.invariants(p.op == Op::PowerOffOn).await);
        report.round_ms = t0.elapsed().as_millis() as u64;
        report
    }

    /// Waits until every host is connected, no migration or task is in flight, and
    /// every guest runs and serves (powering on what a power round left off).
    async fn settle(&mut self, powered: bool) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        let mut last = String::new();
        let mut powered_on: HashMap<String, Instant> = HashMap::new();
        while Instant::now() < deadline {
            match self.unsettled(powered, &mut powered_on).await {
                None => return Ok(()),
                Some(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!("not settled after {} s: {last}", SETTLE.as_secs()))
    }

    async fn unsettled(
        &self,
        powered: bool,
        powered_on: &mut HashMap<String, Instant>,
    ) -> Option<String> {
        let Some(hosts) = self.get("/hosts?limit=100").await else {
            return Some("the API does not answer".into());
        };
        for h in hosts["items"].as_array().into_iter().flatten() {
            if h["state"] != "connected" {
                return Some(format!("{} is {}", h["name"], h["state"]));
            }
        }
        let active = self.get("/migrations?active=true").await?;
        if let Some(m) = active["items"].as_array().and_then(|a| a.first()) {
            return Some(format!("migration {} is {}", m["id"], m["state"]));
        }
        for state in ["queued", "running"] {
            let t = self.get(&format!("/tasks?state={state}")).await?;
            if let Some(t) = t["items"].as_array().and_then(|a| a.first()) {
                return Some(format!("task {} ({}) is {state}", t["id"], t["kind"]));
            }
        }
        for (i, g) in self.guests.iter().enumerate() {
            let vm = self.get(&format!("/vms/{}", g.id)).await?;
            if vm["power_state"] != "running" {
                if !powered {
                    return Some(format!("{} is {}", g.id, vm["power_state"]));
                }
                // A power round may end with the guest off (its "on" lost to the fault).
                if vm["power_state"] == "stopped"
                    && powered_on
                        .get(&g.id)
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
                {
                    powered_on.insert(g.id.clone(), Instant::now());
                    let _ = self
                        .post(&format!("/vms/{}/power", g.id), &json!({"action": "on"}))
                        .await;
                }
                return Some(format!("{} is {}", g.id, vm["power_state"]));
            }
            if self.guest_status(i).await.is_none() {
                return Some(format!("guest {} does not serve yet", g.ip));
            }
        }
        None
    }

    /// The invariants as they stand now (a test plants a leak to see them fail).
    pub async fn check(&mut self) -> Vec<String> {
        self.invariants(false).await
    }

    /// The invariants, once settled.
    async fn invariants(&mut self, powered: bool) -> Vec<String> {
        let mut v = Vec::new();
        let ns_of: Vec<String> = (0..HOSTS).map(|i| netns_of(&self.env, i)).collect();
        let mut running_on = vec![0usize; HOSTS as usize];
        let mut recorded_on: Vec<Vec<String>> = vec![Vec::new(); HOSTS as usize];
        for i in 0..self.guests.len() {
            let g = self.guests[i].clone();
            let Some(vm) = self.get(&format!("/vms/{}", g.id)).await else {
                v.push(format!("{}: the API does not answer", g.id));
                continue;
            };
            let host = vm["host_id"].as_str().and_then(|h| self.host_index(h));
            // QEMUs of a move's source or cancelled destination go within seconds.
            let mut found = qemus(&g.id);
            let deadline = Instant::now() + Duration::from_secs(30);
            while found.len() > 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                found = qemus(&g.id);
            }
            match (vm["power_state"].as_str(), host) {
                (Some("running"), Some(h)) => {
                    running_on[h] += 1;
                    recorded_on[h].push(g.id.clone());
                    if found.len() != 1 || found[0].1 != ns_of[h] {
                        v.push(format!(
                            "{}: recorded running on {} but QEMUs are {found:?}",
                            g.id, NAMES[h]
                        ));
                    }
                }
                (Some("stopped"), _) => {
                    if !found.is_empty() {
                        v.push(format!(
                            "{}: recorded stopped but QEMUs are {found:?}",
                            g.id
                        ));
                    }
                }
                (state, _) => v.push(format!("{}: {state:?} on {host:?} after settling", g.id)),
            }
            match self.guest_status(i).await {
                Some(s) => {
                    if s["integrity_errors"] != 0 {
                        v.push(format!("{}: integrity errors: {s}", g.ip));
                    }
                    let boot = s["boot_id"].as_str().unwrap_or_default().to_string();
                    if boot != g.boot_id {
                        if !powered {
                            v.push(format!("{}: the guest rebooted unasked", g.ip));
                        }
                        self.guests[i].boot_id = boot;
                        self.load(i).await;
                    }
                }
                None => v.push(format!("{}: the guest does not serve", g.ip)),
            }
        }
        for i in 0..HOSTS {
            let ns = self.env.lab.ns(i);
            let taps = devices_with(&ns, "tun_flags");
            if taps != running_on[i as usize] {
                v.push(format!(
                    "{}: {taps} taps for {} running guests",
                    NAMES[i as usize], running_on[i as usize]
                ));
            }
            let bridges = devices_with(&ns, "bridge");
            if bridges != self.bridges[i as usize] {
                v.push(format!(
                    "{}: {bridges} bridges (was {})",
                    NAMES[i as usize], self.bridges[i as usize]
                ));
            }
            let listeners = qemu_listeners(&ns);
            if !listeners.is_empty() {
                v.push(format!(
                    "{}: QEMU listeners left: {listeners:?}",
                    NAMES[i as usize]
                ));
            }
        }
        // The inventory against what each agent says it runs.
        for i in 0..HOSTS as usize {
            recorded_on[i].sort();
            match agent_report(&self.http, &self.env.lab.host_ip(i as u8)).await {
                Some((ids, processes)) => {
                    if ids != recorded_on[i] || processes != ids.len() as u64 {
                        v.push(format!(
                            "{}: the agent reports {ids:?} in {processes} QEMUs, the inventory {:?}",
                            NAMES[i], recorded_on[i]
                        ));
                    }
                }
                None => v.push(format!(
                    "{}: the agent's report could not be read",
                    NAMES[i]
                )),
            }
        }
        let all: usize = self.guests.iter().map(|g| qemus(&g.id).len()).sum();
        let running: usize = running_on.iter().sum();
        if all != running {
            v.push(format!("{all} QEMUs for {running} running guests"));
        }
        v
    }
}

/// Runs `op` on `vm_id`; says what became of it.
async fn run_op(
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
