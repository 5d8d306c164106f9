//! Live migration between two host namespaces, with a client talking to the guest
//! all along: the connection holds, no message is lost, duplicated or reordered,
//! the guest's memory verifies, and the VM ends on exactly one host, recorded
//! correctly. Cancel keeps the VM on its source; incompatible requests are refused.

use std::time::Duration;

use ferry_tests::echo::EchoClient;
use ferry_tests::netns::{tcp_counter, tcp_retrans_segs, tcp_timeouts};
use ferry_tests::udp_echo::{UdpEcho, UdpReport};
use ferry_tests::vmtest::{
    migrate_and_wait, netns_of, qemus, shape, start_migration, two_hosts_and_guest, wait_migration,
    GuestLab,
};
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(90);

#[tokio::test]
async fn an_idle_guest_moves_while_a_client_talks_to_it() {
    let GuestLab {
        env,
        api,
        id,
        ip,
        b,
    } = two_hosts_and_guest("mover", 0, 256, &[], vec![]).await;
    let before = ferry_tests::vmtest::guest_status_verifying(&ip).await;
    let client = EchoClient::start(&ip).await;
    client.wait_answers(20).await;

    // The check predicts, from the dirty rate QEMU sampled and the bandwidth the
    // agents measured.
    let c = api
        .post(
            &format!("/vms/{id}/migrate/check"),
            &json!({"destination_host_id": b}),
        )
        .await;
    assert_eq!(c.body["compatible"], true, "{c:?}");
    let pred = &c.body["prediction"];
    assert!(pred["total_ms"].as_u64().unwrap() > 0, "{pred}");
    assert_eq!(
        pred["strategy"], "precopy",
        "an idle guest converges: {pred}"
    );

    let r = api
        .post(
            &format!("/vms/{id}/migrate"),
            &json!({"destination_host_id": b}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body["destination_host_id"], b);
    let m = wait_migration(&api, r.body["id"].as_str().unwrap()).await;
    assert_eq!(m["state"], "completed", "{m}");
    assert_eq!(m["progress"]["percent"], 100.0);
    assert!(m["result"]["transferred_bytes"].as_u64().unwrap() > 0);
    assert!(m["result"]["total_ms"].as_u64().unwrap() > 0);

    // Talking on the new host too.
    client.wait_answers(20).await;
    let (messages, gap) = client.finish().await;
    assert!(
        messages > 20,
        "the client talked during the move ({messages} messages)"
    );
    eprintln!("longest client gap during the migration: {gap:?}");

    // The whole stream went over TLS 1.3 with the hosts' CA-issued identities:
    // the destination's tunnel delivered at least what QEMU reports it sent.
    let carried = ferry_tests::vmtest::tunnel_record(&env, "host-b", &id, "in").await;
    assert_eq!(carried["protocol"], "TLSv1_3", "{carried}");
    assert!(carried["connections"].as_u64().unwrap() >= 1, "{carried}");
    let sent = m["result"]["transferred_bytes"].as_u64().unwrap();
    eprintln!("QEMU sent {sent} bytes; the tunnel carried {carried}");
    assert!(
        carried["bytes_to_qemu"].as_u64().unwrap() >= sent,
        "QEMU sent {sent} bytes; the tunnel carried {carried}"
    );
    // Exactly one copy, on host-b, recorded so.
    let vm = api.ok(&format!("/vms/{id}")).await;
    assert_eq!(vm["host_id"], b);
    assert_eq!(vm["power_state"], "running");
    let copies = qemus(&id);
    assert_eq!(copies.len(), 1, "one QEMU for the VM: {copies:?}");
    assert_eq!(
        copies[0].1,
        netns_of(&env, 1),
        "it runs in host-b's namespace"
    );
    // The same boot of the guest, memory intact.
    let after = reqwest::get(format!("http://{ip}/status"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(after["boot_id"], before["boot_id"]);
    assert_eq!(after["integrity_errors"], 0, "{after}");
    assert!(
        after["pages_verified"].as_u64().unwrap() > before["pages_verified"].as_u64().unwrap(),
        "the guest verified its memory since: before {before}, after {after}"
    );
    // The saga recorded every step.
    let pool = env.db.pool().await;
    let steps: Vec<String> = sqlx::query_scalar(
        "SELECT step FROM saga_events e JOIN migrations m ON m.saga_id = e.saga_id WHERE m.vm_id = $1 \
         AND event_type = 'succeeded' ORDER BY seq",
    )
    .bind(id.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        steps,
        [
            "queue",
            "destination_start",
            "mirror",
            "transfer",
            "commit",
            "source_cleanup",
            "finish"
        ]
    );
    // And it comes back, through ferryctl, which waits and prints a summary.
    let a = api.ok("/hosts?name=host-a").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = std::process::Command::new(ferry_tests::bin("ferryctl"))
        .args(["vm", "migrate", "mover", "--to", "host-a"])
        .env("FERRY_URL", &env.cp.http)
        .env("FERRY_TOKEN", env.cp.admin_token())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.starts_with("migrated in ")
            && summary.contains("downtime")
            && summary.contains("passes"),
        "{summary}"
    );
    assert_eq!(api.ok(&format!("/vms/{id}")).await["host_id"], a.as_str());
    assert_eq!(qemus(&id).len(), 1);
    assert_eq!(qemus(&id)[0].1, netns_of(&env, 0));
    // Really back: the same boot answers from host-a with its memory intact (a QEMU
    // that arrived by migration once reports that incoming move as `completed`; it
    // must not pass for the outgoing one).
    let back = ferry_tests::vmtest::guest_status(&ip).await;
    assert_eq!(back["boot_id"], before["boot_id"]);
    assert_eq!(back["integrity_errors"], 0, "{back}");
    assert!(
        back["uptime_s"].as_f64() > after["uptime_s"].as_f64(),
        "{back}"
    );
    assert!(
        !summary.contains(" 0 passes"),
        "the memory really moved: {summary}"
    );
}

/// The two ways of carrying TLS are one on the wire: a host whose QEMU does its
/// own TLS (`--migration-tls qemu`) sends to and takes from a host whose agent's
/// tunnel does (the default), guest intact.
#[tokio::test]
async fn qemus_own_tls_at_one_end_and_the_agents_tunnel_at_the_other_interoperate() {
    let lab = two_hosts_and_guest(
        "mixed",
        0,
        256,
        &[],
        vec!["--migration-tls".into(), "qemu".into()],
    )
    .await;
    let a = lab.api.ok(&format!("/vms/{}", lab.id)).await["host_id"].clone();
    for to in [json!(lab.b), a.clone()] {
        let m = migrate_and_wait(&lab.api, &lab.id, &json!({"destination_host_id": to})).await;
        assert_eq!(m["state"], "completed", "{m}");
        let vm = lab.api.ok(&format!("/vms/{}", lab.id)).await;
        assert_eq!(vm["host_id"], to);
        assert_eq!(qemus(&lab.id).len(), 1);
        let s = ferry_tests::vmtest::guest_status(&lab.ip).await;
        assert_eq!(s["integrity_errors"], 0, "{s}");
    }
    // Back on host-a, it came in through host-a's tunnel from host-b's QEMU.
    let carried = ferry_tests::vmtest::tunnel_record(&lab.env, "host-a", &lab.id, "in").await;
    assert_eq!(carried["protocol"], "TLSv1_3", "{carried}");
    assert!(carried["bytes_to_qemu"].as_u64().unwrap() > 0, "{carried}");
    let s = ferry_tests::vmtest::guest_status(&lab.ip).await;
    assert_eq!(s["integrity_errors"], 0, "{s}");
}

/// The frame relay's point, asserted by its mechanism rather than by what TCP
/// hides anyway: a client in a namespace of its own sends a numbered UDP datagram
/// every 5 ms to the guest's UDP echo while the idle guest moves, and with
/// the relay on every one comes back — the frames sent during the pause are held
/// and delivered, none dropped (one may come twice: see `frames::Relay::paused`);
/// with `--frame-relay off` some never do (what reaches the paused source is lost;
/// this is what shows the check can fail). UDP resends nothing, so a number
/// missing is a frame lost, there or back. (Not every millisecond: with three
/// tests on two cores the TCG guest, busy with a move or cold on its new QEMU,
/// then fell behind by hundreds of datagrams with or without the relay, more
/// than its queues hold.)
///
/// Beside it a TCP connection from the same namespace (a line every millisecond)
/// carries on across every move, and its counters are printed for the record, not
/// asserted: they were, and told loss from luck badly — a frame that reached the
/// source just before the destination's announce came through the relay after
/// the next one came directly (the client resent it at once, the guest had it
/// twice), and a TCG guest that first answers ~290 ms after its last ACK makes
/// the client time out with nothing lost.
/// Without the relay a move loses the datagrams that arrive in its pause — 2–10
/// in each of 7 runs here; the control moves back and forth until one shows the
/// loss, at most `OFF_TRIES` times.
#[tokio::test]
async fn the_frame_relay_loses_no_frame_at_switchover() {
    const OFF_TRIES: usize = 4;
    let GuestLab {
        mut env,
        api,
        id,
        ip,
        b,
    } = two_hosts_and_guest("relayed", 0, 256, &[], vec![]).await;
    let a = api.ok(&format!("/vms/{id}")).await["host_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ns = env.lab.add_client();
    let mut reports: Vec<(UdpReport, Value)> = Vec::new();
    let moves = [
        ("on", &b),
        ("off", &a),
        ("off", &b),
        ("off", &a),
        ("off", &b),
    ];
    for (n, (relay, to)) in moves.into_iter().enumerate() {
        if n >= 2 && reports.last().is_some_and(|r| r.0.lost_count > 0) {
            break; // the control has shown the loss
        }
        if n == 1 {
            env.cp.stop().await;
            env.cp.set_arg("--frame-relay", "off");
            env.cp.restart().await;
            for h in ["host-a", "host-b"] {
                env.wait_host_state(h, "connected", T).await;
            }
        }
        // Datagrams and lines all the time: any pause has frames in flight to
        // lose.
        let udp = UdpEcho::start_in(&ns, &ip, Duration::from_millis(5));
        let client = EchoClient::start_in(&ns, &ip, Duration::from_millis(1)).await;
        udp.wait_answers(20).await;
        client.wait_answers(20).await;
        let before = (tcp_timeouts(&ns), tcp_retrans_segs(&ns));
        let ext = |n: &str| tcp_counter(&ns, "/proc/net/netstat", "TcpExt:", n);
        let names = [
            "TCPLossProbes",
            "TCPFastRetrans",
            "TCPDSACKRecv",
            "TCPSACKReorder",
        ];
        let ext_before: Vec<u64> = names.iter().map(|n| ext(n)).collect();
        let m = migrate_and_wait(&api, &id, &json!({"destination_host_id": to})).await;
        assert_eq!(m["state"], "completed", "{m}");
        // Both carry on after the move.
        udp.wait_answers(20).await;
        client.wait_answers(20).await;
        let report = udp.finish(Duration::from_secs(2)).await;
        let (messages, gap) = client.finish().await;
        assert!(messages > 10, "{messages}");
        let deltas: Vec<(&str, u64)> = names
            .iter()
            .zip(&ext_before)
            .map(|(n, b)| (*n, ext(n) - b))
            .collect();
        eprintln!(
            "relay {relay}: UDP {report:?}; TCP: longest gap {gap:?}, {} timeouts, {} segments resent, {deltas:?}; downtime {} ms, {} frames held",
            tcp_timeouts(&ns) - before.0,
            tcp_retrans_segs(&ns) - before.1,
            m["result"]["downtime_ms"],
            m["result"]["relay_frames"]
        );
        reports.push((report, m["result"].clone()));
    }
    let on = &reports[0];
    assert_eq!(
        on.0.lost_count, 0,
        "with the relay, datagrams were lost: {on:?}"
    );
    let off = &reports[1..];
    assert!(off.len() <= OFF_TRIES);
    assert!(
        off.iter().any(|r| r.0.lost_count > 0),
        "without the relay, no move of {} lost a datagram: {off:?}",
        off.len()
    );
}

#[tokio::test]
async fn cancel_during_transfer_keeps_the_vm_on_its_source() {
    let GuestLab {
        env,
        api,
        id,
        ip,
        b,
    } = two_hosts_and_guest("stayer", 1, 256, &[], vec![]).await;
    let client = EchoClient::start(&ip).await;
    // 8 Mbit/s: 256 MiB would take minutes.
    let mid = start_migration(
        &api,
        &id,
        &json!({"destination_host_id": b, "policy": {"max_bandwidth_mbps": 8, "max_downtime_ms": 50}}),
    )
    .await;
    wait_for("the transfer to make progress", T, || {
        let (api, mid) = (api.clone(), mid.clone());
        async move {
            let m = api.ok(&format!("/migrations/{mid}")).await;
            (m["state"] == "transferring" && m["progress"]["transferred_bytes"].as_u64()? > 0)
                .then_some(())
        }
    })
    .await;
    let c = api
        .post(&format!("/migrations/{mid}/cancel"), &json!({}))
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    let m = wait_migration(&api, &mid).await;
    assert_eq!(m["state"], "cancelled", "{m}");
    api.post(&format!("/migrations/{mid}/cancel"), &json!({}))
        .await
        .assert_problem(409, "migration_not_cancellable");

    let (messages, _) = client.finish().await;
    assert!(messages > 0);
    let vm = api.ok(&format!("/vms/{id}")).await;
    assert_ne!(vm["host_id"], b.as_str());
    let copies = qemus(&id);
    assert_eq!(copies.len(), 1, "only the source's QEMU: {copies:?}");
    assert_eq!(copies[0].1, netns_of(&env, 0));
    let s = reqwest::get(format!("http://{ip}/status"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(s["integrity_errors"], 0);
    let vm = api.ok(&format!("/vms/{id}")).await;
    assert_eq!(vm["power_state"], "running");
}

#[tokio::test]
async fn incompatible_destinations_are_refused_with_reasons() {
    let GuestLab {
        env: _env,
        api,
        id,
        b,
        ..
    } = two_hosts_and_guest(
        "picky",
        2,
        256,
        &[],
        vec!["--cluster".into(), "other".into()],
    )
    .await;
    let r = api
        .post(
            &format!("/vms/{id}/migrate/check"),
            &json!({"destination_host_id": b}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["compatible"], false);
    let checks = r.body["checks"].as_array().unwrap();
    for name in [
        "vm_running",
        "destination_differs",
        "destination_connected",
        "same_cluster",
        "cpu_model",
        "memory",
        "datastores",
        "networks",
        "machine_type",
        "concurrency",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("check {name} missing"));
        assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["other_cluster"]);
    let r = api
        .post(
            &format!("/vms/{id}/migrate"),
            &json!({"destination_host_id": b}),
        )
        .await;
    r.assert_problem(409, "incompatible_destination");
    assert_eq!(r.body["reasons"][0]["code"], "other_cluster");
    // The VM's own host, and no destination at all (no other host in its cluster).
    let a = api.ok(&format!("/vms/{id}")).await["host_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .post(
            &format!("/vms/{id}/migrate"),
            &json!({"destination_host_id": a}),
        )
        .await;
    r.assert_problem(409, "incompatible_destination");
    assert!(r.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["code"] == "same_host"));
    api.post(&format!("/vms/{id}/migrate"), &json!({}))
        .await
        .assert_problem(409, "incompatible_destination");
    api.post(
        &format!("/vms/{id}/migrate"),
        &json!({"destination_host_id": "00000000-0000-4000-8000-000000000000"}),
    )
    .await
    .assert_problem(422, "unknown_host");
    api.post(
        &format!("/vms/{id}/migrate"),
        &json!({"policy": {"mode": "warp"}}),
    )
    .await
    .assert_problem(422, "invalid_body");
    // Nothing was started.
    assert_eq!(
        api.ok("/migrations").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(qemus(&id).len(), 1);
}

/// Sets the guest's memory dirtier (MiB/s over a working set) and waits until the
/// guest reports it dirtying.
async fn dirty(ip: &str, mbps: u64, wss_mib: u64) {
    let r = reqwest::Client::new()
        .post(format!("http://{ip}/dirty?mbps={mbps}&wss_mib={wss_mib}"))
        .send()
        .await
        .expect("POST /dirty");
    assert!(r.status().is_success(), "{r:?}");
    wait_for("the guest to dirty memory", T, || {
        let ip = ip.to_string();
        async move {
            let s = reqwest::get(format!("http://{ip}/status"))
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()?;
            (s["dirty_mbps"].as_f64()? > mbps as f64 / 2.0).then_some(())
        }
    })
    .await;
}

/// The messages of the migration's `migration.strategy` events.
async fn strategy_events(api: &ferry_tests::rest::Api, mid: &str) -> Vec<String> {
    let evs = api.ok("/events?limit=500").await;
    evs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "migration.strategy" && e["data"]["migration_id"] == mid)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Migrates while the echo client talks; checks everything the tests promise and
/// returns the finished migration.
async fn move_while_talking(lab: &GuestLab, policy: Value, pad: usize) -> Value {
    move_while_talking_via(lab, policy, pad, false).await.0
}

/// As [`move_while_talking`]; with `ferryctl`, through `ferryctl vm migrate`
/// (returning also what it printed on stderr: the progress and the decisions).
async fn move_while_talking_via(
    lab: &GuestLab,
    policy: Value,
    pad: usize,
    ferryctl: bool,
) -> (Value, String) {
    let GuestLab {
        env,
        api,
        id,
        ip,
        b,
    } = lab;
    let before = ferry_tests::vmtest::guest_status_verifying(ip).await;
    let client = EchoClient::start_padded(ip, pad).await;
    let mut said = String::new();
    let m = if ferryctl {
        assert_eq!(policy, json!({}), "ferryctl runs the VM's own policy here");
        let (url, token) = (env.cp.http.clone(), env.cp.admin_token());
        let (id, b) = (id.clone(), b.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(ferry_tests::bin("ferryctl"))
                .args(["-o", "json", "vm", "migrate", &id, "--to", &b])
                .env("FERRY_URL", url)
                .env("FERRY_TOKEN", token)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{said}");
        serde_json::from_slice::<Value>(&out.stdout).expect("the migration as JSON")
    } else {
        migrate_and_wait(
            api,
            id,
            &json!({"destination_host_id": b, "policy": policy}),
        )
        .await
    };
    let (messages, gap) = client.finish().await;
    eprintln!(
        "{}: longest client gap {gap:?} over {messages} messages",
        m["result"]["strategy"]
    );
    assert_eq!(m["state"], "completed", "{m}");
    assert_eq!(api.ok(&format!("/vms/{id}")).await["host_id"], b.as_str());
    let copies = qemus(id);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].1, netns_of(env, 1));
    let after = ferry_tests::vmtest::guest_status(ip).await;
    assert_eq!(after["boot_id"], before["boot_id"]);
    assert_eq!(after["integrity_errors"], 0, "{after}");
    assert!(after["pages_verified"].as_u64() > before["pages_verified"].as_u64());
    (m, said)
}

#[tokio::test]
async fn a_guest_dirtying_below_the_link_moves_by_precopy() {
    let lab = two_hosts_and_guest("busy", 2, 256, &[], vec![]).await;
    // Well below the link even when parallel tests leave it CPU-bound (~60 MB/s
    // measured then): pre-copy converges and `auto` has nothing to escalate.
    dirty(&lab.ip, 16, 32).await;
    // 16 KiB lines: a bulk stream into the guest across the switchover.
    // The check measures the link, so `auto` knows it when it picks its channels.
    let check = lab
        .api
        .post(
            &format!("/vms/{}/migrate/check", lab.id),
            &json!({"destination_host_id": lab.b}),
        )
        .await;
    let cores = lab.api.ok(&format!("/hosts/{}", lab.b)).await["cpu"]["cores"]
        .as_u64()
        .unwrap();
    let link = check.body["prediction"]["bandwidth_bps"].as_f64().unwrap();
    let m = move_while_talking(&lab, json!({}), 16 << 10).await;
    // Pre-copy alone, over one channel or — where one cannot fill the link —
    // several: the decision and its reason are recorded, and the migration's
    // policy says how many it used.
    let channels = m["policy"]["parallel_channels"].as_u64().unwrap();
    let strategy = m["result"]["strategy"].as_str().unwrap();
    let notes = strategy_events(&lab.api, m["id"].as_str().unwrap()).await;
    // What these machines are (../shared/NOTES.md): two cores, so two channels
    // where one cannot fill the link (at least 2.5 Gbit/s measured), else one.
    assert_eq!(cores, 2, "the expectations below are for a two-core host");
    let n = 2;
    if link >= 312.5e6 {
        assert_eq!(channels, n, "{cores} cores, a {link} B/s link: {m}");
        assert_eq!(strategy, format!("precopy+multifd({n})"), "{m}");
        let said = format!("{n} multifd channels");
        assert!(notes.iter().any(|x| x.contains(&said)), "{notes:?}");
    } else {
        assert_eq!(channels, 1, "a {link} B/s link: {m}");
        assert_eq!(strategy, "precopy", "{m}");
        assert!(
            notes.iter().any(|n| n.contains("one migration channel")),
            "{notes:?}"
        );
    }
    assert!(m["result"]["iterations"].as_u64().unwrap() >= 2, "{m}");
    // The guest's memory came through whole (checked above) on the QEMU the hosts
    // run: padded by a page on a QEMU that loses TCG writes (before 9.0), exactly as
    // asked on a later one.
    let host = lab.api.ok(&format!("/hosts/{}", lab.b)).await;
    let version = host["hypervisor_version"].as_str().unwrap().to_string();
    // `make` installs QEMU 10 (bookworm-backports), which needs no padding: the
    // guest gets exactly the 256 MiB it asked for.
    assert!(
        version.contains("version 10."),
        "the lab runs the QEMU make installs: {version}"
    );
    let pid = ferry_tests::vmtest::qemus(&lab.id)[0].0;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let m_arg = args.windows(2).find(|w| w[0] == "-m").map(|w| w[1].clone());
    assert_eq!(m_arg.as_deref(), Some("256M"), "{version}: {args:?}");
}

#[tokio::test]
async fn a_guest_dirtying_faster_than_a_shaped_link_completes_in_auto() {
    let lab = two_hosts_and_guest("storm", 3, 256, &[], vec![]).await;
    // 200 Mbit/s is 25 MB/s; the guest dirties 64 MiB/s: pre-copy alone never ends.
    shape(&lab.env, 0, "200mbit");
    dirty(&lab.ip, 64, 96).await;
    let (m, said) = move_while_talking_via(&lab, json!({}), 0, true).await;
    assert!(
        said.contains("switching to post-copy"),
        "ferryctl shows the decision as it is taken: {said}"
    );
    let strategy = m["result"]["strategy"].as_str().unwrap();
    assert!(strategy.ends_with("+postcopy"), "{m}");
    let notes = strategy_events(&lab.api, m["id"].as_str().unwrap()).await;
    assert!(
        notes.iter().any(|n| n.contains("switching to post-copy")),
        "the decision is recorded: {notes:?}"
    );
    // Within twice the memory's time on the link (plus the first pass's start). The
    // link is 25 MB/s, or what parallel tests leave of it (QEMU measured it).
    let measured = m["progress"]["bandwidth_bps"].as_f64().unwrap_or(0.0);
    let link = if measured > 1e6 {
        measured.min(25e6)
    } else {
        25e6
    };
    let t_phys_ms = 256.0 * 1048576.0 / link * 1000.0;
    assert!(
        (m["result"]["total_ms"].as_u64().unwrap() as f64) < 2.0 * t_phys_ms + 2000.0,
        "{m}"
    );
}

#[tokio::test]
async fn post_copy_is_past_the_point_of_no_return() {
    let lab = two_hosts_and_guest("pulled", 4, 256, &[], vec![]).await;
    let GuestLab {
        env,
        api,
        id,
        ip,
        b,
    } = &lab;
    // 100 Mbit/s: the first pass takes seconds, and so does post-copy after it.
    shape(env, 0, "100mbit");
    dirty(ip, 16, 64).await;
    let before = ferry_tests::vmtest::guest_status_verifying(ip).await;
    let client = EchoClient::start(ip).await;
    let mid = start_migration(
        api,
        id,
        &json!({"destination_host_id": b, "policy": {"mode": "postcopy"}}),
    )
    .await;
    // Post-copy begins after the first pass: the destination runs the VM now.
    wait_for("post-copy to begin", T, || {
        let (api, mid) = (api.clone(), mid.clone());
        async move {
            let m = api.ok(&format!("/migrations/{mid}")).await;
            assert_ne!(m["state"], "completed", "post-copy was never seen: {m}");
            (m["state"] == "switching_over" && m["phase"] == "postcopy").then_some(())
        }
    })
    .await;
    // No way back from here: cancel is refused, and the move completes.
    api.post(&format!("/migrations/{mid}/cancel"), &json!({}))
        .await
        .assert_problem(409, "migration_not_cancellable");
    let m = wait_migration(api, &mid).await;
    assert_eq!(m["state"], "completed", "{m}");
    assert!(
        m["result"]["strategy"]
            .as_str()
            .unwrap()
            .ends_with("+postcopy"),
        "{m}"
    );
    let (messages, _) = client.finish().await;
    assert!(messages > 0);
    assert_eq!(api.ok(&format!("/vms/{id}")).await["host_id"], b.as_str());
    let copies = qemus(id);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].1, netns_of(env, 1));
    let after = ferry_tests::vmtest::guest_status(ip).await;
    assert_eq!(after["boot_id"], before["boot_id"]);
    assert_eq!(after["integrity_errors"], 0, "{after}");
}
