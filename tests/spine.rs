//! The spine, end to end: real agent and aggregator binaries over QUIC with mutual TLS on
//! loopback, read back through the REST API.

use std::time::Duration;

use serde_json::Value;
use twinwatch_tests::{bin, http_get, start_agent, wait_for, Aggregator, TempDir};

fn mem_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024.0
}

fn cpu_seconds(host: &Value) -> f64 {
    host["cpu"]["seconds_total"].as_object().map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum())
}

#[test]
fn host_appears_with_plausible_values() {
    let tmp = TempDir::new("plausible");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("box-1", "dc2", &agent_dir.join("certs"));
    let _agent = start_agent(&agent_dir, agg.quic_port, "200ms");

    let first = wait_for("host box-1 with CPU counters", Duration::from_secs(15), || {
        agg.get("/api/v1/hosts/box-1").filter(|h| cpu_seconds(h) > 0.0)
    });
    assert_eq!(first["dc"], "dc2");
    assert_eq!(first["status"], "online");
    assert_eq!(first["hostname"].as_str().unwrap(), nix::unistd::gethostname().unwrap().to_str().unwrap());
    assert_eq!(first["memory"]["total_bytes"].as_f64(), Some(mem_total_bytes()));
    assert!(first["memory"]["available_bytes"].as_f64().unwrap() > 0.0);
    assert!(first["filesystems"].as_array().unwrap().iter().any(|f| f["mountpoint"] == "/"));
    assert!(first["network"].as_array().unwrap().iter().any(|n| n["device"] == "lo"));

    // CPU time only grows: wait for a later sample and compare.
    let t0 = cpu_seconds(&first);
    let later = wait_for("CPU seconds to increase", Duration::from_secs(10), || {
        agg.get("/api/v1/hosts/box-1").filter(|h| cpu_seconds(h) > t0)
    });
    assert!(later["cpu"]["usage_percent"].as_f64().is_some_and(|u| (0.0..=100.0).contains(&u)));

    let list = agg.get("/api/v1/hosts").unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "box-1");
}

#[test]
fn api_needs_a_token() {
    let tmp = TempDir::new("token");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let (status, body) = http_get(agg.http_port, "/api/v1/hosts", None).unwrap();
    assert_eq!(status, 401);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "unauthorized");
    assert_eq!(http_get(agg.http_port, "/api/v1/hosts", Some("tw_wrong")).unwrap().0, 401);
    assert_eq!(http_get(agg.http_port, "/health", None).unwrap().0, 200);
    assert_eq!(http_get(agg.http_port, "/health/live", None).unwrap().0, 200);
    let (status, body) = http_get(agg.http_port, "/api/v1/hosts/nobody", Some(&agg.token)).unwrap();
    assert_eq!(status, 404, "{body}");
}

#[test]
fn agent_from_a_foreign_ca_is_refused() {
    let tmp = TempDir::new("foreign");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    // A second, unrelated CA issues a certificate for a plausible-looking agent.
    let other = Aggregator::start(&tmp.path().join("other"));
    let intruder_dir = tmp.path().join("intruder");
    other.issue("intruder", "dc1", &intruder_dir.join("certs"));
    // The intruder trusts the real aggregator's CA, so only its own certificate is at fault.
    std::fs::copy(agg.certs_dir().join("ca.crt"), intruder_dir.join("certs/ca.crt")).unwrap();
    let intruder = start_agent(&intruder_dir, agg.quic_port, "200ms");

    // A legitimate agent alongside shows the aggregator is working meanwhile.
    let good_dir = tmp.path().join("good");
    agg.issue("good", "dc1", &good_dir.join("certs"));
    let _good = start_agent(&good_dir, agg.quic_port, "200ms");
    wait_for("the legitimate agent", Duration::from_secs(15), || agg.get("/api/v1/hosts/good"));

    let log = agg.proc.as_ref().unwrap();
    wait_for("the refusal in the aggregator's log", Duration::from_secs(15), || {
        log.log_text().contains("agent refused").then_some(())
    });
    let hosts = agg.get("/api/v1/hosts").unwrap();
    let ids: Vec<&str> = hosts.as_array().unwrap().iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(ids, ["good"]);
    assert!(!intruder.log_text().contains("connected to aggregator"), "intruder connected:\n{}", intruder.log_text());
}

#[test]
fn aggregator_kill9_and_restart_loses_and_duplicates_nothing() {
    let tmp = TempDir::new("kill9");
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("steady", "dc1", &agent_dir.join("certs"));
    let _agent = start_agent(&agent_dir, agg.quic_port, "100ms");

    let stored = |agg: &Aggregator| agg.get("/api/v1/hosts/steady/batches");
    let through = |v: &Value| {
        v["stored"].as_array().and_then(|a| a.last()).and_then(|r| r["runs"].as_array()?.last()?[1].as_u64())
    };
    wait_for("20 stored batches", Duration::from_secs(20), || stored(&agg).filter(|v| through(v) >= Some(20)));

    agg.proc.as_mut().unwrap().kill9();
    // The outage: the agent keeps sampling into its buffer while the aggregator is down.
    std::thread::sleep(Duration::from_millis(1500));
    agg.restart();
    let before_restart = stored(&agg).and_then(|v| through(&v)).unwrap();
    let after = wait_for("the agent to reconnect and catch up", Duration::from_secs(30), || {
        stored(&agg).filter(|v| through(v) >= Some(before_restart + 30))
    });

    let incarnations = after["stored"].as_array().unwrap();
    assert_eq!(incarnations.len(), 1, "one agent incarnation: {after}");
    let runs = incarnations[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "stored sequence numbers have a hole: {after}");
    let (first, last) = (runs[0][0].as_u64().unwrap(), runs[0][1].as_u64().unwrap());
    assert_eq!(first, 1);
    assert_eq!(incarnations[0]["count"].as_u64(), Some(last), "{after}");
    // The counters come from the same response as the runs, but the twin may have moved on by a
    // batch or two while the store was scanned: never behind, though. The backlog left by the
    // outage arrives behind the live keyframe, so its batches are backfilled rather than applied.
    let decoded = |c: &Value| c["batches_applied"].as_u64().unwrap() + c["batches_backfilled"].as_u64().unwrap();
    assert!(decoded(&after["counters"]) >= last, "fewer batches decoded than stored: {after}");
    // At one instant, in the twin's own view, every stored batch was decoded exactly once.
    let host = agg.get("/api/v1/hosts/steady").unwrap();
    assert_eq!(
        Some(decoded(&host["ingest"]["counters"])),
        host["ingest"]["stored_through"].as_u64(),
        "batches decoded twice or skipped: {host}"
    );
    assert!(agg.proc.as_ref().unwrap().log_text().contains("agent connected"));
}

/// Runs `binary --config <file with text> args…` and expects a failure naming `file:line: key`.
fn assert_config_error(tmp: &TempDir, binary: &str, text: &str, args: &[&str], line: usize, key: &str) {
    let path = tmp.path().join(format!("{binary}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(twinwatch_tests::bin(binary))
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{binary} accepted a bad config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:{line}: key `{key}`", path.display())), "{stderr}");
}

#[test]
fn a_bad_config_names_file_line_and_key() {
    let tmp = TempDir::new("badconfig");
    let agent = "aggregator = \"127.0.0.1:4433\"\n\n[buffer]\nmax_bytes = \"lots\"\n";
    assert_config_error(&tmp, "twinwatch-agent", agent, &["check"], 4, "max_bytes");
    let aggregator = "http_listen = \"127.0.0.1:8080\"\nofline_after = \"5s\"\n";
    assert_config_error(&tmp, "twinwatch-aggregator", aggregator, &["run"], 2, "ofline_after");
}

#[test]
fn an_expired_certificate_is_refused_and_a_dc_cannot_be_claimed_in_config() {
    let tmp = TempDir::new("expired");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    // A certificate from the right CA, for the right kind of agent, that expired in 2021.
    let dir = tmp.path().join("stale");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca_pem = std::fs::read_to_string(agg.certs_dir().join("ca.crt")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(agg.certs_dir().join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "stale");
    p.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "dc1");
    p.not_before = time::OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(1_609_459_200).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(certs.join("agent.crt"), cert.pem()).unwrap();
    std::fs::write(certs.join("agent.key"), key.serialize_pem()).unwrap();
    std::fs::write(certs.join("ca.crt"), ca_pem).unwrap();
    let stale = start_agent(&dir, agg.quic_port, "200ms");

    let log = agg.proc.as_ref().unwrap();
    let refusal = wait_for("the refusal in the aggregator's log", Duration::from_secs(15), || {
        log.log_text().lines().find(|l| l.contains("agent refused")).map(str::to_owned)
    });
    assert!(refusal.to_lowercase().contains("expired"), "the log says why: {refusal}");
    assert!(agg.get("/api/v1/hosts/stale").is_none(), "an expired agent never reaches the twin");
    assert!(!stale.log_text().contains("connected to aggregator"), "{}", stale.log_text());

    // The DC comes from the certificate alone: a config that names one is refused, with its line.
    let config = tmp.path().join("claim.toml");
    std::fs::write(&config, "aggregator = \"127.0.0.1:4433\"\ndc = \"dc1\"\n").unwrap();
    let out = std::process::Command::new(bin("twinwatch-agent"))
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("claim.toml:2") && err.contains("`dc`"), "{err}");
}
