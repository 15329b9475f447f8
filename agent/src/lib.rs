//! The twinwatch agent: samples its host, buffers batches in sled and ships them to the
//! aggregator over QUIC with mutual TLS.
//!
//! # Layout
//! - [`collector`]: one file per kernel source, each a parser over text.
//! - [`probe`]: endpoint probes (HTTP(S), TCP, DNS, TLS) and OpenAPI services; results join the samples.
//! - [`sampler`]: the sampling thread: collectors → sample → delta tick → batch frame → buffer.
//! - [`buffer`]: the outbound buffer: memory first, group commits to sled for what waits, a live
//!   and a backlog lane, a cap with drop-oldest; batches leave it only when acknowledged.
//! - [`shipper`]: the QUIC session. Its decisions over time are sans-IO: `conversation` (live
//!   lane first, pokes, standby handshakes, the ack deadline, clock echoes), `throttle` (the
//!   backlog's rate), `probing` (when attempts start while nobody answers), `backoff` (reconnect
//!   delays by how the last attempt ended), `refusal` (why the aggregator refused this agent,
//!   and what the operator can do); `dialer` and `mod.rs` are the tokio shell around them.
//! - [`tls`]: the rustls/quinn client configuration.
//! - [`config`], [`identity`], [`stats`]: settings, host identity, the agent's own counters.
//! - [`check`]: the settings as `twinwatch-agent check` prints them, secrets redacted.
//! - [`resident`]: lets go of the binary's pages that only start-up touched.

pub mod buffer;
pub mod check;
pub mod collector;
pub mod config;
pub mod identity;
pub mod probe;
pub mod resident;
pub mod sampler;
pub mod shipper;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::{watch, Notify};
use twinwatch_common::delta::DeltaEncoder;

use crate::buffer::{Buffer, BufferError};
use crate::collector::{Collectors, Roots};
use crate::config::Config;
use crate::sampler::Sampler;
use crate::shipper::Shipper;
use crate::stats::Stats;
use crate::tls::TlsError;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("state directory {}: {source}", path.display())]
    StateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("starting the sampler thread: {0}")]
    Spawn(std::io::Error),
}

/// How long after start the pages only start-up touched are let go ([`resident`]): by then the
/// first connection is up, the first keyframe sent and every probe at the default interval has
/// run once.
const STARTUP_SETTLES: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the agent until `shutdown` turns true, then makes the buffer durable and returns.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| AgentError::StateDir { path: config.state_dir.clone(), source })?;
    let client = tls::client_config(&config.ca, &config.cert, &config.key)?;
    let buffer =
        Arc::new(Buffer::open(&config.state_dir.join("buffer"), config.buffer_max_bytes, config.flush_interval)?);
    let incarnation = buffer.next_incarnation(sampler::now_ms() as u64)?;
    let host = identity::host_info(&Roots::default().proc);
    tracing::info!(
        incarnation,
        backlog_batches = buffer.len(),
        aggregator = %config.aggregator,
        hostname = %host.hostname,
        "agent starting"
    );

    let stats = Arc::new(Stats::default());
    let wake = Arc::new(Notify::new());
    let keyframe_wanted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let probes = (!config.probes.is_empty()).then(|| probe::start(&config.probes, &shutdown));
    tracing::info!(probes = config.probes.probes.len(), services = config.probes.services.len(), "probes started");
    let sampler = Sampler {
        probes,
        collectors: Collectors::new(Roots::default(), &config.collectors),
        encoder: DeltaEncoder::new(config.keyframe_every),
        buffer: buffer.clone(),
        stats: stats.clone(),
        incarnation,
        interval: config.interval,
        keyframe_wanted: keyframe_wanted.clone(),
        wake: wake.clone(),
        stop: stop.clone(),
    };
    let sampling =
        std::thread::Builder::new().name("sampler".into()).spawn(move || sampler.run()).map_err(AgentError::Spawn)?;

    let bind: SocketAddr =
        if config.aggregator.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("static address");
    let endpoint = quinn::Endpoint::client(bind).map_err(AgentError::Endpoint)?;
    let shipper = Shipper {
        endpoint: endpoint.clone(),
        client,
        aggregator: config.aggregator.clone(),
        server_name: config.server_name.clone(),
        buffer: buffer.clone(),
        stats,
        wake,
        keyframe_wanted,
        hello: shipper::hello(incarnation, config.interval, host),
        replay_rate: config.replay_rate,
        sampler: Some(sampling.thread().clone()),
        credentials: shipper::refusal::Credentials::load(config.ca.clone(), config.cert.clone()),
    };
    let shipping = tokio::spawn(shipper.run(shutdown.clone()));
    let settled = tokio::spawn(async {
        tokio::time::sleep(STARTUP_SETTLES).await;
        let before = resident::resident_split();
        let advised = resident::release_startup_pages();
        tracing::debug!(?before, after = ?resident::resident_split(), ?advised, "start-up pages released");
    });
    let _ = shutdown.wait_for(|stop| *stop).await;
    settled.abort();

    stop.store(true, Relaxed);
    sampling.thread().unpark();
    let _ = tokio::task::spawn_blocking(move || sampling.join()).await;
    let _ = shipping.await;
    endpoint.close(0u32.into(), b"shutdown");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
    buffer.flush()?;
    tracing::info!(backlog_batches = buffer.len(), "agent stopped; buffer flushed");
    Ok(())
}
