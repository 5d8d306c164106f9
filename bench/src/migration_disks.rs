//! `ferry-bench-migration`'s disk cases (issue #12): a 512 MiB guest whose disk
//! (on a host's local datastore) holds `--disk-write-mib` of checksummed blocks,
//! written before the move and still written at 2 MiB/s during it, moves
//!
//! - to the other host, which does not mount that datastore: Ferry's storage
//!   migration (mirror over NBD, then the memory, one switchover) against raw QEMU
//!   driven by hand the way its documentation describes (a destination QEMU with
//!   `-incoming defer` exporting a fresh image over NBD, `blockdev-mirror` in
//!   `write-blocking` mode into it, `migrate` with `pause-before-switchover` once
//!   the mirror is ready, `block-job-cancel` at `pre-switchover`, then
//!   `migrate-continue`), tuned (no cap, Ferry's 10 ms downtime target, multifd on the
//!   unshaped path), plain TCP;
//! - between two datastores of its own host (storage-only): Ferry against raw
//!   QEMU's local `blockdev-mirror` + `block-job-complete`.
//!
//! Totals as for memory: from the request until the VM runs on the destination
//! (its disk on the new datastore). After each move the guest reads back every
//! block it wrote: the mismatches are in the row (0 expected).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_bench::lab::{status, Echo, RawDisk, RawVm};
use ferry_tests::guest::SAME_BYTES_CMDLINE;
use ferry_tests::procs::Env;
use ferry_tests::vmtest::{boot_guest_with, GuestDisk};
use ferry_tests::wait_for;
use serde_json::{json, Value};

use super::raw::{jobs, wait_no_jobs};
use super::{ferry_move, print_row, Case, Row};

const T: Duration = Duration::from_secs(300);
const MIB: u64 = 512;
const DURING_MBPS: u32 = 2;

/// The guest's disk writer: (blocks written so far, mismatches after a read-back).
async fn disk_writes(ip: &str) -> u64 {
    status(ip)
        .await
        .map_or(0, |s| s["disk"]["writes"].as_u64().unwrap_or(0))
}

async fn verify(ip: &str) -> u64 {
    let r: Value = match reqwest::Client::new()
        .post(format!("http://{ip}/disk/verify"))
        .timeout(Duration::from_secs(120))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    r["disk"]["mismatches"].as_u64().unwrap_or(u64::MAX)
}

async fn set_rate(ip: &str, mbps: u32) {
    let _ = reqwest::Client::new()
        .post(format!("http://{ip}/disk?mbps={mbps}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
}

/// Fills the written region once (fast), then writes at the rate of the moves.
async fn prefill(ip: &str, write_mib: u64) {
    let blocks = write_mib * 256;
    set_rate(ip, 256).await;
    let ip2 = ip.to_string();
    let _ = wait_for("the guest to write its disk region once", T, || {
        let ip = ip2.clone();
        async move { (disk_writes(&ip).await >= blocks).then_some(()) }
    })
    .await;
    set_rate(ip, DURING_MBPS).await;
}

async fn datastore(env: &Env, name: &str) -> String {
    env.api().ok(&format!("/datastores?name={name}")).await["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn qcow2(path: &Path, mib: u64) -> anyhow::Result<()> {
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(format!("{mib}M"))
        .status()?;
    anyhow::ensure!(ok.success(), "qemu-img create {}", path.display());
    Ok(())
}

pub struct DiskArgs<'a> {
    pub disk_mib: u64,
    pub write_mib: u64,
    pub repeats: usize,
    /// Ferry's contenders for the move to the other host: (row, transport).
    pub ferries: &'a [(&'a str, &'a str)],
    /// The transport the control plane runs with between cases.
    pub transport: &'a str,
}

/// Runs every disk case on the current path; appends the rows.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    env: &mut Env,
    a: &DiskArgs<'_>,
    path: &str,
    link: f64,
    hosts: &[String; 2],
    names: [&str; 2],
    rows: &mut Vec<Row>,
    n: &mut u8,
    scratch: &Path,
) -> anyhow::Result<()> {
    let case = |dirty: &'static str| Case {
        path,
        mib: MIB,
        dirty,
        dirty_mibps: DURING_MBPS as f64,
        link,
    };
    let locals = [
        datastore(env, &format!("local-{}", names[0])).await,
        datastore(env, &format!("local-{}", names[1])).await,
    ];
    let shared = datastore(env, "shared").await;

    // Ferry: with its disk to the other host, then between its host's datastores.
    *n += 1;
    let ip = env.lab.guest_ip(*n);
    let disk = GuestDisk {
        datastore_id: &locals[0],
        size_mib: a.disk_mib,
        write_mib: a.write_mib,
        write_mbps: DURING_MBPS,
    };
    let id = boot_guest_with(
        env,
        &format!("bdisk{n}"),
        &hosts[0],
        MIB,
        &ip,
        Some(disk),
        SAME_BYTES_CMDLINE,
    )
    .await;
    prefill(&ip, a.write_mib).await;
    super::know_the_link(env, &id, &hosts[1]).await;
    let mut at = 0usize;
    for &(who, transport) in a.ferries {
        if transport != a.transport {
            super::set_transport(env, transport).await;
            super::know_the_link(env, &id, &hosts[1 - at]).await;
        }
        for i in 0..a.repeats {
            let mut row = ferry_move(
                env,
                &case("disk"),
                who,
                &id,
                &ip,
                &hosts[1 - at],
                None,
                None,
            )
            .await;
            if row.completed {
                at = 1 - at;
                if i == 0 {
                    // And the link back (see `migration.rs`'s warm-up move).
                    super::know_the_link(env, &id, &hosts[1 - at]).await;
                }
            }
            row.disk_mismatches = Some(verify(&ip).await);
            print_row(&row);
            rows.push(row);
        }
        if transport != a.transport {
            super::set_transport(env, a.transport).await;
        }
    }
    // (A control plane restarted may listen elsewhere.)
    let api = env.api();
    // Storage-only moves cross no link: the transport plays no part.
    // Storage-only: between the shared datastore and the host's local one.
    for i in 0..a.repeats {
        let to = if i % 2 == 0 { &shared } else { &locals[at] };
        let mut row = ferry_move(
            env,
            &case("disk-local"),
            "ferry",
            &id,
            &ip,
            &hosts[at],
            None,
            Some(to),
        )
        .await;
        row.disk_mismatches = Some(verify(&ip).await);
        print_row(&row);
        rows.push(row);
    }
    let _ = api
        .post(&format!("/vms/{id}/power"), &json!({"action": "off"}))
        .await;
    let _ =
        wait_for("the guest to stop", T, || {
            let (api, id) = (api.clone(), id.clone());
            async move {
                (api.ok(&format!("/vms/{id}")).await["power_state"] == "stopped").then_some(())
            }
        })
        .await;
    let _ = api.delete(&format!("/vms/{id}")).await;

    // Raw QEMU, tuned, by hand.
    *n += 1;
    let ip = env.lab.guest_ip(*n);
    let mac = format!("52:54:00:fe:00:{:02x}", *n);
    let mut image = scratch.join(format!("raw-disk-{n}-0.qcow2"));
    qcow2(&image, a.disk_mib)?;
    let mut vm = RawVm::start_with_disk(
        env,
        0,
        "rdisk",
        MIB,
        &ip,
        &mac,
        None,
        scratch,
        Some(RawDisk {
            image: &image,
            write_mib: a.write_mib,
            write_mbps: DURING_MBPS,
        }),
        SAME_BYTES_CMDLINE,
    )
    .await?;
    let mut at = 0u8;
    ferry_tests::vmtest::guest_status(&ip).await;
    prefill(&ip, a.write_mib).await;
    for k in 0..a.repeats {
        let next = scratch.join(format!("raw-disk-{n}-{}.qcow2", k + 1));
        let (mut row, holder, moved) =
            raw_disk_move(env, &case("disk"), vm, 1 - at, &ip, &mac, scratch, &next, a).await;
        vm = holder;
        if moved {
            at = 1 - at;
            let _ = std::fs::remove_file(&image);
            image = next;
        } else {
            let _ = std::fs::remove_file(&next);
        }
        row.disk_mismatches = Some(verify(&ip).await);
        print_row(&row);
        rows.push(row);
        if !moved {
            break;
        }
    }
    for k in 0..a.repeats {
        let next = scratch.join(format!("raw-disk-{n}-local{k}.qcow2"));
        let (mut row, moved) = raw_local_move(&case("disk-local"), &vm, &next, a).await;
        if moved {
            let _ = std::fs::remove_file(&image);
            image = next;
        }
        row.disk_mismatches = Some(verify(&ip).await);
        print_row(&row);
        rows.push(row);
    }
    vm.stop();
    let _ = std::fs::remove_file(&image);
    Ok(())
}

async fn wait_ready(vm: &RawVm, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let j = jobs(vm).await;
        if j.iter().any(|j| j["ready"] == true) {
            return true;
        }
        if j.is_empty() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Raw QEMU's shared-nothing move by hand; returns the row, the VM holding the
/// guest, and whether it moved.
#[allow(clippy::too_many_arguments)]
async fn raw_disk_move(
    env: &Env,
    case: &Case<'_>,
    src: RawVm,
    to: u8,
    ip: &str,
    mac: &str,
    scratch: &Path,
    image: &PathBuf,
    a: &DiskArgs<'_>,
) -> (Row, RawVm, bool) {
    let mut row = case.row("qemu-tuned");
    let host = env.lab.host_ip(to);
    let uri = format!("tcp:{host}:47100");
    let channels = if case.path == "unshaped" { 2 } else { 0 };
    case.ready();
    let t_req = Instant::now();
    // The target image is part of the move (Ferry's destination makes its own).
    if let Err(e) = qcow2(image, a.disk_mib) {
        eprintln!("raw destination image: {e:#}");
        return (row, src, false);
    }
    let dst = match RawVm::start_with_disk(
        env,
        to,
        "rdiskin",
        MIB,
        ip,
        mac,
        Some((uri.as_str(), channels)),
        scratch,
        Some(RawDisk {
            image,
            write_mib: a.write_mib,
            write_mbps: DURING_MBPS,
        }),
        SAME_BYTES_CMDLINE,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("raw destination: {e:#}");
            return (row, src, false);
        }
    };
    let steps = async {
        dst.qmp
            .execute(
                "nbd-server-start",
                json!({"addr": {"type": "inet", "data": {"host": host, "port": "47101"}}}),
            )
            .await?;
        dst.qmp
            .execute(
                "block-export-add",
                json!({"type": "nbd", "id": "e0", "node-name": "rdisk0", "name": "disk0", "writable": true}),
            )
            .await?;
        src.qmp
            .execute(
                "blockdev-add",
                json!({"driver": "nbd", "node-name": "tgt0",
                       "server": {"type": "inet", "host": host, "port": "47101"}, "export": "disk0"}),
            )
            .await?;
        src.qmp
            .execute(
                "blockdev-mirror",
                json!({"job-id": "m0", "device": "disk0", "target": "tgt0", "sync": "full",
                       "copy-mode": "write-blocking"}),
            )
            .await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        eprintln!("raw mirror: {e:#}");
        dst.stop();
        return (row, src, false);
    }
    let echo = Echo::start(ip).await.ok();
    let limit = Duration::from_secs(120);
    if !wait_ready(&src, limit).await {
        eprintln!("raw mirror: not ready in {limit:?}");
    }
    let mirror_ms = t_req.elapsed().as_millis() as u64;
    super::raw::tune(&src, channels).await;
    let _ = src
        .qmp
        .execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "pause-before-switchover", "state": true}]}),
        )
        .await;
    let (st, _) = super::raw::migrate_and_follow(&src, &uri, limit, Some(("m0", "tgt0"))).await;
    if st["status"] == "completed" {
        super::raw::until_running(&dst).await;
    }
    row.total_ms = t_req.elapsed().as_millis() as u64;
    let _ = dst.qmp.execute("nbd-server-stop", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(e) = echo {
        let (gap, lost, held) = e.finish().await;
        row.client_gap_ms = gap;
        row.client_lost = lost;
        row.connection_held = held;
    }
    row.completed = st["status"] == "completed";
    row.qemu_total_ms = st["total-time"].as_u64().unwrap_or(0) + mirror_ms;
    row.qemu_downtime_ms = st["downtime"].as_u64().unwrap_or(0);
    row.bytes = st["ram"]["transferred"].as_u64().unwrap_or(0);
    row.iterations = st["ram"]["dirty-sync-count"].as_u64().unwrap_or(0);
    row.strategy = format!("blockdev-mirror+nbd, mirror ready at {mirror_ms} ms");
    row.total_over_t_phys = row.total_ms as f64 / row.t_phys_ms;
    if row.completed {
        src.stop();
        (row, dst, true)
    } else {
        let _ = jobs(&src).await;
        let _ = src
            .qmp
            .execute("block-job-cancel", json!({"device": "m0", "force": true}))
            .await;
        dst.stop();
        let _ = src.qmp.execute("cont", json!({})).await;
        (row, src, false)
    }
}

/// Raw QEMU's storage-only move: mirror into a new local image, then pivot.
async fn raw_local_move(
    case: &Case<'_>,
    vm: &RawVm,
    image: &Path,
    a: &DiskArgs<'_>,
) -> (Row, bool) {
    let mut row = case.row("qemu-tuned");
    case.ready();
    let t_req = Instant::now();
    if qcow2(image, a.disk_mib).is_err() {
        return (row, false);
    }
    let node = format!("local{}", t_req.elapsed().as_nanos());
    let steps = async {
        vm.qmp
            .execute(
                "blockdev-add",
                json!({"driver": "qcow2", "node-name": node,
                       "file": {"driver": "file", "filename": image.display().to_string()}}),
            )
            .await?;
        vm.qmp
            .execute(
                "blockdev-mirror",
                json!({"job-id": "l0", "device": "disk0", "target": node, "sync": "full",
                       "copy-mode": "write-blocking"}),
            )
            .await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        eprintln!("raw local mirror: {e:#}");
        return (row, false);
    }
    let ready = wait_ready(vm, Duration::from_secs(120)).await;
    if ready {
        let _ = vm
            .qmp
            .execute("block-job-complete", json!({"device": "l0"}))
            .await;
    }
    wait_no_jobs(vm).await;
    row.total_ms = t_req.elapsed().as_millis() as u64;
    let file = vm
        .qmp
        .execute("query-block", json!({}))
        .await
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|b| b["device"] == "disk0")
                .and_then(|b| b["inserted"]["file"].as_str().map(String::from))
        })
        .unwrap_or_default();
    row.completed = ready && file == image.display().to_string();
    row.qemu_total_ms = row.total_ms;
    row.strategy = "blockdev-mirror+block-job-complete".into();
    row.total_over_t_phys = f64::NAN;
    let moved = row.completed;
    (row, moved)
}
