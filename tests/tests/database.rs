//! The two database modes and the schema: the embedded PostgreSQL the control plane
//! starts (and stops, and adopts after a crash) inside its data dir; an external
//! server given by URL; and the migrations applying to an empty database.

use ferry_tests::pg::TestDb;
use ferry_tests::procs::{ControlPlane, CpOptions};
use serde_json::json;

fn postmaster_running(data_dir: &std::path::Path) -> bool {
    let pid_file = data_dir.join("pg/data/postmaster.pid");
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn embedded_database_starts_persists_stops_and_is_adopted_after_a_crash() {
    let dir = tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .unwrap();
    let mut cp = ControlPlane::start(dir.path(), CpOptions::default()).await;
    assert!(
        postmaster_running(&cp.data_dir),
        "the embedded PostgreSQL runs inside the data dir"
    );
    let api = cp.api();
    assert_eq!(
        api.post("/clusters", &json!({"name": "kept"})).await.status,
        201
    );
    let token = cp.admin_token();

    // A clean stop stops the database too.
    assert_eq!(cp.stop().await, Some(0));
    assert!(
        !postmaster_running(&cp.data_dir),
        "SIGTERM stops the embedded PostgreSQL"
    );

    // Started again: the same state, the same admin token.
    cp.restart().await;
    assert_eq!(cp.admin_token(), token);
    let c = cp.api().ok("/clusters?name=kept").await;
    assert_eq!(c["items"].as_array().unwrap().len(), 1);

    // Killed outright: the database survives and the next start adopts it.
    cp.proc.kill9();
    assert!(postmaster_running(&cp.data_dir));
    cp.restart().await;
    assert_eq!(
        cp.api().ok("/clusters?name=kept").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(cp.stop().await, Some(0));
    assert!(!postmaster_running(&cp.data_dir));
}

#[tokio::test]
async fn external_database_by_url() {
    let dir = tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .unwrap();
    let db = TestDb::new().await;
    let cp = ControlPlane::start(
        dir.path(),
        CpOptions {
            database_url: Some(db.url()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        !cp.data_dir.join("pg").exists(),
        "no embedded database with --database-url"
    );
    assert_eq!(
        cp.api()
            .post("/clusters", &json!({"name": "ext"}))
            .await
            .status,
        201
    );
    let pool = db.pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters WHERE name = 'ext'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "the state is in the external database");
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tokens, 1, "the bootstrap admin token, hashed");
    let secret_stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE secret_sha256 = $1")
            .bind(cp.admin_token())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(secret_stored, 0, "the secret itself is never stored");
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_once() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let migrator = &ferry_control_plane::db::MIGRATOR;
    migrator.run(&pool).await.unwrap();
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    tables.retain(|t| t != "_sqlx_migrations");
    assert_eq!(
        tables,
        [
            "api_tokens",
            "audit",
            "certificate_authority",
            "clusters",
            "datastores",
            "drs_passes",
            "drs_recommendations",
            "events",
            "host_datastores",
            "host_networks",
            "hosts",
            "maintenance",
            "migrations",
            "networks",
            "rule_hosts",
            "rule_vms",
            "rules",
            "saga_events",
            "sagas",
            "schedule_runs",
            "schedules",
            "tasks",
            "vm_disks",
            "vm_nics",
            "vm_operations",
            "vms"
        ]
    );
    // Applying again changes nothing; every migration is recorded once.
    migrator.run(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, migrator.iter().count());
}

/// PostgreSQL stopped under a running control plane (issue #13 item 5, its API
/// part): every answer is 503 `unavailable` with `Retry-After`, never a 500 or a
/// hang; once the database is back the same process answers again, no restart.
#[tokio::test]
async fn the_api_answers_503_while_its_database_is_down_and_recovers_without_a_restart() {
    use ferry_control_plane::embedded_pg::EmbeddedPg;
    let dir = tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .unwrap();
    let cp = ControlPlane::start(dir.path(), CpOptions::default()).await;
    let pid = cp.proc.pid();
    let api = cp.api();
    assert_eq!(
        api.post("/clusters", &json!({"name": "before"}))
            .await
            .status,
        201
    );
    // The control plane's own cluster, adopted here, stopped (fast shutdown: its
    // sessions end, new connections are refused).
    let data_dir = cp.data_dir.clone();
    let pg = tokio::task::spawn_blocking(move || {
        let pg = EmbeddedPg::start(&data_dir, None).expect("adopt the cluster");
        pg.stop().expect("stop PostgreSQL");
    });
    pg.await.unwrap();
    assert!(!postmaster_running(&cp.data_dir));
    for (method, path, body) in [
        ("GET", "/clusters", None),
        ("GET", "/vms", None),
        ("POST", "/clusters", Some(json!({"name": "during"}))),
    ] {
        let t0 = std::time::Instant::now();
        let r = match body {
            None => api.get(path).await,
            Some(b) => api.post(path, &b).await,
        };
        r.assert_problem(503, "unavailable");
        println!("{method} {path}: 503 in {:?}", t0.elapsed());
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "{method} {path} took {:?}",
            t0.elapsed()
        );
    }
    let raw = reqwest::get(format!("{}/api/v1/health", cp.http))
        .await
        .unwrap();
    assert!(raw.status().is_success(), "health needs no database");
    // Back: the same process answers, and writes.
    let data_dir = cp.data_dir.clone();
    tokio::task::spawn_blocking(move || EmbeddedPg::start(&data_dir, None).map(|_| ()))
        .await
        .unwrap()
        .expect("start PostgreSQL again");
    ferry_tests::wait_for(
        "the API to answer again",
        std::time::Duration::from_secs(30),
        || {
            let api = api.clone();
            async move { (api.get("/clusters").await.status == 200).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        api.post("/clusters", &json!({"name": "after"}))
            .await
            .status,
        201
    );
    let names: Vec<String> = api.ok("/clusters?limit=100").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"before".to_string()) && names.contains(&"after".to_string()));
    assert!(!names.contains(&"during".to_string()), "{names:?}");
    assert_eq!(cp.proc.pid(), pid, "the control plane was not restarted");
}
