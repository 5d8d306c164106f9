//! The loops that keep the inventory true without being asked:
//! * liveness: hosts whose heartbeats stop become `disconnected` after
//!   `--host-timeout`, with an event (heartbeats bring them back); after the
//!   database was away, hosts get one timeout to be heard before judged again;
//! * reconcile: every `--reconcile-interval` the control plane pulls each reachable
//!   host's facts over mutual TLS and stores them if newer, so a lost push heals
//!   itself (DESIGN principle 2: reports arrive by push and by pull), and copies
//!   of VMs the inventory places elsewhere are discarded (`app/leftovers.rs`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::grpc::agent_client::AgentConnector;

pub async fn liveness_loop(app: App, stop: CancellationToken) {
    let period =
        (app.config.host_timeout / 5).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While the database is away no heartbeat can be recorded: once it is back,
    // hosts get one host timeout to send one before they are judged again (else
    // every host would be "disconnected" at the moment the database returns).
    let mut database_away = false;
    let mut grace_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if database_away {
            if app.db.ping().await.is_err() {
                continue;
            }
            database_away = false;
            grace_until = Some(tokio::time::Instant::now() + app.config.host_timeout);
            tracing::info!(
                "database reachable again: hosts are judged by their heartbeats again in {} s",
                app.config.host_timeout.as_secs()
            );
        }
        if grace_until.is_some_and(|g| tokio::time::Instant::now() < g) {
            continue;
        }
        grace_until = None;
        if let Err(e) = app.hosts_check_timeouts().await {
            tracing::warn!("host liveness check failed: {e:#}");
            database_away = true;
        }
    }
}

pub async fn reconcile_loop(app: App, agents: AgentConnector, stop: CancellationToken) {
    let period = app.config.reconcile_interval;
    if period.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; agents push at start anyway
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let hosts = match app.db.host_reachable_addresses().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("reconcile: listing hosts failed: {e}");
                continue;
            }
        };
        // Spread the pulls over the period instead of bursting them: 2,500 TLS
        // handshakes at once would stall the API for seconds.
        let gap = period / (hosts.len().max(1) as u32);
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        for (id, addr) in hosts {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (app, agents) = (app.clone(), agents.clone());
            tokio::spawn(async move {
                match pull_facts(&app, &agents, id, &addr).await {
                    Ok(true) => {
                        tracing::info!(host = %id, "reconcile: stored newer facts pulled from agent")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(host = %id, "reconcile: pull failed: {e:#}"),
                }
                match app.discard_leftovers(id).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(host = %id, n, "reconcile: discarded leftover copies"),
                    Err(e) => tracing::debug!(host = %id, "reconcile: leftover copies: {e:#}"),
                }
                drop(permit);
            });
            tokio::select! {
                _ = tokio::time::sleep(gap) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Pulls one host's facts and stores them if newer; returns whether they were.
pub async fn pull_facts(
    app: &App,
    agents: &AgentConnector,
    id: ferry_api::HostId,
    addr: &str,
) -> anyhow::Result<bool> {
    let mut client = agents.connect(id, addr).await?;
    crate::metrics::Metrics::inc(&app.metrics.facts_pulled);
    let report = client
        .get_facts(ferry_proto::v1::GetFactsRequest {
            host_id: id.to_string(),
        })
        .await?
        .into_inner();
    Ok(app.db.host_store_report(id, &report).await?)
}
