//! Scheduled operations through the public API and `ferryctl`, on sim hosts (fast
//! tier): a migration scheduled seconds ahead runs on time, also across a
//! control-plane restart; a cancelled schedule never runs; one whose checks fail
//! when it comes due records why and does nothing; bad schedules are refused.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use ferry_tests::sim::SimCluster;
use ferry_tests::vmtest::wait_migration;
use ferry_tests::wait_for;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn at(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn in_secs(s: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()
}

async fn schedule(c: &SimCluster, body: Value) -> Value {
    let r = c.api.post("/schedules", &body).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

/// Waits until schedule `id` has a run that is no longer `running`; the run.
async fn ran(c: &SimCluster, id: &str) -> Value {
    wait_for("the schedule to run", T, || {
        let (api, id) = (c.api.clone(), id.to_string());
        async move {
            let s = api.ok(&format!("/schedules/{id}")).await;
            let run = s["runs"].as_array()?.first()?.clone();
            (run["outcome"] != "running").then_some(run)
        }
    })
    .await
}

/// Schedule `s` (a migration of `vm` to `to`) ran within 2 s of its time, started
/// the migration, and the VM arrived.
async fn moved_on_time(c: &SimCluster, s: &Value, vm: &str, to: &str) {
    let run = ran(c, s["id"].as_str().unwrap()).await;
    assert_eq!(run["outcome"], "started", "{run}");
    let late = at(&run["ran_at"]) - at(&s["not_before"]);
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(2),
        "ran {late} after its time"
    );
    let m = wait_migration(&c.api, run["operation_id"].as_str().unwrap()).await;
    assert_eq!(m["state"], "completed", "{m}");
    assert_eq!(host_of(c, vm).await, to);
}

async fn host_of(c: &SimCluster, vm: &str) -> String {
    c.api.ok(&format!("/vms/{vm}")).await["host_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn scheduled_migrations_run_on_time_cancelled_ones_never() {
    let c = SimCluster::start(2, 10_000, &[]).await;
    let (h0, h1) = (c.host(0).to_string(), c.host(1).to_string());
    let a = c.vm("sched-a", 0, 1024, "").await;
    let b = c.vm("sched-b", 0, 1024, "").await;

    // b's schedule is due first, and cancelled; a's runs on time.
    let sb = schedule(
        &c,
        json!({"name": "move-b", "not_before": in_secs(2),
               "action": {"kind": "migrate", "vm_id": b, "destination_host_id": h1}}),
    )
    .await;
    let sa = schedule(
        &c,
        json!({"name": "move-a", "not_before": in_secs(3),
               "action": {"kind": "migrate", "vm_id": a, "destination_host_id": h1}}),
    )
    .await;
    assert_eq!(sa["state"], "active");
    assert_eq!(sa["next_run_at"], sa["not_before"]);
    let cancel = c
        .api
        .post(
            &format!("/schedules/{}/cancel", sb["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{cancel:?}");
    assert_eq!(cancel.body["state"], "cancelled");
    assert_eq!(cancel.body["next_run_at"], Value::Null);

    moved_on_time(&c, &sa, &a, &h1).await;
    let sa = c
        .api
        .ok(&format!("/schedules/{}", sa["id"].as_str().unwrap()))
        .await;
    assert_eq!(sa["state"], "done");
    assert_eq!(sa["next_run_at"], Value::Null);
    // The cancelled one, due a second before, never ran.
    let sb = c
        .api
        .ok(&format!("/schedules/{}", sb["id"].as_str().unwrap()))
        .await;
    assert_eq!(sb["runs"], json!([]), "{sb}");
    assert_eq!(host_of(&c, &b).await, h0);

    // Due when its checks fail (a is on host 1 already): why is recorded, nothing moves.
    let sc = schedule(
        &c,
        json!({"name": "move-a-again", "not_before": in_secs(1),
               "action": {"kind": "migrate", "vm_id": a, "destination_host_id": h1}}),
    )
    .await;
    let run = ran(&c, sc["id"].as_str().unwrap()).await;
    assert_eq!(run["outcome"], "refused", "{run}");
    assert!(
        run["detail"]
            .as_str()
            .unwrap()
            .contains("incompatible_destination"),
        "{run}"
    );
    assert_eq!(run["operation_id"], Value::Null);
    assert_eq!(host_of(&c, &a).await, h1);

    // A recurrence in a named zone; its timing changed.
    let daily = schedule(
        &c,
        json!({"name": "nightly", "repeat": {"every": "daily", "at": "03:00"},
               "time_zone": "Asia/Tokyo", "action": {"kind": "drs_run", "cluster_id":
               c.api.ok("/clusters").await["items"][0]["id"]}}),
    )
    .await;
    // 03:00 in Tokyo (UTC+9, no daylight saving) is 18:00 UTC.
    let next = at(&daily["next_run_at"]);
    assert_eq!((next.hour(), next.minute()), (18, 0), "{daily}");
    assert!(next > Utc::now() && next - Utc::now() <= chrono::Duration::hours(24));
    let id = daily["id"].as_str().unwrap();
    let p = c
        .api
        .patch(&format!("/schedules/{id}"), &json!({"time_zone": "UTC"}))
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    let next = at(&p.body["next_run_at"]);
    assert_eq!((next.hour(), next.minute()), (3, 0), "{:?}", p.body);

    // Bad input changes nothing.
    let vm_action = json!({"kind": "migrate", "vm_id": a});
    for (body, status, code) in [
        (
            json!({"name": "x", "action": vm_action}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"name": "x", "action": vm_action, "not_before": in_secs(-3600)}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"name": "x", "action": vm_action, "repeat": {"every": "daily", "at": "24:00"}}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"name": "x", "action": vm_action, "repeat": {"every": "cron", "expression": "every day"}}),
            422,
            "invalid_schedule",
        ),
        (
            json!({"name": "x", "action": vm_action, "repeat": {"every": "daily", "at": "01:00"}, "time_zone": "Moon/Base"}),
            422,
            "invalid_time_zone",
        ),
        (
            json!({"name": "x", "not_before": in_secs(60), "action": {"kind": "migrate", "vm_id": uuid::Uuid::new_v4()}}),
            422,
            "unknown_vm",
        ),
        (
            json!({"name": "x", "not_before": in_secs(60), "action": {"kind": "reboot"}}),
            422,
            "invalid_body",
        ),
        (
            json!({"name": "x", "not_before": in_secs(60), "action": vm_action, "when": "soon"}),
            422,
            "invalid_body",
        ),
        (
            json!({"name": "nightly", "not_before": in_secs(60), "action": vm_action}),
            409,
            "name_taken",
        ),
    ] {
        c.api
            .post("/schedules", &body)
            .await
            .assert_problem(status, code);
    }
    let sb_id = sb["id"].as_str().unwrap();
    c.api
        .post(&format!("/schedules/{sb_id}/cancel"), &json!({}))
        .await
        .assert_problem(409, "schedule_not_active");
    c.api
        .patch(
            &format!("/schedules/{sb_id}"),
            &json!({"not_before": in_secs(60)}),
        )
        .await
        .assert_problem(409, "schedule_not_active");
    c.api
        .get(&format!("/schedules/{}", uuid::Uuid::new_v4()))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(c.api.ok("/schedules").await.as_array().unwrap().len(), 4);

    // Through ferryctl.
    let (ok, out, err) = c
        .ferryctl(&[
            "schedule",
            "create",
            "back",
            "--migrate",
            "sched-a",
            "--to",
            &h0,
            "--at",
            "+1h",
        ])
        .await;
    assert!(ok && out.contains("schedule back created"), "{out}{err}");
    let (ok, out, err) = c.ferryctl(&["schedule", "list"]).await;
    assert!(
        ok && out.contains("back") && out.contains("daily 03:00"),
        "{out}{err}"
    );
    let id = out
        .lines()
        .find(|l| l.contains(" back "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (ok, out, err) = c.ferryctl(&["schedule", "cancel", &id]).await;
    assert!(ok && out.contains("schedule back cancelled"), "{out}{err}");
    let (ok, _, err) = c
        .ferryctl(&[
            "schedule",
            "create",
            "bad",
            "--balance",
            "default",
            "--weekly",
            "funday@02:00",
        ])
        .await;
    assert!(!ok && err.contains("not a day"), "{err}");
}

#[tokio::test]
async fn a_schedule_survives_a_control_plane_restart() {
    let mut c = SimCluster::start(2, 10_000, &[]).await;
    let h1 = c.host(1).to_string();
    let a = c.vm("restart-a", 0, 1024, "").await;
    let s = schedule(
        &c,
        json!({"name": "after-restart", "not_before": in_secs(15),
               "action": {"kind": "migrate", "vm_id": a, "destination_host_id": h1}}),
    )
    .await;
    c.restart().await;
    // Nothing ran while it was down or starting.
    let before = c
        .api
        .ok(&format!("/schedules/{}", s["id"].as_str().unwrap()))
        .await;
    assert_eq!(before["runs"], json!([]), "{before}");
    assert!(
        Utc::now() < at(&s["not_before"]),
        "the restart took too long to test this"
    );
    moved_on_time(&c, &s, &a, &h1).await;
}
