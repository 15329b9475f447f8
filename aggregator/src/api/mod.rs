//! The REST API (axum): health, hosts, endpoints and services, admin routes, and the errors and
//! tokens around them.
//!
//! The API reads the twin and the store; it never calls back into ingest (a revocation is
//! written to the list, which ingest watches). [`router`] builds the whole app, so tests can
//! drive it without a socket.

pub mod access;
mod admin;
mod endpoints;
mod error;
mod health;
mod history;
mod hosts;
mod metrics;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use axum::Router;

pub use error::ApiError;

use crate::store::Store;
use crate::twin::Twin;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub twin: Arc<Mutex<Twin>>,
    pub store: Arc<Store>,
    /// Tokens, revocations, the audit log.
    pub access: Arc<access::Access>,
    /// Storage open and QUIC listening.
    pub ready: Arc<AtomicBool>,
    pub offline_after: Duration,
    /// `/metrics` without a token.
    pub metrics_open: bool,
    /// The QUIC edge's refusals, for `/metrics`.
    pub refusals: Arc<crate::refusals::Refusals>,
}

impl AppState {
    fn twin(&self) -> std::sync::MutexGuard<'_, Twin> {
        self.twin.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/hosts", get(hosts::list))
        .route("/hosts/{id}", get(hosts::one))
        .route("/hosts/{id}/batches", get(hosts::batches))
        .route("/hosts/{id}/metrics", get(history::names))
        .route("/hosts/{id}/metrics/{metric}", get(history::series))
        .route("/endpoints", get(endpoints::list))
        .route("/endpoints/{id}", get(endpoints::one))
        .route("/services", get(endpoints::services))
        .layer(from_fn_with_state(state.clone(), access::require_read));
    let admin = Router::new()
        .route("/tokens", get(admin::tokens_list).post(admin::tokens_create))
        .route("/tokens/{name}", delete(admin::tokens_revoke))
        .route("/agents/{id}/revoke", post(admin::agent_revoke))
        .route("/revocations", get(admin::revocations_list))
        .route("/audit", get(admin::audit_list))
        .layer(from_fn_with_state(state.clone(), access::require_admin));
    let metrics = Router::new().route("/metrics", get(metrics::metrics));
    let metrics = if state.metrics_open {
        metrics
    } else {
        metrics.layer(from_fn_with_state(state.clone(), access::require_read))
    };
    Router::new()
        .merge(metrics)
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .nest("/api/v1", api.merge(admin))
        .fallback(|| async { ApiError::not_found("no such path") })
        .with_state(state)
}

/// An app state for in-process tests: a store, tokens, revocations and audit log under `dir`.
#[cfg(test)]
pub(crate) fn test_state(dir: &std::path::Path, twin: Twin) -> AppState {
    use crate::{audit::AuditLog, auth::Tokens, history::Retention, revocation::Revocations};
    let revocations = Arc::new(Revocations::open(dir.join("revocations")).expect("revocations"));
    let audit = AuditLog::new(dir.join("audit.log"), 1 << 20, 1);
    AppState {
        twin: Arc::new(Mutex::new(twin)),
        store: Arc::new(Store::open(&dir.join("db"), Retention::default()).expect("store")),
        access: Arc::new(access::Access::new(Tokens::new(dir.join("tokens")), revocations, audit)),
        ready: Arc::new(AtomicBool::new(true)),
        offline_after: Duration::from_secs(60),
        metrics_open: false,
        refusals: Arc::default(),
    }
}
