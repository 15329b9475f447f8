//! A small website for probe tests, served on loopback by a real HTTP server (axum), over plain
//! HTTP and over TLS with a certificate chain of known expiry.
//!
//! Paths: `/health` (JSON `{"status":"ok"}`), `/slow` (answers after [`SLOW`]), `/redirect` (302
//! to `/health`), `/flaky` (200, or 503 once [`Web::flaky`] is set), and a pets API described by
//! `/openapi.json` in which `GET /pets/{petId}` answers with a `name` that breaks the schema.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use serde_json::json;

/// The leaf certificate's `notAfter`: 2036-07-08T09:10:11Z.
pub const LEAF_EXPIRY: i64 = 2_099_121_011;
/// The intermediate's `notAfter`, earlier than the leaf's: 2035-03-04T05:06:07Z.
pub const INTERMEDIATE_EXPIRY: i64 = 2_056_597_567;
/// The untrusted, self-signed certificate's `notAfter`: 2034-01-02T03:04:05Z.
pub const UNTRUSTED_EXPIRY: i64 = 2_019_783_845;
/// How long `/slow` takes to answer.
pub const SLOW: Duration = Duration::from_millis(300);

pub struct Web {
    pub http_port: u16,
    /// TLS with leaf + intermediate, trusted through [`Web::ca_file`].
    pub https_port: u16,
    /// TLS with a self-signed certificate nobody trusts.
    pub untrusted_port: u16,
    /// The root CA, PEM.
    pub ca_file: PathBuf,
    /// Set: `/flaky` answers 503.
    pub flaky: Arc<AtomicBool>,
    /// Set: the spec gains `GET /owners`.
    pub spec_v2: Arc<AtomicBool>,
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).expect("valid time")
}

fn params(cn: &str, not_after: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::OrganizationName, "twinwatch tests");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = at(1_700_000_000);
    p.not_after = at(not_after);
    p
}

fn ca_params(cn: &str, not_after: i64) -> CertificateParams {
    let mut p = params(cn, not_after);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn leaf_params(not_after: i64) -> CertificateParams {
    let mut p = params("127.0.0.1", not_after);
    p.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        SanType::DnsName("localhost".try_into().expect("dns")),
    ];
    p
}

/// (certificate chain PEM, key PEM) for the trusted listener, and the root's PEM.
fn trusted_chain() -> (String, String, String) {
    let root_key = KeyPair::generate().expect("key");
    let root = ca_params("twinwatch test root", 2_208_988_800).self_signed(&root_key).expect("root");
    let root_pem = root.pem();
    let root_issuer = Issuer::new(ca_params("twinwatch test root", 2_208_988_800), root_key);
    let mid_key = KeyPair::generate().expect("key");
    let mid =
        ca_params("twinwatch test intermediate", INTERMEDIATE_EXPIRY).signed_by(&mid_key, &root_issuer).expect("mid");
    let mid_issuer = Issuer::new(ca_params("twinwatch test intermediate", INTERMEDIATE_EXPIRY), mid_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params(LEAF_EXPIRY).signed_by(&leaf_key, &mid_issuer).expect("leaf");
    (format!("{}{}", leaf.pem(), mid.pem()), leaf_key.serialize_pem(), root_pem)
}

fn untrusted_chain() -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(UNTRUSTED_EXPIRY).self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

fn acceptor(chain_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<_, _>>().expect("chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS listener for `axum::serve`: connections whose handshake fails are dropped.
pub struct TlsListener {
    pub tcp: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            let handshake = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await;
            if let Ok(Ok(tls)) = handshake {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn spec(v2: bool) -> serde_json::Value {
    let pet = json!({"$ref": "#/components/schemas/Pet"});
    let ok = |schema: serde_json::Value| json!({"200": {"description": "ok", "content": {"application/json": {"schema": schema}}}});
    let mut paths = json!({
        "/pets": {
            "get": {
                "operationId": "listPets",
                "parameters": [{"name": "limit", "in": "query", "required": false, "schema": {"type": "integer"}}],
                "responses": ok(json!({"type": "array", "items": pet})),
            },
            "post": {"operationId": "createPet", "responses": {"201": {"description": "created"}}},
        },
        "/pets/{petId}": {
            "get": {
                "operationId": "getPet",
                "parameters": [{"name": "petId", "in": "path", "required": true, "example": 7, "schema": {"type": "integer"}}],
                "responses": ok(pet.clone()),
            },
        },
        "/pets/{petId}/photos": {
            "get": {
                "operationId": "listPhotos",
                "parameters": [{"name": "petId", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "ok"}},
            },
        },
    });
    if v2 {
        paths["/owners"] = json!({"get": {"operationId": "listOwners", "responses": ok(json!({"type": "array"}))}});
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Pets", "version": if v2 { "2.0.0" } else { "1.0.0" }},
        "paths": paths,
        "components": {"schemas": {"Pet": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "tag": {"type": "string", "nullable": true},
            },
        }}},
    })
}

fn router(flaky: Arc<AtomicBool>, spec_v2: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SLOW).await;
                "slow"
            }),
        )
        .route("/redirect", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/health")]) }))
        .route(
            "/flaky",
            get(move || {
                let down = flaky.load(Relaxed);
                async move {
                    if down {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/openapi.json",
            get(move || {
                let v2 = spec_v2.load(Relaxed);
                async move { Json(spec(v2)) }
            }),
        )
        .route(
            "/pets",
            get(|| async { Json(json!([{"id": 1, "name": "Rex", "tag": null}])) })
                .post(|| async { StatusCode::CREATED }),
        )
        .route("/pets/{id}", get(|| async { Json(json!({"id": 7, "name": 42})) }))
        .route("/pets/{id}/photos", get(|| async { Json(json!([])) }))
        .route("/owners", get(|| async { Json(json!([])) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
}

impl Web {
    /// Starts the site on three loopback ports; it runs until the test process ends.
    pub fn start(dir: &Path) -> Web {
        std::fs::create_dir_all(dir).expect("web dir");
        let (chain, key, root) = trusted_chain();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, root).expect("ca file");
        let (untrusted_cert, untrusted_key) = untrusted_chain();
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let (plain, secure, untrusted) = (bind(), bind(), bind());
        let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
        let web = Web {
            http_port: port(&plain),
            https_port: port(&secure),
            untrusted_port: port(&untrusted),
            ca_file,
            flaky: Arc::new(AtomicBool::new(false)),
            spec_v2: Arc::new(AtomicBool::new(false)),
        };
        let app = router(web.flaky.clone(), web.spec_v2.clone());
        let secure_tls = acceptor(&chain, &key);
        let untrusted_tls = acceptor(&untrusted_cert, &untrusted_key);
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let tokio_listener = |l: std::net::TcpListener| {
                    l.set_nonblocking(true).expect("nonblocking");
                    tokio::net::TcpListener::from_std(l).expect("tokio listener")
                };
                let plain = tokio_listener(plain);
                let secure = TlsListener { tcp: tokio_listener(secure), acceptor: secure_tls };
                let untrusted = TlsListener { tcp: tokio_listener(untrusted), acceptor: untrusted_tls };
                let (a, b, c) = (app.clone(), app.clone(), app);
                let _ = tokio::join!(axum::serve(plain, a), axum::serve(secure, b), axum::serve(untrusted, c));
            });
        });
        web
    }
}
