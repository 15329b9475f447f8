//! The REST API over TLS (optional, `[http_tls]`): rustls with the ring provider, TLS 1.2 and 1.3,
//! a certificate chain and key from PEM files, read again when they change so a renewed
//! certificate is served without a restart.
//!
//! [`TlsListener`] is an axum listener: one task accepts TCP connections and runs each handshake
//! in its own task (bounded in number and time; at the limit the oldest handshake makes way), so
//! a slow or silent client holds up nobody; the server sees only finished TLS streams. A client speaking plain HTTP fails its handshake and is closed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::access::pem::{certs, private_key, TlsError};
use crate::access::watched::{self, Stamp};

/// Handshakes in progress at once; past this, the oldest is closed for each new connection.
const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the chain and key at `cert` and `key` with `provider`.
fn load(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = certs(cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let der = private_key(key)?;
    Ok(CertifiedKey::from_der(chain, der, provider)?)
}

/// Serves the certificate at `cert`/`key`, reloading it when either file changes.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<(Option<Stamp>, Option<Stamp>, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = (watched::stamp(&self.cert), watched::stamp(&self.key));
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if (current.0, current.1) != stamps {
            match load(&self.cert, &self.key, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert.display(), "HTTP TLS certificate reloaded");
                    *current = (stamps.0, stamps.1, Arc::new(key));
                }
                // Mid-renewal the key may not match the new certificate yet: keep serving the old
                // pair, and try again at the next handshake.
                Err(e) => tracing::warn!("HTTP TLS certificate not reloaded, serving the previous one: {e}"),
            }
        }
        Some(current.2.clone())
    }
}

/// A rustls server configuration for the API with the certificate at `cert` and key at `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let stamps = (watched::stamp(cert), watched::stamp(key));
    let first = load(cert, key, &provider)?;
    let resolver = Reloading {
        cert: cert.to_owned(),
        key: key.to_owned(),
        provider: provider.clone(),
        current: Mutex::new((stamps.0, stamps.1, Arc::new(first))),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS connections, handshakes done, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept(tcp, tokio_rustls::TlsAcceptor::from(config), tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Handshakes in flight, oldest first. At the limit the oldest is dropped for the newcomer: a
    // real client finishes in milliseconds, so whoever is pushed out is one that sent nothing,
    // and a crowd of silent connections cannot keep a real client from its handshake.
    let mut handshakes: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
    loop {
        let (stream, remote) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: wait instead of spinning.
                    tracing::warn!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = ready.closed() => return,
        };
        handshakes.retain(|h| !h.is_finished());
        if handshakes.len() >= MAX_HANDSHAKES {
            if let Some(oldest) = handshakes.pop_front() {
                oldest.abort();
            }
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        let task = tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, remote)).await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, "HTTP TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%remote, "HTTP TLS handshake timed out"),
            }
        });
        handshakes.push_back(task.abort_handle());
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
