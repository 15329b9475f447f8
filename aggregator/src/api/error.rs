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
