//! The twinwatch aggregator: QUIC ingest from agents, the reconciled twin of every host, durable
//! storage, and the REST API.
//!
//! # Layout
//! - [`ingest`]: the QUIC listener and per-agent sessions (hello, batches, acks).
//! - [`twin`]: the sans-IO twin core: sequence reconciliation, live and backfill delta states,
//!   host status. Its parts: [`ledger`] (what is stored and dropped per incarnation, over
//!   [`runs`]), [`claims`] (one connection per identity), [`clock`] (per-agent clock offset).
//! - [`endpoints`]: the service twin: recent probe results per endpoint and vantage, their
//!   statistics and the views the API serves.
//! - [`store`]: sled persistence: host twins, the write-ahead log of frames (flushed before any
//!   ack), and [`history`] (raw segments, rollups, retention, queries).
//! - [`checkpoint`]: writes hosts and recorded points and truncates the log; replays the log
//!   after a crash; compacts and expires history in the background.
//! - [`api`]: the axum REST API.
//! - [`exposition`]: the twins as Prometheus text, for `/metrics`.
//! - [`remote_write`]: stored samples sent on to Prometheus remote write receivers, from a
//!   durable queue per remote.
//! - [`certs`], [`identity`], [`tls`]: the CA, identities from client certificates, QUIC TLS.
//! - [`auth`]: hashed API tokens with read and admin roles.
//! - [`endpoint`]: the QUIC endpoint and its restart-proof stateless-reset key.
//! - [`config`]: the configuration file, `/etc/twinwatch/aggregator.toml` by default.

pub mod api;
pub mod auth;
pub mod certs;
pub mod checkpoint;
pub mod claims;
pub mod clock;
pub mod config;
pub mod endpoint;
pub mod endpoints;
pub mod exposition;
pub mod history;
pub mod identity;
pub mod ingest;
pub mod ledger;
pub mod remote_write;
pub mod runs;
pub mod store;
pub mod tls;
pub mod twin;
pub mod zstd_context;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::store::{Store, StoreError};
use crate::tls::TlsError;
use crate::twin::Twin;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Endpoint(#[from] endpoint::EndpointError),
    #[error("listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Where a running aggregator listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub quic: SocketAddr,
    pub http: SocketAddr,
}

/// Runs the aggregator until `shutdown` turns true. `on_listen` is told the bound addresses.
pub async fn run(
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
    on_listen: impl FnOnce(Listening),
) -> Result<(), AggregatorError> {
    let store = Arc::new(Store::open(&config.data_dir.join("db"), config.retention)?);
    let hosts = store.hosts()?;
    let mut twin = Twin::from_hosts(hosts);
    for (host, keys) in store.archive.series().map_err(StoreError::from)? {
        twin.history.load(&host, keys);
    }
    let mut replayed = 0;
    for id in store.logging_hosts()? {
        replayed += checkpoint::replay(&mut twin, &store, &id)?;
    }
    tracing::info!(hosts = twin.hosts().count(), replayed, data_dir = %config.data_dir.display(), "store open");
    let twin = Arc::new(Mutex::new(twin));
    if let Some(remotes) = config.remote_write.as_deref().filter(|r| !r.is_empty()) {
        let remote = remote_write::RemoteWrite::open(store.db(), remotes).map_err(StoreError::from)?;
        remote.spawn(shutdown.clone());
        store.set_remote(remote);
    }

    let server = tls::server_config(
        &config.certs_dir.join(certs::CA_CERT),
        &config.certs_dir.join(certs::SERVER_CERT),
        &config.certs_dir.join(certs::SERVER_KEY),
    )?;
    let endpoint = endpoint::bind(config.quic_listen, server, &config.data_dir.join("reset-key"))?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| AggregatorError::Bind { addr: config.http_listen, source })?;
    let listening = Listening {
        quic: endpoint.local_addr().map_err(|source| AggregatorError::Bind { addr: config.quic_listen, source })?,
        http: listener.local_addr().map_err(|source| AggregatorError::Bind { addr: config.http_listen, source })?,
    };

    let checkpoints = {
        let (twin, store, every, stop) = (twin.clone(), store.clone(), config.checkpoint_interval, shutdown.clone());
        tokio::spawn(async move { checkpoint::run(&twin, &store, every, stop).await })
    };
    let ingest = Arc::new(Ingest::new(twin.clone(), store.clone()));
    tokio::spawn(ingest.serve(endpoint.clone()));
    let ready = Arc::new(AtomicBool::new(true));
    let state = api::AppState {
        twin,
        store: store.clone(),
        tokens: Arc::new(auth::Tokens::new(config.tokens_file.clone())),
        ready: ready.clone(),
        offline_after: config.offline_after,
        metrics_open: config.metrics_open,
    };
    tracing::info!(quic = %listening.quic, http = %listening.http, "aggregator listening");
    on_listen(listening);

    let mut stop = shutdown.clone();
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(AggregatorError::Http)?;
    let _ = shutdown.wait_for(|s| *s).await;
    ready.store(false, Relaxed);
    endpoint.close(0u32.into(), b"aggregator shutting down");
    let _ = checkpoints.await;
    store.flush().await?;
    tracing::info!("aggregator stopped; store flushed");
    Ok(())
}
