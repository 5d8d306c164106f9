//! The agent-facing gRPC edge. `Join` is the only call served without a client
//! certificate (it is authenticated by the join token); every other call must come
//! with a certificate issued by this cluster's CA, whose common name is the host id.
//! `agent_client` is the other direction: the control plane calling agents.

pub mod agent_client;
pub mod wire;

use ferry_api::HostId;
use ferry_proto::v1::control_plane_server::ControlPlane;
use ferry_proto::v1::{
    HeartbeatRequest, HeartbeatResponse, HostReport, JoinRequest, JoinResponse, ReportAck,
    VmRuntime,
};
use tonic::{Request, Response, Status};

use crate::app::App;
use ferry_common::x509::common_name as peer_common_name;

pub struct ControlPlaneService {
    pub app: App,
}

/// The host a request comes from, from its verified client certificate.
fn caller_host<T>(req: &Request<T>) -> Result<HostId, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("this call needs the host's client certificate; join first")
    })?;
    let first = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let cn = peer_common_name(first.as_ref())
        .ok_or_else(|| Status::unauthenticated("client certificate has no CN"))?;
    cn.parse::<HostId>().map_err(|_| {
        Status::permission_denied(format!("certificate {cn:?} is not a host identity"))
    })
}

#[tonic::async_trait]
impl ControlPlane for ControlPlaneService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let resp = self.app.host_join(req.into_inner()).await?;
        Ok(Response::new(resp))
    }

    async fn report(&self, req: Request<HostReport>) -> Result<Response<ReportAck>, Status> {
        let host = caller_host(&req)?;
        let stored = self.app.host_report(host, req.into_inner()).await?;
        Ok(Response::new(ReportAck { stored }))
    }

    async fn report_vm(&self, req: Request<VmRuntime>) -> Result<Response<ReportAck>, Status> {
        let host = caller_host(&req)?;
        self.app.vm_store_runtime(host, req.get_ref()).await?;
        Ok(Response::new(ReportAck { stored: true }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let host = caller_host(&req)?;
        let resend_report = self.app.host_heartbeat(host, req.into_inner()).await?;
        Ok(Response::new(HeartbeatResponse { resend_report }))
    }
}
