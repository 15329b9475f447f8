//! `/api/v1/endpoints`, `/api/v1/endpoints/{id}` and `/api/v1/services`: the service twin, as
//! [`crate::views::endpoints`] builds it. `?window=15m` sets the span of the statistics (default
//! 1h).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use twinwatch_common::time::now_ms;

use super::{ApiError, AppState};
use crate::views::endpoints::{self, Endpoint, Scope, VantageDetail, VantageSummary, Window};
use crate::views::services::{self, Service};

#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    window: Option<String>,
}

type Params = Result<Query<WindowQuery>, QueryRejection>;

/// The scope of one request; a malformed query is a JSON error like every other.
fn scope(state: &AppState, query: Params) -> Result<Scope, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let window = Window::parse(query.window.as_deref()).map_err(ApiError::bad_request)?;
    Ok(Scope { now_ms: now_ms(), offline_after_ms: state.offline_after.as_millis() as i64, window })
}

#[utoipa::path(
    get,
    path = "/endpoints",
    tag = "endpoints",
    summary = "Every probed endpoint with its state per vantage (DC)",
    params(("window" = Option<String>, Query, description = "Span of the statistics, a duration such as `15m` (default `1h`)", pattern = r"^[0-9]{1,12}(\.[0-9]+)?(ms|s|m|h|d)$")),
    security(("bearer" = [])),
    responses((status = 200, description = "Every endpoint", body = [Endpoint<VantageSummary>]), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 503, description = "Two answers about the whole fleet are being built and neither finished within 30 s", body = crate::api::openapi::ErrorBody)),
)]
pub async fn list(State(state): State<AppState>, query: Params) -> Result<Response, ApiError> {
    let scope = scope(&state, query)?;
    super::turns::fleet_answer(|| -> Vec<Endpoint<VantageSummary>> { endpoints::list(&state.twin(), &scope) }).await
}

#[utoipa::path(
    get,
    path = "/endpoints/{id}",
    tag = "endpoints",
    summary = "One endpoint: per-vantage latency percentiles, success rate, statuses, TLS, schema results, verdict",
    params(("id" = String, Path, description = "The endpoint's id"), ("window" = Option<String>, Query, description = "Span of the statistics, a duration such as `15m` (default `1h`)", pattern = r"^[0-9]{1,12}(\.[0-9]+)?(ms|s|m|h|d)$")),
    security(("bearer" = [])),
    responses((status = 200, description = "The endpoint", body = Endpoint<VantageDetail>), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::api::openapi::ErrorBody)),
)]
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Params,
) -> Result<Json<Endpoint<VantageDetail>>, ApiError> {
    let scope = scope(&state, query)?;
    let endpoint = endpoints::detail(&state.twin(), &id, &scope);
    endpoint.map(Json).ok_or_else(|| ApiError::not_found(format!("no endpoint {id:?}")))
}

#[utoipa::path(
    get,
    path = "/services",
    tag = "endpoints",
    summary = "Every service probed from its OpenAPI spec: coverage and endpoints per vantage",
    params(("window" = Option<String>, Query, description = "Span of the statistics, a duration such as `15m` (default `1h`)", pattern = r"^[0-9]{1,12}(\.[0-9]+)?(ms|s|m|h|d)$")),
    security(("bearer" = [])),
    responses((status = 200, description = "Every service", body = Vec<Service>), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 503, description = "Two answers about the whole fleet are being built and neither finished within 30 s", body = crate::api::openapi::ErrorBody)),
)]
pub async fn services(State(state): State<AppState>, query: Params) -> Result<Response, ApiError> {
    let scope = scope(&state, query)?;
    super::turns::fleet_answer(|| -> Vec<Service> { services::services(&state.twin(), &scope) }).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{Request, StatusCode};
    use axum::Router;
    use serde_json::{json, Value};
    use tower::ServiceExt;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::message::{Batch, Hello};
    use twinwatch_common::probe;
    use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value as V};

    use crate::access::tokens::{Role, Tokens};
    use crate::api::router;
    use crate::twin::endpoints::tests::http_result;
    use crate::twin::identity::AgentIdentity;
    use crate::twin::Twin;

    const LEAF_EXPIRY: i64 = 1_900_000_000;

    fn gauge(key: SeriesKey, v: V) -> Metric {
        Metric::gauge(key, v)
    }

    /// `shop.health` as `status` and `duration` say, `shop.listPets` (generated from the `shop`
    /// spec) up, and the `shop` service's coverage: what one agent sends about its probes.
    fn probe_metrics(probe_ts: i64, status: i64, duration: f64) -> Vec<Metric> {
        let mut m = http_result("shop.health", probe_ts, status, duration);
        let health = |name: &str| SeriesKey::new(name).with(probe::ENDPOINT, "shop.health");
        m.extend([
            gauge(health(probe::TLS_LEAF_EXPIRY), V::Int(LEAF_EXPIRY)),
            gauge(health(probe::TLS_EARLIEST_EXPIRY), V::Int(LEAF_EXPIRY - 1000)),
            gauge(health(probe::TLS_VERIFIED), V::Int(1)),
            gauge(health(probe::TLS_VERSION_INFO).with("version", "TLS 1.3"), V::Int(1)),
            gauge(
                health(probe::TLS_CHAIN_INFO)
                    .with("fingerprint_sha256", "ab12")
                    .with("issuer", "CN=Test CA")
                    .with("subject", "CN=shop.example")
                    .with("subjectalternative", "shop.example, www.shop.example"),
                V::Int(1),
            ),
            gauge(health(probe::DNS_LOOKUP), V::Float(0.004)),
            gauge(health(probe::DNS_ANSWERS), V::Int(1)),
            gauge(health(probe::DNS_ANSWER_INFO).with("address", "192.0.2.10"), V::Int(1)),
            gauge(health(probe::HTTP_VERSION), V::Float(1.1)),
        ]);
        let mut pets = http_result("shop.listPets", probe_ts, 200, 0.05);
        let pets_key = |name: &str| SeriesKey::new(name).with(probe::ENDPOINT, "shop.listPets");
        pets.retain(|p| p.key.name != probe::INFO);
        pets.extend([
            gauge(
                pets_key(probe::INFO)
                    .with("kind", "http")
                    .with("target", "https://shop.example/pets")
                    .with("service", "shop")
                    .with("operation", "listPets")
                    .with("method", "GET")
                    .with("path", "/pets"),
                V::Int(1),
            ),
            gauge(pets_key(probe::SCHEMA_VIOLATIONS), V::Int(1)),
            gauge(
                pets_key(probe::SCHEMA_VIOLATION_INFO).with("pointer", "/0/id").with("message", "expected integer"),
                V::Int(1),
            ),
        ]);
        m.extend(pets);
        let service = |name: &str| SeriesKey::new(name).with(probe::SERVICE, "shop");
        m.extend([
            gauge(service(probe::SERVICE_OPERATIONS), V::Int(6)),
            gauge(service(probe::SERVICE_GETS), V::Int(5)),
            gauge(service(probe::SERVICE_CALLABLE), V::Int(4)),
            gauge(service(probe::SERVICE_PROBED), V::Int(3)),
            gauge(service(probe::SERVICE_SPEC_OK), V::Int(1)),
            gauge(
                service(probe::SERVICE_INFO)
                    .with("title", "Shop")
                    .with("version", "1.2")
                    .with("base_url", "https://shop.example")
                    .with("spec_url", "https://shop.example/openapi.json")
                    .with("error", ""),
                V::Int(1),
            ),
            gauge(
                service(probe::SERVICE_UNPROBED_INFO)
                    .with("operation", "deletePet")
                    .with("method", "DELETE")
                    .with("path", "/pets/{id}")
                    .with("reason", "unsafe method"),
                V::Int(1),
            ),
        ]);
        m
    }

    /// Feeds `results` (status, duration) of `shop.health` to host `id`, a probe every 10 s,
    /// the last 10 s before `now`, as the agent's delta encoder would.
    fn feed(twin: &mut Twin, id: &str, dc: &str, now: i64, results: &[(i64, f64)]) -> Vec<i64> {
        let who = AgentIdentity { id: id.into(), dc: dc.into() };
        let hello = Hello {
            agent_version: "t".into(),
            incarnation: 1,
            agent_time_ms: now,
            interval_ms: 60_000,
            host: Default::default(),
        };
        twin.handle_hello(&who, 1, &hello, now);
        let mut enc = DeltaEncoder::new(100);
        let mut stamps = Vec::new();
        for (i, (status, duration)) in results.iter().enumerate() {
            let probe_ts = now - 10_000 * (results.len() - i) as i64;
            let tick = enc.encode(&Sample::new(probe_ts + 300, probe_metrics(probe_ts, *status, *duration)));
            twin.handle_batch(id, 1, &Batch { incarnation: 1, seq: i as u64 + 1, ticks: vec![tick] }, now);
            stamps.push(probe_ts);
        }
        stamps
    }

    async fn get(app: &Router, path: &str, token: &str) -> (StatusCode, Value) {
        let request =
            Request::get(path).header(AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&body).expect("JSON"))
    }

    fn vantage<'a>(endpoint: &'a Value, host: &str) -> &'a Value {
        let list = endpoint["vantages"].as_array().expect("vantages");
        list.iter().find(|v| v["host"] == host).unwrap_or_else(|| panic!("no vantage {host} in {endpoint}"))
    }

    #[tokio::test]
    async fn endpoints_across_two_dcs() {
        let dir = std::env::temp_dir().join(format!("twinwatch-api-endpoints-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokens = Tokens::new(dir.join("tokens"));
        let token = tokens.create(Role::Read, "test", 0).unwrap().secret;

        let now = super::now_ms();
        let mut twin = Twin::default();
        // Frankfurt sees the shop up; New York sees it fail since two results ago.
        let fra = feed(&mut twin, "fra-1", "fra", now, &[(200, 0.1), (200, 0.2), (200, 0.3), (200, 0.4), (200, 0.5)]);
        let nyc = feed(&mut twin, "nyc-1", "nyc", now, &[(200, 0.2), (200, 0.6), (200, 0.4), (503, 0.1), (503, 0.1)]);
        // A host silent for ten minutes: what it last saw is unknown now.
        feed(&mut twin, "old-1", "fra", now - 600_000, &[(503, 0.1)]);

        let app = router(crate::api::test_state(&dir, twin));

        let (status, list) = get(&app, "/api/v1/endpoints", &token).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let ids: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["shop.health", "shop.listPets"]);
        let health = &list[0];
        assert_eq!(
            (&health["kind"], &health["target"], &health["verdict"], &health["down_dcs"], &health["window"]),
            (&json!("http"), &json!("https://shop.example/"), &json!("partial"), &json!(["nyc"]), &json!("1h"))
        );
        assert!(health.get("service").is_none());
        let (f, n, o) = (vantage(health, "fra-1"), vantage(health, "nyc-1"), vantage(health, "old-1"));
        assert_eq!((&f["dc"], &f["status"], &f["host_status"]), (&json!("fra"), &json!("up"), &json!("online")));
        assert_eq!((&n["dc"], &n["status"], &n["outcome"]), (&json!("nyc"), &json!("down"), &json!("status_mismatch")));
        assert_eq!((&o["status"], &o["host_status"]), (&json!("unknown"), &json!("offline")));
        assert_eq!((f["success_rate"].as_f64(), n["success_rate"].as_f64()), (Some(1.0), Some(0.6)));
        assert_eq!(f["last_probe_ms"], fra[4]);
        assert_eq!(f["last_probe"], twinwatch_common::time::rfc3339(fra[4]));
        assert_eq!(f["last_latency_seconds"], 0.5);
        let pets = &list[1];
        assert_eq!(
            (&pets["verdict"], &pets["service"], &pets["operation"], &pets["method"], &pets["path"]),
            (&json!("up"), &json!("shop"), &json!("listPets"), &json!("GET"), &json!("/pets"))
        );

        let (status, detail) = get(&app, "/api/v1/endpoints/shop.health", &token).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        assert_eq!((&detail["verdict"], &detail["down_dcs"]), (&json!("partial"), &json!(["nyc"])));
        let f = vantage(&detail, "fra-1");
        assert_eq!((&f["results"], &f["window"], &f["success_rate"]), (&json!(5), &json!("1h"), &json!(1.0)));
        // Nearest rank over 0.1 … 0.5: the median is the third value, p95 and p99 the fifth.
        assert_eq!(f["latency"], json!({ "p50": 0.3, "p95": 0.5, "p99": 0.5, "mean": 0.3 }));
        assert_eq!(f["status_classes"], json!({ "1xx": 0, "2xx": 5, "3xx": 0, "4xx": 0, "5xx": 0, "none": 0 }));
        assert_eq!((&f["status_codes"], &f["outcomes"]), (&json!({ "200": 5 }), &json!({ "success": 5 })));
        assert_eq!(f["since"], twinwatch_common::time::rfc3339(fra[0]));
        // Phase i of a result of duration d is d·(i+1)/15: connect of the last result is 0.5·2/15.
        assert_eq!(f["phases"]["connect"]["last"].as_f64(), Some(0.5 * 2.0 / 15.0));
        assert_eq!(f["phases"]["connect"]["median"], 0.04);
        assert_eq!(f["phases"]["ttfb"]["median"], 0.2);
        assert_eq!(f["phases"]["ttfb"]["last"], 0.333333);
        let last = &f["last"];
        assert_eq!(
            (&last["timestamp_ms"], &last["success"], &last["status_code"]),
            (&json!(fra[4]), &json!(true), &json!(200))
        );
        assert_eq!(
            (&last["outcome"], &last["address"], &last["detail"]),
            (&json!("success"), &json!("[::1]:443"), &Value::Null)
        );
        assert_eq!((&last["http_version"], &last["duration"]), (&json!(1.1), &json!(0.5)));
        let tls = &f["tls"];
        assert_eq!(
            (&tls["leaf_expiry_unix"], &tls["earliest_expiry_unix"]),
            (&json!(LEAF_EXPIRY), &json!(LEAF_EXPIRY - 1000))
        );
        assert_eq!(tls["leaf_expiry"], twinwatch_common::time::rfc3339(LEAF_EXPIRY * 1000));
        let left = tls["seconds_left"].as_i64().unwrap();
        assert!((left - (LEAF_EXPIRY - now / 1000)).abs() <= 2, "{left}");
        assert_eq!(tls["sans"], json!(["shop.example", "www.shop.example"]));
        assert_eq!(
            (&tls["issuer"], &tls["version"], &tls["verified"]),
            (&json!("CN=Test CA"), &json!("TLS 1.3"), &json!(true))
        );
        assert_eq!(f["dns"], json!({ "lookup_seconds": 0.004, "answer_count": 1, "answers": ["192.0.2.10"] }));
        assert!(f.get("schema").is_none() && f.get("service").is_none());

        let n = vantage(&detail, "nyc-1");
        // Latency covers the three successes only: 0.2, 0.6, 0.4.
        assert_eq!((&n["latency"]["p50"], &n["latency"]["p99"]), (&json!(0.4), &json!(0.6)));
        assert_eq!((&n["status_classes"]["2xx"], &n["status_classes"]["5xx"]), (&json!(3), &json!(2)));
        assert_eq!(n["outcomes"], json!({ "success": 3, "status_mismatch": 2 }));
        assert_eq!((&n["last"]["status_code"], &n["last"]["success"]), (&json!(503), &json!(false)));

        // The window narrows the statistics: only the last result started in the last 15 s.
        let (_, narrow) = get(&app, "/api/v1/endpoints/shop.health?window=15s", &token).await;
        let n = vantage(&narrow, "nyc-1");
        assert_eq!((&n["results"], &n["success_rate"], &n["window"]), (&json!(1), &json!(0.0), &json!("15s")));
        assert_eq!(n["last_probe_ms"], nyc[4]);

        let (_, pets) = get(&app, "/api/v1/endpoints/shop.listPets", &token).await;
        let f = vantage(&pets, "fra-1");
        assert_eq!(
            f["schema"],
            json!({ "count": 1, "violations": [{ "pointer": "/0/id", "message": "expected integer" }] })
        );
        let service = &f["service"];
        assert_eq!(
            service["coverage"],
            json!({ "operations": 6, "gets": 5, "callable_gets": 4, "probed": 3, "ratio": 0.75 })
        );
        assert_eq!(
            (&service["spec_ok"], &service["title"], &service["error"]),
            (&json!(true), &json!("Shop"), &Value::Null)
        );
        assert_eq!(
            service["unprobed"],
            json!([{ "operation": "deletePet", "method": "DELETE", "path": "/pets/{id}", "reason": "unsafe method" }])
        );

        let (status, services) = get(&app, "/api/v1/services", &token).await;
        assert_eq!(status, StatusCode::OK, "{services}");
        let shop = &services[0];
        assert_eq!(
            (&shop["name"], &shop["endpoints_monitored"], &shop["endpoints_up"]),
            (&json!("shop"), &json!(1), &json!(1))
        );
        assert_eq!(shop["endpoints"], json!([{ "id": "shop.listPets", "operation": "listPets", "verdict": "up" }]));
        assert_eq!((&shop["success_rate"], &shop["latency_p50"]), (&json!(1.0), &json!(0.05)));
        assert_eq!(shop["vantages"].as_array().map(Vec::len), Some(3));
        assert_eq!(services.as_array().map(Vec::len), Some(1));

        let (status, missing) = get(&app, "/api/v1/endpoints/nothing.here", &token).await;
        assert_eq!((status, &missing["error"]), (StatusCode::NOT_FOUND, &json!("not found")));
        let (status, bad) = get(&app, "/api/v1/endpoints?window=soon", &token).await;
        assert_eq!((status, &bad["error"]), (StatusCode::BAD_REQUEST, &json!("bad request")));
        let (status, _) = get(&app, "/api/v1/endpoints", "tw_wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
