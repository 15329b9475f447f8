//! `GET /metrics`: the twins in Prometheus text format.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
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
/// Scrapes rendered at once.
static RENDERS: Semaphore = Semaphore::const_new(2);

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    summary = "Prometheus text exposition: the aggregator's own metrics and every twin's latest values",
    security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody)),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Scrapes beyond these wait their turn rather than each holding a snapshot of every host.
    let Ok(permit) = RENDERS.acquire().await else {
        // Never closed: a static semaphore.
        return ApiError::internal("scrape semaphore closed").into_response();
    };
    let offline_after = state.offline_after.as_millis() as i64;
    let mut head = String::with_capacity(16 * 1024);
    if let Some(remote) = &state.remote_write {
        remote.render_metrics(&mut head);
    }
    state.access.render_metrics(&mut head);
    state.refusals.render_metrics(&mut head);
    state.admission.render_metrics(&mut head);
    state.http_stats.render_metrics(&mut head);
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
        let send = |piece: String| {
            runtime.block_on(tokio::time::timeout(PIECE_DEADLINE, tx.send(Bytes::from(piece)))).is_ok_and(|r| r.is_ok())
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
