//! The REST API (axum): health, hosts, endpoints and services, admin routes, and the errors and
//! tokens around them.
//!
//! The API reads the twin and the store; it never calls back into ingest (a revocation is
//! written to the list, which ingest watches). [`router`] builds the whole app, so tests can
//! drive it without a socket.

mod admin;
mod bare_status;
pub mod bearer;
mod endpoints;
mod error;
mod health;
mod history;
mod hosts;
pub mod http_tls;
pub mod limits;
mod metrics;
pub mod openapi;
mod request_id;
pub mod server;
mod turns;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::counters::Counters;
use crate::store::Store;
use crate::twin::Twin;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub twin: Arc<Mutex<Twin>>,
    pub store: Arc<Store>,
    /// Tokens, revocations, the audit log.
    pub access: Arc<bearer::Access>,
    /// Storage open and QUIC listening.
    pub ready: Arc<AtomicBool>,
    pub offline_after: Duration,
    /// `/metrics` without a token.
    pub metrics_open: bool,
    /// Request bodies' size and time.
    pub body_limits: limits::BodyLimits,
    /// What the HTTP server refused, for `/metrics`.
    pub http_stats: Arc<server::HttpStats>,
    /// The OpenAPI description, set by [`router`]; empty (`Default`) until then.
    pub description: Arc<OnceLock<axum::body::Bytes>>,
    /// The remote write queues' counters, for `/metrics`, when any remote is configured.
    pub remote_write: Option<Arc<dyn Counters>>,
    /// The QUIC edge's refusals, for `/metrics`.
    pub refusals: Arc<dyn Counters>,
    /// The QUIC edge's handshake slots, for `/metrics`.
    pub admission: Arc<dyn Counters>,
}

impl AppState {
    fn twin(&self) -> std::sync::MutexGuard<'_, Twin> {
        self.twin.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The routes and their description, before the state is given.
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let read = OpenApiRouter::new()
        .routes(routes!(hosts::list))
        .routes(routes!(hosts::one))
        .routes(routes!(hosts::batches))
        .routes(routes!(history::names))
        .routes(routes!(history::series))
        .routes(routes!(endpoints::list))
        .routes(routes!(endpoints::one))
        .routes(routes!(endpoints::services))
        .routes(routes!(openapi::description))
        .layer(from_fn_with_state(state.clone(), bearer::require_read));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::tokens_list, admin::tokens_create))
        .routes(routes!(admin::tokens_revoke))
        .routes(routes!(admin::agent_revoke))
        .routes(routes!(admin::revocations_list))
        .routes(routes!(admin::audit_list))
        .layer(from_fn_with_state(state.clone(), bearer::require_admin));
    let metrics = OpenApiRouter::new().routes(routes!(metrics::metrics));
    let metrics = if state.metrics_open {
        metrics
    } else {
        metrics.layer(from_fn_with_state(state.clone(), bearer::require_read))
    };
    OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .merge(metrics)
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .nest("/api/v1", read.merge(admin))
}

/// The whole app: every route, bodies bounded ([`limits`]), every request given an id and a
/// span ([`request_id`]), every error answer as JSON with that id ([`error::as_json`]), and the
/// description at `/api/v1/openapi.json`.
pub fn router(state: AppState) -> Router {
    let (app, mut description) = routes(&state).split_for_parts();
    openapi::describe_request_id(&mut description);
    let json = description.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let _ = state.description.set(json.into());
    let limits = state.body_limits;
    app.fallback(|| async { ApiError::not_found("no such path") })
        .with_state(state)
        .layer(from_fn_with_state(limits, limits::bounded_body))
        .layer(from_fn(request_id::traced))
}

/// An app state for in-process tests: a store, tokens, revocations and audit log under `dir`.
#[cfg(test)]
pub(crate) fn test_state(dir: &std::path::Path, twin: Twin) -> AppState {
    use crate::access::{audit::AuditLog, revocation::Revocations, tokens::Tokens};
    use crate::history::Retention;
    struct NoCounters;
    impl Counters for NoCounters {
        fn render_metrics(&self, _: &mut String) {}
    }
    let revocations = Arc::new(Revocations::open(dir.join("revocations")).expect("revocations"));
    let audit = AuditLog::new(dir.join("audit.log"), 1 << 20, 1);
    AppState {
        twin: Arc::new(Mutex::new(twin)),
        store: Arc::new(Store::open(&dir.join("db"), Retention::default()).expect("store")),
        access: Arc::new(bearer::Access::new(Tokens::new(dir.join("tokens")), revocations, audit)),
        ready: Arc::new(AtomicBool::new(true)),
        offline_after: Duration::from_secs(60),
        metrics_open: false,
        body_limits: limits::BodyLimits { max_bytes: 1 << 20, timeout: Duration::from_secs(10) },
        http_stats: Arc::default(),
        description: Arc::default(),
        remote_write: None,
        refusals: Arc::new(NoCounters),
        admission: Arc::new(NoCounters),
    }
}
