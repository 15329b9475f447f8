//! Endpoint probes: HTTP(S), TCP, DNS and TLS checks, and whole APIs from their OpenAPI specs.
//!
//! Probes run as tokio tasks beside the shipper, each on its own schedule under one concurrency
//! cap, and leave their latest result in a [`Table`]. The sampler thread copies the table into
//! its samples, so probe results travel the same sample → delta → batch → queue path as host
//! metrics, named as `common::probe` says.
//!
//! # Layout
//! - [`config`]: the `[probes]`, `[[probe]]` and `[[service]]` sections.
//! - [`definition`]: a probe fully resolved: schedule and check.
//! - [`schedule`]: sans-IO slots, offsets, jitter, skipped beats.
//! - [`runner`]: one task per probe, the timeout, the permit.
//! - [`net`]: resolving and connecting; the TCP, DNS and TLS-only checks.
//! - [`tls`]: handshakes that keep the presented chain; certificate details.
//! - [`http`]: the HTTP(S) check with per-phase timings, redirects and assertions.
//! - [`openapi`]: specs to operations to probe plans; response validation.
//! - [`service`]: fetch a spec, run its probes, follow its changes.
//! - [`result`]: a run's result and the series it becomes.
//! - [`table`]: where results wait for the sampler.

pub mod config;
pub mod definition;
pub mod http;
pub mod net;
pub mod openapi;
pub mod result;
pub mod runner;
pub mod schedule;
pub mod service;
pub mod table;
pub mod tls;

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

pub use config::ProbeSettings;
pub use table::Table;

/// Starts every probe and service; they run until `stop` turns true.
pub fn start(settings: &ProbeSettings, stop: &watch::Receiver<bool>) -> Arc<Table> {
    let table = Arc::new(Table::default());
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    for def in &settings.probes {
        tokio::spawn(runner::run_forever(def.clone(), table.clone(), permits.clone(), stop.clone()));
    }
    for svc in &settings.services {
        tokio::spawn(service::run_forever(svc.clone(), table.clone(), permits.clone(), stop.clone()));
    }
    table
}

/// Runs every probe once, and every service's generated probes once, all at the same time.
pub async fn run_all_once(settings: &ProbeSettings) -> Table {
    let table = Table::default();
    let mut defs = settings.probes.clone();
    for svc in &settings.services {
        match service::fetch(svc).await {
            Ok((_, spec)) => {
                let (probes, coverage) = service::plan(svc, &spec);
                table.put(&svc.key(), coverage);
                defs.extend(probes);
            }
            Err(e) => tracing::warn!(service = %svc.name, "spec: {e}"),
        }
    }
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let mut runs = tokio::task::JoinSet::new();
    for def in defs {
        let permits = permits.clone();
        runs.spawn(async move {
            let _permit = permits.acquire().await;
            let result = runner::run_once(&def).await;
            (def, result)
        });
    }
    while let Some(Ok((def, result))) = runs.join_next().await {
        let mut metrics = Vec::new();
        result.metrics(&def, 1, 0, &mut metrics);
        table.put(&def.id, metrics);
    }
    table
}
