//! `GET /metrics`: the twins in Prometheus text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::AppState;
use crate::exposition;
use crate::ingest::now_ms;

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let offline_after = state.offline_after.as_millis() as i64;
    let mut body = String::with_capacity(64 * 1024);
    exposition::render(state.twin().hosts(), now_ms(), offline_after, &mut body);
    if let Some(remote) = state.store.remote() {
        remote.render_metrics(&mut body);
    }
    state.access.render_metrics(&mut body);
    state.refusals.render_metrics(&mut body);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
