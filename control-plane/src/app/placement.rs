//! Placement and host fit: which connected host can run a VM. A host fits when it
//! is connected and not in maintenance, offers every network and mounts every
//! datastore the VM needs, can run its CPU model, and has the memory free (plus
//! QEMU's overhead). Placement picks the fitting host with the most free memory.

use std::collections::HashSet;

use ferry_api::host::{Host, HostState};
use ferry_api::problem::Reason;
use ferry_api::{ClusterId, DatastoreId, HostId, NetworkId};

use super::App;
use crate::db::hosts::HostFilter;
use crate::db::PageReq;
use crate::error::{ApiError, ApiResult};

/// Memory QEMU itself needs beside the guest's RAM.
pub const QEMU_OVERHEAD_MIB: u64 = 64;

/// What a VM needs from a host.
pub struct Needs<'a> {
    pub memory_mib: u64,
    pub cpu_model: &'a str,
    pub datastores: &'a [DatastoreId],
    pub networks: &'a [NetworkId],
}

/// Why `host` cannot run the VM (empty: it can).
pub fn misfits(host: &Host, needs: &Needs<'_>) -> Vec<Reason> {
    let mut out = Vec::new();
    if host.state != HostState::Connected {
        out.push(Reason {
            code: "host_unavailable".into(),
            detail: format!("host {} is {:?}", host.name, host.state).to_lowercase(),
        });
    }
    let ds: HashSet<_> = host.datastores.iter().collect();
    for d in needs.datastores.iter().filter(|d| !ds.contains(d)) {
        out.push(Reason {
            code: "datastore_not_on_host".into(),
            detail: format!("host {} does not mount datastore {d}", host.name),
        });
    }
    let nets: HashSet<_> = host.networks.iter().collect();
    for n in needs.networks.iter().filter(|n| !nets.contains(n)) {
        out.push(Reason {
            code: "network_not_on_host".into(),
            detail: format!("host {} does not have network {n}", host.name),
        });
    }
    if !host
        .cpu
        .supported_models
        .iter()
        .any(|m| m == needs.cpu_model)
    {
        out.push(Reason {
            code: "unsupported_cpu_model".into(),
            detail: format!(
                "host {} cannot run CPU model {} (see its cpu.supported_models)",
                host.name, needs.cpu_model
            ),
        });
    }
    if host.memory.free_mib < needs.memory_mib + QEMU_OVERHEAD_MIB {
        out.push(Reason {
            code: "insufficient_memory".into(),
            detail: format!(
                "host {} has {} MiB free; the VM needs {} MiB (+{QEMU_OVERHEAD_MIB} MiB for QEMU)",
                host.name, host.memory.free_mib, needs.memory_mib
            ),
        });
    }
    out
}

impl App {
    /// Checks that `host` can run the VM; a 409 with every reason when it cannot.
    pub async fn host_fit(&self, host_id: HostId, needs: &Needs<'_>) -> ApiResult<Host> {
        let host = self.db.host_fetch(host_id).await?.ok_or_else(|| {
            ApiError::unprocessable("unknown_host", format!("no host with id {host_id}"))
        })?;
        let reasons = misfits(&host, needs);
        if let Some(first) = reasons.first() {
            let code = match first.code.as_str() {
                "datastore_not_on_host" => "datastore_not_on_host",
                "network_not_on_host" => "network_not_on_host",
                "unsupported_cpu_model" => "unsupported_cpu_model",
                "insufficient_memory" => "insufficient_memory",
                _ => "host_unavailable",
            };
            return Err(ApiError::conflict(code, first.detail.clone()).with_reasons(reasons));
        }
        Ok(host)
    }

    /// The best host of `cluster` for the VM.
    pub async fn place(&self, cluster: ClusterId, needs: &Needs<'_>) -> ApiResult<Host> {
        let mut best: Option<Host> = None;
        let mut why = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .db
                .host_list(
                    PageReq { limit: 1000, after },
                    &HostFilter {
                        name: None,
                        cluster_id: Some(cluster),
                    },
                )
                .await?;
            for h in page.items {
                let m = misfits(&h, needs);
                if m.is_empty() {
                    if best
                        .as_ref()
                        .is_none_or(|b| h.memory.free_mib > b.memory.free_mib)
                    {
                        best = Some(h);
                    }
                } else if why.len() < 20 {
                    why.extend(m);
                }
            }
            match page.next_cursor.and_then(|c| c.parse().ok()) {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        best.ok_or_else(|| {
            ApiError::conflict(
                "no_suitable_host",
                "no connected host in the cluster can run this VM",
            )
            .with_reasons(why)
        })
    }
}
