//! The API under hostile input, with the real binaries on loopback: history parameters that
//! once aborted the aggregator, a slowloris, bodies declared huge or sent slowly, and every
//! error the server can emit, each answered as JSON `{error, detail, request_id}` while ingest
//! goes on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use twinwatch_tests::http::{parse, request, request_tls, Answer};
use twinwatch_tests::{http_get, start_agent, wait_for, Aggregator, TempDir};

/// Sends `raw` as it is and reads the whole answer (the server closes after an error).
fn raw(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // A refused head may be answered before it is all written: ignore a write the server cut.
    let _ = stream.write_all(raw);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    parse(&response)
}

/// `a` is an error in the API's shape: JSON with a string `error`, a `detail`, and the
/// `request_id` its `X-Request-Id` header gives.
#[track_caller]
fn assert_json_error(what: &str, a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{what}: {a:?}");
    assert!(a.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{what}: {a:?}");
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {a:?}"));
    assert!(v["error"].is_string() && !v["detail"].is_null(), "{what}: {v}");
    assert!(v["request_id"].is_string() && v["request_id"].as_str() == a.header("x-request-id"), "{what}: {a:?}");
}

fn stored_batches(agg: &Aggregator, host: &str) -> Option<u64> {
    let v = agg.get(&format!("/api/v1/hosts/{host}/batches"))?;
    v["stored"].as_array()?.iter().map(|r| r["count"].as_u64()).sum()
}

#[test]
fn history_parameters_that_aborted_the_aggregator_are_refused_and_ingest_goes_on() {
    let tmp = TempDir::new("hostile-history");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("box-1", "dc1", &agent_dir.join("certs"));
    let _agent = start_agent(&agent_dir, agg.quic_port, "200ms");
    wait_for("history of node_load1", Duration::from_secs(30), || {
        let v = agg.get("/api/v1/hosts/box-1/metrics/node_load1")?;
        (!v["series"][0]["points"].as_array()?.is_empty()).then_some(())
    });
    let base = "/api/v1/hosts/box-1/metrics/node_load1";
    let refused = [
        "from=-inf",
        "from=-1e300",
        "from=-9223372036854775808",
        "from=-9e15&to=9e15&step=3600&trend=true",
        "from=9e15&trend=true",
        "from=NaN",
        "to=NaN",
        "to=inf",
        "to=1e300",
        "from=1e300",
        "from=2000&to=1000",
        "from=1000&to=1000",
        "from=0&to=9e15&step=1",
        "step=0",
        "step=-5",
        "step=NaN",
        "step=inf",
        "step=1e300",
        "step=100000000000000d",
        "from=10000-01-01T00:00:00Z",
        "from=%E2%82%AC",
        "from=2026-13-01T00:00:00Z",
    ];
    for query in refused {
        let path = format!("{base}?{query}");
        let a =
            request(agg.http_addr(), "GET", &path, Some(&agg.token), None).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_json_error(&path, &a, 400);
        let detail = a.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "{path}: a detail that says what was wrong");
    }
    // Still alive, still ingesting: more batches stored after the barrage than before it.
    let before = stored_batches(&agg, "box-1").expect("batches");
    wait_for("ingest going on", Duration::from_secs(20), || (stored_batches(&agg, "box-1")? > before).then_some(()));
    // A legal query still answers.
    let a = request(agg.http_addr(), "GET", &format!("{base}?step=1"), Some(&agg.token), None).expect("query");
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn a_slowloris_does_not_delay_health_or_a_token_holder_and_is_closed() {
    let tmp = TempDir::new("hostile-slowloris");
    let agg = Aggregator::start_with(&tmp.path().join("agg"), "[http]\nheader_timeout = \"3s\"\n");
    // This test holds 2,000 sockets of its own.
    raise_fd_limit();
    let mut half_open = Vec::new();
    for _ in 0..2000 {
        let mut s = TcpStream::connect_timeout(&agg.http_addr(), Duration::from_secs(5)).expect("connect");
        s.write_all(b"GET /api/v1/hosts HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").expect("half a head");
        half_open.push(s);
    }
    // Every one of these is answered while the 2,000 hang (each waits at most 5 s: a server that
    // cannot take new connections fails here).
    for _ in 0..5 {
        let (status, body) = http_get(agg.http_port, "/health", None).expect("health answered");
        assert_eq!(status, 200, "{body}");
        let (status, body) = http_get(agg.http_port, "/api/v1/hosts", Some(&agg.token)).expect("hosts answered");
        assert_eq!(status, 200, "{body}");
    }
    // The half-sent heads are closed once their header timeout passes.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &mut half_open {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).expect("timeout");
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a half-open connection was still open 30 s later: {e}"),
        }
    }
}

#[test]
fn a_tls_slowloris_does_not_keep_a_real_client_from_its_handshake() {
    let tmp = TempDir::new("hostile-tls-slowloris");
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    agg.restart_with_tls();
    raise_fd_limit();
    // 2,000 connections that never send a ClientHello, far past the handshakes allowed at once.
    let silent: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect_timeout(&agg.http_addr(), Duration::from_secs(5)).expect("connect"))
        .collect();
    let ca = agg.certs_dir().join("ca.crt");
    for _ in 0..5 {
        let a = request_tls(agg.http_addr(), "localhost", &ca, "GET", "/api/v1/hosts", Some(&agg.token))
            .expect("a real client's handshake and request, while 2,000 sit silent");
        assert_eq!(a.status, 200, "{a:?}");
    }
    drop(silent);
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit write and read the struct given, nothing else.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(limit.rlim_cur >= 4096, "need 4096 file descriptors, have {}", limit.rlim_cur);
}

#[test]
fn bodies_declared_huge_or_sent_slowly_are_refused_at_once() {
    let tmp = TempDir::new("hostile-bodies");
    let agg = Aggregator::start_with(&tmp.path().join("agg"), "[http]\nbody_timeout = \"1s\"\n");
    let admin = agg.cli(&["tokens", "create", "--role", "admin", "--name", "ops"]);
    let admin = String::from_utf8_lossy(&admin.stdout).trim().to_owned();
    for path in ["/api/v1/tokens", "/api/v1/hosts", "/health"] {
        let method = if path == "/api/v1/tokens" { "POST" } else { "GET" };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{}}"
        );
        let started = Instant::now();
        let a = raw(agg.http_addr(), head.as_bytes());
        assert_json_error(&format!("1 TB declared to {path}"), &a, 413);
        assert!(started.elapsed() < Duration::from_secs(5), "answered at once, not after the body");
    }
    // Ten bytes declared, two sent: 408 once the body timeout passes.
    let head = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{}}"
    );
    let a = raw(agg.http_addr(), head.as_bytes());
    assert_json_error("a body that never arrives", &a, 408);
    // Sent larger than allowed without declaring it (chunked): 413.
    let mut head = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..40 {
        head.extend_from_slice(format!("{:x}\r\n{}\r\n", 32 << 10, "x".repeat(32 << 10)).as_bytes());
    }
    head.extend_from_slice(b"0\r\n\r\n");
    let a = raw(agg.http_addr(), &head);
    assert_json_error("1.25 MiB chunked", &a, 413);
}

#[test]
fn every_error_the_server_emits_is_json() {
    let tmp = TempDir::new("hostile-errors");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let addr = agg.http_addr();
    let t = &agg.token;
    let get = |path: &str| request(addr, "GET", path, Some(t), None).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_json_error("unknown path", &get("/nothing/here"), 404);
    assert_json_error("unknown host", &get("/api/v1/hosts/nobody"), 404);
    assert_json_error("path that is not UTF-8", &get("/api/v1/hosts/%ff%fe"), 400);
    assert_json_error("metric path not UTF-8", &get("/api/v1/hosts/a/metrics/%c3%28"), 400);
    assert_json_error("bad window", &get("/api/v1/endpoints?window=soon"), 400);
    let a = request(addr, "DELETE", "/api/v1/hosts", Some(t), None).expect("405");
    assert_json_error("method not allowed", &a, 405);
    assert!(a.header("allow").is_some_and(|v| v.contains("GET")), "{a:?}");
    let a = request(addr, "PUT", "/health", None, None).expect("405");
    assert_json_error("method not allowed on /health", &a, 405);
    // Heads hyper refuses before any handler runs.
    assert_json_error("garbage request line", &raw(addr, b"BLAH\r\n\r\n"), 400);
    assert_json_error("bad header", &raw(addr, b"GET /health HTTP/1.1\r\nHost localhost\r\n\r\n"), 400);
    let long_uri = format!("GET /health?{} HTTP/1.1\r\nHost: localhost\r\n\r\n", "a".repeat(100 << 10));
    let a = raw(addr, long_uri.as_bytes());
    assert!(matches!(a.status, 414 | 431), "{a:?}");
    assert_json_error("URI too long", &a, a.status);
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_json_error("too many headers", &raw(addr, many.as_bytes()), 431);
    let big = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "b".repeat(100 << 10));
    assert_json_error("header too large", &raw(addr, big.as_bytes()), 431);
    // Still serving.
    assert_eq!(http_get(agg.http_port, "/health", None).expect("health").0, 200);
}
