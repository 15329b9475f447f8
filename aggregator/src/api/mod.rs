//! The REST API (axum): health, hosts, endpoints and services, and the errors and tokens around
//! them.
//!
//! The API reads the twin and the store; it never calls back into ingest. [`router`] builds the
//! whole app, so tests can drive it without a socket.

mod endpoints;
mod error;
mod health;
mod history;
mod hosts;
mod metrics;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub use error::ApiError;

use crate::auth::{Role, Tokens};
use crate::store::Store;
use crate::twin::Twin;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub twin: Arc<Mutex<Twin>>,
    pub store: Arc<Store>,
    pub tokens: Arc<Tokens>,
    /// Storage open and QUIC listening.
    pub ready: Arc<AtomicBool>,
    pub offline_after: Duration,
    /// `/metrics` without a token.
    pub metrics_open: bool,
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_read));
    let metrics = Router::new().route("/metrics", get(metrics::metrics));
    let metrics = if state.metrics_open {
        metrics
    } else {
        metrics.layer(axum::middleware::from_fn_with_state(state.clone(), require_read))
    };
    Router::new()
        .merge(metrics)
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError::not_found("no such path") })
        .with_state(state)
}

/// Lets a request through with a read or admin bearer token.
async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return Err(ApiError::unauthorized("a bearer token is required"));
    };
    match state.tokens.check(token) {
        Some(Role::Read | Role::Admin) => Ok(next.run(request).await),
        None => Err(ApiError::unauthorized("unknown token")),
    }
}
