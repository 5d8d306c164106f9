//! Names in x509 certificates: the common name is how the control plane and the
//! agents tell who called (a host's certificate names its host id; the control
//! plane's names `ferry-control-plane`).

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}
