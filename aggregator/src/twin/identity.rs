//! Who an agent is, read from its verified client certificate: never from anything it says.

use std::fmt;

/// An agent's identity as its certificate states it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentIdentity {
    pub id: String,
    pub dc: String,
}

impl fmt::Display for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.dc)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate does not parse: {0}")]
    Parse(String),
    #[error("client certificate has no usable {0}")]
    Missing(&'static str),
}

/// Agent ids and DC names: 1–64 letters, digits, `.`, `_` or `-`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
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

/// The client certificate of a QUIC connection, as the TLS layer verified it.
pub fn leaf_certificate(conn: &quinn::Connection) -> Result<rustls_pki_types::CertificateDer<'static>, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::NoCertificate)?;
    certs.first().cloned().ok_or(IdentityError::NoCertificate)
}

/// The identity of a QUIC connection whose client certificate the TLS layer has verified.
pub fn from_connection(conn: &quinn::Connection) -> Result<AgentIdentity, IdentityError> {
    from_der(&leaf_certificate(conn)?)
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

    #[test]
    fn names_are_restricted() {
        assert!(valid_name("udm-pro.dc1_a"));
        assert!(!valid_name("") && !valid_name("a b") && !valid_name("a/b") && !valid_name(&"x".repeat(65)));
    }
}
