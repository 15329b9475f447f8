//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 description, generated from the handlers'
//! own annotations and types as the router is built (see [`super::router`]), so a route cannot
//! exist without its description, nor a description without its route.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::ToSchema;

use super::AppState;

/// Every error answer: `{"error": "not found", "detail": "no host \"x\"", "request_id": "5f0c..."}`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in a few lower-case words (the status's reason, as a rule).
    pub error: String,
    /// Why, for a person: usually a sentence; some errors give an object.
    pub detail: serde_json::Value,
    /// The request's id, as in the answer's `X-Request-Id` header and the aggregator's log: the
    /// client's own `X-Request-Id` when it was 1 to 64 of `A-Z a-z 0-9 . _ -`, else a new one.
    pub request_id: String,
}

/// Adds the `X-Request-Id` header every answer carries to every answer `description` lists.
pub(crate) fn describe_request_id(description: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    let mut header = utoipa::openapi::header::Header::default();
    header.description = Some(
        "The request's id: the client's own X-Request-Id when it was 1 to 64 of A-Z a-z 0-9 . _ -, \
         else a new one; the same as an error body's `request_id` and on the aggregator's log lines."
            .into(),
    );
    for item in description.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.headers.insert("X-Request-Id".into(), RefOr::T(header.clone()));
                }
            }
        }
    }
}

/// The description's frame: title, version, the bearer token scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "twinwatch aggregator",
        description = "The digital twin of every host and endpoint the agents watch: current state, \
                       history, and administration. Reads need a read token, changes an admin token, \
                       as `Authorization: Bearer TOKEN`; `/health*` needs none.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
)]
pub struct Frame;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("token").build()),
        );
    }
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "This API's OpenAPI 3.1 description", content_type = "application/json", body = serde_json::Value),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
)]
pub async fn description(State(state): State<AppState>) -> impl IntoResponse {
    // `Bytes`: each answer shares the one copy made with the router.
    let json = state.description.get().cloned().unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], json)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::access::tokens::Role;
    use crate::api::{router, test_state};
    use crate::twin::Twin;

    async fn call(app: &axum::Router, method: &str, path: &str, token: &str) -> (StatusCode, Value, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), kind)
    }

    #[tokio::test]
    async fn the_description_is_openapi_3_1_and_every_path_in_it_is_routed() {
        let dir = std::env::temp_dir().join(format!("twinwatch-openapi-{}", std::process::id()));
        let state = test_state(&dir, Twin::default());
        let admin = state.access.tokens.create(Role::Admin, "ops", 0).unwrap().secret;
        let app = router(state);
        let (status, doc, kind) = call(&app, "GET", "/api/v1/openapi.json", &admin).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(kind, "application/json");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        let paths = doc["paths"].as_object().expect("paths");
        for expected in [
            "/health",
            "/health/live",
            "/health/ready",
            "/metrics",
            "/api/v1/hosts",
            "/api/v1/hosts/{id}",
            "/api/v1/hosts/{id}/batches",
            "/api/v1/hosts/{id}/metrics",
            "/api/v1/hosts/{id}/metrics/{metric}",
            "/api/v1/endpoints",
            "/api/v1/endpoints/{id}",
            "/api/v1/services",
            "/api/v1/openapi.json",
            "/api/v1/tokens",
            "/api/v1/tokens/{name}",
            "/api/v1/agents/{id}/revoke",
            "/api/v1/revocations",
            "/api/v1/audit",
        ] {
            assert!(paths.contains_key(expected), "{expected} not described");
        }
        // Each described operation is routed: never the fallback's "no such path", never 405.
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                let concrete = path.replace("{id}", "x").replace("{metric}", "m").replace("{name}", "n");
                let (status, body, _) = call(&app, &method.to_uppercase(), &concrete, &admin).await;
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(body["detail"] != "no such path", "{method} {path} is described but not routed");
                let described = item[method]["responses"].as_object().expect("responses");
                assert!(
                    described.contains_key(status.as_str()),
                    "{method} {path} answered {status}, which it does not describe"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn errors_the_framework_makes_are_json_too() {
        let dir = std::env::temp_dir().join(format!("twinwatch-openapi-errors-{}", std::process::id()));
        let state = test_state(&dir, Twin::default());
        let read = state.access.tokens.create(Role::Read, "r", 0).unwrap().secret;
        let app = router(state);
        for (method, path, status) in [
            ("DELETE", "/api/v1/hosts", StatusCode::METHOD_NOT_ALLOWED),
            ("POST", "/health", StatusCode::METHOD_NOT_ALLOWED),
            ("GET", "/api/v1/hosts/%ff%fe", StatusCode::BAD_REQUEST),
            ("GET", "/api/v1/hosts/x/metrics/%c3%28", StatusCode::BAD_REQUEST),
            ("GET", "/no/such/path", StatusCode::NOT_FOUND),
        ] {
            let (got, body, kind) = call(&app, method, path, &read).await;
            assert_eq!(got, status, "{method} {path}: {body}");
            assert_eq!(kind, "application/json", "{method} {path}");
            assert!(body["error"].is_string() && body["detail"].is_string(), "{method} {path}: {body}");
            assert!(body["request_id"].as_str().is_some_and(|id| id.len() == 16), "{method} {path}: {body}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
