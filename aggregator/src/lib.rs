//! The twinwatch aggregator: QUIC ingest from agents, the reconciled twin of every host, durable
//! storage, and the REST API.
//!
//! # Layout
//! Data flows one way: `quic` -> [`twin`] -> [`store`] -> views -> api, with
//! [`remote_write`] fed by the store's checkpoints. Each folder is one concept:
//! - [`twin`]: the sans-IO core: sequence reconciliation, live and backfill delta states, host
//!   status, claims, clock offsets, the plain agent identity, and the service twin (recent probe
//!   results per endpoint and vantage).
//! - [`history`]: sans-IO recording and encoding of every point: recorder, codecs, segments,
//!   rollups, retention.
//! - `views`: pure builders of the API's answers from the twin: host sections, endpoints,
//!   services, Prometheus exposition.
//! - [`store`]: everything in sled: host twins, the write-ahead log, the history archive and its
//!   queries, checkpoints and the log replay; every key prefix is named in `store/keys.rs`.
//! - `quic`: the QUIC edge: ingest, TLS, the endpoint's reset key, peer certificates, refusals.
//! - [`access`]: the CA, certificate identities, PEM files, revocation, API tokens, the audit log
//!   and the state files shared with the CLI.
//! - `api`: the axum routes, the HTTP server and its TLS.
//! - [`remote_write`]: stored samples sent on to Prometheus remote write receivers.
//! - [`counters`]: what `/metrics` shows of counters kept outside the twin.
//! - [`config`], [`listen`]: the configuration file and listen addresses.
//! - [`local_agent`]: an agent the aggregator runs beside itself, as one more vantage point.
//!
//! The binary's subcommands (`admin`, `status`, `quickstart`) are in `src/cli/`, outside the
//! library. `layout.rs` checks the folders' rules by reading the source.

pub mod access;
pub(crate) mod api;
pub mod config;
pub mod counters;
pub mod history;
#[cfg(test)]
mod layout;
pub mod listen;
pub mod local_agent;
pub(crate) mod quic;
pub mod remote_write;
pub mod store;
pub mod twin;
pub(crate) mod views;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::access::audit::AuditLog;
use crate::access::pem::TlsError;
use crate::access::revocation::{RevocationError, Revocations};
use crate::config::Config;
use crate::quic::ingest::Ingest;
use crate::quic::refusals::Refusals;
use crate::store::{Store, StoreError};
use crate::twin::Twin;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Endpoint(#[from] quic::reset_key::EndpointError),
    #[error("listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{key} = \"{addr}\": {source}")]
    Resolve { key: &'static str, addr: String, source: std::io::Error },
    #[error(transparent)]
    Revocations(#[from] RevocationError),
    #[error("http_tls: {0}")]
    HttpTls(TlsError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("local_agent.config: {}: {source}", path.display())]
    LocalAgentConfig { path: std::path::PathBuf, source: std::io::Error },
}

/// Where a running aggregator listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub quic: SocketAddr,
    pub http: SocketAddr,
}

async fn resolve(key: &'static str, addr: &listen::ListenAddr) -> Result<SocketAddr, AggregatorError> {
    addr.resolve().await.map_err(|source| AggregatorError::Resolve { key, addr: addr.to_string(), source })
}

/// Loads what [`run`] loads before it binds (the CA, the server certificate and key, the
/// revocation list, the API's TLS certificate, the local agent's configuration), so that an
/// operator or a package's scripts learn of a missing certificate before starting the service.
pub fn check(config: &Config) -> Result<(), AggregatorError> {
    let revocations = Arc::new(Revocations::open(config.revocations_file.clone())?);
    load_tls(config, revocations, Arc::default())?;
    if let Some(local) = &config.local_agent {
        std::fs::metadata(&local.config)
            .map_err(|source| AggregatorError::LocalAgentConfig { path: local.config.clone(), source })?;
    }
    Ok(())
}

/// The QUIC server's TLS (the CA, the server certificate and key) and, with `[http_tls]`, the
/// API's: what both [`check`] and [`run`] load.
fn load_tls(
    config: &Config,
    revocations: Arc<Revocations>,
    refusals: Arc<Refusals>,
) -> Result<(quinn::ServerConfig, Option<Arc<rustls::ServerConfig>>), AggregatorError> {
    let server = quic::tls::server_config(
        &config.certs_dir.join(access::certs::CA_CERT),
        &config.certs_dir.join(access::certs::SERVER_CERT),
        &config.certs_dir.join(access::certs::SERVER_KEY),
        revocations,
        refusals,
    )?;
    let http_tls = match &config.http_tls {
        Some(t) => Some(api::http_tls::server_config(&t.cert, &t.key).map_err(AggregatorError::HttpTls)?),
        None => None,
    };
    Ok((server, http_tls))
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
        twin.load_history(&host, keys);
    }
    let mut replayed = 0;
    for id in store.logging_hosts()? {
        replayed += store::checkpoint::replay(&mut twin, &store, &id)?;
        if twin.host(&id).is_none() {
            // Frames of a host nothing holds (its hello was never checkpointed): no checkpoint
            // will ever cover them, so the log lets go of them now.
            store.forget_log(&id, store.log_position());
        }
    }
    tracing::info!(hosts = twin.hosts().count(), replayed, data_dir = %config.data_dir.display(), "store open");
    let twin = Arc::new(Mutex::new(twin));
    let remote = match config.remote_write.as_deref().filter(|r| !r.is_empty()) {
        Some(remotes) => {
            let remote = remote_write::RemoteWrite::open(store.db(), remotes).map_err(StoreError::from)?;
            remote.spawn(shutdown.clone());
            Some(remote)
        }
        None => None,
    };

    let revocations = Arc::new(Revocations::open(config.revocations_file.clone())?);
    let refusals = Arc::new(Refusals::default());
    let (server, http_tls) = load_tls(config, revocations.clone(), refusals.clone())?;
    let quic_addr = resolve("quic_listen", &config.quic_listen).await?;
    let http_addr = resolve("http_listen", &config.http_listen).await?;
    let endpoint = quic::reset_key::bind(quic_addr, server, &config.data_dir.join("reset-key"), refusals.clone())?;
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| AggregatorError::Bind { addr: http_addr, source })?;
    let listening = Listening {
        quic: endpoint.local_addr().map_err(|source| AggregatorError::Bind { addr: quic_addr, source })?,
        http: listener.local_addr().map_err(|source| AggregatorError::Bind { addr: http_addr, source })?,
    };

    let checkpoints = {
        let (twin, store, remote) = (twin.clone(), store.clone(), remote.clone());
        let (every, stop) = (config.checkpoint_interval, shutdown.clone());
        tokio::spawn(async move { store::checkpoint::run(&twin, &store, remote.as_deref(), every, stop).await })
    };
    let ingest =
        Arc::new(Ingest::new(twin.clone(), store.clone(), remote.clone(), revocations.clone(), refusals.clone()));
    tokio::spawn(refusals.clone().summarize(shutdown.clone()));
    tokio::spawn(ingest.clone().serve(endpoint.clone()));
    tokio::spawn(ingest.clone().watch_revocations(shutdown.clone()));
    let ready = Arc::new(AtomicBool::new(true));
    let audit = AuditLog::new(config.audit.path.clone(), config.audit.max_file_bytes, config.audit.keep);
    let local_agent = config.local_agent.clone().map(|local| {
        let dir = config.data_dir.join("local-agent");
        let (certs, audit, stop) = (config.certs_dir.clone(), audit.clone(), shutdown.clone());
        tokio::spawn(local_agent::supervise(local, certs, dir, listening.quic, audit, config.log_format, stop))
    });
    let http_stats = Arc::new(api::server::HttpStats::default());
    let state = api::AppState {
        twin,
        store: store.clone(),
        access: Arc::new(api::bearer::Access::new(
            access::tokens::Tokens::new(config.tokens_file.clone()),
            revocations,
            audit,
        )),
        ready: ready.clone(),
        offline_after: config.offline_after,
        metrics_open: config.metrics_open,
        body_limits: api::limits::BodyLimits { max_bytes: config.http.max_body, timeout: config.http.body_timeout },
        http_stats: http_stats.clone(),
        remote_write: remote.map(|r| r as Arc<dyn counters::Counters>),
        refusals,
        admission: ingest.admission.clone(),
        description: Default::default(),
    };
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    tracing::info!(quic = %listening.quic, http = %listening.http, scheme, "aggregator listening");
    on_listen(listening);

    let app = api::router(state);
    match http_tls {
        Some(tls) => {
            let listener = api::http_tls::TlsListener::new(listener, tls).map_err(AggregatorError::Http)?;
            api::server::serve(listener, app, config.http, http_stats, shutdown.clone()).await;
        }
        None => api::server::serve(listener, app, config.http, http_stats, shutdown.clone()).await,
    }
    let _ = shutdown.wait_for(|s| *s).await;
    ready.store(false, Relaxed);
    if let Some(local_agent) = local_agent {
        let _ = local_agent.await;
    }
    endpoint.close(0u32.into(), b"aggregator shutting down");
    let _ = checkpoints.await;
    store.flush().await?;
    store.sync().await?;
    tracing::info!("aggregator stopped; store flushed");
    Ok(())
}
