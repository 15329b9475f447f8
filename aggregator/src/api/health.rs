//! `/health`, `/health/live`, `/health/ready`: the aggregator's own health, no token needed.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use twinwatch_common::time::now_ms;

use super::AppState;
use crate::twin::HostStatus;

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "The aggregator's own health: readiness, hosts by status, storage",
    responses((status = 200, description = "Ready", body = serde_json::Value), (status = 503, description = "Starting", body = serde_json::Value)),
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.ready.load(Relaxed);
    let now = now_ms();
    let offline_after = state.offline_after.as_millis() as i64;
    let (mut online, mut stale, mut offline) = (0, 0, 0);
    let shared = state.twin().shared_hosts();
    for host in &shared {
        match host.status(now, offline_after) {
            HostStatus::Online => online += 1,
            HostStatus::Stale => stale += 1,
            HostStatus::Offline => offline += 1,
        }
    }
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ok" } else { "starting" },
        "version": env!("CARGO_PKG_VERSION"),
        "hosts": { "online": online, "stale": stale, "offline": offline },
        "storage_bytes": state.store.size_on_disk(),
    });
    (code, Json(body))
}

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    summary = "Alive",
    responses((status = 200, description = "Alive", body = serde_json::Value)),
)]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    summary = "Ready: storage open, QUIC listening",
    responses((status = 200, description = "Ready", body = serde_json::Value), (status = 503, description = "Starting", body = serde_json::Value)),
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.ready.load(Relaxed) {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "starting" })))
    }
}
