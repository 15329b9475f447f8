//! The service twin end to end: a real agent probes a real local website (HTTPS with a chain of
//! known expiry, an untrusted certificate, a slow path, a redirect, a closed port, a pets API with
//! an OpenAPI spec that one operation breaks) and the aggregator's endpoint API reports it all.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use twinwatch_tests::web::{Web, INTERMEDIATE_EXPIRY, LEAF_EXPIRY, SLOW, UNTRUSTED_EXPIRY};
use twinwatch_tests::{bin, wait_for, Aggregator, Proc, ReservedPort, TempDir};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

/// The endpoint's only vantage, once it has a result.
fn vantage(agg: &Aggregator, id: &str) -> Option<Value> {
    let detail = agg.get(&format!("/api/v1/endpoints/{id}"))?;
    let v = detail["vantages"].get(0)?.clone();
    v["last"]["timestamp_ms"].is_number().then_some(v)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn every_kind_of_probe_through_the_endpoint_api() {
    let tmp = TempDir::new("service-twin");
    let web = Web::start(&tmp.path().join("web"));
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let dir = tmp.path().join("agent");
    agg.issue("edge", "dc2", &dir.join("certs"));
    // Bound, never listening: the probe finds it closed.
    let closed_port = ReservedPort::new();
    let closed = closed_port.port();
    let (http, https, untrusted) = (web.http_port, web.https_port, web.untrusted_port);
    let ca = web.ca_file.display();
    let config = format!(
        r#"aggregator = "127.0.0.1:{quic}"
server_name = "localhost"
state_dir = "{state}"
interval = "1s"
[probes]
interval = "1s"
[[probe]]
name = "secure"
url = "https://127.0.0.1:{https}/health"
ca_file = "{ca}"
json = [{{ path = "$.status", equals = "ok" }}]
[[probe]]
name = "untrusted"
url = "https://127.0.0.1:{untrusted}/health"
[[probe]]
name = "slow"
url = "http://127.0.0.1:{http}/slow"
[[probe]]
name = "closed"
kind = "tcp"
target = "127.0.0.1:{closed}"
[[probe]]
name = "redirect"
url = "http://127.0.0.1:{http}/redirect"
[[probe]]
name = "flaky"
url = "http://127.0.0.1:{http}/flaky"
[[probe]]
name = "tls-only"
kind = "tls"
target = "127.0.0.1:{https}"
ca_file = "{ca}"
[[probe]]
name = "resolver"
kind = "dns"
target = "localhost"
ip = "ipv4"
[[service]]
name = "pets"
base_url = "http://127.0.0.1:{http}"
interval = "1s"
refresh = "1s"
"#,
        quic = agg.quic_port,
        state = dir.display(),
    );
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    let cfg = dir.join("agent.toml");
    let _agent =
        Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().unwrap(), "run"], dir.join("agent.log"));

    let ids = [
        "secure",
        "untrusted",
        "slow",
        "closed",
        "redirect",
        "flaky",
        "tls-only",
        "resolver",
        "pets.listPets",
        "pets.getPet",
    ];
    wait_for("every endpoint with a result", Duration::from_secs(30), || {
        ids.iter().all(|id| vantage(&agg, id).is_some()).then_some(())
    });
    let list = agg.get("/api/v1/endpoints").unwrap();
    let listed: Vec<&str> = list.as_array().unwrap().iter().filter_map(|e| e["id"].as_str()).collect();
    for id in ids {
        assert!(listed.contains(&id), "{id} missing from {listed:?}");
    }

    // HTTPS: every phase present, in order within the total, and the chain's expiry exact.
    let v = vantage(&agg, "secure").unwrap();
    assert_eq!((v["dc"].as_str(), v["status"].as_str()), (Some("dc2"), Some("up")), "{v}");
    let last = |p: &str| f(&v["phases"][p]["last"]);
    let phases: Vec<f64> = ["resolve", "connect", "tls", "processing", "transfer"].iter().map(|p| last(p)).collect();
    assert!(phases.iter().all(|p| *p >= 0.0) && phases[1] > 0.0 && phases[2] > 0.0 && phases[3] > 0.0, "{v}");
    let ttfb = phases[..4].iter().sum::<f64>();
    assert!((last("ttfb") - ttfb).abs() < 1e-5, "{v}");
    assert!(phases.iter().sum::<f64>() <= f(&v["last"]["duration"]) + 1e-5, "the phases fit inside the whole: {v}");
    let tls = &v["tls"];
    assert_eq!(tls["leaf_expiry_unix"].as_i64(), Some(LEAF_EXPIRY), "{tls}");
    assert_eq!(tls["earliest_expiry_unix"].as_i64(), Some(INTERMEDIATE_EXPIRY), "{tls}");
    // Counted from when the probe ran, not from when the test reads it.
    let left = LEAF_EXPIRY - v["last"]["timestamp_ms"].as_i64().unwrap() / 1000;
    assert!((f(&tls["seconds_left"]) as i64 - left).abs() <= 1, "{tls}");
    assert_eq!((tls["verified"].as_bool(), tls["version"].as_str()), (Some(true), Some("TLS 1.3")));
    assert!(tls["sans"].as_array().unwrap().iter().any(|s| s == "127.0.0.1"), "{tls}");
    assert!(tls["issuer"].as_str().unwrap().contains("intermediate"), "{tls}");

    // A certificate nobody trusts: its own outcome, and still its expiry.
    let v = vantage(&agg, "untrusted").unwrap();
    assert_eq!((v["status"].as_str(), v["last"]["outcome"].as_str()), (Some("down"), Some("cert_invalid")), "{v}");
    assert_eq!(v["tls"]["leaf_expiry_unix"].as_i64(), Some(UNTRUSTED_EXPIRY));
    assert_eq!(v["tls"]["verified"].as_bool(), Some(false));

    let v = vantage(&agg, "slow").unwrap();
    assert!(f(&v["phases"]["processing"]["last"]) >= SLOW.as_secs_f64(), "{v}");
    let v = vantage(&agg, "closed").unwrap();
    assert_eq!((v["status"].as_str(), v["last"]["outcome"].as_str()), (Some("down"), Some("connect_failed")), "{v}");
    let v = vantage(&agg, "redirect").unwrap();
    assert_eq!((v["status"].as_str(), v["last"]["redirects"].as_i64()), (Some("up"), Some(1)), "{v}");
    assert_eq!(v["last"]["status_code"].as_i64(), Some(200));
    let v = vantage(&agg, "tls-only").unwrap();
    assert_eq!(v["tls"]["earliest_expiry_unix"].as_i64(), Some(INTERMEDIATE_EXPIRY), "{v}");
    let v = vantage(&agg, "resolver").unwrap();
    assert!(v["dns"]["answers"].as_array().unwrap().iter().any(|a| a == "127.0.0.1"), "{v}");

    // The API from its spec: the broken operation and its pointer, the good one, the coverage.
    let v = vantage(&agg, "pets.getPet").unwrap();
    assert_eq!(v["last"]["outcome"].as_str(), Some("schema_violation"), "{v}");
    let violations = v["schema"]["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{v}");
    assert_eq!(violations[0]["pointer"].as_str(), Some("/name"), "{v}");
    // Coverage is over the GETs the agent may call: listPhotos lacks an example, the POST is no GET.
    let coverage = &v["service"]["coverage"];
    let counts = |c: &Value| ["probed", "callable_gets", "gets", "operations"].map(|k| c[k].as_i64());
    assert_eq!(counts(coverage), [Some(2), Some(3), Some(3), Some(4)], "{v}");
    assert!((f(&coverage["ratio"]) - 2.0 / 3.0).abs() < 1e-9, "{v}");
    let v = vantage(&agg, "pets.listPets").unwrap();
    assert_eq!((v["status"].as_str(), v["schema"]["count"].as_i64()), (Some("up"), Some(0)), "{v}");

    // A new version of the spec changes the probe set.
    web.spec_v2.store(true, std::sync::atomic::Ordering::Relaxed);
    let v = wait_for("the new operation probed", Duration::from_secs(15), || vantage(&agg, "pets.listOwners"));
    let coverage = &v["service"]["coverage"];
    assert_eq!(counts(coverage), [Some(3), Some(4), Some(4), Some(5)], "{v}");
    assert_eq!(coverage["ratio"].as_f64(), Some(0.75), "{v}");

    // A failing endpoint shows as down soon after the probe that failed: on an idle machine
    // within a second or two. The bound is a guard against a gross regression (a result held
    // back for many probe intervals) that a loaded machine running the whole suite cannot trip;
    // the figure is printed.
    assert_eq!(vantage(&agg, "flaky").unwrap()["status"].as_str(), Some("up"));
    web.flaky.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen_at, probed_at) = wait_for("flaky down", Duration::from_secs(30), || {
        let v = vantage(&agg, "flaky").unwrap();
        (v["status"] == "down").then(|| (now_ms(), v["last"]["timestamp_ms"].as_i64().unwrap()))
    });
    let lag = seen_at - probed_at;
    println!("failing probe at {probed_at}, down in the API {lag} ms later");
    assert!((0..15_000).contains(&lag), "down after {lag} ms");
}
