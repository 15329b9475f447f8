//! Admin routes: tokens, agent revocation, and the audit log. Each change is recorded in the
//! audit log (who, what, target, outcome, from where) before it is answered.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /api/v1/tokens` | names, roles and creation times (never secrets) |
//! | `POST /api/v1/tokens` `{"role": "read", "name": "grafana"}` | a new token; its secret is in this answer only |
//! | `DELETE /api/v1/tokens/{name}` | revoke a token |
//! | `POST /api/v1/agents/{id}/revoke` `{"reason": "..."}` (body optional) | refuse the agent's certificates issued until now; connected, it is closed |
//! | `GET /api/v1/revocations` | the revocation list |
//! | `GET /api/v1/audit?limit=100` | the newest audit records first (at most 1000) |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use twinwatch_common::time::now_ms;

use super::bearer::{Access, Caller};
use super::{ApiError, AppState};
use crate::access::audit::{Outcome, Record};
use crate::access::revocation::{RevocationError, Target};
use crate::access::tokens::{Role, TokenError, TokenInfo};

/// Default and largest `?limit=` of `GET /api/v1/audit`.
const AUDIT_DEFAULT: usize = 100;
const AUDIT_MAX: usize = 1000;

async fn audited<T>(
    access: &Arc<Access>,
    caller: &Caller,
    action: &str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let (outcome, detail) = match &result {
        Ok(_) => (Outcome::Ok, String::new()),
        Err(e) => (Outcome::Failed, e.detail.as_str().unwrap_or_default().to_owned()),
    };
    let record = Record::new(now_ms(), &caller.name, &caller.from, action, target, outcome).with_detail(detail);
    access.record(record).await;
    result
}

/// Runs blocking file work (the token file, the revocation list) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    // JSON's own white space only: a form feed is not an empty body (found by schemathesis).
    if bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return Ok(T::default());
    }
    // An object, not any JSON serde could read as the struct: `[]` is a valid empty sequence to
    // a derived `Deserialize`, and would be taken for an empty body.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("JSON body: must be an object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))
}

#[utoipa::path(
    get,
    path = "/tokens",
    tag = "admin",
    summary = "API tokens: names, roles, creation times (never secrets)",
    security(("bearer" = [])),
    responses((status = 200, description = "Every token", body = Vec<crate::access::tokens::TokenInfo>), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody)),
)]
pub async fn tokens_list(State(state): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let access = state.access.clone();
    let list = blocking(move || access.tokens.list()).await?.map_err(ApiError::internal)?;
    Ok(Json(list))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    role: Option<Role>,
    #[serde(default)]
    name: String,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::BadName(_) => ApiError::bad_request(e.to_string()),
        TokenError::Exists(_) => ApiError::conflict(e.to_string()),
        TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
        e => ApiError::internal(e),
    }
}

#[utoipa::path(
    post,
    path = "/tokens",
    tag = "admin",
    summary = "A new token; its secret is in this answer only",
    request_body(content = Option<NewToken>, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 201, description = "The new token, with its secret", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 409, description = "A token of that name exists", body = crate::api::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody)),
)]
pub async fn tokens_create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let access = state.access.clone();
    let asked: Result<NewToken, ApiError> = body(&bytes);
    let name = asked.as_ref().map(|t| t.name.clone()).unwrap_or_default();
    let result = match asked {
        Err(e) => Err(e),
        Ok(t) => {
            let a = access.clone();
            let role = t.role.unwrap_or(Role::Read);
            blocking(move || a.tokens.create(role, &t.name, now_ms()).map(|n| (n, role)))
                .await
                .and_then(|r| r.map_err(token_error))
        }
    };
    let target = result.as_ref().map_or(name, |(n, _)| n.name.clone());
    let (new, role) = audited(&access, &caller, "token.create", &target, result).await?;
    let answer = json!({ "name": new.name, "role": role, "token": new.secret });
    Ok((StatusCode::CREATED, Json(answer)))
}

#[utoipa::path(
    delete,
    path = "/tokens/{name}",
    tag = "admin",
    summary = "Revoke a token",
    params(("name" = String, Path, description = "The token's name")),
    security(("bearer" = [])),
    responses((status = 200, description = "Revoked", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::api::openapi::ErrorBody)),
)]
pub async fn tokens_revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let access = state.access.clone();
    let a = access.clone();
    let n = name.clone();
    let result = blocking(move || a.tokens.revoke(&n)).await.and_then(|r| r.map_err(token_error));
    let gone = audited(&access, &caller, "token.revoke", &name, result).await?;
    Ok(Json(json!({ "name": gone.name, "role": gone.role, "revoked": true })))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    reason: String,
}

#[utoipa::path(
    post,
    path = "/agents/{id}/revoke",
    tag = "admin",
    summary = "Refuse an agent's certificates issued until now; a connected agent is closed",
    params(("id" = String, Path, description = "The agent's id")),
    request_body(content = Option<RevokeBody>, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "The revocation", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 413, description = "Body too large", body = crate::api::openapi::ErrorBody)),
)]
pub async fn agent_revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let access = state.access.clone();
    let result = match body::<RevokeBody>(&bytes)
        .and_then(|b| Target::agent(&id).map(|t| (t, b.reason)).map_err(|e| ApiError::bad_request(e.to_string())))
    {
        Err(e) => Err(e),
        Ok((target, reason)) => {
            let (a, by) = (access.clone(), caller.name.clone());
            blocking(move || a.revocations.revoke(target, &by, &reason, now_ms())).await.and_then(|r| {
                r.map_err(|e| match e {
                    RevocationError::BadTarget(m) => ApiError::bad_request(m),
                    e => ApiError::internal(e),
                })
            })
        }
    };
    let revocation = audited(&access, &caller, "agent.revoke", &id, result).await?;
    Ok(Json(revocation.to_json()))
}

#[utoipa::path(
    get,
    path = "/revocations",
    tag = "admin",
    summary = "The revocation list",
    security(("bearer" = [])),
    responses((status = 200, description = "Every revocation", body = serde_json::Value), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody)),
)]
pub async fn revocations_list(State(state): State<AppState>) -> Json<Value> {
    let (_, list) = state.access.revocations.current();
    Json(json!({ "revocations": list.entries().iter().map(|r| r.to_json()).collect::<Vec<_>>() }))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/audit",
    tag = "admin",
    summary = "The newest audit records first",
    params(("limit" = Option<usize>, Query, description = "How many, 1 to 1000 (default 100)", minimum = 1, maximum = 1000)),
    security(("bearer" = [])),
    responses((status = 200, description = "Audit records", body = Vec<crate::access::audit::Record>), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody)),
)]
pub async fn audit_list(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Record>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => AUDIT_DEFAULT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=AUDIT_MAX).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("`limit` must be 1 to {AUDIT_MAX}, not {s:?}")))?,
    };
    let access = state.access.clone();
    let records = blocking(move || access.audit.recent(limit)).await?.map_err(ApiError::internal)?;
    Ok(Json(records))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::access::tokens::Role;
    use crate::api::{router, test_state};
    use crate::twin::Twin;

    async fn call(app: &axum::Router, method: &str, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(body.to_owned()))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn admin_routes_check_their_input_and_audit_every_change() {
        let dir = std::env::temp_dir().join(format!("twinwatch-api-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = test_state(&dir, Twin::default());
        let admin = state.access.tokens.create(Role::Admin, "ops", 0).unwrap().secret;
        let app = router(state.clone());

        for (body, want) in [
            ("{", StatusCode::BAD_REQUEST),
            (r#"{"role":"root"}"#, StatusCode::BAD_REQUEST),
            (r#"{"role":"read","name":"x","ttl":5}"#, StatusCode::BAD_REQUEST),
            (r#"{"name":"a b"}"#, StatusCode::BAD_REQUEST),
            // Found by schemathesis: serde reads a struct from an array too.
            ("[]", StatusCode::BAD_REQUEST),
            ("null", StatusCode::BAD_REQUEST),
            ("\x0c", StatusCode::BAD_REQUEST),
            ("", StatusCode::CREATED),
        ] {
            let (status, answer) = call(&app, "POST", "/api/v1/tokens", &admin, body).await;
            assert_eq!(status, want, "{body}: {answer}");
        }
        let (_, list) = call(&app, "GET", "/api/v1/tokens", &admin, "").await;
        let made = &list[1];
        assert_eq!(made["role"], "read");
        assert!(made["name"].as_str().unwrap().starts_with("read-"), "{list}");

        let (status, r) = call(&app, "POST", "/api/v1/agents/udm-pro/revoke", &admin, "").await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(
            (&r["kind"], &r["target"], &r["by"], &r["reason"]),
            (&json!("agent"), &json!("udm-pro"), &json!("ops"), &json!(""))
        );
        for body in [r#"{"why":"x"}"#, "[]", r#"["x"]"#, "7"] {
            let (status, _) = call(&app, "POST", "/api/v1/agents/udm-pro/revoke", &admin, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        }
        let (_, list) = call(&app, "GET", "/api/v1/revocations", &admin, "").await;
        assert_eq!(list["revocations"].as_array().unwrap().len(), 1);

        let (_, audit) = call(&app, "GET", "/api/v1/audit", &admin, "").await;
        let seen: Vec<(&str, &str)> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["action"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
            .collect();
        let mut want = vec![("agent.revoke", "failed"); 4];
        want.extend([("agent.revoke", "ok"), ("token.create", "ok")]);
        want.extend([("token.create", "failed"); 7]);
        assert_eq!(seen, want);
        // In-process, the server gave no address.
        assert_eq!(audit[0]["from"], "unknown");
        let (status, _) = call(&app, "GET", "/api/v1/audit?limit=x", &admin, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
