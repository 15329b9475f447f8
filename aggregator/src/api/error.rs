//! API errors as JSON `{"error": "...", "detail": ..., "request_id": "..."}` with the right
//! status code. Handlers build `{error, detail}`; [`as_json`] adds the request's id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: serde_json::Value,
}

impl ApiError {
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, error: "not found", detail: detail.into().into() }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, error: "bad request", detail: detail.into().into() }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "unauthorized", detail: detail.into().into() }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError { status: StatusCode::FORBIDDEN, error: "forbidden", detail: detail.into().into() }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError { status: StatusCode::CONFLICT, error: "conflict", detail: detail.into().into() }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("API internal error: {detail}");
        // Internals stay in the log; the client learns only that it was our fault.
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal error",
            detail: "see the aggregator's log".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(serde_json::json!({ "error": self.error, "detail": self.detail }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Longest framework message kept as an error's `detail`.
const MAX_DETAIL: usize = 1024;
/// Largest JSON error body given its request id; the API's own are a few hundred bytes.
const MAX_JSON_ERROR: u64 = 64 << 10;

/// Every error answer in the API's shape, with `request_id`; called by
/// [`super::request_id::traced`] around every request. The handlers' own errors are JSON
/// already and gain the id. What axum answers by itself (405 for a method a route lacks, 400 for
/// a path that does not decode, 422 for a query or body that does not deserialise, 413 ...)
/// arrives as plain text or nothing, and leaves as `{error, detail, request_id}` with its status
/// and headers (`allow` on a 405) kept.
pub async fn as_json(response: Response, request_id: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return with_request_id(response, request_id).await;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL * 4).await.unwrap_or_default();
    let mut detail: String = String::from_utf8_lossy(&text).trim().chars().take(MAX_DETAIL).collect();
    let error = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    if detail.is_empty() {
        detail = match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = parts.headers.get(axum::http::header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
                format!("this path does not take that method; it takes {allow}")
            }
            _ => error.clone(),
        };
    }
    let body = serde_json::json!({ "error": error, "detail": detail, "request_id": request_id }).to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// A JSON error answer with `request_id` added to its object. A body that is not an object with
/// an `error` (`/health/ready`'s 503 says `{"status": "starting"}`), or larger than
/// [`MAX_JSON_ERROR`], is passed on as it is.
async fn with_request_id(response: Response, request_id: &str) -> Response {
    use axum::body::HttpBody as _;
    if response.body().size_hint().upper().is_none_or(|n| n > MAX_JSON_ERROR) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_JSON_ERROR as usize).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!("an error answer's body could not be read: {e}");
            let body = serde_json::json!({
                "error": parts.status.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
                "detail": "see the aggregator's log",
                "request_id": request_id,
            });
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            return Response::from_parts(parts, axum::body::Body::from(body.to_string()));
        }
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut object)) if object.contains_key("error") => {
            object.insert("request_id".into(), request_id.into());
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            serde_json::Value::Object(object).to_string().into()
        }
        _ => bytes,
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}
