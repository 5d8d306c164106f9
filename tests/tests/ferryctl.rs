//! `ferryctl` against a real control plane and a real agent: tables for people,
//! JSON for scripts, one-line errors with the server's code, `events --follow`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::bin;
use ferry_tests::procs::{AgentOptions, Env};

fn ctl(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("ferryctl"))
        .args(args)
        .env("FERRY_URL", &env.cp.http)
        .env("FERRY_TOKEN", env.cp.admin_token())
        .output()
        .expect("run ferryctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn ferryctl_drives_the_api() {
    let mut env = Env::new(1, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    env.wait_host_state("host-a", "connected", Duration::from_secs(30))
        .await;

    let (ok, out, _) = ctl(&env, &["hosts"]);
    assert!(ok);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE") && header.contains("ACCEL"),
        "{out}"
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("host-a") && row.contains("connected"),
        "{out}"
    );
    // Columns line up: each header word starts where its column starts.
    assert_eq!(
        header.find("STATE"),
        row.find("connected"),
        "aligned:\n{out}"
    );

    let (ok, out, _) = ctl(&env, &["hosts", "-o", "json"]);
    assert!(ok);
    let hosts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hosts[0]["name"], "host-a");
    let (ok, out, _) = ctl(&env, &["host", "show", "host-a"]);
    assert!(
        ok && out.contains("accel:") && out.contains("cpu models:"),
        "{out}"
    );

    // Create, show, list, delete a VM by name, with a disk and a NIC by name.
    let (ok, out, err) = ctl(
        &env,
        &[
            "vms",
            "create",
            "web-1",
            "--vcpus",
            "2",
            "--memory-mib",
            "512",
            "--host",
            "host-a",
            "--disk",
            "shared:1024",
            "--nic",
            "vmnet",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("name:          web-1") && out.contains("nic 0:"),
        "{out}"
    );
    let (ok, out, _) = ctl(&env, &["vm", "show", "web-1", "-o", "json"]);
    assert!(ok);
    let vm: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vm["vcpus"], 2);
    assert_eq!(vm["disks"][0]["size_bytes"], 1024u64 * 1024 * 1024);
    let (ok, out, _) = ctl(&env, &["vms"]);
    assert!(
        ok && out.lines().nth(1).unwrap().starts_with("web-1"),
        "{out}"
    );
    assert!(ctl(&env, &["clusters"]).1.contains("default"));
    assert!(ctl(&env, &["datastores"]).1.contains("shared"));
    assert!(ctl(&env, &["networks"]).1.contains("vmnet"));
    assert!(ctl(&env, &["tasks"]).0);
    let (ok, out, _) = ctl(
        &env,
        &[
            "clusters",
            "create",
            "prod",
            "--drs-automation",
            "fully_automated",
            "--drs-threshold",
            "4",
        ],
    );
    assert!(ok && out.contains("fully_automated, threshold 4"), "{out}");
    let (ok, out, _) = ctl(
        &env,
        &["clusters", "update", "prod", "--drs-threshold", "2"],
    );
    assert!(ok && out.contains("fully_automated, threshold 2"), "{out}");

    // Errors: one clear line with the server's code, non-zero exit.
    let (ok, _, err) = ctl(&env, &["vms", "create", "web-1"]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("duplicate_name") && err.contains("HTTP 409"),
        "{err}"
    );
    let (ok, _, err) = ctl(&env, &["vms", "show", "nope"]);
    assert!(!ok && err.contains("no vm named \"nope\""), "{err}");
    let (ok, _, err) = ctl(
        &env,
        &["vms", "show", "00000000-0000-4000-8000-000000000000"],
    );
    assert!(!ok && err.contains("not_found"), "{err}");
    let out = Command::new(bin("ferryctl"))
        .args(["hosts"])
        .env("FERRY_URL", &env.cp.http)
        .env("FERRY_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    // Tokens, with --token-file.
    let token_file = env.cp.data_dir.join("admin.token");
    let out = Command::new(bin("ferryctl"))
        .args(["tokens", "create", "ci", "--role", "viewer", "--token-file"])
        .arg(&token_file)
        .env("FERRY_URL", &env.cp.http)
        .env_remove("FERRY_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("secret (shown once): ferry_")
    );

    // events --follow prints new events as they happen.
    let mut follow = Command::new(bin("ferryctl"))
        .args(["events", "--follow", "--kind", "vm."])
        .env("FERRY_URL", &env.cp.http)
        .env("FERRY_TOKEN", env.cp.admin_token())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("VM web-1 deleted");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let (ok, out, _) = ctl(&env, &["vms", "delete", "web-1"]);
    assert!(ok && out.contains("deleted VM web-1"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        reader.is_finished(),
        "events --follow did not show the deletion"
    );
    let seen = reader.join().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("vm.created") && l.contains("VM web-1 created")),
        "{seen:?}"
    );
    assert!(seen.last().unwrap().contains("vm.deleted"), "{seen:?}");
}
