//! The campaign's invariants, checked after each round: what the inventory
//! says against the QEMU processes, taps, bridges and listeners in each host's
//! namespace, the guests' own counters, and what each agent reports running.

use std::time::{Duration, Instant};

use super::{Campaign, AGENT_METRICS_PORT, HOSTS, NAMES};
use crate::vmtest::{netns_of, qemus};

/// What host `ip`'s agent reports: the ids of the VMs it runs, and its QEMU
/// processes (from its `/metrics`).
pub(super) async fn agent_report(http: &reqwest::Client, ip: &str) -> Option<(Vec<String>, u64)> {
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

pub(super) fn ip_cmd(args: &[&str]) -> Result<String, String> {
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
pub(super) fn devices_with(ns: &str, marker: &str) -> usize {
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
pub(super) fn qemu_listeners(ns: &str) -> Vec<String> {
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
    /// The invariants as they stand now (a test plants a leak to see them fail).
    pub async fn check(&mut self) -> Vec<String> {
        self.invariants(false).await
    }

    /// The invariants, once settled.
    pub(super) async fn invariants(&mut self, powered: bool) -> Vec<String> {
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
