//! A control plane that outlives its database's hiccups (issue #13 item 5): the
//! embedded PostgreSQL stopped for longer than the host timeout under a running
//! control plane, a host and a real guest. The API answers 503 `unavailable`; the
//! guest runs on, the same QEMU, still serving; once the database is back the
//! same control-plane process answers and writes, and the host — whose
//! heartbeats could not be recorded meanwhile — was never `disconnected`.

use std::time::{Duration, Instant};

use ferry_control_plane::embedded_pg::EmbeddedPg;
use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::vmtest::{boot_guest, guest_status, one_qemu_of};
use ferry_tests::wait_for;
use serde_json::json;

const T: Duration = Duration::from_secs(90);
/// Longer than the host timeout the control plane is given (3 s).
const OUTAGE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_database_outage_leaves_hosts_connected_and_guests_running() {
    let mut env = Env::with_embedded_db(1, &["--host-timeout", "3s"]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    let host = env.wait_host_state("host-a", "connected", T).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let api = env.api();
    let ip = env.lab.guest_ip(2);
    let vm = boot_guest(&env, "outlives", &host, 256, &ip).await;
    let qemu = one_qemu_of(&vm).await;
    let last_seq = api.ok("/events?newest_first=true&limit=1").await["items"][0]["seq"]
        .as_i64()
        .unwrap();
    let cp_pid = env.cp.proc.pid();

    // Down.
    let data_dir = env.cp.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        EmbeddedPg::start(&data_dir, None)
            .expect("adopt the cluster")
            .stop()
            .expect("stop PostgreSQL")
    })
    .await
    .unwrap();
    let down = Instant::now();
    while down.elapsed() < OUTAGE {
        api.get(&format!("/vms/{vm}"))
            .await
            .assert_problem(503, "unavailable");
        // The guest runs on, served by its agent, whatever the database does.
        let s = guest_status(&ip).await;
        assert_eq!(s["integrity_errors"], 0, "{s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Up again: the same process answers and writes.
    let data_dir = env.cp.data_dir.clone();
    tokio::task::spawn_blocking(move || EmbeddedPg::start(&data_dir, None).map(|_| ()))
        .await
        .unwrap()
        .expect("start PostgreSQL again");
    wait_for("the API to answer again", T, || {
        let (api, vm) = (api.clone(), vm.clone());
        async move { (api.get(&format!("/vms/{vm}")).await.status == 200).then_some(()) }
    })
    .await;
    assert_eq!(
        api.post("/clusters", &json!({"name": "after-the-outage"}))
            .await
            .status,
        201
    );
    // Past one more host timeout: the host was heard again in time, never lost.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        api.ok(&format!("/hosts/{host}")).await["state"],
        "connected"
    );
    let events = api
        .ok(&format!("/events?since={last_seq}&limit=1000"))
        .await;
    let lost: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "host.disconnected")
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
    let v = api.ok(&format!("/vms/{vm}")).await;
    assert_eq!(v["power_state"], "running", "{v}");
    assert_eq!(one_qemu_of(&vm).await, qemu, "the same QEMU runs the guest");
    assert_eq!(guest_status(&ip).await["integrity_errors"], 0);
    assert_eq!(
        env.cp.proc.pid(),
        cp_pid,
        "the control plane was not restarted"
    );
}
