//! `ferry-bench-migration`'s raw QEMU contenders: one `migrate` driven by hand
//! over QMP, with QEMU's defaults or tuned as a knowledgeable user would, timed
//! from the request (the destination's start included) like Ferry's moves.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_bench::lab::{Echo, RawVm};
use ferry_tests::guest::SAME_BYTES_CMDLINE;
use ferry_tests::procs::Env;
use serde_json::{json, Value};

use super::{Case, Row, TUNED_DOWNTIME_MS};

/// Starts `migrate` to `uri` on `src` and follows it to its end (cancelled past
/// `limit`); returns QEMU's last status and when `migrate` was sent. With
/// `mirror` (a block job and its target node), the mirror is completed when the
/// migration pauses before its switchover (`pause-before-switchover` set), then
/// the migration continues: a storage migration by hand.
pub async fn migrate_and_follow(
    src: &RawVm,
    uri: &str,
    limit: Duration,
    mirror: Option<(&str, &str)>,
) -> (Value, Instant) {
    let _ = src.qmp.execute("migrate", json!({"uri": uri})).await;
    let t0 = Instant::now();
    let st = loop {
        let st = src
            .qmp
            .execute("query-migrate", json!({}))
            .await
            .unwrap_or(Value::Null);
        let s = st["status"].as_str().unwrap_or("none");
        if let (Some((job, node)), "pre-switchover") = (mirror, s) {
            let _ = src
                .qmp
                .execute("block-job-cancel", json!({"device": job}))
                .await;
            wait_no_jobs(src).await;
            let _ = src
                .qmp
                .execute("blockdev-del", json!({"node-name": node}))
                .await;
            let _ = src
                .qmp
                .execute("migrate-continue", json!({"state": "pre-switchover"}))
                .await;
        }
        if matches!(s, "completed" | "failed" | "cancelled") || st.is_null() {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = src.qmp.execute("migrate_cancel", json!({})).await;
            break st;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    (st, t0)
}

/// Waits (10 s at most) until `vm` runs. The source's `completed` comes before
/// the destination has loaded the last of the state and resumed the guest (by
/// the time it takes; Ferry's moves end when the destination runs), so a raw
/// move ends here, not there.
pub async fn until_running(vm: &RawVm) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let st = vm.qmp.execute("query-status", json!({})).await;
        if st.is_ok_and(|s| s["status"] == "running") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The VM's block jobs.
pub async fn jobs(vm: &RawVm) -> Vec<Value> {
    vm.qmp
        .execute("query-block-jobs", json!({}))
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Waits (30 s at most) until the VM has no block job.
pub async fn wait_no_jobs(vm: &RawVm) {
    let t0 = Instant::now();
    while !jobs(vm).await.is_empty() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Tunes `src`'s next migration as a knowledgeable user would: multifd with
/// `channels` (> 1), no bandwidth cap, Ferry's downtime target.
pub async fn tune(src: &RawVm, channels: u32) {
    if channels > 1 {
        let _ = src
            .qmp
            .execute(
                "migrate-set-capabilities",
                json!({"capabilities": [{"capability": "multifd", "state": true}]}),
            )
            .await;
        let _ = src
            .qmp
            .execute(
                "migrate-set-parameters",
                json!({"multifd-channels": channels}),
            )
            .await;
    }
    let _ = src
        .qmp
        .execute(
            "migrate-set-parameters",
            json!({"max-bandwidth": 64u64 << 30, "downtime-limit": TUNED_DOWNTIME_MS}),
        )
        .await;
}

/// One raw QEMU migration of the guest in `src` to host `to`; returns the row and
/// the VM that holds the guest afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn raw_move(
    env: &Env,
    case: &Case<'_>,
    tuned: bool,
    src: RawVm,
    to: u8,
    ip: &str,
    mac: &str,
    dir: &Path,
) -> (Row, RawVm) {
    let mut row = case.row(if tuned { "qemu-tuned" } else { "qemu" });
    let uri = format!("tcp:{}:47100", env.lab.host_ip(to));
    // Tuned as a user who knows QEMU's knobs would: no bandwidth cap, Ferry's
    // downtime target, and multifd where one
    // channel cannot fill the link (the unshaped path is CPU-bound), plain TCP.
    let channels = if tuned && case.path == "unshaped" {
        2
    } else {
        0
    };
    // Measured like Ferry's: from the request to move, destination start included.
    // The client first, as for Ferry's moves (its connection settles before the
    // request; not counted).
    let Ok(echo) = Echo::start(ip).await else {
        return (row, src);
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    case.ready();
    let t_req = Instant::now();
    let dst = match RawVm::start(
        env,
        to,
        if tuned { "tuned" } else { "bench" },
        case.mib,
        ip,
        mac,
        Some((uri.as_str(), channels)),
        dir,
        SAME_BYTES_CMDLINE,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("raw destination: {e:#}");
            return (row, src);
        }
    };
    let limit = Duration::from_secs_f64((case.t_phys_ms() * 4.0 / 1000.0).max(30.0));
    if tuned {
        tune(&src, channels).await;
    }
    let (st, t0) = migrate_and_follow(&src, &uri, limit, None).await;
    let mut src = Some(src);
    if st["status"] == "completed" {
        until_running(&dst).await;
    }
    let req_ms = t_req.elapsed().as_millis() as u64;
    if st["status"] == "completed" {
        // The source's QEMU goes once the guest runs on the destination, as
        // libvirt's and Ferry's do (its exit, freeing the guest's memory, shares
        // the lab's two cores with the guest's first moments on the destination;
        // on two machines it would not).
        if let Some(s) = src.take() {
            tokio::task::spawn_blocking(move || s.stop());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gap, lost, held) = echo.finish().await;
    row.completed = st["status"] == "completed";
    let ram = &st["ram"];
    row.qemu_total_ms = st["total-time"]
        .as_u64()
        .unwrap_or(t0.elapsed().as_millis() as u64);
    row.total_ms = req_ms;
    row.qemu_downtime_ms = st["downtime"].as_u64().unwrap_or(0);
    row.bytes = ram["transferred"].as_u64().unwrap_or(0);
    row.iterations = ram["dirty-sync-count"].as_u64().unwrap_or(0);
    row.strategy = if row.completed && tuned {
        if channels > 1 {
            format!("tuned, multifd({channels})")
        } else {
            "tuned".into()
        }
    } else if row.completed {
        "qemu defaults".into()
    } else {
        format!("did not finish in {:.0} s", limit.as_secs_f64())
    };
    row.client_gap_ms = gap;
    row.client_lost = lost;
    row.connection_held = held;
    row.total_over_t_phys = row.total_ms as f64 / row.t_phys_ms;
    // Not taken: the move did not complete, and the guest stays on its source.
    match src {
        Some(src) => {
            dst.stop();
            let _ = src.qmp.execute("cont", json!({})).await;
            (row, src)
        }
        None => (row, dst),
    }
}
