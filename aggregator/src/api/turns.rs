//! Answers that describe the whole fleet (the host list, the endpoint list, the services) take
//! turns: at a thousand hosts each is megabytes while it is built, and fifty clients asking at
//! once had a 256 MiB aggregator killed for memory. An answer is built and serialised within its
//! turn, so only [`AT_ONCE`] trees exist at a time; a request that waits [`WAIT`] for one is
//! answered 503 busy.

use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::error::ApiError;

/// Fleet-wide answers built at once.
pub(crate) const AT_ONCE: usize = 2;
/// The longest a request waits for its turn.
const WAIT: Duration = Duration::from_secs(30);
static TURNS: Semaphore = Semaphore::const_new(AT_ONCE);

/// Builds `answer` in a turn and serialises it there: the JSON bytes, not the tree, leave it.
pub(crate) async fn fleet_answer<T: Serialize>(build: impl FnOnce() -> T) -> Result<Response, ApiError> {
    in_turn(&TURNS, WAIT, build).await
}

async fn in_turn<T: Serialize>(
    turns: &Semaphore,
    wait: Duration,
    build: impl FnOnce() -> T,
) -> Result<Response, ApiError> {
    let _turn = match tokio::time::timeout(wait, turns.acquire()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err(ApiError::internal("fleet answer semaphore closed")),
        Err(_) => {
            let detail = format!("{AT_ONCE} answers about the whole fleet are being built; try again");
            return Err(ApiError { status: StatusCode::SERVICE_UNAVAILABLE, error: "busy", detail: detail.into() });
        }
    };
    let body = serde_json::to_vec(&build()).map_err(|e| ApiError::internal(format!("serialising the answer: {e}")))?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_waits_for_a_turn_and_is_answered_busy_when_none_comes() {
        let turns = Semaphore::new(AT_ONCE);
        let held = turns.acquire_many(AT_ONCE as u32).await.unwrap();
        let busy = in_turn(&turns, Duration::from_millis(50), || 1).await.unwrap_err();
        assert_eq!((busy.status, busy.error), (StatusCode::SERVICE_UNAVAILABLE, "busy"));
        drop(held);
        let answer = in_turn(&turns, WAIT, || vec![1, 2]).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body = axum::body::to_bytes(answer.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"[1,2]");
    }
}
