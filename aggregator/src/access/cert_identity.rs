//! An agent's identity read from a DER certificate: the common name is the agent id, the
//! organisational unit its DC.

use crate::twin::identity::{valid_name, AgentIdentity};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate does not parse: {0}")]
    Parse(String),
    #[error("client certificate has no usable {0}")]
    Missing(&'static str),
}

/// Reads the common name (agent id) and organisational unit (DC) of a DER certificate.
pub fn from_der(der: &[u8]) -> Result<AgentIdentity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
    };
    let id = first(&mut subject.iter_common_name())
        .filter(|s| valid_name(s))
        .ok_or(IdentityError::Missing("common name (agent id)"))?;
    let dc = first(&mut subject.iter_organizational_unit())
        .filter(|s| valid_name(s))
        .ok_or(IdentityError::Missing("organisational unit (DC)"))?;
    Ok(AgentIdentity { id, dc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_id_and_dc() {
        let dir = std::env::temp_dir().join(format!("twinwatch-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::access::certs::init(&dir, &[], false).unwrap();
        let issued = crate::access::certs::issue(&dir, "udm-pro", "dc1", 30, &dir.join("agent")).unwrap();
        let pem = std::fs::read(&issued.cert).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(from_der(&der).unwrap(), AgentIdentity { id: "udm-pro".into(), dc: "dc1".into() });
        // The server certificate has no OU: it is not an agent.
        let server = rustls_pki_types::CertificateDer::from_pem_file(dir.join("server.crt")).unwrap();
        assert!(matches!(from_der(&server), Err(IdentityError::Missing(_))));
        assert!(crate::access::certs::issue(&dir, "bad name", "dc1", 30, &dir.join("x")).is_err());
        assert!(matches!(
            crate::access::certs::init(&dir, &[], false),
            Err(crate::access::certs::CertError::Exists(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
