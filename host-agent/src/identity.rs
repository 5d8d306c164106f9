//! The host's identity: a private key made here (it never leaves the host), the
//! certificate the control plane's CA issued for it, and the CA certificate. Stored
//! in the state dir (`host.key` 0600, `host.crt`, `ca.pem`, `host.id`), so a
//! restarted agent is the same host without joining again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ferry_proto::v1::control_plane_client::ControlPlaneClient;
use ferry_proto::v1::JoinRequest;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

/// The name in the control plane's certificate.
pub const CONTROL_PLANE_NAME: &str = "control-plane.ferry";
/// The common name of the control plane's client certificate.
pub const CONTROL_PLANE_CN: &str = "ferry-control-plane";

#[derive(Debug, Clone)]
pub struct Identity {
    pub host_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Why joining failed: `Refused` is final (bad token, bad request), `Unreachable`
/// is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the control plane refused the join: {0}")]
    Refused(String),
    #[error("the control plane is unreachable: {0}")]
    Unreachable(String),
}

impl Identity {
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        match (
            read("host.id"),
            read("host.crt"),
            read("host.key"),
            read("ca.pem"),
        ) {
            (Ok(id), Ok(cert), Ok(key), Ok(ca)) => Ok(Some(Self {
                host_id: id.trim().to_string(),
                cert_pem: cert,
                key_pem: key,
                ca_pem: ca,
            })),
            _ => Ok(None),
        }
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        write_file(&dir.join("host.key"), &self.key_pem, 0o600)?;
        write_file(&dir.join("host.crt"), &self.cert_pem, 0o644)?;
        write_file(&dir.join("ca.pem"), &self.ca_pem, 0o644)?;
        write_file(&dir.join("host.id"), &self.host_id, 0o644)?;
        Ok(())
    }

    pub fn forget(dir: &Path) {
        for f in ["host.id", "host.crt", "host.key"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }

    pub fn tls_identity(&self) -> TlsIdentity {
        TlsIdentity::from_pem(&self.cert_pem, &self.key_pem)
    }

    pub fn ca(&self) -> Certificate {
        Certificate::from_pem(&self.ca_pem)
    }

    /// A channel to the control plane that presents this identity.
    pub fn channel(&self, url: &str) -> anyhow::Result<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(self.ca())
            .identity(self.tls_identity())
            .domain_name(CONTROL_PLANE_NAME);
        Ok(Endpoint::from_shared(normalize_url(url))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy())
    }
}

fn write_file(path: &PathBuf, contents: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Accepts `https://host:port`, `http://host:port` (upgraded: agents always use TLS)
/// or bare `host:port`.
pub fn normalize_url(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    format!("https://{}", rest.trim_end_matches('/'))
}

/// Joins: makes a key pair and CSR here, sends them with the join token, and
/// returns the identity the control plane issued.
pub async fn join(
    url: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
    cluster: &str,
    agent_address: &str,
) -> Result<Identity, JoinError> {
    let key =
        rcgen::KeyPair::generate().map_err(|e| JoinError::Refused(format!("generate key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| JoinError::Refused(format!("make CSR: {e}")))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(CONTROL_PLANE_NAME);
    let endpoint = Endpoint::from_shared(normalize_url(url))
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| JoinError::Refused(format!("control plane address {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| JoinError::Unreachable(format!("{e}: {:?}", e.source_chain())))?;
    let resp = ControlPlaneClient::new(channel)
        .join(JoinRequest {
            join_token: token.to_string(),
            name: name.to_string(),
            cluster: cluster.to_string(),
            csr_pem: csr,
            agent_address: agent_address.to_string(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                JoinError::Unreachable(s.message().to_string())
            }
            _ => JoinError::Refused(s.message().to_string()),
        })?
        .into_inner();
    Ok(Identity {
        host_id: resp.host_id,
        cert_pem: resp.cert_pem,
        key_pem: key.serialize_pem(),
        ca_pem: resp.ca_pem,
    })
}

trait SourceChain {
    fn source_chain(&self) -> String;
}

impl<E: std::error::Error> SourceChain for E {
    fn source_chain(&self) -> String {
        let mut out = Vec::new();
        let mut cur = self.source();
        while let Some(e) = cur {
            out.push(e.to_string());
            cur = e.source();
        }
        out.join(": ")
    }
}

pub use ferry_common::x509::common_name;
