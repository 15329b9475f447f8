//! Request bodies, bounded before any handler sees them: a body declared or sent larger than
//! `max_body` is refused with 413, one that does not arrive within `body_timeout` with 408.
//! The body is read here whole (the API's bodies are small JSON documents), so a handler never
//! waits on a client.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// What [`bounded_body`] allows.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

fn too_large(max: usize) -> Response {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: "payload too large",
        detail: format!("request bodies are limited to {max} bytes").into(),
    }
    .into_response()
}

/// The middleware: see the module's comment.
pub async fn bounded_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let declared = match headers.get(CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => return ApiError::bad_request("`content-length` is not a number").into_response(),
        },
    };
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return too_large(limits.max_bytes);
    }
    if declared.unwrap_or(0) == 0 && !headers.contains_key(TRANSFER_ENCODING) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, limits.max_bytes)).await {
        Err(_) => {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                error: "request timeout",
                detail: format!("the request body did not arrive within {} s", limits.timeout.as_secs_f64()).into(),
            }
            .into_response()
        }
        Ok(Err(e)) if is_length_limit(&e) => return too_large(limits.max_bytes),
        Ok(Err(e)) => return ApiError::bad_request(format!("the request body could not be read: {e}")).into_response(),
        Ok(Ok(bytes)) => bytes,
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Whether `e` (from `to_bytes`) is the length limit, somewhere in its chain.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
