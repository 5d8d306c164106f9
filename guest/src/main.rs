//! `ferry-guest`: the workload inside Ferry's test guest, run as its init's last
//! step. It makes a guest observable from outside while it migrates:
//!
//! * TCP echo on port 7 (a client sends numbered lines and checks every one comes back);
//! * UDP echo on port 7 (each datagram sent back: one lost on the way shows as missing);
//! * HTTP on port 80: `GET /status` (JSON: uptime, dirty rate, working set, pages
//!   verified, integrity errors) and `POST /dirty?mbps=&wss_mib=` to change the load;
//! * a memory dirtier writing `ferry.dirty_mbps` MiB/s over a `ferry.wss_mib` working
//!   set (`boot_id` tells one boot from the next), and a verifier that checks every page it reads against what was written:
//!   each 4 KiB page holds a version and words derived from (page, version, word), so
//!   a page that migration corrupted, lost or tore is counted as an integrity error.
//!
//! * with `ferry.disk=/dev/vda`, a disk writer and verifier (`disk.rs`): checksummed
//!   blocks written with `O_DIRECT`, read back by `POST /disk/verify`.
//!
//! It prints `ferry-guest: ready` on the console once it serves.

mod disk;
mod memory;
mod net;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|a| {
        a.strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .map(String::from)
    })
}

fn main() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mbps: u64 = cmdline_value(&cmdline, "ferry.dirty_mbps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let wss: u64 = cmdline_value(&cmdline, "ferry.wss_mib")
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let state = Arc::new(memory::State::new(mbps, wss));
    let started = Instant::now();

    let worker = state.clone();
    std::thread::spawn(move || memory::run(&worker));
    let disk = cmdline_value(&cmdline, "ferry.disk").and_then(|path| {
        let mib = cmdline_value(&cmdline, "ferry.disk_mib")
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let mbps = cmdline_value(&cmdline, "ferry.disk_mbps")
            .and_then(|v| v.parse().ok())
            .unwrap_or(2);
        match disk::Disk::open(&path, mib, mbps) {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                println!("ferry-guest: no disk workload on {path}: {e}");
                None
            }
        }
    });
    if let Some(d) = disk.clone() {
        std::thread::spawn(move || d.run());
    }
    let echo = std::thread::spawn(|| net::serve_echo(7));
    std::thread::spawn(|| net::serve_udp_echo(7));
    let http_state = state.clone();
    let http =
        std::thread::spawn(move || net::serve_http(80, &http_state, disk.as_deref(), started));

    println!("ferry-guest: ready (dirty {mbps} MiB/s over {wss} MiB)");
    let _ = echo.join();
    let _ = http.join();
    // As the guest's PID 1 this must never return.
    loop {
        std::thread::park();
        let _ = state.errors.load(Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cmdline() {
        let c = "console=ttyS0 ferry.ip=10.0.0.5/24 ferry.dirty_mbps=32 ferry.wss_mib=128";
        assert_eq!(
            super::cmdline_value(c, "ferry.dirty_mbps").as_deref(),
            Some("32")
        );
        assert_eq!(
            super::cmdline_value(c, "ferry.wss_mib").as_deref(),
            Some("128")
        );
        assert_eq!(super::cmdline_value(c, "ferry.nope"), None);
    }
}
