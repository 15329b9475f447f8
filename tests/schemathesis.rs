//! The API against its own description: schemathesis (pinned in `tests/schemathesis/`, installed
//! by `cargo xtask test`) reads `/api/v1/openapi.json` from a live aggregator holding real data (an
//! agent's host twin and history, a service probed from its OpenAPI spec) and sends generated and
//! mutated requests to every operation, with a read token and with an admin token. No answer may
//! be a 5xx, every answer must conform to the description, and the aggregator must still be alive
//! afterwards (and still ingesting after the read token's run, which can change nothing).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use twinwatch_tests::web::Web;
use twinwatch_tests::{bin, wait_for, Aggregator, Proc, TempDir};

/// schemathesis' `st`: `TWINWATCH_SCHEMATHESIS`, as `cargo xtask test` sets it.
fn st() -> PathBuf {
    let path = std::env::var_os("TWINWATCH_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        panic!("TWINWATCH_SCHEMATHESIS is not set: run `cargo xtask test`, which installs schemathesis and sets it")
    });
    assert!(path.exists(), "{} does not exist: run `cargo xtask test`", path.display());
    path
}

/// The counts of a run's summary, as schemathesis prints them.
fn summary(out: &str) -> String {
    out.lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("Selected:")
                || l.starts_with("Tested:")
                || l.contains(" generated,")
                || l.starts_with("Seed:")
        })
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

fn run(agg: &Aggregator, token: &str, label: &str, report: &std::path::Path) {
    let url = format!("http://{}/api/v1/openapi.json", agg.http_addr());
    let mut cmd = Command::new(st());
    cmd.arg("run")
        .arg(&url)
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        // Each operation answers `400` to a value its description allows but the API cannot use
        // (an RFC 3339 string outside 1970..9999, a `window` that is not a duration, a host that
        // does not exist answering `404`): the description types them as strings, so "accepted
        // when valid" does not hold by construction. Everything else is checked.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "40", "--seed", "1", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--request-timeout", "10", "--max-time", "150"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .arg("--report-dir")
        .arg(report)
        .args(["--report", "junit"])
        // Its cache (crashes it replays next time) stays with this run, out of the tree.
        .current_dir(report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(Stdio::null());
    std::fs::create_dir_all(report).expect("report dir");
    let out = cmd.output().expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("schemathesis with the {label} token: operations and cases\n{}", summary(&stdout));
    assert!(out.status.success(), "schemathesis ({label} token) failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("API Operations:"), "no summary:\n{stdout}");
}

#[test]
fn schemathesis_finds_nothing_with_read_and_admin_tokens() {
    let tmp = TempDir::new("schemathesis");
    let web = Web::start(&tmp.path().join("web"));
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    let dir = tmp.path().join("agent");
    agg.issue("edge", "dc2", &dir.join("certs"));
    let config = format!(
        r#"aggregator = "127.0.0.1:{quic}"
server_name = "localhost"
state_dir = "{state}"
interval = "1s"
[[probe]]
name = "site"
url = "http://127.0.0.1:{http}/health"
interval = "1s"
[[service]]
name = "pets"
base_url = "http://127.0.0.1:{http}"
interval = "1s"
"#,
        quic = agg.quic_port,
        state = dir.display(),
        http = web.http_port,
    );
    std::fs::write(dir.join("agent.toml"), config).expect("agent config");
    let cfg = dir.join("agent.toml");
    let _agent =
        Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().expect("utf-8"), "run"], dir.join("agent.log"));
    wait_for("a host with history and probed endpoints", Duration::from_secs(30), || {
        let history = agg.get("/api/v1/hosts/edge/metrics/node_load1")?;
        let endpoints = agg.get("/api/v1/endpoints")?;
        (history["series"].as_array()?.len() == 1 && endpoints.as_array()?.len() >= 2).then_some(())
    });
    let admin = String::from_utf8_lossy(&agg.cli(&["tokens", "create", "--role", "admin", "--name", "fuzz"]).stdout)
        .trim()
        .to_owned();
    run(&agg, &agg.token, "read", &tmp.path().join("report-read"));
    // Alive and still ingesting after everything the read token could send.
    let stored = |agg: &Aggregator| -> Option<u64> {
        let v = agg.get("/api/v1/hosts/edge/batches")?;
        v["stored"].as_array()?.iter().map(|r| r["count"].as_u64()).sum()
    };
    let before = stored(&agg).expect("batches");
    wait_for("ingest going on", Duration::from_secs(20), || (stored(&agg)? > before).then_some(()));
    // The admin token may revoke tokens and agents it finds (the fuzzer follows the names the
    // list answers give it), so afterwards the aggregator must be alive and serving, with a token
    // made anew.
    run(&agg, &admin, "admin", &tmp.path().join("report-admin"));
    assert!(agg.proc.as_mut().expect("aggregator").child.try_wait().expect("wait").is_none(), "the aggregator died");
    let fresh = String::from_utf8_lossy(&agg.cli(&["tokens", "create", "--role", "read", "--name", "after"]).stdout)
        .trim()
        .to_owned();
    let (status, body) = twinwatch_tests::http_get(agg.http_port, "/api/v1/hosts", Some(&fresh)).expect("hosts");
    assert_eq!(status, 200, "{body}");
}
