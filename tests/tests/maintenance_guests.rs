//! Maintenance mode on real QEMU guests, three lab hosts each in its own network
//! namespace: evacuating a host moves every guest while a client talks to each
//! (no message lost, memory intact, exactly one QEMU per guest), spread by an
//! anti-affinity rule and a VM-host rule; leaving maintenance with `move_back`
//! brings them home, still talking. A dry run predicts a capacity failure on hosts
//! that offer VMs little memory (`--vm-memory-mib`); an evacuation over a shaped
//! link is cancelled mid-move, then started again and the control plane killed
//! mid-move: it finishes after the restart, every guest still talking, on exactly
//! one host.

use std::time::Duration;

use ferry_tests::echo::EchoClient;
use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::vmtest::{
    boot_guest, guest_status, guest_status_verifying, netns_of, one_qemu_of, qemus, shape,
    wait_migration,
};
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn evacuation_spreads_guests_by_rule_and_move_back_brings_them_home() {
    let mut env = Env::new(3, &[]).await;
    let names = ["host-a", "host-b", "host-c"];
    for (i, n) in names.iter().enumerate() {
        env.start_agent(i as u8, &AgentOptions::qemu(n));
    }
    let mut hosts = Vec::new();
    for n in names {
        hosts.push(id(&env.wait_host_state(n, "connected", T).await));
    }
    let api = env.api();
    let ips = [env.lab.guest_ip(0), env.lab.guest_ip(1)];
    let g1 = boot_guest(&env, "evac-1", &hosts[0], 256, &ips[0]).await;
    let g2 = boot_guest(&env, "evac-2", &hosts[0], 256, &ips[1]).await;
    let cluster = api.ok("/clusters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Apart, and evac-1 never on host-b: evac-1 must go to host-c, evac-2 to host-b.
    for body in [
        json!({"name": "evac-apart", "kind": "anti_affinity", "vms": ["evac-1", "evac-2"]}),
        json!({"name": "evac-1-not-b", "kind": "must_not_run_on", "vms": ["evac-1"], "hosts": ["host-b"]}),
    ] {
        let r = api.post(&format!("/clusters/{cluster}/rules"), &body).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let before: Vec<Value> = vec![
        guest_status_verifying(&ips[0]).await,
        guest_status_verifying(&ips[1]).await,
    ];

    // The plan says so before anything moves.
    let h0 = &hosts[0];
    let plan = api
        .post(
            &format!("/hosts/{h0}/maintenance"),
            &json!({"dry_run": true}),
        )
        .await;
    assert_eq!(plan.status, 200, "{plan:?}");
    assert_eq!(plan.body["feasible"], true, "{:?}", plan.body);
    let dest = |vm: &str| {
        plan.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["vm_id"] == vm)
            .map(|s| s["destination_host_id"].clone())
    };
    assert_eq!(dest(&g1), Some(json!(hosts[2])), "{:?}", plan.body);
    assert_eq!(dest(&g2), Some(json!(hosts[1])), "{:?}", plan.body);

    // Evacuate while a client talks to each guest.
    let clients = [
        EchoClient::start(&ips[0]).await,
        EchoClient::start(&ips[1]).await,
    ];
    let r = api
        .post(&format!("/hosts/{h0}/maintenance"), &json!({}))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let m = maintenance_ended(&api, h0).await;
    assert_eq!(m["state"], "in_maintenance", "{m}");
    assert_eq!(
        api.ok(&format!("/hosts/{h0}")).await["state"],
        "maintenance"
    );
    for (vm, ns) in [(&g1, 2u8), (&g2, 1u8)] {
        let v = api.ok(&format!("/vms/{vm}")).await;
        assert_eq!(v["host_id"], hosts[ns as usize].as_str(), "{v}");
        assert_eq!(v["power_state"], "running");
        let q = one_qemu_of(vm).await;
        assert_eq!(q.1, netns_of(&env, ns));
    }
    for (ip, b) in ips.iter().zip(&before) {
        let s = guest_status(ip).await;
        assert_eq!(s["integrity_errors"], 0, "{s}");
        assert!(s["pages_verified"].as_u64() > b["pages_verified"].as_u64());
    }

    // Back home, still talking: once they may share a host again (with the
    // anti-affinity rule in force, one would stay, refused by the rules check).
    let rules = api.ok(&format!("/clusters/{cluster}/rules")).await;
    let apart = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "evac-apart")
        .map(id)
        .unwrap();
    assert_eq!(api.delete(&format!("/rules/{apart}")).await.status, 204);
    let e = api
        .delete(&format!("/hosts/{h0}/maintenance?move_back=true"))
        .await;
    assert_eq!(e.status, 200, "{e:?}");
    assert_eq!(e.body["moved_back"].as_array().unwrap().len(), 2, "{e:?}");
    assert_eq!(e.body["state"], "connected");
    for mid in e.body["moved_back"].as_array().unwrap() {
        let m = wait_migration(&api, mid.as_str().unwrap()).await;
        assert_eq!(m["state"], "completed", "{m}");
    }
    // Home, and the QEMUs they left on b and c gone (a moment after the switchover).
    let home = netns_of(&env, 0);
    wait_for("both guests to be home, one QEMU each", T, || {
        let (api, g1, g2, h0, home) = (
            api.clone(),
            g1.clone(),
            g2.clone(),
            h0.clone(),
            home.clone(),
        );
        async move {
            for vm in [&g1, &g2] {
                let v = api.ok(&format!("/vms/{vm}")).await;
                let q = qemus(vm);
                if v["host_id"] != h0.as_str()
                    || v["power_state"] != "running"
                    || q.len() != 1
                    || q[0].1 != home
                {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    for vm in [&g1, &g2] {
        let q = one_qemu_of(vm).await;
        assert_eq!(q.1, netns_of(&env, 0));
    }
    for c in clients {
        let (messages, gap) = c.finish().await;
        assert!(messages > 100, "{messages} messages");
        assert!(gap < Duration::from_secs(10), "longest gap {gap:?}");
    }
    for ip in &ips {
        assert_eq!(guest_status(ip).await["integrity_errors"], 0);
    }
}

/// Waits until one of host `h`'s evacuation moves is transferring; its id.
async fn a_move_in_flight(api: &ferry_tests::rest::Api, h: &str) -> String {
    wait_for("a move to be transferring", T, || {
        let (api, h) = (api.clone(), h.to_string());
        async move {
            let m = api.ok(&format!("/hosts/{h}/maintenance")).await;
            m["moves"].as_array()?.iter().find_map(|mv| {
                (mv["state"] == "transferring")
                    .then(|| mv["migration_id"].as_str().map(str::to_string))
                    .flatten()
            })
        }
    })
    .await
}

async fn maintenance_ended(api: &ferry_tests::rest::Api, h: &str) -> Value {
    wait_for("the evacuation to end", T, || {
        let (api, h) = (api.clone(), h.to_string());
        async move {
            let m = api.ok(&format!("/hosts/{h}/maintenance")).await;
            (m["state"] != "evacuating").then_some(m)
        }
    })
    .await
}

#[tokio::test]
async fn capacity_is_predicted_and_an_evacuation_survives_cancel_and_a_control_plane_kill() {
    let mut env = Env::new(3, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    for (i, n) in [(1u8, "host-b"), (2, "host-c")] {
        let mut o = AgentOptions::qemu(n);
        // 400 MiB for VMs: one 256 MiB guest each (with QEMU's 64), not two.
        o.args = vec!["--vm-memory-mib".into(), "400".into()];
        env.start_agent(i, &o);
    }
    let mut hosts = Vec::new();
    for n in ["host-a", "host-b", "host-c"] {
        hosts.push(id(&env.wait_host_state(n, "connected", T).await));
    }
    let api = env.api();
    let ips = [
        env.lab.guest_ip(2),
        env.lab.guest_ip(3),
        env.lab.guest_ip(4),
    ];
    let g1 = boot_guest(&env, "cap-1", &hosts[0], 256, &ips[0]).await;
    let g2 = boot_guest(&env, "cap-2", &hosts[0], 256, &ips[1]).await;
    let g3 = boot_guest(&env, "cap-3", &hosts[0], 200, &ips[2]).await;
    let h0 = hosts[0].clone();

    // 3 guests need 904 MiB; hosts b and c offer 800: the plan says which cannot go.
    let plan = api
        .post(
            &format!("/hosts/{h0}/maintenance"),
            &json!({"dry_run": true}),
        )
        .await;
    assert_eq!(plan.status, 200, "{plan:?}");
    assert_eq!(plan.body["feasible"], false, "{:?}", plan.body);
    let refused: Vec<&Value> = plan.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "refuse")
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", plan.body);
    assert_eq!(
        refused[0]["problems"][0]["code"], "insufficient_memory",
        "{:?}",
        plan.body
    );
    api.post(&format!("/hosts/{h0}/maintenance"), &json!({}))
        .await
        .assert_problem(409, "maintenance_infeasible");
    assert_eq!(api.ok(&format!("/hosts/{h0}")).await["state"], "connected");

    // Room made: the smallest guest is powered off (and left, by policy).
    let off = api
        .post(&format!("/vms/{g3}/power"), &json!({"action": "off"}))
        .await;
    assert_eq!(off.status, 202, "{off:?}");
    wait_for("cap-3 to stop", T, || {
        let (api, g3) = (api.clone(), g3.clone());
        async move {
            (api.ok(&format!("/vms/{g3}")).await["power_state"] == "stopped"
                && qemus(&g3).is_empty())
            .then_some(())
        }
    })
    .await;
    // A slow link, so a move is caught in flight.
    shape(&env, 0, "100mbit");
    let clients = [
        EchoClient::start(&ips[0]).await,
        EchoClient::start(&ips[1]).await,
    ];

    // Cancelled mid-move: what moved stays, the rest is on host-a, host-a connected.
    let r = api
        .post(&format!("/hosts/{h0}/maintenance"), &json!({}))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    a_move_in_flight(&api, &h0).await;
    let c = api
        .post(&format!("/hosts/{h0}/maintenance/cancel"), &json!({}))
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    let m = maintenance_ended(&api, &h0).await;
    assert_eq!(m["state"], "cancelled", "{m}");
    assert_eq!(api.ok(&format!("/hosts/{h0}")).await["state"], "connected");
    for vm in [&g1, &g2] {
        one_qemu_of(vm).await;
    }

    // Again, and the control plane killed mid-move: after its restart the
    // evacuation finishes. (First the hosts report the memory the cancelled moves'
    // destination QEMUs held as free again: facts arrive with a heartbeat.)
    wait_for("hosts b and c to report their memory free", T, || {
        let (api, hosts) = (api.clone(), hosts.clone());
        async move {
            for h in &hosts[1..] {
                let free = api.ok(&format!("/hosts/{h}")).await["memory"]["free_mib"].as_u64()?;
                if free < 320 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let r = api
        .post(&format!("/hosts/{h0}/maintenance"), &json!({}))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    a_move_in_flight(&api, &h0).await;
    env.cp.proc.kill9();
    env.cp.restart().await;
    let m = maintenance_ended(&api, &h0).await;
    assert_eq!(m["state"], "in_maintenance", "{m}");
    let mut on = Vec::new();
    for (vm, ip) in [(&g1, &ips[0]), (&g2, &ips[1])] {
        let v = api.ok(&format!("/vms/{vm}")).await;
        assert_eq!(v["power_state"], "running", "{v}");
        let q = one_qemu_of(vm).await;
        let host = v["host_id"].as_str().unwrap().to_string();
        let i = hosts.iter().position(|h| *h == host).unwrap() as u8;
        assert_ne!(i, 0, "{v}");
        assert_eq!(q.1, netns_of(&env, i));
        assert_eq!(guest_status(ip).await["integrity_errors"], 0);
        on.push(i);
    }
    // One each: neither b nor c has room for two.
    on.sort();
    assert_eq!(on, vec![1, 2]);
    assert_eq!(api.ok(&format!("/vms/{g3}")).await["host_id"], h0.as_str());
    for c in clients {
        let (messages, gap) = c.finish().await;
        assert!(messages > 100, "{messages} messages");
        assert!(gap < Duration::from_secs(15), "longest gap {gap:?}");
    }
}
