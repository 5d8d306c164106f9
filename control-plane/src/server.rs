//! Start-up and shut-down of the control plane:
//! database (embedded or external) → migrations → CA → join and admin tokens →
//! gRPC (agents) and REST (users, HTTPS beyond loopback: `http_tls`) listeners → background loops; on shutdown the
//! listeners stop, then the embedded database.

use std::sync::Arc;

use anyhow::Context;
use ferry_api::token::Role;
use ferry_proto::v1::control_plane_server::ControlPlaneServer;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::app::App;
use crate::ca::CertificateAuthority;
use crate::config::Config;
use crate::db::Db;
use crate::embedded_pg::EmbeddedPg;
use crate::events::EventBus;
use crate::grpc::agent_client::AgentConnector;
use crate::grpc::ControlPlaneService;
use crate::http_tls::{Peer, RestListener};
use crate::secrets::{new_secret, read_secret, sha256_hex, write_private};
use crate::{api, monitor};

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Runs the control plane until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    run_in_process(config, Arc::default(), None, shutdown).await
}

/// [`run`], for tests that hold the control plane in their own process: the saga
/// executor's test `hooks`, and the `App` handed to `ready` once it serves (so a
/// test can call the executor, e.g. `saga::recover_all`, itself).
pub async fn run_in_process(
    config: Config,
    hooks: Arc<crate::saga::Hooks>,
    ready: Option<tokio::sync::oneshot::Sender<App>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    crate::http_tls::check(&config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data dir {}", config.data_dir.display()))?;

    let (embedded, opts) = match &config.database_url {
        Some(url) => (
            None,
            url.parse::<PgConnectOptions>()
                .context("parse --database-url")?,
        ),
        None => {
            let dir = config.data_dir.clone();
            let bin = config.pg_bin_dir.clone();
            let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&dir, bin.as_deref()))
                .await??;
            tracing::info!(socket = %pg.socket_dir().display(), "embedded PostgreSQL running");
            let opts = pg.connect_options().await?;
            (Some(pg), opts)
        }
    };
    let result = serve(&config, opts, hooks, ready, shutdown).await;
    if let Some(pg) = embedded {
        tracing::info!("stopping embedded PostgreSQL");
        if let Err(e) = tokio::task::spawn_blocking(move || pg.stop()).await? {
            tracing::error!("stopping embedded PostgreSQL: {e:#}");
        }
    }
    result
}

async fn serve(
    config: &Config,
    opts: PgConnectOptions,
    hooks: Arc<crate::saga::Hooks>,
    ready: Option<tokio::sync::oneshot::Sender<App>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let db = Db::connect(opts, config.db_pool).await?;
    let ca = CertificateAuthority::load_or_create(&db).await?;
    write_public(&config.data_dir.join("ca.pem"), ca.cert_pem())?;
    let join_token = join_token(config)?;
    bootstrap_admin_token(config, &db).await?;

    let mut sans = config.grpc_sans.clone();
    if !config.grpc_listen.ip().is_unspecified() {
        sans.push(config.grpc_listen.ip().to_string());
    }
    let own = ca.issue_control_plane(&sans)?;
    let agents = AgentConnector::new(ca.cert_pem(), &own.cert_pem, &own.key_pem);

    let app = App {
        db: db.clone(),
        events: EventBus::new(db),
        ca: Arc::new(ca),
        config: Arc::new(config.clone()),
        join_token: Arc::new(join_token),
        metrics: Arc::default(),
        tokens: Arc::default(),
        agents: agents.clone(),
        links: Arc::default(),
        saga_hooks: hooks,
        loads: Arc::default(),
        drs: Arc::default(),
    };

    let stop = CancellationToken::new();

    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&own.cert_pem, &own.key_pem))
        .client_ca_root(Certificate::from_pem(app.ca.cert_pem()))
        .client_auth_optional(true);
    let _ = std::fs::remove_file(config.data_dir.join(LISTEN_FILE));
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("bind gRPC listener {}", config.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let grpc = Server::builder()
        .tls_config(tls)?
        .add_service(ControlPlaneServer::new(ControlPlaneService {
            app: app.clone(),
        }))
        .serve_with_incoming_shutdown(
            // Replies go out at once (see the agent's server: a passed-in listener
            // does not get `Server::tcp_nodelay`).
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stop.clone().cancelled_owned(),
        );

    let http_listener = RestListener::bind(config, &app.ca).await?;
    let http_addr = axum::serve::Listener::local_addr(&http_listener)?;
    let scheme = http_listener.scheme();
    // The peer's address reaches the audit trail.
    let http = axum::serve(
        http_listener,
        api::router(app.clone()).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned());

    // Port 0 asks the kernel for a free port; whoever started us learns the ports from
    // this file (written once both listeners are bound, so its presence means "bound").
    write_listen_file(&config.data_dir, scheme, http_addr, grpc_addr)?;

    let liveness = tokio::spawn(monitor::liveness_loop(app.clone(), stop.clone()));
    let reconcile = tokio::spawn(monitor::reconcile_loop(app.clone(), agents, stop.clone()));
    let balancing = tokio::spawn(crate::app::drs::drs_loop(app.clone(), stop.clone()));
    let scheduled = tokio::spawn(crate::app::schedules::schedule_loop(
        app.clone(),
        stop.clone(),
    ));

    tracing::info!(%http_addr, %scheme, %grpc_addr, version = crate::VERSION, "ferry control plane ready");
    // Finish or unwind what a previous control plane left in flight.
    // Power tasks die with the process that ran them: their holds on VMs go.
    let cleared = db_clear_power(&app).await?;
    if cleared > 0 {
        tracing::warn!(
            cleared,
            "power tasks in flight at the last stop are recorded as failed"
        );
    }
    let recovering = app.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::saga::recover_all(&recovering).await {
            tracing::error!("saga recovery failed: {e:#}");
        }
    });
    if let Some(ready) = ready {
        // The test that asked may have gone; nothing to tell then.
        let _ = ready.send(app.clone());
    }
    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(async move { http.await });
    tokio::select! {
        _ = shutdown => {}
        r = &mut Box::pin(stop.clone().cancelled_owned()) => r,
    }
    stop.cancel();
    // Connections drain gracefully, for a while: a peer that vanished without
    // closing (an agent whose network namespace was deleted under it) would hold
    // the graceful shutdown forever, and the embedded database after it.
    match tokio::time::timeout(SHUTDOWN_GRACE, async { tokio::join!(grpc_task, http_task) }).await {
        Ok((g, h)) => {
            g?.context("gRPC server")?;
            h?.context("HTTP server")?;
        }
        Err(_) => tracing::warn!(
            "connections still open {} s after the shutdown began; closing them",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    // The loops return as soon as they see the stop; they are not waited on longer.
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        tokio::join!(liveness, reconcile, balancing, scheduled)
    })
    .await
    .is_err()
    {
        tracing::warn!("background loops still busy at shutdown; leaving them");
    }
    Ok(())
}

/// How long the shutdown waits for open connections to close by themselves.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

async fn db_clear_power(app: &App) -> anyhow::Result<u64> {
    app.db
        .vm_op_clear_power()
        .await
        .context("clear the holds of power tasks a previous control plane left")
}

/// `DATA_DIR/listen.json`: the addresses actually bound, written atomically.
/// `scheme` says whether `http` serves TLS (`https`) or not (`http`).
fn write_listen_file(
    data_dir: &std::path::Path,
    scheme: &str,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "http": http.to_string(),
        "scheme": scheme,
        "url": format!("{scheme}://{}", local_address(http)),
        "grpc": grpc.to_string(),
    });
    let tmp = data_dir.join("listen.json.tmp");
    write_public(&tmp, &body.to_string())?;
    std::fs::rename(&tmp, data_dir.join(LISTEN_FILE)).context("rename listen.json")
}

/// Where a client on this machine reaches `bound`: a wildcard listener through
/// loopback (which the REST certificate names), any other as it is.
fn local_address(bound: std::net::SocketAddr) -> std::net::SocketAddr {
    match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, bound.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, bound.port()).into()
        }
        _ => bound,
    }
}

/// The file, in the data directory, naming the bound HTTP and gRPC addresses.
pub const LISTEN_FILE: &str = "listen.json";

fn write_public(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

/// The join token: from the flag, else `DATA_DIR/join.token`, else a new one there.
fn join_token(config: &Config) -> anyhow::Result<String> {
    let path = config.data_dir.join("join.token");
    if let Some(t) = &config.join_token {
        anyhow::ensure!(t.len() >= 16, "--join-token must be at least 16 characters");
        write_private(&path, t)?;
        return Ok(t.clone());
    }
    if let Some(t) = read_secret(&path)?.filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    let t = new_secret("ferry_join");
    write_private(&path, &t)?;
    tracing::info!(path = %path.display(), "wrote a new join token");
    Ok(t)
}

/// Makes sure `DATA_DIR/admin.token` holds a token the database knows as admin.
async fn bootstrap_admin_token(config: &Config, db: &Db) -> anyhow::Result<()> {
    let path = config.data_dir.join("admin.token");
    let secret = match read_secret(&path)?.filter(|t| !t.is_empty()) {
        Some(s) => s,
        None => {
            let s = new_secret("ferry");
            write_private(&path, &s)?;
            tracing::info!(path = %path.display(), "wrote the admin token");
            s
        }
    };
    db.token_ensure("bootstrap-admin", Role::Admin, &sha256_hex(&secret))
        .await?;
    Ok(())
}
