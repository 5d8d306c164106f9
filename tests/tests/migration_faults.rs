//! The migration saga under failure on real guests: the control plane killed with
//! SIGKILL during the transfer and restarted (the saga resumes), either agent
//! killed mid-transfer, a destination QEMU that fails to start after the
//! transfer began (the start overlaps it), a destination that cannot load the
//! state, the budget's queue. Every path ends with the VM running on
//! exactly one host, recorded correctly, and nothing left on the other. (A failure
//! at each node, replays and database errors are looped over every node by the
//! executor's hooks in `sagas.rs`, on the sim backend.)

use std::time::Duration;

use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::vmtest::{
    boot_guest, guest_status as serving, netns_of, qemus, start_migration, two_hosts_and_guest,
    wait_migration,
};
use ferry_tests::wait_for;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// A two-host lab whose control plane runs with `cp_args`, and a booted guest on host-a.
async fn lab(cp_args: &[&str], n: u8) -> (Env, String, String, String) {
    let l = two_hosts_and_guest(&format!("f{n}"), n, 256, cp_args, vec![]).await;
    (l.env, l.id, l.ip, l.b)
}

/// The VM runs on host-a only, recorded so, and host-b holds nothing of it.
async fn on_source_only(env: &Env, id: &str, ip: &str) {
    let api = env.api();
    let a = api.ok("/hosts?name=host-a").await["items"][0]["id"].clone();
    let vm = api.ok(&format!("/vms/{id}")).await;
    assert_eq!(vm["host_id"], a);
    let copies = qemus(id);
    assert_eq!(copies.len(), 1, "exactly one QEMU: {copies:?}");
    assert_eq!(copies[0].1, netns_of(env, 0));
    let links = std::process::Command::new("ip")
        .args(["-n", &env.lab.ns(1), "-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&format!("ft{}", &id[..8])),
        "no tap left on host-b"
    );
    assert!(
        !env.dir
            .path()
            .join(format!("agent-host-b/vms/{id}"))
            .exists(),
        "no files left on host-b"
    );
    let s = serving(ip).await;
    assert_eq!(s["integrity_errors"], 0);
    wait_for("the VM to be recorded running", T, || {
        let (api, id) = (api.clone(), id.to_string());
        async move { (api.ok(&format!("/vms/{id}")).await["power_state"] == "running").then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_control_plane_killed_during_transfer_resumes_the_saga() {
    let (mut env, id, ip, b) = lab(&[], 2).await;
    let mid = slow_migration(&env, &id, &b).await;
    assert_eq!(
        qemus(&id).len(),
        2,
        "source and destination QEMUs during the transfer"
    );

    env.cp.proc.kill9();
    // QEMU goes on migrating while no control plane watches.
    env.cp.restart().await;
    let api = env.api();
    // The new control plane resumed the saga: it follows the same migration on.
    let sent = api.ok(&format!("/migrations/{mid}")).await["progress"]["transferred_bytes"]
        .as_u64()
        .unwrap();
    progress_beyond(&env, &mid, sent).await;
    assert_eq!(qemus(&id).len(), 2, "the same two QEMUs");
    // And it still unwinds cleanly when asked.
    assert_eq!(
        api.post(&format!("/migrations/{mid}/cancel"), &json!({}))
            .await
            .status,
        200
    );
    let m = wait_migration(&api, &mid).await;
    assert_eq!(m["state"], "cancelled", "{m}");
    on_source_only(&env, &id, &ip).await;
}

/// Starts a slow migration (8 Mbit/s) of `id` to host-b and waits for progress.
async fn slow_migration(env: &Env, id: &str, b: &str) -> String {
    let api = env.api();
    let mid = start_migration(
        &api,
        id,
        &json!({"destination_host_id": b, "policy": {"max_bandwidth_mbps": 8}}),
    )
    .await;
    progress_beyond(env, &mid, 0).await;
    mid
}

/// Waits until the migration has sent more than `bytes`; returns what it has sent.
async fn progress_beyond(env: &Env, mid: &str, bytes: u64) -> u64 {
    let api = env.api();
    wait_for("the transfer to make progress", T, || {
        let (api, mid) = (api.clone(), mid.to_string());
        async move {
            let m = api.ok(&format!("/migrations/{mid}")).await;
            let sent = m["progress"]["transferred_bytes"].as_u64()?;
            (sent > bytes).then_some(sent)
        }
    })
    .await
}

#[tokio::test]
async fn the_source_agent_killed_and_restarted_during_transfer() {
    let (mut env, id, ip, b) = lab(&[], 3).await;
    let mid = slow_migration(&env, &id, &b).await;
    // The source's agent dies (`kill9` returns once it has exited); its QEMU keeps
    // migrating; the saga keeps asking, and follows on through the new agent.
    env.agents[0].kill9();
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    env.wait_host_state("host-a", "connected", T).await;
    let sent = env.api().ok(&format!("/migrations/{mid}")).await["progress"]["transferred_bytes"]
        .as_u64()
        .unwrap();
    progress_beyond(&env, &mid, sent).await; // followed through the restarted agent
    assert_eq!(
        env.api()
            .post(&format!("/migrations/{mid}/cancel"), &json!({}))
            .await
            .status,
        200
    );
    let m = wait_migration(&env.api(), &mid).await;
    assert_eq!(m["state"], "cancelled", "{m}");
    on_source_only(&env, &id, &ip).await;
}

#[tokio::test]
async fn the_destination_agent_killed_during_transfer_fails_the_migration() {
    let (mut env, id, ip, b) = lab(&["--host-timeout", "2s"], 4).await;
    let mid = slow_migration(&env, &id, &b).await;
    // The source sends from the start, its stream held while the destination's
    // QEMU starts: killed before that QEMU listens, the agent would leave it
    // waiting for a stream, to be cleared when the agent is back (a later case).
    // This case is the agent killed while its QEMU receives.
    let listening = env
        .dir
        .path()
        .join(format!("agent-host-b/vms/{id}/mig-in.sock"));
    wait_for("the destination's QEMU to listen", T, || {
        let listening = listening.clone();
        async move { listening.exists().then_some(()) }
    })
    .await;
    env.agents[1].kill9();
    let m = wait_migration(&env.api(), &mid).await;
    assert_eq!(m["state"], "failed", "{m}");
    assert!(m["error"].as_str().unwrap().contains("disconnected"), "{m}");
    // The source cancelled; the destination's QEMU lost its stream and is gone.
    wait_for("only the source's QEMU", T, || {
        let id = id.clone();
        async move { (qemus(&id).len() == 1).then_some(()) }
    })
    .await;
    // The destination's agent comes back and clears what it had.
    env.start_agent(1, &AgentOptions::qemu("host-b"));
    env.wait_host_state("host-b", "connected", T).await;
    wait_for("host-b's tap removed", T, || {
        let (ns, tap) = (env.lab.ns(1), format!("ft{}", &id[..8]));
        async move {
            let links = std::process::Command::new("ip")
                .args(["-n", &ns, "-o", "link"])
                .output()
                .ok()?;
            (!String::from_utf8_lossy(&links.stdout).contains(&tap)).then_some(())
        }
    })
    .await;
    let copies = qemus(&id);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].1, netns_of(&env, 0));
    assert_eq!(
        env.api().ok(&format!("/vms/{id}")).await["host_id"],
        env.api().ok("/hosts?name=host-a").await["items"][0]["id"]
    );
    assert_eq!(serving(&ip).await["integrity_errors"], 0);
}

/// The destination replies before its QEMU listens, so the transfer begins
/// while that QEMU starts (its tunnel holds the stream; on by default). A QEMU
/// that then fails to start fails the move at once, with its reason; the VM
/// runs on at its source, and nothing of it stays on the destination: no QEMU,
/// tap or files, and no tunnel still holding its stream.
#[tokio::test]
async fn a_destination_qemu_that_fails_to_start_behind_the_early_reply_fails_the_move() {
    let (_bin, refusing) =
        qemu_receiving_with("echo 'this QEMU refuses to receive a VM' >&2; exit 1");
    let l = two_hosts_and_guest("f7", 7, 256, &[], vec!["--qemu".into(), refusing]).await;
    let (env, id, ip, b) = (l.env, l.id, l.ip, l.b);
    let asked = std::time::Instant::now();
    let mid = start_migration(&env.api(), &id, &json!({"destination_host_id": b})).await;
    let m = wait_migration(&env.api(), &mid).await;
    assert_eq!(m["state"], "failed", "{m}");
    let error = m["error"].as_str().unwrap();
    assert!(
        error.contains("destination: the QEMU to receive the VM")
            && error.contains("refuses to receive a VM"),
        "the destination's reason: {m}"
    );
    // As soon as QEMU failed: not at the tunnel's 30 s wait for it to listen.
    assert!(asked.elapsed() < Duration::from_secs(20), "{m}");
    on_source_only(&env, &id, &ip).await;
    wait_for("no migration tunnel left for the VM", T, || {
        let id = id.clone();
        async move { tunnels_of(&id).is_empty().then_some(()) }
    })
    .await;
}

/// The destination's agent killed while its QEMU starts behind the early reply
/// (slowed here to 3 s), the source already sending: the move fails as for any
/// destination lost mid-transfer, and the QEMU left waiting for a stream that
/// no agent will ask it to take goes when the agent is back, with the tunnel.
#[tokio::test]
async fn the_destination_agent_killed_while_its_qemu_starts_leaves_nothing_once_back() {
    let (_bin, slow) = qemu_receiving_with("sleep 3");
    let mut l = two_hosts_and_guest(
        "f8",
        8,
        256,
        &["--host-timeout", "2s"],
        vec!["--qemu".into(), slow.clone()],
    )
    .await;
    let mid = start_migration(&l.api, &l.id, &json!({"destination_host_id": l.b})).await;
    let starting = l
        .env
        .dir
        .path()
        .join(format!("agent-host-b/vms/{}/spec.json", l.id));
    wait_for("the destination's QEMU to be starting", T, || {
        let starting = starting.clone();
        async move { starting.exists().then_some(()) }
    })
    .await;
    l.env.agents[1].kill9();
    let m = wait_migration(&l.api, &mid).await;
    assert_eq!(m["state"], "failed", "{m}");
    let mut back = AgentOptions::qemu("host-b");
    back.args = vec!["--qemu".into(), slow];
    l.env.start_agent(1, &back);
    l.env.wait_host_state("host-b", "connected", T).await;
    wait_for("host-b to hold nothing of the VM", T, || {
        let id = l.id.clone();
        async move { (qemus(&id).len() == 1 && tunnels_of(&id).is_empty()).then_some(()) }
    })
    .await;
    on_source_only(&l.env, &l.id, &l.ip).await;
}

/// A destination that cannot load the state it was sent — its QEMU lacks the
/// guest's serial port, whose state comes with the last of the stream (a device
/// with memory of its own, a NIC's option ROM, would fail the stream's start) — fails
/// the move under `precopy` (no post-copy) too, and the guest runs on at its
/// source: the source completes only once the destination has loaded it (QEMU's
/// return path), never on its last byte written.
#[tokio::test]
async fn a_destination_that_cannot_load_the_state_fails_the_move_and_keeps_the_vm() {
    let (_bin, lacking) = qemu_receiving_with(
        "drop=; for a do shift; \
         if [ -n \"$drop\" ]; then drop=; continue; fi; \
         if [ \"$a\" = -serial ]; then drop=1; continue; fi; \
         set -- \"$@\" \"$a\"; done",
    );
    let l = two_hosts_and_guest("f9", 9, 256, &[], vec!["--qemu".into(), lacking]).await;
    let mid = start_migration(
        &l.api,
        &l.id,
        &json!({"destination_host_id": l.b, "policy": {"mode": "precopy"}}),
    )
    .await;
    let m = wait_migration(&l.api, &mid).await;
    assert_eq!(m["state"], "failed", "{m}");
    on_source_only(&l.env, &l.id, &l.ip).await;
    // Under `precopy` too the destination took the stream before its QEMU
    // listened (the source's agent opens the return path on every move): the
    // return path, not the order of the start, is what kept the VM.
    let held: Option<bool> = sqlx::query_scalar(
        "SELECT (e.data->>'held')::boolean FROM saga_events e \
         JOIN migrations m ON m.saga_id = e.saga_id \
         WHERE m.id = $1 AND e.step = 'destination_start' AND e.event_type = 'succeeded'",
    )
    .bind(mid.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&l.env.db.pool().await)
    .await
    .unwrap();
    assert_eq!(
        held,
        Some(true),
        "the destination's start overlapped the stream"
    );
}

/// A QEMU for `--qemu` that runs `then` (shell) before it starts to receive a VM
/// (`-incoming`), and starts as QEMU otherwise; its directory and path.
fn qemu_receiving_with(then: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let path = bin.path().join("qemu");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" -incoming \"*) {then};; esac\n\
             exec qemu-system-x86_64 \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = path.display().to_string();
    (bin, path)
}

/// The pids of the migration tunnels serving VM `id` (its directory is in
/// their arguments).
fn tunnels_of(id: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("migration-tunnel") && c.contains(id)
            })
        })
        .collect()
}

#[tokio::test]
async fn a_migration_beyond_the_budget_waits_queued_and_starts_when_a_slot_frees() {
    let (env, first, ip, b) = lab(&["--host-migration-budget", "1"], 5).await;
    // A second guest on host-a.
    let api = env.api();
    let a = api.ok("/hosts?name=host-a").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ip2 = env.lab.guest_ip(6);
    let second = boot_guest(&env, "second", &a, 256, &ip2).await;

    let m1 = slow_migration(&env, &first, &b).await;
    let check = api
        .post(
            &format!("/vms/{second}/migrate/check"),
            &json!({"destination_host_id": b}),
        )
        .await;
    assert_eq!(
        check.body["compatible"], true,
        "over budget is no refusal: {check:?}"
    );
    let m2 = start_migration(
        &api,
        &second,
        &json!({"destination_host_id": b, "policy": {"max_bandwidth_mbps": 8}}),
    )
    .await;
    // It waits while the first one holds the slot: it says so once it has found
    // no slot (and asks again every 200 ms).
    wait_for("the second migration to say it waits", T, || {
        let (api, m2) = (api.clone(), m2.clone());
        async move {
            let ev = api.ok("/events?kind=migration.queued").await;
            ev["items"]
                .as_array()?
                .iter()
                .any(|e| e["data"]["migration_id"] == m2.as_str())
                .then_some(())
        }
    })
    .await;
    let q = api.ok(&format!("/migrations/{m2}")).await;
    assert_eq!(q["state"], "queued", "{q}");
    assert_eq!(
        qemus(&second).len(),
        1,
        "nothing started for the queued one"
    );
    // The slot frees: it starts.
    assert_eq!(
        api.post(&format!("/migrations/{m1}/cancel"), &json!({}))
            .await
            .status,
        200
    );
    assert_eq!(wait_migration(&api, &m1).await["state"], "cancelled");
    progress_beyond(&env, &m2, 0).await;
    assert_eq!(
        api.post(&format!("/migrations/{m2}/cancel"), &json!({}))
            .await
            .status,
        200
    );
    assert_eq!(wait_migration(&api, &m2).await["state"], "cancelled");
    on_source_only(&env, &first, &ip).await;
    on_source_only(&env, &second, &ip2).await;
}
