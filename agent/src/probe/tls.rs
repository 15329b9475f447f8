//! TLS for probes: a handshake that keeps the certificate chain it was shown, verified or not.
//!
//! The verifier wraps rustls' WebPKI verifier. It records the presented chain and the verdict
//! before answering, so an expired or unknown certificate is reported (expiry, issuer, reason) as
//! the probe's outcome rather than lost in a handshake error. Each run builds a fresh client
//! configuration, so no session is resumed and every run measures a full handshake.
//!
//! A self-signed certificate in a probe's `ca_file` is also trusted when the server presents
//! exactly that certificate, as curl and OpenSSL trust it, even with `CA:TRUE` (what
//! `openssl req -x509` makes), which WebPKI refuses as a server certificate. Its name and
//! validity dates are still checked. Refusals are reported in words ([`reason`]).

mod reason;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use twinwatch_common::hex::encode as hex;

use crate::tls::TlsError;

/// The system's trusted roots, read once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("system trust store: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(ignored, "no trusted roots found on this system; HTTPS probes trust only their ca_file");
        }
        roots
    })
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// How one probe verifies servers: the system roots plus its own CA file, or nothing at all.
#[derive(Clone)]
pub struct TlsContext {
    verifier: Arc<WebPkiServerVerifier>,
    /// The self-signed certificates of the `ca_file`, trusted as they are when presented.
    pinned: Arc<Vec<CertificateDer<'static>>>,
    /// Report the chain and whether it verified, but carry on when it does not.
    insecure: bool,
}

impl TlsContext {
    pub fn new(ca_file: Option<&Path>, insecure: bool) -> Result<TlsContext, TlsError> {
        let build = |roots: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Quic(format!("probe TLS verifier: {e}")))
        };
        let Some(path) = ca_file else {
            // Probes that trust only the system's roots share one copy of them.
            static SHARED: OnceLock<Result<Arc<WebPkiServerVerifier>, String>> = OnceLock::new();
            let shared = SHARED.get_or_init(|| build(system_roots().clone()).map_err(|e| e.to_string()));
            let verifier = shared.clone().map_err(|e| {
                TlsError::Quic(format!("{e} (the system has no trusted roots: give the probe a ca_file)"))
            })?;
            return Ok(TlsContext { verifier, pinned: Arc::default(), insecure });
        };
        let mut roots = system_roots().clone();
        let mut pinned = Vec::new();
        for cert in crate::tls::certs(path)? {
            if self_signed(&cert) {
                pinned.push(cert.clone());
            }
            roots.add(cert)?;
        }
        Ok(TlsContext { verifier: build(roots)?, pinned: Arc::new(pinned), insecure })
    }

    fn verifier(&self, seen: Arc<Mutex<Seen>>) -> Capturing {
        Capturing { inner: self.verifier.clone(), pinned: self.pinned.clone(), seen, insecure: self.insecure }
    }

    /// Completes a handshake on `tcp`. Whatever happens, the returned [`Seen`] has the chain the
    /// server presented, if it got that far.
    pub async fn handshake(&self, tcp: TcpStream, host: &str) -> (Result<TlsStream<TcpStream>, String>, Seen) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let verifier = self.verifier(seen.clone());
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth());
        let result = match (config, ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))) {
            (Ok(mut config), Ok(name)) => {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                connector.connect(name.to_owned(), tcp).await.map_err(|e| reason::io(&e))
            }
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(format!("server name {host:?}: {e}")),
        };
        let mut seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        if let Ok(stream) = &result {
            seen.version = stream.get_ref().1.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
                rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
                other => format!("{other:?}"),
            });
        }
        (result, seen)
    }
}

/// What a handshake showed.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Leaf first, as presented.
    pub chain: Vec<CertificateDer<'static>>,
    /// `Some(reason)`, in words, when the chain did not verify.
    pub invalid: Option<String>,
    pub version: Option<String>,
}

impl Seen {
    /// The presented certificates, parsed; unparsable ones are skipped.
    pub fn certificates(&self) -> Vec<CertInfo> {
        self.chain.iter().filter_map(|der| CertInfo::parse(der)).collect()
    }
}

#[derive(Debug)]
struct Capturing {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Arc<Vec<CertificateDer<'static>>>,
    seen: Arc<Mutex<Seen>>,
    insecure: bool,
}

/// Issuer and subject are the same name.
fn self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| c.issuer().as_raw() == c.subject().as_raw())
}

/// The verdict on a certificate trusted as it is: it must name the server and be valid `now`.
/// The handshake's signature, checked afterwards, proves the server holds its key.
fn verify_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    verify_server_name(&ParsedCertificate::try_from(cert)?, server_name)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|_| CertificateError::BadEncoding)?;
    let at = |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0).unsigned_abs()));
    let validity = parsed.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let time = now.as_secs();
    if time < at(not_before).as_secs() {
        return Err(CertificateError::NotValidYetContext { time: now, not_before: at(not_before) }.into());
    }
    if time > at(not_after).as_secs() {
        return Err(CertificateError::ExpiredContext { time: now, not_after: at(not_after) }.into());
    }
    Ok(ServerCertVerified::assertion())
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut verdict = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if verdict.is_err() && self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            verdict = verify_pinned(end_entity, server_name, now);
        }
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
            let host = server_name.to_str();
            seen.invalid = verdict.as_ref().err().map(|e| reason::certificate(e, &host, end_entity));
        }
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        verdict
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

/// The parts of a certificate a probe reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    /// `notAfter`, unix seconds.
    pub not_after: i64,
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses.
    pub sans: Vec<String>,
    /// Lower-case hex.
    pub serial: String,
    pub fingerprint_sha256: String,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) => sans.push((*n).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => sans.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                        16 => sans.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Some(CertInfo {
            not_after: cert.validity().not_after.timestamp(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            serial: hex(cert.raw_serial()),
            fingerprint_sha256: hex(digest.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_reads_back_exactly() {
        let mut params = rcgen::CertificateParams::new(vec!["app.test".into(), "10.0.0.1".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        params.distinguished_name.push(rcgen::DnType::CommonName, "app.test");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::parse(cert.der()).unwrap();
        assert_eq!(info.not_after, 1_936_742_400, "2031-05-17T00:00:00Z");
        assert_eq!(info.sans, ["app.test", "10.0.0.1"]);
        assert_eq!(info.subject, "CN=app.test");
        assert_eq!(info.fingerprint_sha256.len(), 64);
        assert!(CertInfo::parse(b"not a certificate").is_none());
    }

    #[test]
    fn a_self_signed_ca_in_ca_file_is_trusted_when_presented_for_its_name_and_time() {
        use rcgen::{BasicConstraints, IsCa};
        // What `openssl req -x509 -newkey ... -subj /CN=app.test -addext subjectAltName=...` makes.
        let self_signed_ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2030, 1, 1);
            params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap()
        };
        let (pinned, stranger) = (self_signed_ca("app.test"), self_signed_ca("app.test"));
        let dir = std::env::temp_dir().join(format!("twinwatch-pinned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, pinned.pem()).unwrap();
        let context = TlsContext::new(Some(&ca_file), false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let at = |secs: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        let in_2026 = at(1_770_000_000);
        let verify = |cert: &rcgen::Certificate, host: &str, now: UnixTime| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let name = ServerName::try_from(host.to_owned()).unwrap();
            let verdict = context.verifier(seen.clone()).verify_server_cert(cert.der(), &[], &name, &[], now);
            let invalid = seen.lock().unwrap().invalid.clone();
            assert_eq!(verdict.is_ok(), invalid.is_none(), "{invalid:?}");
            invalid
        };
        assert_eq!(verify(&pinned, "app.test", in_2026), None);
        assert_eq!(
            verify(&pinned, "x.test", in_2026).as_deref(),
            Some("certificate is not valid for host x.test (it is for app.test)")
        );
        assert_eq!(
            verify(&pinned, "app.test", at(1_900_000_000)).as_deref(),
            Some("certificate expired on 2030-01-01")
        );
        assert_eq!(
            verify(&pinned, "app.test", at(1_600_000_000)).as_deref(),
            Some("certificate is not valid before 2024-01-01")
        );
        // The same name, another key: only the very certificate in ca_file is trusted as it is.
        assert_eq!(
            verify(&stranger, "app.test", in_2026).as_deref(),
            Some("self-signed certificate used as a server certificate is not in ca_file: CN=app.test")
        );
    }
}
