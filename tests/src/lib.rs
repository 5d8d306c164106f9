//! The end-to-end test harness: real PostgreSQL (`pg`), real control-plane and agent
//! processes (`procs`), each agent in its own network namespace with its own address
//! on a lab fabric (`netns`), and a small REST client (`rest`). Everything a test
//! creates is removed when its guard drops, also when the test fails.

pub mod browser;
pub mod campaign;
pub mod delay_relay;
pub mod echo;
pub mod guest;
pub mod netns;
pub mod pg;
pub mod procs;
pub mod rest;
pub mod sim;
pub mod udp_echo;
pub mod vmtest;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A built binary of the workspace (`FERRY_BIN_DIR`, default `target/debug`).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("FERRY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` (or `make test`) first",
        p.display()
    );
    p
}

/// For programs installed beside Ferry's binaries (the benchmarks): unless
/// `FERRY_BIN_DIR` says otherwise, [`bin`] looks in this program's own directory.
pub fn bin_dir_defaults_to_own() {
    if std::env::var_os("FERRY_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        {
            std::env::set_var("FERRY_BIN_DIR", dir);
        }
    }
}

/// Polls `cond` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A `/proc/<pid>/status` field in KiB (e.g. `VmRSS`, `VmHWM`); 0 when unknown.
/// CPU time (user + system) process `pid` has used, seconds, from `/proc/PID/stat`
/// (utime and stime are its fields 14 and 15: 12 and 13 after the parenthesised
/// command name, which may hold spaces).
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| {
            r.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
