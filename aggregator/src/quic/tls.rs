//! The aggregator's QUIC server: TLS 1.3 with the ring provider, and a client certificate signed
//! by our CA, and not revoked, required of every agent.
//!
//! Revocation is checked in the handshake itself ([`RevocationVerifier`]), so a revoked agent is
//! answered with TLS's `certificate_revoked` alert before it can send anything. (A resumed TLS
//! session skips certificate verification; ingest checks again once the handshake is done.)
//! Its refusals are counted and logged through [`Refusals`], at a bounded rate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::access::pem::{certs, private_key, TlsError};
use crate::access::revocation::{Credential, Revocations};
use crate::quic::refusals::Refusals;

/// Our CA's verifier, then the revocation list.
pub struct RevocationVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Arc<Revocations>,
    refusals: Arc<Refusals>,
}

impl std::fmt::Debug for RevocationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationVerifier").field("list", &self.revocations.path()).finish()
    }
}

impl ClientCertVerifier for RevocationVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let credential = Credential::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        if let Some(r) = self.revocations.refuses(&credential) {
            self.revocations.stats.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reason = format_args!(
                "agent refused at the handshake: certificate revoked by {} (agent {}, serial {})",
                r.by, credential.agent, credential.serial
            );
            self.refusals.revoked(&credential.agent, "handshake", None, reason);
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Unread bytes an agent may send on a stream before it must wait for the aggregator to read.
const STREAM_WINDOW: u32 = 128 * 1024;

pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    revocations: Arc<Revocations>,
    refusals: Arc<Refusals>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c)?;
    }
    let inner =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(RevocationVerifier { inner, revocations, refusals });
    let key = private_key(key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key)?;
    tls.alpn_protocols = vec![twinwatch_common::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))));
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    transport.max_concurrent_uni_streams(0u8.into());
    transport.max_concurrent_bidi_streams(4u8.into());
    // What an agent may have in flight unread: quinn's defaults (1.25 MB a stream, unlimited a
    // connection) would let a thousand agents park gigabytes in an aggregator that falls behind.
    // 128 KiB still carries the backlog's default 1 MiB/s over a 100 ms path.
    transport.stream_receive_window(STREAM_WINDOW.into());
    transport.receive_window((2 * STREAM_WINDOW).into());
    transport.send_window(u64::from(STREAM_WINDOW));
    // Everything goes over streams; no datagram buffer to fill.
    transport.datagram_receive_buffer_size(None);
    server.transport_config(Arc::new(transport));
    Ok(server)
}
