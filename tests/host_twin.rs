//! The whole host twin, end to end: a real agent with its slow sources sped up, read back through
//! the host API and the Prometheus exposition of a real aggregator.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use twinwatch_tests::prometheus::{lines, Line};
use twinwatch_tests::{bin, http_get, wait_for, Aggregator, Proc, TempDir};

/// `name{labels}` -> value from Prometheus text, checking every sample line has a `# TYPE` above
/// (a counter or a gauge) and that a family has at most one `# HELP`, with text.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut helped = std::collections::HashSet::new();
    let mut out = BTreeMap::new();
    for line in lines(text).unwrap_or_else(|e| panic!("{e}")) {
        match line {
            Line::Help { name, text } => {
                assert!(!text.trim().is_empty(), "empty HELP for {name}");
                assert!(helped.insert(name), "two HELP lines for {name}");
            }
            Line::Type { name, kind } => {
                assert!(matches!(kind, "counter" | "gauge"), "{name} is a {kind}");
                assert!(typed.insert(name), "two TYPE lines for {name}");
            }
            Line::Sample { name, key, value } => {
                assert!(typed.contains(name), "{name} has no TYPE line before it");
                assert!(out.insert(key.clone(), value).is_none(), "{key} twice");
            }
        }
    }
    out
}

#[test]
fn every_section_of_the_host_twin_and_its_exposition() {
    let tmp = TempDir::new("host-twin");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let dir = tmp.path().join("agent");
    agg.issue("udm", "dc1", &dir.join("certs"));
    // Every source every 200 ms tick, so the slow ones show up quickly.
    let mut config = format!(
        "aggregator = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\ninterval = \"200ms\"\n[collectors]\n",
        agg.quic_port,
        dir.display()
    );
    for source in ["netclass", "sockstat", "netstat", "tcp", "filesystem", "processes", "filefd", "vmstat", "info"] {
        config.push_str(&format!("{source} = \"200ms\"\n"));
    }
    config.push_str("[processes]\ntop = 3\n");
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    let cfg = dir.join("agent.toml");
    let _agent =
        Proc::spawn(&bin("twinwatch-agent"), &["--config", cfg.to_str().unwrap(), "run"], dir.join("agent.log"));

    let has_rates = |h: &Value| {
        h["processes"]["top"].as_array().is_some_and(|t| t.iter().any(|p| p["cpu_percent"].is_number()))
            && h["cpu"]["per_core"].as_array().is_some_and(|c| c.iter().all(|c| c["usage_percent"].is_number()))
    };
    let host =
        wait_for("a twin with rates", Duration::from_secs(20), || agg.get("/api/v1/hosts/udm").filter(has_rates));

    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(host["cpu"]["per_core"].as_array().unwrap().len(), cores);
    assert!(!host["identity"]["cpu_model"].as_str().unwrap().is_empty());
    assert!(host["uptime_seconds"].as_i64().unwrap() > 0);
    assert!(host["memory"]["page_faults_per_second"].is_number());
    let lo = host["network"].as_array().unwrap().iter().find(|n| n["device"] == "lo").unwrap().clone();
    assert_eq!(
        (lo["up"].as_i64(), lo["mtu_bytes"].as_i64(), lo["operstate"].as_str()),
        (Some(0), Some(65536), Some("unknown"))
    );
    assert!(lo["receive_bytes_per_second"].is_number());
    assert_eq!(host["sockets"]["tcp_states"].as_object().unwrap().len(), 11);
    assert!(host["sockets"]["sockstat"]["sockets_used"].as_i64().unwrap() > 0);
    assert!(host["sockets"]["netstat"]["Tcp_ActiveOpens"].is_number());
    let procs = &host["processes"];
    assert!(
        procs["total"].as_i64().unwrap() > 1 && procs["threads"].as_i64().unwrap() >= procs["total"].as_i64().unwrap()
    );
    assert!(procs["file_descriptors"]["allocated"].as_i64().unwrap() > 0);
    let top = procs["top"].as_array().unwrap();
    assert!((1..=6).contains(&top.len()), "top 3 by CPU and by memory: {top:?}");
    assert!(top.iter().all(|p| p["pid"].is_string() && p["name"].is_string() && p["user"].is_string()));
    assert!(host["filesystems"].as_array().unwrap().iter().any(|f| f["mountpoint"] == "/" && f["readonly"] == 0));

    // The exposition: node_exporter's names, the twin's labels, and the same values as the API.
    assert_eq!(http_get(agg.http_port, "/metrics", None).unwrap().0, 401);
    let (status, text) = http_get(agg.http_port, "/metrics", Some(&agg.token)).unwrap();
    assert_eq!(status, 200);
    let series = parse_exposition(&text);
    let labels = "dc=\"dc1\",host=\"udm\",instance=\"udm\"";
    let total = series[&format!("node_memory_MemTotal_bytes{{{labels}}}")];
    assert_eq!(Some(total), host["memory"]["total_bytes"].as_f64());
    assert!(series.contains_key(&format!("node_cpu_seconds_total{{cpu=\"0\",{labels},mode=\"idle\"}}")));
    let lo = "node_network_receive_bytes_total{dc=\"dc1\",device=\"lo\",host=\"udm\",instance=\"udm\"}";
    assert!(series.contains_key(lo), "labels are sorted by name");
    assert!(series.keys().any(|k| k.starts_with("node_uname_info{") && k.contains("sysname=\"Linux\"")));
    assert_eq!(series["twinwatch_host_status{dc=\"dc1\",host=\"udm\",status=\"online\"}"], 1.0);
    assert!(series.len() > 150, "only {} series exported", series.len());
    // Points waiting for a checkpoint: across hosts, and the one host's at most all of them.
    let (pending, most) = (series["twinwatch_history_pending_points"], series["twinwatch_history_pending_points_max"]);
    assert!(most <= pending, "max {most} of {pending}");
}
