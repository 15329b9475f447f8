//! `/api/v1/hosts`, `/api/v1/hosts/{id}` and `/api/v1/hosts/{id}/batches`: the routes; the
//! answers are built in `views/hosts.rs`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::Value;
use twinwatch_common::time::now_ms;

use super::{ApiError, AppState};
use crate::views::hosts;

#[utoipa::path(
    get,
    path = "/hosts",
    tag = "hosts",
    summary = "Every host twin: id, DC, hostname, status, last seen, agent version",
    security(("bearer" = [])),
    responses((status = 200, description = "Every host", body = serde_json::Value), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 503, description = "Two answers about the whole fleet are being built and neither finished within 30 s", body = crate::api::openapi::ErrorBody)),
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = now_ms();
    let offline_after = state.offline_after.as_millis() as i64;
    super::turns::fleet_answer(|| {
        let shared = state.twin().shared_hosts();
        Value::Array(shared.iter().map(|h| hosts::summary(h, now, offline_after)).collect())
    })
    .await
}

#[utoipa::path(
    get,
    path = "/hosts/{id}",
    tag = "hosts",
    summary = "One host's current twin: identity, latest metrics in sections, filesystems, interfaces, processes, probes",
    params(("id" = String, Path, description = "The host's id (its agent certificate's name)")),
    security(("bearer" = [])),
    responses((status = 200, description = "The host's twin", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::api::openapi::ErrorBody)),
)]
pub async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let offline_after = state.offline_after.as_millis() as i64;
    let host = state.twin().shared_host(&id).ok_or_else(|| ApiError::not_found(format!("no host {id:?}")))?;
    Ok(Json(hosts::detail(&host, now, offline_after)))
}

#[utoipa::path(
    get,
    path = "/hosts/{id}/batches",
    tag = "hosts",
    summary = "What the aggregator stored of a host's batches: counters and stored runs per incarnation",
    params(("id" = String, Path, description = "The host's id (its agent certificate's name)")),
    security(("bearer" = [])),
    responses((status = 200, description = "Ingest counters and stored runs", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::api::openapi::ErrorBody)),
)]
pub async fn batches(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let host = state.twin().shared_host(&id).ok_or_else(|| ApiError::not_found(format!("no host {id:?}")))?;
    Ok(Json(hosts::batches(&host)))
}
