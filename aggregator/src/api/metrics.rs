//! `GET /metrics`: the twins in Prometheus text format.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use twinwatch_common::time::now_ms;

use super::error::ApiError;
use super::AppState;
use crate::twin::HostTwin;
use crate::views::exposition;

/// Pieces rendered ahead of the client.
const PIECES_AHEAD: usize = 2;
/// How long a piece waits for the client to take it before the scrape is given up.
const PIECE_DEADLINE: Duration = Duration::from_secs(10);
/// The longest a scrape is rendered and sent for, and waits for its turn.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(60);
/// Scrapes rendered at once.
const RENDERS_AT_ONCE: usize = 2;
static RENDERS: Semaphore = Semaphore::const_new(RENDERS_AT_ONCE);

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    summary = "Prometheus text exposition: the aggregator's own metrics and every twin's latest values",
    security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 503, description = "Two scrapes are being rendered and neither finished within 60 s", body = crate::api::openapi::ErrorBody)),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Scrapes beyond these wait their turn rather than each holding a snapshot of every host, and
    // not for ever: a scrape is held to SCRAPE_DEADLINE, so a turn comes within that.
    let permit = match tokio::time::timeout(SCRAPE_DEADLINE, RENDERS.acquire()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return ApiError::internal("scrape semaphore closed").into_response(),
        Err(_) => {
            let detail = format!("{} scrapes are being rendered; try again", RENDERS_AT_ONCE);
            return ApiError { status: StatusCode::SERVICE_UNAVAILABLE, error: "busy", detail: detail.into() }
                .into_response();
        }
    };
    let deadline = std::time::Instant::now() + SCRAPE_DEADLINE;
    let offline_after = state.offline_after.as_millis() as i64;
    let mut head = String::with_capacity(16 * 1024);
    if let Some(remote) = &state.remote_write {
        remote.render_metrics(&mut head);
    }
    state.access.render_metrics(&mut head);
    state.refusals.render_metrics(&mut head);
    state.admission.render_metrics(&mut head);
    state.http_stats.render_metrics(&mut head);
    let (pending, most) = state.twin().history.pending();
    head.push_str(&format!(
        "# HELP twinwatch_history_pending_points Points recorded and not yet written by a checkpoint, across hosts.\n\
         # TYPE twinwatch_history_pending_points gauge\ntwinwatch_history_pending_points {pending}\n\
         # HELP twinwatch_history_pending_points_max The most points one host has waiting for its checkpoint.\n\
         # TYPE twinwatch_history_pending_points_max gauge\ntwinwatch_history_pending_points_max {most}\n"
    ));
    // Rendered from shared snapshots after the lock is released: ingest never waits on a scrape.
    let shared = state.twin().shared_hosts();
    // A thousand hosts are tens of megabytes of text: made on a blocking thread a piece at a
    // time, each sent before the next is made, so a scrape holds a few pieces, never the whole.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(PIECES_AHEAD);
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    let runtime = tokio::runtime::Handle::current();
    let render = move || {
        let _permit = permit;
        // A client that stops reading is left behind: the snapshot it pins is released.
        // So is one that reads too slowly to finish within the scrape's deadline.
        let send = |piece: String| {
            let left = deadline.saturating_duration_since(std::time::Instant::now()).min(PIECE_DEADLINE);
            runtime.block_on(tokio::time::timeout(left, tx.send(Bytes::from(piece)))).is_ok_and(|r| r.is_ok())
        };
        if !send(head) {
            return;
        }
        let hosts: Vec<&HostTwin> = shared.iter().map(|h| &**h).collect();
        let mut sent = true;
        exposition::render_chunked(&hosts, now_ms(), offline_after, |piece| {
            sent = send(piece);
            sent
        });
        done.store(sent, Ordering::Release);
    };
    tokio::task::spawn_blocking(render);
    // The body ends with an error, not quietly, if rendering stopped: a scraper must not take a
    // cut exposition for a whole one.
    let pieces = futures_util::stream::unfold((rx, finished), |(mut rx, finished)| async move {
        match rx.recv().await {
            Some(piece) => Some((Ok(piece), (rx, finished))),
            None if finished.load(Ordering::Acquire) => None,
            None => Some((Err(std::io::Error::other("rendering stopped")), (rx, finished))),
        }
    });
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], Body::from_stream(pieces)).into_response()
}
