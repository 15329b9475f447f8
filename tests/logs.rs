//! What the binaries write for machines and for people: JSON logs that parse line by line, the
//! request id a client sends found in the answer and in the log, and `twinwatch-agent check`
//! printing header names but never their secrets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use twinwatch_common::time::parse_rfc3339;
use twinwatch_tests::http::{parse, Answer};
use twinwatch_tests::{bin, http_get_at, wait_for, Aggregator, Proc, TempDir};

/// A request with extra header lines (each ending in `\r\n`).
fn request(addr: SocketAddr, path: &str, headers: &str) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    parse(&response)
}

/// Every line of the log at `path` as a JSON object with an RFC 3339 `timestamp`, a `level` and a
/// `message`; fails on the first that is not.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!text.trim().is_empty(), "{} is empty", path.display());
    text.lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
            let stamp = value["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
            assert!(parse_rfc3339(stamp).is_some(), "timestamp {stamp:?} is not RFC 3339: {line}");
            assert!(matches!(value["level"].as_str(), Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")), "{line}");
            assert!(value["message"].is_string(), "no message: {line}");
            assert!(value["target"].is_string(), "no target: {line}");
            value
        })
        .collect()
}

#[test]
fn json_logs_parse_line_by_line_and_carry_the_request_id() {
    let tmp = TempDir::new("logs-json");
    // The first run takes the format from the configuration file.
    let mut agg = Aggregator::start_with(&tmp.path().join("agg"), "log_format = \"json\"\n");
    let first = agg.proc.as_mut().expect("aggregator");
    first.terminate();
    let lines = json_lines(&first.log);
    assert!(lines.iter().any(|l| l["level"] == "INFO"), "no info line in the first run");

    // The second: the file says text, the environment json, and the environment wins. Request
    // lines are at debug.
    let config = agg.dir.join("aggregator.toml");
    let text =
        std::fs::read_to_string(&config).expect("config").replace("log_format = \"json\"", "log_format = \"text\"");
    std::fs::write(&config, text).expect("config");
    let log = agg.dir.join("aggregator-env.log");
    let env = [("TWINWATCH_LOG_FORMAT", "json"), ("TWINWATCH_LOG", "info,twinwatch_aggregator::api=debug")];
    let args = ["--config", config.to_str().expect("utf-8"), "run"];
    agg.proc = Some(Proc::spawn_with_env(&bin("twinwatch-aggregator"), &args, log.clone(), &env));
    let addr = agg.http_addr();
    wait_for("the aggregator ready again", Duration::from_secs(20), || {
        matches!(http_get_at(addr, "/health/ready", None), Ok((200, _))).then_some(())
    });

    // An agent, with the format from the environment over a file that says text.
    let agent_dir = tmp.path().join("agent");
    agg.issue("logs-box", "dc1", &agent_dir.join("certs"));
    let agent_config = agent_dir.join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"200ms\"\nlog_format = \"text\"\n",
            agg.quic_port,
            agent_dir.display()
        ),
    )
    .expect("agent config");
    let agent_args = ["--config", agent_config.to_str().expect("utf-8"), "run"];
    let agent_log = agent_dir.join("agent.log");
    let agent = Proc::spawn_with_env(
        &bin("twinwatch-agent"),
        &agent_args,
        agent_log.clone(),
        &[("TWINWATCH_LOG_FORMAT", "json")],
    );
    wait_for("host logs-box in the API", Duration::from_secs(20), || agg.get("/api/v1/hosts/logs-box"));

    let auth = format!("Authorization: Bearer {}\r\n", agg.token);
    let ok = request(addr, "/api/v1/hosts", &auth);
    assert_eq!(ok.status, 200);
    let generated = ok.header("x-request-id").expect("x-request-id on a 200").to_owned();
    assert!(generated.len() == 16 && generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");

    // The client's id, in the error body, the header and the log.
    let id = "logs-test.404_a1";
    let missing = request(addr, "/api/v1/hosts/no-such-host", &format!("{auth}X-Request-Id: {id}\r\n"));
    assert_eq!(missing.status, 404, "{}", missing.body);
    let body = missing.json();
    assert_eq!((body["error"].as_str(), body["request_id"].as_str()), (Some("not found"), Some(id)), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert_eq!(missing.header("x-request-id"), Some(id));

    // An id that could garble a log line is replaced, in the answer and in the log alike.
    let odd = request(addr, "/api/v1/nowhere", &format!("{auth}X-Request-Id: a\"b{{}}\r\n"));
    assert_eq!(odd.status, 404);
    let replaced = odd.json()["request_id"].as_str().expect("request_id").to_owned();
    assert!(replaced.len() == 16 && odd.header("x-request-id") == Some(replaced.as_str()), "{}", odd.body);
    // Without a token: 401, still with an id.
    let denied = request(addr, "/api/v1/hosts", "");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.json()["request_id"].as_str(), denied.header("x-request-id"));
    // A head hyper refuses before routing gets an id of its own.
    let bare = request(addr, "/api/v1/hosts", "Bad Header\r\n");
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert_eq!(bare.json()["request_id"].as_str(), bare.header("x-request-id"));

    let logged = wait_for("the 404's log line", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().find(|l| l.contains(id) && l.contains("request answered")).map(str::to_owned)
    });
    let line: Value = serde_json::from_str(&logged).expect("JSON");
    assert_eq!((line["status"].as_u64(), line["level"].as_str()), (Some(404), Some("DEBUG")), "{logged}");
    assert_eq!(line["span"]["request_id"], id, "{logged}");
    assert_eq!(line["span"]["path"], "/api/v1/hosts/no-such-host", "{logged}");

    drop(agent);
    if let Some(p) = agg.proc.as_mut() {
        p.terminate();
    }
    let lines = json_lines(&log);
    assert!(lines.iter().any(|l| l["span"]["request_id"] == replaced.as_str()), "the replaced id is not logged");
    assert!(!std::fs::read_to_string(&log).unwrap_or_default().contains("a\\\"b{}"), "the odd id reached the log");
    let agent_lines = json_lines(&agent_log);
    assert!(agent_lines.iter().any(|l| l["message"] == "agent starting"), "agent log: {agent_lines:?}");
}

#[test]
fn agent_check_prints_header_names_but_never_secrets() {
    let tmp = TempDir::new("logs-check");
    let agg_config = tmp.path().join("aggregator.toml");
    std::fs::write(&agg_config, format!("data_dir = \"{}\"\n", tmp.path().join("agg").display())).expect("config");
    let cfg = agg_config.to_str().expect("utf-8");
    let aggregator = bin("twinwatch-aggregator");
    assert!(Command::new(&aggregator).args(["--config", cfg, "certs", "init"]).status().expect("certs init").success());
    let certs = tmp.path().join("agent").join("certs");
    let issued = Command::new(&aggregator)
        .args(["--config", cfg, "certs", "issue", "--agent", "check-box", "--dc", "dc1", "--out"])
        .arg(&certs)
        .status()
        .expect("certs issue");
    assert!(issued.success());

    let secrets = [
        "Bearer probe-token-0123456789",
        "cookie-secret-value",
        "url-password-hunter2",
        "query-secret-k3y",
        "service-api-key-secret",
        "body-secret-pw",
    ];
    let agent_config = tmp.path().join("agent").join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            r#"aggregator = "127.0.0.1:4433"
state_dir = "{}"

[[probe]]
name = "app"
url = "https://ops:{}@app.example.com/health?api_key={}"
method = "POST"
body = '{{"password": "{}"}}'
headers = {{ Authorization = "{}", Cookie = "session={}" }}

[[service]]
name = "pets"
base_url = "https://pets.example.com"
headers = {{ X-Api-Key = "{}" }}
"#,
            tmp.path().join("agent").display(),
            secrets[2],
            secrets[3],
            secrets[5],
            secrets[0],
            secrets[1],
            secrets[4],
        ),
    )
    .expect("agent config");
    let out = Command::new(bin("twinwatch-agent"))
        .args(["--config", agent_config.to_str().expect("utf-8"), "check"])
        .env("TWINWATCH_LOG", "debug")
        .env("NO_COLOR", "1")
        .output()
        .expect("twinwatch-agent check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    for secret in secrets {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret:?} printed:\n{stdout}\n{stderr}");
    }
    let key = std::fs::read_to_string(certs.join("agent.key")).expect("agent.key");
    let key_line = key.lines().nth(1).expect("a line of the key");
    assert!(!stdout.contains(key_line) && !stderr.contains(key_line), "the key's contents printed");
    for shown in [
        "Authorization: <redacted, 29 bytes>",
        "Cookie: <redacted",
        "X-Api-Key: <redacted",
        "body: <redacted",
        "https://ops:<redacted, 20 bytes>@app.example.com/health?api_key=<redacted, 16 bytes>",
        "certificate: agent \"check-box\" in dc \"dc1\"",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }

    // An unknown format in the environment is an error that names the variable.
    let out = Command::new(bin("twinwatch-agent"))
        .args(["--config", agent_config.to_str().expect("utf-8"), "check"])
        .env("TWINWATCH_LOG_FORMAT", "yaml")
        .output()
        .expect("twinwatch-agent check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("TWINWATCH_LOG_FORMAT: \"yaml\" is not a log format"), "{stderr}");
    let out = Command::new(&aggregator)
        .args(["--config", cfg, "check"])
        .env("TWINWATCH_LOG_FORMAT", "yaml")
        .output()
        .expect("twinwatch-aggregator check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("TWINWATCH_LOG_FORMAT"), "{stderr}");
}
