//! Calling host agents: mutual TLS with the control plane's own CA-issued identity,
//! verifying that the agent's certificate names the host we mean to reach.

use std::time::Duration;

use ferry_api::HostId;
use ferry_proto::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::ca::host_dns_name;

/// What the control plane needs to reach any agent.
#[derive(Clone)]
pub struct AgentConnector {
    ca: Certificate,
    identity: Identity,
}

impl AgentConnector {
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Self {
        Self {
            ca: Certificate::from_pem(ca_pem),
            identity: Identity::from_pem(cert_pem, key_pem),
        }
    }

    /// A client for the agent of `host` at `address` (host:port). A refused
    /// connection is retried for about two seconds: an agent that just restarted
    /// heartbeats before its listener is up.
    pub async fn connect(
        &self,
        host: HostId,
        address: &str,
    ) -> anyhow::Result<AgentClient<Channel>> {
        let mut attempt = 0;
        loop {
            match self.connect_once(host, address).await {
                Ok(c) => return Ok(c),
                Err(e) if attempt < 8 => {
                    tracing::debug!(%host, "connect to agent failed ({e:#}); retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn connect_once(
        &self,
        host: HostId,
        address: &str,
    ) -> anyhow::Result<AgentClient<Channel>> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(host_dns_name(&host));
        let channel = Endpoint::from_shared(format!("https://{address}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await?;
        Ok(AgentClient::new(channel))
    }
}
