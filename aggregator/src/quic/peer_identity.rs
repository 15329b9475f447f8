//! The client certificate of a QUIC connection, as the TLS layer verified it: the one place the
//! identity of an agent meets a `quinn::Connection`. Ingest reads the identity from it with
//! `access::cert_identity::from_der` and hands the twin only the plain data.

use crate::access::cert_identity::IdentityError;

/// The client certificate of a QUIC connection, as the TLS layer verified it.
pub fn leaf_certificate(conn: &quinn::Connection) -> Result<rustls_pki_types::CertificateDer<'static>, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::NoCertificate)?;
    certs.first().cloned().ok_or(IdentityError::NoCertificate)
}
