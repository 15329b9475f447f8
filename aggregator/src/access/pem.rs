//! Certificates and private keys read from PEM files, for the QUIC server's TLS and the API's.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Pem { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{}: no certificate in the file", .0.display())]
    NoCertificate(PathBuf),
    #[error("QUIC TLS setup: {0}")]
    Quic(String),
}

/// Every certificate in the PEM file at `path`, in order.
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem { path: path.to_owned(), source })
}

/// The first private key in the PEM file at `path`.
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem { path: path.to_owned(), source })
}
