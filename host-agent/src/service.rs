//! The agent's gRPC API, served to the control plane only: mutual TLS, and the
//! client certificate must be the control plane's (`CN=ferry-control-plane`),
//! not another agent's.

use std::sync::Arc;

use ferry_proto::v1::agent_server::Agent;
use std::time::Duration;

use ferry_proto::v1::{
    BandwidthProbeReply, BandwidthProbeRequest, BandwidthSinkReply, BandwidthSinkRequest,
    DirtyRateReply, GetFactsRequest, HostReport, MigrateInReply, MigrateInRequest,
    MigrateOutRequest, MigrateTuneRequest, MigrationStatusReply, MirrorStartRequest,
    MirrorStatusReply, RemoveDisksReply, RemoveDisksRequest, StatusRequest, VmConsoleReply,
    VmConsoleRequest, VmListRequest, VmPowerRequest, VmRef, VmRuntime, VmRuntimeList,
};
use tonic::{Request, Response, Status};

use ferry_proto::errors::{AgentError, ErrorCode};

use crate::error::to_status;
use crate::identity::{common_name, CONTROL_PLANE_CN};
use crate::runner::HostState;

pub struct AgentService {
    pub state: Arc<HostState>,
}

fn require_control_plane<T>(req: &Request<T>) -> Result<(), Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("client certificate required"))?;
    let cn = certs.first().and_then(|c| common_name(c.as_ref()));
    if cn.as_deref() == Some(CONTROL_PLANE_CN) {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "only the control plane may call the agent",
        ))
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_facts(
        &self,
        req: Request<GetFactsRequest>,
    ) -> Result<Response<HostReport>, Status> {
        require_control_plane(&req)?;
        let want = &req.get_ref().host_id;
        let me = self.state.host_id();
        if !want.is_empty() && *want != me {
            return Err(Status::not_found(format!(
                "this agent is host {me}, not {want}"
            )));
        }
        let mut report = self.state.report();
        report.host_id = me;
        Ok(Response::new(report))
    }

    async fn vm_power(&self, req: Request<VmPowerRequest>) -> Result<Response<VmRuntime>, Status> {
        require_control_plane(&req)?;
        let r = req.into_inner();
        if r.vm_id.parse::<uuid::Uuid>().is_err() {
            return Err(AgentError::new(ErrorCode::Invalid, "vm_id is not a UUID").into_status());
        }
        let action = r.action();
        let timeout =
            (r.shutdown_timeout_s > 0).then(|| Duration::from_secs(r.shutdown_timeout_s.into()));
        self.state
            .hypervisor()
            .vm_power(&r.vm_id, action, r.spec, timeout)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn vm_delete(&self, req: Request<VmRef>) -> Result<Response<VmRuntime>, Status> {
        require_control_plane(&req)?;
        let id = req.into_inner().vm_id;
        self.state
            .hypervisor()
            .vm_delete(&id)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn vm_list(
        &self,
        req: Request<VmListRequest>,
    ) -> Result<Response<VmRuntimeList>, Status> {
        require_control_plane(&req)?;
        Ok(Response::new(VmRuntimeList {
            vms: self.state.hypervisor().vm_list(),
        }))
    }

    async fn vm_console(
        &self,
        req: Request<VmConsoleRequest>,
    ) -> Result<Response<VmConsoleReply>, Status> {
        require_control_plane(&req)?;
        let r = req.into_inner();
        let max = if r.max_bytes == 0 {
            64 * 1024
        } else {
            r.max_bytes.min(1 << 20)
        } as usize;
        self.state
            .hypervisor()
            .vm_console(&r.vm_id, max)
            .map(|text| Response::new(VmConsoleReply { text }))
            .map_err(|e| to_status(e, ErrorCode::NotFound))
    }

    async fn migrate_in(
        &self,
        req: Request<MigrateInRequest>,
    ) -> Result<Response<MigrateInReply>, Status> {
        require_control_plane(&req)?;
        let mut r = req.into_inner();
        if r.spec.is_none() {
            return Err(AgentError::new(ErrorCode::Invalid, "spec is required").into_status());
        }
        if r.listen_ip.is_empty() {
            r.listen_ip = self.state.address_ip();
        }
        self.state
            .hypervisor()
            .migrate_in(r)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn migrate_out(
        &self,
        req: Request<MigrateOutRequest>,
    ) -> Result<Response<VmRuntime>, Status> {
        require_control_plane(&req)?;
        self.state
            .hypervisor()
            .migrate_out(req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn migrate_tune(
        &self,
        req: Request<MigrateTuneRequest>,
    ) -> Result<Response<MigrationStatusReply>, Status> {
        require_control_plane(&req)?;
        self.state
            .hypervisor()
            .migrate_tune(req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn migration_status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<MigrationStatusReply>, Status> {
        require_control_plane(&req)?;
        let req = req.into_inner();
        // Bounded: a caller's wait never holds a call past a poll's worth.
        let wait = Duration::from_millis(u64::from(req.wait_ms.min(1000)));
        self.state
            .hypervisor()
            .migration_status(&req.vm_id, wait)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn migrate_cancel(&self, req: Request<VmRef>) -> Result<Response<VmRuntime>, Status> {
        require_control_plane(&req)?;
        let id = req.into_inner().vm_id;
        self.state
            .hypervisor()
            .migrate_cancel(&id)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn vm_discard(&self, req: Request<VmRef>) -> Result<Response<VmRuntime>, Status> {
        require_control_plane(&req)?;
        let id = req.into_inner().vm_id;
        self.state
            .hypervisor()
            .vm_discard(&id)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn mirror_start(
        &self,
        req: Request<MirrorStartRequest>,
    ) -> Result<Response<MirrorStatusReply>, Status> {
        require_control_plane(&req)?;
        self.state
            .hypervisor()
            .mirror_start(req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn mirror_status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<MirrorStatusReply>, Status> {
        require_control_plane(&req)?;
        let req = req.into_inner();
        // Bounded: a caller's wait never holds a call past a poll's worth.
        let wait = Duration::from_millis(u64::from(req.wait_ms.min(1_000)));
        self.state
            .hypervisor()
            .mirror_status(&req.vm_id, wait)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn mirror_cancel(
        &self,
        req: Request<VmRef>,
    ) -> Result<Response<MirrorStatusReply>, Status> {
        require_control_plane(&req)?;
        let id = req.into_inner().vm_id;
        self.state
            .hypervisor()
            .mirror_cancel(&id)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn mirror_pivot(
        &self,
        req: Request<VmRef>,
    ) -> Result<Response<MirrorStatusReply>, Status> {
        require_control_plane(&req)?;
        let id = req.into_inner().vm_id;
        self.state
            .hypervisor()
            .mirror_pivot(&id)
            .await
            .map(Response::new)
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))
    }

    async fn remove_disks(
        &self,
        req: Request<RemoveDisksRequest>,
    ) -> Result<Response<RemoveDisksReply>, Status> {
        require_control_plane(&req)?;
        self.state
            .hypervisor()
            .remove_disks(req.into_inner())
            .await
            .map(|removed| Response::new(RemoveDisksReply { removed }))
            .map_err(|e| to_status(e, ErrorCode::Internal))
    }

    async fn sample_dirty_rate(
        &self,
        req: Request<VmRef>,
    ) -> Result<Response<DirtyRateReply>, Status> {
        require_control_plane(&req)?;
        let id = req.into_inner().vm_id;
        let t0 = std::time::Instant::now();
        let rate = self
            .state
            .hypervisor()
            .sample_dirty_rate(&id)
            .await
            .map_err(|e| to_status(e, ErrorCode::QemuFailed))?;
        Ok(Response::new(DirtyRateReply {
            dirty_bytes_per_s: rate,
            calc_time_ms: t0.elapsed().as_millis() as u64,
        }))
    }

    async fn bandwidth_sink(
        &self,
        req: Request<BandwidthSinkRequest>,
    ) -> Result<Response<BandwidthSinkReply>, Status> {
        require_control_plane(&req)?;
        self.state
            .hypervisor()
            .bandwidth_sink(&self.state.address_ip())
            .await
            .map(|address| Response::new(BandwidthSinkReply { address }))
            .map_err(|e| to_status(e, ErrorCode::Internal))
    }

    async fn bandwidth_probe(
        &self,
        req: Request<BandwidthProbeRequest>,
    ) -> Result<Response<BandwidthProbeReply>, Status> {
        require_control_plane(&req)?;
        let r = req.into_inner();
        let bytes = r.bytes.clamp(1 << 20, 1 << 30);
        self.state
            .hypervisor()
            .bandwidth_probe(&r.address, bytes)
            .await
            .map(|(bytes, t)| {
                Response::new(BandwidthProbeReply {
                    bytes,
                    elapsed_us: t.as_micros() as u64,
                })
            })
            .map_err(|e| to_status(e, ErrorCode::Internal))
    }
}
