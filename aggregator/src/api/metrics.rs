//! `GET /metrics`: the twins in Prometheus text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use twinwatch_common::time::now_ms;

use super::AppState;
use crate::views::exposition;

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    summary = "Prometheus text exposition: the aggregator's own metrics and every twin's latest values",
    security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody)),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let offline_after = state.offline_after.as_millis() as i64;
    let mut body = String::with_capacity(64 * 1024);
    // Rendered from shared snapshots after the lock is released: ingest never waits on a scrape.
    let shared = state.twin().shared_hosts();
    exposition::render(shared.iter().map(|h| &**h), now_ms(), offline_after, &mut body);
    if let Some(remote) = &state.remote_write {
        remote.render_metrics(&mut body);
    }
    state.access.render_metrics(&mut body);
    state.refusals.render_metrics(&mut body);
    state.admission.render_metrics(&mut body);
    state.http_stats.render_metrics(&mut body);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
