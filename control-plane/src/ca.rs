//! The cluster's certificate authority. The control plane issues every agent a
//! certificate (CN = host id, SAN = `<host id>.host.ferry`) from the agent's own CSR,
//! so the agent's private key never leaves its host; it also issues itself a server
//! and client certificate (CN = `ferry-control-plane`, SAN = `control-plane.ferry`
//! plus the configured names). The CA key lives in PostgreSQL with the rest of the
//! state, so any control plane started on the same database shares it.

use std::net::IpAddr;

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::db::Db;

/// DNS name in the control plane's certificate that agents verify.
pub const CONTROL_PLANE_NAME: &str = "control-plane.ferry";
/// Common name of the control plane's own certificate.
pub const CONTROL_PLANE_CN: &str = "ferry-control-plane";

/// The DNS name in a host's certificate, which the control plane verifies.
pub fn host_dns_name(host_id: &ferry_api::HostId) -> String {
    format!("{host_id}.host.ferry")
}

pub struct CertificateAuthority {
    cert: Certificate,
    key: KeyPair,
    cert_pem: String,
}

/// A certificate and its private key, PEM-encoded.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    /// Loads the CA from the database, creating it on first start.
    pub async fn load_or_create(db: &Db) -> anyhow::Result<Self> {
        let (cert_pem, key_pem) = match db.ca_fetch().await? {
            Some(pair) => pair,
            None => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "Ferry cluster CA");
                dn.push(DnType::OrganizationName, "Ferry");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                params.not_before = rcgen::date_time_ymd(2024, 1, 1);
                params.not_after = rcgen::date_time_ymd(2044, 1, 1);
                let cert = params.self_signed(&key)?;
                db.ca_insert_or_fetch(&cert.pem(), &key.serialize_pem())
                    .await?
            }
        };
        let key = KeyPair::from_pem(&key_pem).context("parse CA key")?;
        // Rebuild the issuer from the stored certificate: same subject, same key, so
        // what it signs chains to the stored certificate.
        let cert = CertificateParams::from_ca_cert_pem(&cert_pem)
            .context("parse CA certificate")?
            .self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            cert_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The control plane's own certificate, for its gRPC server and as its client
    /// identity towards agents.
    pub fn issue_control_plane(&self, extra_sans: &[String]) -> anyhow::Result<IssuedCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, CONTROL_PLANE_CN);
        let mut sans = vec![
            SanType::DnsName(CONTROL_PLANE_NAME.try_into()?),
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress("127.0.0.1".parse()?),
        ];
        for s in extra_sans {
            match s.parse::<IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(s.as_str().try_into()?)),
            }
        }
        params.subject_alt_names = sans;
        leaf_usages(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's CSR as host `host_id`. Only the CSR's public key is used:
    /// subject, names and usages are the control plane's to decide.
    pub fn sign_host_csr(
        &self,
        csr_pem: &str,
        host_id: &ferry_api::HostId,
    ) -> anyhow::Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .context("parse certificate signing request")?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, host_id.to_string());
        params.subject_alt_names = vec![SanType::DnsName(host_dns_name(host_id).try_into()?)];
        leaf_usages(&mut params);
        let cert = params.signed_by(&csr.public_key, &self.cert, &self.key)?;
        Ok(cert.pem())
    }
}

fn leaf_usages(params: &mut CertificateParams) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    use chrono::Datelike;
    let from = chrono::Utc::now() - chrono::Duration::days(1);
    let until = from + chrono::Duration::days(5 * 365);
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
}
