//! The agent's gRPC API, served to the control plane only: mutual TLS, and the
//! client certificate must be the control plane's (`CN=ferry-control-plane`),
//! not another agent's.

use std::sync::Arc;

use ferry_proto::v1::agent_server::Agent;
use ferry_proto::v1::{GetFactsRequest, HostReport};
use tonic::{Request, Response, Status};

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
}
