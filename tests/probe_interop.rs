//! Probes against what real tools make: an OpenAPI 3.1 spec as FastAPI writes it (enum
//! parameters as a `$ref` with sibling `examples`), served over HTTPS with a certificate from a
//! plain `openssl req -x509`, which is self-signed with `CA:TRUE` and given to the agent as its
//! `ca_file`, as one would give it to `curl --cacert`. The real agent binary runs every probe once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use twinwatch_tests::prometheus::parse;
use twinwatch_tests::web::TlsListener;
use twinwatch_tests::{bin, TempDir};

const WEEKDAYS: [&str; 5] = ["mon", "tue", "wed", "thu", "fri"];

/// What FastAPI 0.115 (pydantic 2) serves at `/openapi.json` for a small rota API: an enum path
/// parameter with `Path(examples=["wed"])`, an enum query parameter, an integer path parameter
/// without an example, a POST, and an endpoint behind `OAuth2PasswordBearer`.
fn fastapi_spec() -> Value {
    let ok = |schema: Value| {
        json!({
            "200": {"description": "Successful Response", "content": {"application/json": {"schema": schema}}},
            "422": {"description": "Validation Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}
        })
    };
    let slots = json!({"type": "array", "items": {"$ref": "#/components/schemas/Slot"}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Rota", "version": "0.1.0"},
        "paths": {
            "/": {"get": {"summary": "Root", "operationId": "root__get",
                          "responses": {"200": {"description": "Successful Response",
                                                "content": {"application/json": {"schema": {}}}}}}},
            "/schedule/{day}": {"get": {
                "summary": "Schedule", "operationId": "schedule_schedule__day__get",
                "parameters": [{"name": "day", "in": "path", "required": true,
                                "schema": {"$ref": "#/components/schemas/Weekday", "examples": ["wed"]}}],
                "responses": ok(slots.clone())}},
            "/slots": {"get": {
                "summary": "Slots", "operationId": "slots_slots_get",
                "parameters": [
                    {"name": "day", "in": "query", "required": true, "schema": {"$ref": "#/components/schemas/Weekday"}},
                    {"name": "limit", "in": "query", "required": false,
                     "schema": {"type": "integer", "default": 10, "title": "Limit"}}],
                "responses": ok(slots)}},
            "/staff/{staff_id}": {"get": {
                "summary": "Read Staff", "operationId": "read_staff_staff__staff_id__get",
                "parameters": [{"name": "staff_id", "in": "path", "required": true,
                                "schema": {"type": "integer", "title": "Staff Id"}}],
                "responses": ok(json!({}))}},
            "/staff/": {"post": {
                "summary": "Add Staff", "operationId": "add_staff_staff__post",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}, "required": true},
                "responses": ok(json!({}))}},
            "/users/me": {"get": {
                "summary": "Me", "operationId": "me_users_me_get",
                "responses": {"200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}},
                "security": [{"OAuth2PasswordBearer": []}]}}
        },
        "components": {
            "schemas": {
                "Weekday": {"type": "string", "enum": WEEKDAYS, "title": "Weekday"},
                "Slot": {"properties": {"day": {"$ref": "#/components/schemas/Weekday"},
                                        "start": {"type": "string", "title": "Start"}},
                         "type": "object", "required": ["day", "start"], "title": "Slot"},
                "HTTPValidationError": {"properties": {"detail": {"items": {"$ref": "#/components/schemas/ValidationError"},
                                                                  "type": "array", "title": "Detail"}},
                                        "type": "object", "title": "HTTPValidationError"},
                "ValidationError": {"properties": {
                    "loc": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "type": "array", "title": "Location"},
                    "msg": {"type": "string", "title": "Message"},
                    "type": {"type": "string", "title": "Error Type"}},
                    "type": "object", "required": ["loc", "msg", "type"], "title": "ValidationError"}
            },
            "securitySchemes": {"OAuth2PasswordBearer": {"type": "oauth2", "flows": {"password": {"scopes": {}, "tokenUrl": "token"}}}}
        }
    })
}

/// The rota API: a weekday outside the enum is a 422, as FastAPI answers it.
fn rota(day: &str) -> (StatusCode, Json<Value>) {
    if WEEKDAYS.contains(&day) {
        (StatusCode::OK, Json(json!([{"day": day, "start": "09:00"}])))
    } else {
        let detail = json!({"detail": [{"loc": ["path", "day"], "msg": "Input should be a weekday", "type": "enum"}]});
        (StatusCode::UNPROCESSABLE_ENTITY, Json(detail))
    }
}

fn router() -> Router {
    Router::new()
        .route("/openapi.json", get(|| async { Json(fastapi_spec()) }))
        .route("/", get(|| async { Json(json!({"message": "rota"})) }))
        .route("/schedule/{day}", get(|day: UrlPath<String>| async move { rota(&day) }))
        .route(
            "/slots",
            get(|q: Query<BTreeMap<String, String>>| async move { rota(q.get("day").map_or("", String::as_str)) }),
        )
}

/// Serves the rota API over HTTPS with `cert.pem` and `key.pem` from `dir` on a loopback port.
fn serve_https(dir: &Path) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("cert.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("openssl's key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("openssl's certificate and key");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let tcp = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(TlsListener { tcp, acceptor }, router()).await;
        });
    });
    port
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one `twinwatch_probe_result_info` series of `endpoint`.
fn result_info<'a>(all: &'a BTreeMap<String, f64>, endpoint: &str) -> &'a str {
    let endpoint = format!("endpoint=\"{endpoint}\"");
    all.keys()
        .find(|k| k.starts_with("twinwatch_probe_result_info{") && k.contains(&endpoint))
        .unwrap_or_else(|| panic!("no result for {endpoint}"))
}

#[test]
fn openssl_self_signed_ca_file_and_a_fastapi_spec() {
    let tmp = TempDir::new("probe-interop");
    let dir = tmp.path();
    // Exactly what a README tells one to type; OpenSSL 3 marks the certificate CA:TRUE.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
    );
    let text = openssl(dir, &["x509", "-in", "cert.pem", "-noout", "-text"]);
    assert!(text.contains("CA:TRUE"), "the certificate this test is about: {text}");
    let port = serve_https(dir);

    let config = format!(
        r#"[probes]
timeout = "5s"
[[probe]]
name = "pinned"
url = "https://localhost:{port}/"
ip = "ipv4"
ca_file = "cert.pem"
[[probe]]
name = "by-address"
url = "https://127.0.0.1:{port}/"
ca_file = "cert.pem"
[[probe]]
name = "no-ca-file"
url = "https://localhost:{port}/"
ip = "ipv4"
[[service]]
name = "rota"
base_url = "https://localhost:{port}"
ip = "ipv4"
ca_file = "cert.pem"
"#
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(bin("twinwatch-agent"))
        .args(["--config", config_path.to_str().unwrap(), "probe"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let all = parse(&String::from_utf8(out.stdout).unwrap()).expect("the agent's probe output");
    let value = |key: &str| all.get(key).copied().unwrap_or_else(|| panic!("no {key} in {all:#?}\n{stderr}"));

    // Trusted as curl --cacert trusts it, for the name it carries.
    assert_eq!(value("probe_success{endpoint=\"pinned\"}"), 1.0, "{}", result_info(&all, "pinned"));
    assert_eq!(value("twinwatch_probe_tls_verified{endpoint=\"pinned\"}"), 1.0);
    // Refused for another name, and when not in ca_file; the reasons are sentences.
    let refused = [
        ("by-address", "certificate is not valid for host 127.0.0.1 (it is for localhost)"),
        ("no-ca-file", "self-signed certificate used as a server certificate is not in ca_file: CN=localhost"),
    ];
    for (endpoint, reason) in refused {
        let info = result_info(&all, endpoint);
        assert!(info.contains("outcome=\"cert_invalid\""), "{info}");
        assert!(info.contains(&format!("detail=\"{reason}\"")), "{info}");
    }

    // The spec loaded over that TLS; the enum parameter's sibling example is used, and accepted.
    let schedule = "rota.schedule_schedule__day__get";
    assert_eq!(value(&format!("probe_success{{endpoint=\"{schedule}\"}}")), 1.0, "{}", result_info(&all, schedule));
    let info = format!("endpoint=\"{schedule}\"");
    assert!(
        all.keys().any(|k| k.starts_with("twinwatch_probe_info{")
            && k.contains(&info)
            && k.contains(&format!("target=\"https://localhost:{port}/schedule/wed\""))),
        "{all:#?}"
    );
    assert_eq!(
        value("probe_success{endpoint=\"rota.slots_slots_get\"}"),
        1.0,
        "{}",
        result_info(&all, "rota.slots_slots_get")
    );
    // Coverage: root, schedule and slots of the four GETs callable without credentials; the staff
    // lookup has no example, /users/me needs a token, the POST is no GET.
    let service = |name: &str| value(&format!("{name}{{service=\"rota\"}}"));
    assert_eq!(service("twinwatch_service_operations_probed"), 3.0);
    assert_eq!(service("twinwatch_service_operations_callable"), 4.0);
    assert_eq!(service("twinwatch_service_operations_get"), 5.0);
    assert_eq!(service("twinwatch_service_operations"), 6.0);
    assert_eq!(service("twinwatch_service_coverage_ratio"), 0.75);
    let unprobed = all.keys().find(|k| k.starts_with("twinwatch_service_unprobed_info{") && k.contains("read_staff"));
    assert!(unprobed.is_some_and(|k| k.contains("has no example or default")), "{all:#?}");
}
