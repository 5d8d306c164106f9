//! Agents joining over mutual TLS, from their own network namespaces: facts,
//! identity, refusal of clients without valid certificates, wrong join tokens,
//! heartbeat loss and return, re-registration after a restart, and the control
//! plane's periodic pull.

use std::time::Duration;

use ferry_proto::v1::agent_client::AgentClient;
use ferry_proto::v1::control_plane_client::ControlPlaneClient;
use ferry_proto::v1::{GetFactsRequest, HeartbeatRequest};
use ferry_tests::procs::{AgentOptions, Env};
use ferry_tests::wait_for;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn agents_join_from_their_namespaces_and_report_facts() {
    let mut env = Env::new(2, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    env.start_agent(1, &AgentOptions::qemu("host-b"));
    let a = env.wait_host_state("host-a", "connected", T).await;
    let b = env.wait_host_state("host-b", "connected", T).await;

    // Each host has its own identity and its own address in its own namespace.
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["address"], format!("{}:9091", env.lab.host_ip(0)));
    assert_eq!(b["address"], format!("{}:9091", env.lab.host_ip(1)));
    // Facts from the real machine and the real QEMU.
    for h in [&a, &b] {
        assert!(matches!(h["accel"].as_str(), Some("kvm" | "tcg")), "{h}");
        assert!(!h["accel_reason"].as_str().unwrap().is_empty());
        assert!(h["cpu"]["cores"].as_u64().unwrap() >= 1);
        assert!(!h["cpu"]["vendor"].as_str().unwrap().is_empty());
        let models: Vec<&str> = h["cpu"]["supported_models"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        assert!(models.contains(&"qemu64"), "QEMU's CPU models: {models:?}");
        assert!(h["memory"]["total_mib"].as_u64().unwrap() > 0);
        assert!(h["hypervisor_version"].as_str().unwrap().contains("QEMU"));
        assert_eq!(h["datastores"].as_array().unwrap().len(), 2);
        assert_eq!(h["networks"].as_array().unwrap().len(), 1);
    }
    // On these nested machines /dev/kvm is PVM: auto must pick TCG and say why.
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(a["accel"], "tcg");
        assert!(a["accel_reason"].as_str().unwrap().contains("PVM"));
    }

    // The shared directory is one datastore both hosts mount; local ones are local.
    let api = env.api();
    let ds = api.ok("/datastores?limit=10").await;
    let items = ds["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{ds}");
    let shared: Vec<_> = items.iter().filter(|d| d["name"] == "shared").collect();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0]["kind"], "shared");
    assert_eq!(shared[0]["host_ids"].as_array().unwrap().len(), 2);
    assert!(shared[0]["capacity_bytes"].as_u64().unwrap() > 0);
    for d in items.iter().filter(|d| d["name"] != "shared") {
        assert_eq!(d["kind"], "local");
        assert_eq!(d["host_ids"].as_array().unwrap().len(), 1);
    }
    // Networks of the same name are one network across hosts.
    let nets = api.ok("/networks").await;
    assert_eq!(nets["items"].as_array().unwrap().len(), 1);
    assert_eq!(nets["items"][0]["name"], "vmnet");
    assert_eq!(nets["items"][0]["host_ids"].as_array().unwrap().len(), 2);
    // Both joined the default cluster, created on first use, with an event each.
    let clusters = api.ok("/clusters").await;
    assert_eq!(clusters["items"].as_array().unwrap().len(), 1);
    assert_eq!(clusters["items"][0]["name"], "default");
    assert_eq!(clusters["items"][0]["host_count"], 2);
    let events = api.ok("/events?kind=host.joined").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_host_joins_the_named_cluster() {
    let mut env = Env::new(1, &[]).await;
    let mut o = AgentOptions::qemu("edge-1");
    o.args = vec!["--cluster".into(), "edge".into()];
    env.start_agent(0, &o);
    let h = env.wait_host_state("edge-1", "connected", T).await;
    let c = env
        .api()
        .ok(&format!("/clusters/{}", h["cluster_id"].as_str().unwrap()))
        .await;
    assert_eq!(c["name"], "edge");
}

#[tokio::test]
async fn a_wrong_join_token_is_refused() {
    let mut env = Env::new(1, &[]).await;
    let mut o = AgentOptions::qemu("intruder");
    o.join_token = Some("not-the-token-at-all".into());
    let i = env.start_agent(0, &o);
    let agent = &mut env.agents[i];
    let code = wait_for("the agent to give up", T, || {
        let c = agent.exited();
        async move { c }
    })
    .await;
    assert_eq!(code, Some(1));
    assert!(
        agent.log_text().contains("join token is not valid"),
        "{}",
        agent.log_text()
    );
    let hosts = env.api().ok("/hosts").await;
    assert_eq!(
        hosts["items"].as_array().unwrap().len(),
        0,
        "no host may be created: {hosts}"
    );
}

/// A TLS endpoint to the control plane's gRPC, trusting its CA.
fn cp_endpoint(env: &Env, identity: Option<Identity>) -> Endpoint {
    let ca = std::fs::read_to_string(env.cp.ca_path()).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("control-plane.ferry");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Endpoint::from_shared(format!("https://{}", env.cp.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
}

/// A key and self-made certificate the cluster's CA never signed.
fn foreign_identity(cn: &str) -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["foreign.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    Identity::from_pem(cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn calls_without_a_valid_certificate_are_refused_both_ways() {
    let mut env = Env::new(1, &[]).await;
    env.start_agent(0, &AgentOptions::qemu("host-a"));
    let host = env.wait_host_state("host-a", "connected", T).await;
    let host_id = host["id"].as_str().unwrap().to_string();
    let hb = || HeartbeatRequest {
        generation: 1,
        cpu_pct: 1.0,
        mem_pct: 1.0,
        memory_free_mib: 1,
        vm_loads: vec![],
    };

    // To the control plane: no client certificate → unauthenticated.
    let channel = cp_endpoint(&env, None).connect().await.unwrap();
    let err = ControlPlaneClient::new(channel)
        .heartbeat(hb())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // A certificate from another CA claiming to be the host: the handshake fails.
    let forged = cp_endpoint(&env, Some(foreign_identity(&host_id)));
    match forged.connect().await {
        Err(_) => {}
        Ok(ch) => {
            let err = ControlPlaneClient::new(ch)
                .heartbeat(hb())
                .await
                .unwrap_err();
            assert_ne!(err.code(), tonic::Code::Ok);
        }
    }

    // To the agent: the host's own certificate is no control plane; no certificate
    // at all does not even get a session.
    let state = env.dir.path().join("agent-host-a");
    let agent_cert = std::fs::read_to_string(state.join("host.crt")).unwrap();
    let agent_key = std::fs::read_to_string(state.join("host.key")).unwrap();
    let ca = std::fs::read_to_string(env.cp.ca_path()).unwrap();
    let to_agent = |id: Option<Identity>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .domain_name(format!("{host_id}.host.ferry"));
        if let Some(id) = id {
            tls = tls.identity(id);
        }
        Endpoint::from_shared(format!("https://{}", host["address"].as_str().unwrap()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(Duration::from_secs(5))
    };
    // The agent listens inside its namespace; the fabric reaches it.
    let ch = to_agent(Some(Identity::from_pem(&agent_cert, &agent_key)))
        .connect()
        .await
        .unwrap();
    let err = AgentClient::new(ch)
        .get_facts(GetFactsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let no_cert = match to_agent(None).connect().await {
        Err(_) => true,
        Ok(ch) => AgentClient::new(ch)
            .get_facts(GetFactsRequest::default())
            .await
            .is_err(),
    };
    assert!(
        no_cert,
        "the agent must refuse a client without a certificate"
    );

    // A join without the token changes nothing either.
    let hosts = env.api().ok("/hosts").await;
    assert_eq!(hosts["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn heartbeat_loss_and_return_and_restart_keeps_identity() {
    let mut env = Env::new(1, &["--host-timeout", "2s"]).await;
    let o = AgentOptions::qemu("host-a");
    let i = env.start_agent(0, &o);
    let first = env.wait_host_state("host-a", "connected", T).await;

    // SIGKILL the agent: no goodbye, the heartbeats just stop.
    env.agents[i].kill9();
    let lost = env.wait_host_state("host-a", "disconnected", T).await;
    assert_eq!(lost["id"], first["id"]);
    let api = env.api();
    // The event follows the state change (recorded just after it).
    let ev = wait_for("the host.disconnected event", T, || {
        let api = api.clone();
        async move {
            let ev = api.ok("/events?kind=host.disconnected").await;
            (!ev["items"].as_array()?.is_empty()).then_some(ev)
        }
    })
    .await;
    assert_eq!(ev["items"].as_array().unwrap().len(), 1);
    assert_eq!(ev["items"][0]["host_id"], first["id"]);

    // The restarted agent is the same host: same id, no second host, no new join.
    env.start_agent(0, &o);
    let back = env.wait_host_state("host-a", "connected", T).await;
    assert_eq!(back["id"], first["id"]);
    assert_eq!(api.ok("/hosts").await["items"].as_array().unwrap().len(), 1);
    let ev = wait_for("the host.connected event", T, || {
        let api = api.clone();
        async move {
            let ev = api.ok("/events?kind=host.connected").await;
            (!ev["items"].as_array()?.is_empty()).then_some(ev)
        }
    })
    .await;
    assert_eq!(ev["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.ok("/events?kind=host.joined").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.ok("/events?kind=host.rejoined").await["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // An agent whose identity is lost joins again by name: still the same host.
    env.agents.last_mut().unwrap().kill9();
    std::fs::remove_dir_all(env.dir.path().join("agent-host-a")).unwrap();
    env.start_agent(0, &o);
    wait_for("the host to join again", T, || {
        let api = api.clone();
        async move {
            (api.ok("/events?kind=host.rejoined").await["items"]
                .as_array()?
                .len()
                == 1)
                .then_some(())
        }
    })
    .await;
    let again = env.wait_host_state("host-a", "connected", T).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(api.ok("/hosts").await["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_control_plane_pulls_facts_over_mutual_tls() {
    // Heartbeats rare and timeouts long, so only the pull can heal the record.
    let mut env = Env::new(
        1,
        &["--reconcile-interval", "500ms", "--host-timeout", "120s"],
    )
    .await;
    let mut o = AgentOptions::qemu("host-a");
    o.heartbeat = "60s";
    env.start_agent(0, &o);
    let h = env.wait_host_state("host-a", "connected", T).await;
    let model = h["cpu"]["model"].as_str().unwrap().to_string();

    // Damage the stored facts as a lost update would leave them.
    let pool = env.db.pool().await;
    sqlx::query(
        "UPDATE hosts SET cpu_model = 'stale', report_generation = 0 WHERE name = 'host-a'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let api = env.api();
    wait_for("the pull to restore the facts", T, || {
        let (api, model) = (api.clone(), model.clone());
        async move {
            let h = api.ok("/hosts?name=host-a").await;
            (h["items"][0]["cpu"]["model"] == model.as_str()).then_some(())
        }
    })
    .await;
}
