//! Placement: which host of a cluster runs a VM. A host fits when every host-fit
//! check passes (`host_fit.rs`: connected and not in maintenance, the CPU model,
//! memory, datastores, networks) and the VM breaks no must rule there
//! (`crate::rules`); placement picks, among the fitting hosts that keep its should
//! rules if any does, the one that leaves the cluster best balanced.

use ferry_api::host::Host;
use ferry_api::{ClusterId, HostId, VmId};

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

    /// The best host of `cluster` for a VM of `demand` (cores, MiB in use); `vm`
    /// for one that exists (and may be named by rules).
    pub async fn place(
        &self,
        cluster: ClusterId,
        needs: &Needs<'_>,
        demand: (f64, f64),
        vm: Option<VmId>,
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
        let rules = match vm {
            Some(vm) => Some((vm, self.rules_context(cluster, None).await?.without(vm))),
            None => None,
        };
        if let Some((vm, ctx)) = &rules {
            let (kept, broken) = ctx.filter(*vm, fitting);
            fitting = kept;
            why.extend(broken);
        }
        let mut ranked = self
            .rank_by_balance(cluster, fitting, None, demand.0, demand.1)
            .await?;
        if let Some((vm, ctx)) = &rules {
            ctx.should_first(*vm, &mut ranked);
        }
        ranked.into_iter().next().ok_or_else(|| {
            ApiError::conflict(
                "no_suitable_host",
                "no connected host in the cluster can run this VM",
            )
            .with_reasons(why)
        })
    }
}
