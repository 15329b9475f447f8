//! History storage benchmark: bytes on disk per raw point for this host's real metrics, with
//! Prometheus' TSDB fed exactly the same points in the same run.
//!
//! The real agent samples this host every second for `--minutes N` (default 12) into a real
//! aggregator. The aggregator is stopped, its store opened, every window compacted, and the raw
//! segments' bytes divided by the points they hold. The same points are written as OpenMetrics
//! and turned into a Prometheus block by `promtool tsdb create-blocks-from openmetrics`
//! (a compacted block, as Prometheus keeps history); its size is divided by the same count.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use twinwatch_aggregator::history::Retention;
use twinwatch_aggregator::store::Store;
use twinwatch_common::sample::SeriesKey;
use twinwatch_tests::bench::dir_bytes;
use twinwatch_tests::{start_agent, wait_for, Aggregator, TempDir};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let minutes: u64 =
        args.iter().position(|a| a == "--minutes").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(12);
    let tmp = TempDir::new("bench-history");
    let mut agg = Aggregator::start(&tmp.path().join("agg"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("bench", "dc2", &agent_dir.join("certs"));
    let mut agent = start_agent(&agent_dir, agg.quic_port, "1s");
    wait_for("the host", Duration::from_secs(30), || agg.get("/api/v1/hosts/bench"));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(5));
    }
    agent.terminate();
    agg.proc.as_mut().expect("running").terminate();

    let db = agg.dir.join("db");
    let mut store = None;
    for _ in 0..100 {
        if let Ok(s) = Store::open(&db, Retention::default()) {
            store = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = store.expect("store opens");
    store.archive.compact(i64::MAX / 2).expect("compaction");
    let series = store.archive.series().expect("series");
    let keys = &series["bench"];
    let [_, raw_bytes, rollup_bytes] = store.archive.bytes().expect("bytes");

    let mut text = String::new();
    let mut points = 0usize;
    let mut order: Vec<(usize, &SeriesKey)> = keys.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.cmp(b.1));
    for (idx, key) in order {
        let Some(col) = store.archive.raw("bench", idx as u32, 0, i64::MAX / 2).expect("raw") else { continue };
        let mut labels = String::from("host=\"bench\",dc=\"dc2\"");
        for (k, v) in &key.labels {
            let _ = write!(labels, ",{k}=\"{}\"", escape(v));
        }
        for (t, v) in col.reals() {
            points += 1;
            let v = match v {
                v if v == f64::INFINITY => "+Inf".to_owned(),
                v if v == f64::NEG_INFINITY => "-Inf".to_owned(),
                v => v.to_string(),
            };
            let _ = writeln!(text, "{}{{{labels}}} {v} {:.3}", key.name, t as f64 / 1000.0);
        }
    }
    text.push_str("# EOF\n");
    let om = tmp.path().join("points.om");
    std::fs::write(&om, &text).expect("openmetrics");
    let prom_dir = tmp.path().join("prom");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&prom_dir)
        .output()
        .expect("promtool (cargo xtask test installs the prometheus package)");
    assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
    let prom_bytes = dir_bytes(&prom_dir);
    let ours = raw_bytes as f64 / points as f64;
    let theirs = prom_bytes as f64 / points as f64;
    println!(
        "history storage, {minutes} min of this host at 1 s: {} series, {points} points\n\
         | store | bytes | bytes/point |\n| --- | --- | --- |\n\
         | twinwatch raw segments | {raw_bytes} | {ours:.3} |\n\
         | twinwatch rollups (1m, 5m, 1h) | {rollup_bytes} | {:.3} |\n\
         | Prometheus 2.42 block (promtool, same points) | {prom_bytes} | {theirs:.3} |\n\
         ratio Prometheus / twinwatch raw: {:.1}x",
        keys.len(),
        rollup_bytes as f64 / points as f64,
        theirs / ours
    );
}
