//! API errors as JSON `{"error": "...", "detail": ...}` with the right status code.

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

/// Middleware: every error answer in the API's shape. The handlers' own errors are JSON already;
/// what axum answers by itself (405 for a method a route lacks, 400 for a path that does not
/// decode, 422 for a query or body that does not deserialise, 413 ...) arrives here as plain text
/// or nothing, and leaves as `{error, detail}` with its status and headers (`allow` on a 405)
/// kept.
pub async fn as_json(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
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
    let body = serde_json::json!({ "error": error, "detail": detail }).to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(body))
}
