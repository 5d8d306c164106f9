//! Hosts joining, reporting and heartbeating (called from the gRPC edge), and the
//! reachability transitions the monitor finds.

use ferry_api::HostId;
use ferry_proto::v1::{HeartbeatRequest, HostReport, JoinRequest, JoinResponse};

use super::{names, App};
use crate::db::events::NewEvent;
use crate::error::{ApiError, ApiResult};
use crate::secrets::constant_time_eq;

impl App {
    /// Exchanges a join token and CSR for a host identity. The same name is the same
    /// host on every join.
    pub async fn host_join(&self, req: JoinRequest) -> ApiResult<JoinResponse> {
        if !constant_time_eq(&req.join_token, &self.join_token) {
            return Err(ApiError::unauthorized("the join token is not valid"));
        }
        names::validate("host", &req.name)?;
        let cluster = if req.cluster.is_empty() {
            "default"
        } else {
            req.cluster.as_str()
        };
        names::validate("cluster", cluster)?;
        if req.agent_address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::bad_request(
                "invalid_address",
                format!("agent address {:?} is not host:port", req.agent_address),
            ));
        }
        // Check the CSR before touching the inventory.
        let probe = HostId::new();
        self.ca.sign_host_csr(&req.csr_pem, &probe).map_err(|e| {
            ApiError::bad_request("invalid_csr", format!("certificate signing request: {e:#}"))
        })?;

        let (cluster_id, cluster_new) = self.db.cluster_ensure(cluster).await?;
        if cluster_new {
            self.events
                .record(
                    NewEvent::info(
                        "cluster.created",
                        format!("cluster {cluster} created by host {}", req.name),
                    )
                    .data(serde_json::json!({"cluster_id": cluster_id})),
                )
                .await;
        }
        crate::metrics::Metrics::inc(&self.metrics.joins);
        let (host_id, is_new) = self
            .db
            .host_join(&req.name, cluster_id, &req.agent_address)
            .await?;
        let cert_pem = self.ca.sign_host_csr(&req.csr_pem, &host_id)?;
        let (kind, verb) = if is_new {
            ("host.joined", "joined")
        } else {
            ("host.rejoined", "joined again")
        };
        self.events
            .record(
                NewEvent::info(kind, format!("host {} {verb} cluster {cluster}", req.name))
                    .host(host_id)
                    .data(serde_json::json!({"address": req.agent_address})),
            )
            .await;
        Ok(JoinResponse {
            host_id: host_id.to_string(),
            cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
            cluster_id: cluster_id.to_string(),
        })
    }

    /// Stores a facts report if it is newer than what the control plane holds.
    pub async fn host_report(&self, id: HostId, report: HostReport) -> ApiResult<bool> {
        if !self.db.host_exists(id).await? {
            return Err(ApiError::unauthorized(format!(
                "host {id} is not in the inventory; join again"
            )));
        }
        crate::metrics::Metrics::inc(&self.metrics.reports);
        let stored = self.db.host_store_report(id, &report).await?;
        if stored {
            tracing::debug!(host = %id, generation = report.generation, "stored host report");
        }
        Ok(stored)
    }

    /// Records a heartbeat; answers whether the agent should resend its report.
    pub async fn host_heartbeat(&self, id: HostId, hb: HeartbeatRequest) -> ApiResult<bool> {
        let cpu = if hb.cpu_pct.is_finite() {
            hb.cpu_pct.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let mem = if hb.mem_pct.is_finite() {
            hb.mem_pct.clamp(0.0, 100.0)
        } else {
            0.0
        };
        crate::metrics::Metrics::inc(&self.metrics.heartbeats);
        let now = std::time::Instant::now();
        for l in &hb.vm_loads {
            if let Ok(vm) = l.vm_id.parse() {
                self.loads
                    .record(id, vm, l.cpu_cores, l.mem_used_mib as f64, now);
            }
        }
        let outcome = self
            .db
            .host_heartbeat(id, cpu, mem, hb.memory_free_mib)
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(format!("host {id} is not in the inventory; join again"))
            })?;
        if outcome.reconnected {
            let name = self
                .db
                .host_fetch(id)
                .await?
                .map(|h| h.name)
                .unwrap_or_default();
            self.events
                .record(
                    NewEvent::info("host.connected", format!("host {name} is connected again"))
                        .host(id),
                )
                .await;
            // What a migration could not discard while the host was away.
            let app = self.clone();
            tokio::spawn(async move {
                match app.discard_leftovers(id).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(host = %id, n, "discarded leftover copies"),
                    Err(e) => tracing::warn!(host = %id, "leftover copies: {e:#}"),
                }
            });
        }
        Ok(outcome.report_generation < hb.generation)
    }

    /// Marks hosts without a recent heartbeat `disconnected`, with an event each.
    pub async fn hosts_check_timeouts(&self) -> anyhow::Result<usize> {
        let lost = self
            .db
            .host_mark_unreachable(self.config.host_timeout)
            .await?;
        for (id, name) in &lost {
            self.events
                .record(
                    NewEvent::warning(
                        "host.disconnected",
                        format!(
                            "host {name} sent no heartbeat for {} s and is disconnected",
                            self.config.host_timeout.as_secs()
                        ),
                    )
                    .host(*id),
                )
                .await;
        }
        Ok(lost.len())
    }

    /// Every host of `cluster`, all pages.
    pub async fn cluster_hosts(
        &self,
        cluster: ferry_api::ClusterId,
    ) -> ApiResult<Vec<ferry_api::host::Host>> {
        let mut hosts = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .db
                .host_list(
                    crate::db::PageReq { limit: 1000, after },
                    &crate::db::hosts::HostFilter {
                        name: None,
                        cluster_id: Some(cluster),
                    },
                )
                .await?;
            hosts.extend(page.items);
            match page.next_cursor.and_then(|c| c.parse().ok()) {
                Some(c) => after = Some(c),
                None => return Ok(hosts),
            }
        }
    }
}
