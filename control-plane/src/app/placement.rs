//! Placement: which host of a cluster runs a VM. A host fits when every host-fit
//! check passes (`host_fit.rs`: connected and not in maintenance, the CPU model,
//! memory, datastores, networks); placement picks the fitting host with the most
//! free memory.

use ferry_api::host::Host;
use ferry_api::{ClusterId, HostId};

use super::host_fit::{misfits, reasons};
pub use super::host_fit::{Needs, QEMU_OVERHEAD_MIB};
use super::App;
use crate::error::{ApiError, ApiResult};

impl App {
    /// Checks that `host` can run the VM; a 409 with every reason when it cannot.
    pub async fn host_fit(&self, host_id: HostId, needs: &Needs<'_>) -> ApiResult<Host> {
        let host = self.db.host_fetch(host_id).await?.ok_or_else(|| {
            ApiError::unprocessable("unknown_host", format!("no host with id {host_id}"))
        })?;
        let failed = misfits(&host, needs);
        if let Some(first) = failed.first() {
            return Err(
                ApiError::conflict(first.code, first.detail.clone()).with_reasons(reasons(&failed))
            );
        }
        Ok(host)
    }

    /// The best host of `cluster` for a VM of `demand` (cores, MiB in use).
    pub async fn place(
        &self,
        cluster: ClusterId,
        needs: &Needs<'_>,
        demand: (f64, f64),
    ) -> ApiResult<Host> {
        let mut fitting: Vec<Host> = Vec::new();
        let mut why = Vec::new();
        for h in self.cluster_hosts(cluster).await? {
            let m = misfits(&h, needs);
            if m.is_empty() {
                fitting.push(h);
            } else if why.len() < 20 {
                why.extend(reasons(&m));
            }
        }
        let ranked = self
            .rank_by_balance(cluster, fitting, None, demand.0, demand.1)
            .await?;
        ranked.into_iter().next().ok_or_else(|| {
            ApiError::conflict(
                "no_suitable_host",
                "no connected host in the cluster can run this VM",
            )
            .with_reasons(why)
        })
    }
}
