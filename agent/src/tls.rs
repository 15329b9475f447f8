//! The agent's QUIC client: rustls with the ring provider, TLS 1.3, our CA as the only root and
//! the agent's certificate for mutual TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Pem { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{}: no certificate in file", .0.display())]
    Empty(PathBuf),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC TLS setup: {0}")]
    Quic(String),
    #[error("{}: {detail}", path.display())]
    Certificate { path: PathBuf, detail: String },
}

pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.to_owned()));
    }
    Ok(certs)
}

/// The round-trip estimate a connection starts with, before it has measured one. QUIC resends an
/// unanswered Initial after three times this, which is longer than a handshake attempt lives: the
/// shipper starts a fresh attempt every second instead, so each attempt costs one Initial packet
/// (and the close when it is given up), not a resend schedule of its own. Once the aggregator
/// answers, the measured round trip takes over.
pub const INITIAL_RTT: Duration = Duration::from_secs(3);

/// Keep-alive and idle timeout suited to home NAT: a binding is refreshed every 10 s and a dead
/// path is given up after 60 s.
pub fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.initial_rtt(INITIAL_RTT);
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))));
    t
}

pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c)?;
    }
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem { path: key.to_owned(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![twinwatch_common::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(Arc::new(transport()));
    Ok(client)
}

/// Who the agent's certificate says it is, as `twinwatch-agent check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The agent id (the certificate's common name).
    pub agent: String,
    /// The DC (its organisational unit).
    pub dc: String,
    /// The end of its validity, unix seconds.
    pub not_after: i64,
}

/// Loads the CA, certificate and key as [`client_config`] does, and checks what a handshake
/// would: the certificate chains to the CA and is valid now, and names an agent and a DC. A
/// package's scripts start the agent only when this succeeds.
pub fn check_enrolment(ca: &Path, cert: &Path, key: &Path) -> Result<Enrolment, TlsError> {
    client_config(ca, cert, key)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::Certificate { path: ca.to_owned(), detail: e.to_string() })?;
    let chain = certs(cert)?;
    let refused = |detail: String| TlsError::Certificate { path: cert.to_owned(), detail };
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now())
        .map_err(|e| refused(format!("not accepted with {} as the CA: {e}", ca.display())))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| refused(e.to_string()))?;
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
    };
    let subject = parsed.subject();
    let agent = first(&mut subject.iter_common_name()).ok_or_else(|| refused("no common name (agent id)".into()))?;
    let dc =
        first(&mut subject.iter_organizational_unit()).ok_or_else(|| refused("no organisational unit (DC)".into()))?;
    Ok(Enrolment { agent, dc, not_after: parsed.validity().not_after.timestamp() })
}
