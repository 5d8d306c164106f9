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

mod checks;
mod op;

use crate::procs::{AgentOptions, Env};
use crate::vmtest::boot_guest;
use checks::{devices_with, ip_cmd};
use op::run_op;

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
        crate::vmtest::try_guest_status(&self.guests[i].ip).await
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
}
