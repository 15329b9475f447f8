//! The agent's probes against Debian's blackbox_exporter, on the same loopback targets: the same
//! success or failure, the same status code, the same certificate expiry, comparable phases.
//!
//! blackbox_exporter (`prometheus-blackbox-exporter`) is installed by `cargo xtask test`.

use std::collections::BTreeMap;
use std::time::Duration;

use twinwatch_tests::prometheus::parse;
use twinwatch_tests::web::{Web, INTERMEDIATE_EXPIRY, LEAF_EXPIRY, SLOW};
use twinwatch_tests::{bin, http_get, wait_for, Proc, ReservedPort, TempDir};

const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

/// One series of ours, for `endpoint`, with extra labels written as blackbox_exporter orders them.
fn ours(all: &BTreeMap<String, f64>, endpoint: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let key = match label {
        None => format!("{name}{{endpoint=\"{endpoint}\"}}"),
        Some((k, v)) => format!("{name}{{endpoint=\"{endpoint}\",{k}=\"{v}\"}}"),
    };
    all.get(&key).copied()
}

fn theirs(all: &BTreeMap<String, f64>, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let key = match label {
        None => name.to_owned(),
        Some((k, v)) => format!("{name}{{{k}=\"{v}\"}}"),
    };
    all.get(&key).copied()
}

#[test]
fn the_same_verdicts_as_blackbox_exporter() {
    if !std::path::Path::new(BLACKBOX).exists() {
        panic!("{BLACKBOX} is missing: run the tests with `cargo xtask test`, which installs it");
    }
    let tmp = TempDir::new("blackbox");
    let web = Web::start(&tmp.path().join("web"));
    // Bound, never listening: both sides find the port closed.
    let closed_port = ReservedPort::new();
    let closed = closed_port.port();
    let ca = web.ca_file.display().to_string();

    let bb_config = tmp.path().join("blackbox.yml");
    std::fs::write(
        &bb_config,
        format!(
            "modules:
  http:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
      tls_config:
        ca_file: {ca}
  tcp:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
  tls:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
      tls: true
      tls_config:
        ca_file: {ca}
"
        ),
    )
    .unwrap();
    let mut blackbox = Proc::spawn(
        std::path::Path::new(BLACKBOX),
        // At info it logs the port it got.
        &[&format!("--config.file={}", bb_config.display()), "--web.listen-address=127.0.0.1:0", "--log.level=info"],
        tmp.path().join("blackbox.log"),
    );
    let bb_port = blackbox.wait_logged_addr("msg=\"Listening on\"", "address").port();
    wait_for("blackbox_exporter", Duration::from_secs(20), || {
        matches!(http_get(bb_port, "/-/healthy", None), Ok((200, _))).then_some(())
    });

    let (http, https, untrusted) = (web.http_port, web.https_port, web.untrusted_port);
    // (endpoint, blackbox module, target, our probe's settings)
    let cases = [
        ("secure", "http", format!("https://127.0.0.1:{https}/health"), format!("ca_file = \"{ca}\"")),
        ("untrusted", "http", format!("https://127.0.0.1:{untrusted}/health"), String::new()),
        ("slow", "http", format!("http://127.0.0.1:{http}/slow"), String::new()),
        ("redirect", "http", format!("http://127.0.0.1:{http}/redirect"), String::new()),
        ("missing", "http", format!("http://127.0.0.1:{http}/missing"), String::new()),
        ("closed", "tcp", format!("127.0.0.1:{closed}"), "kind = \"tcp\"".into()),
        ("tls", "tls", format!("127.0.0.1:{https}"), format!("kind = \"tls\"\nca_file = \"{ca}\"")),
    ];
    let mut config = String::from("[probes]\ntimeout = \"5s\"\ninterval = \"10s\"\n");
    for (name, module, target, extra) in &cases {
        let key = if *module == "http" { "url" } else { "target" };
        config.push_str(&format!("[[probe]]\nname = \"{name}\"\n{key} = \"{target}\"\nip = \"ipv4\"\n{extra}\n"));
    }
    let config_path = tmp.path().join("agent.toml");
    std::fs::write(&config_path, config).unwrap();

    // Each side probes each target three times; medians keep one scheduling hiccup from deciding.
    let mut our_runs = Vec::new();
    for _ in 0..3 {
        let out = std::process::Command::new(bin("twinwatch-agent"))
            .args(["--config", config_path.to_str().unwrap(), "probe"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        our_runs.push(parse(&String::from_utf8(out.stdout).unwrap()).expect("the agent's probe output"));
    }
    for (name, module, target, _) in &cases {
        let mut their_runs = Vec::new();
        for _ in 0..3 {
            let (status, text) = http_get(bb_port, &format!("/probe?module={module}&target={target}"), None).unwrap();
            assert_eq!(status, 200, "{text}");
            their_runs.push(parse(&text).expect("blackbox_exporter's probe output"));
        }
        let (us, them) = (&our_runs[0], &their_runs[0]);
        let success = ours(us, name, "probe_success", None);
        assert_eq!(success, theirs(them, "probe_success", None), "{name}: probe_success");
        if *module == "http" {
            assert_eq!(
                ours(us, name, "probe_http_status_code", None),
                theirs(them, "probe_http_status_code", None),
                "{name}: status code"
            );
        }
        if success == Some(1.0) && matches!(*name, "secure" | "tls") {
            assert_eq!(
                ours(us, name, "probe_ssl_earliest_cert_expiry", None),
                theirs(them, "probe_ssl_earliest_cert_expiry", None),
                "{name}: earliest expiry"
            );
            assert_eq!(ours(us, name, "probe_ssl_earliest_cert_expiry", None), Some(INTERMEDIATE_EXPIRY as f64));
            assert_eq!(
                ours(us, name, "twinwatch_probe_tls_leaf_expiry_timestamp_seconds", None),
                Some(LEAF_EXPIRY as f64)
            );
        }
        if *module == "http" && success == Some(1.0) {
            assert_eq!(
                ours(us, name, "probe_http_redirects", None),
                theirs(them, "probe_http_redirects", None),
                "{name}: redirects"
            );
            // Phases: the median of three runs each; loopback phases are all well under 50 ms
            // except the server's deliberate delay, which both must see.
            for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
                let median = |mut v: Vec<f64>| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let label = Some(("phase", phase));
                let a = median(
                    our_runs.iter().map(|r| ours(r, name, "probe_http_duration_seconds", label).unwrap()).collect(),
                );
                let b = median(
                    their_runs.iter().map(|r| theirs(r, "probe_http_duration_seconds", label).unwrap()).collect(),
                );
                let slow = *name == "slow" && phase == "processing";
                if slow {
                    assert!(a >= SLOW.as_secs_f64() && b >= SLOW.as_secs_f64(), "{name} {phase}: ours {a}, theirs {b}");
                    assert!((a - b).abs() < 0.1, "{name} {phase}: ours {a}, theirs {b}");
                } else {
                    assert!(a < 0.05 && b < 0.05, "{name} {phase}: ours {a}, theirs {b}");
                }
                println!("{name:>9} {phase:>10}: ours {:>8.3} ms  blackbox {:>8.3} ms", a * 1e3, b * 1e3);
            }
        }
    }
    // What blackbox_exporter cannot say: why the untrusted certificate failed, and when it expires.
    let us = &our_runs[0];
    assert!(us.keys().any(|k| k.starts_with("twinwatch_probe_result_info{")
        && k.contains("endpoint=\"untrusted\"")
        && k.contains("outcome=\"cert_invalid\"")));
    assert_eq!(
        ours(us, "untrusted", "probe_ssl_earliest_cert_expiry", None),
        Some(twinwatch_tests::web::UNTRUSTED_EXPIRY as f64)
    );
}
