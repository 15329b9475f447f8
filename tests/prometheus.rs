//! Interop with a real Prometheus (Debian's 2.42, installed by `cargo xtask test`): what the
//! aggregator's remote write sends lands exactly, survives an outage and a restart, and is
//! counted when dropped; and Prometheus scrapes `/metrics` without a complaint.
//!
//! Most remote write tests drive the aggregator's `RemoteWrite` in-process on a sled directory of
//! their own; the end-to-end one and the scrape test run the real binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use twinwatch_aggregator::counters::Counters;
use twinwatch_aggregator::remote_write::{RemoteWrite, RemoteWriteConfig, SeriesPoints};
use twinwatch_common::config::Bytes;
use twinwatch_tests::prometheus::{lines, parse, Line};
use twinwatch_tests::prometheus_server::PrometheusServer;
use twinwatch_tests::{http_get, start_agent, wait_for, Aggregator, ReservedPort, TempDir};

const RECEIVER: &[&str] = &["--web.enable-remote-write-receiver"];
const NO_SCRAPES: &str = "global:\n  scrape_interval: 1m\n";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn series(labels: &[(&str, &str)], points: &[(i64, f64)]) -> SeriesPoints {
    SeriesPoints {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        points: points.to_vec(),
    }
}

/// A `RemoteWrite` on its own sled directory with a runtime for its senders, as the aggregator
/// would hold it.
struct Writer {
    dir: PathBuf,
    db: sled::Db,
    rw: Arc<RemoteWrite>,
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
}

impl Writer {
    fn open(dir: &Path, configs: &[RemoteWriteConfig]) -> Writer {
        // A previous handle's flusher thread lets go of the file lock a moment after it is dropped.
        let db = wait_for("sled lock", Duration::from_secs(10), || {
            sled::Config::new().path(dir).flush_every_ms(Some(500)).open().ok()
        });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let rw = RemoteWrite::open(&db, configs).expect("remote write open");
        Writer { dir: dir.to_owned(), db, rw, runtime, stop: watch::channel(false).0 }
    }

    fn enqueue(&self, series: &[SeriesPoints]) {
        self.rw.enqueue(series).expect("enqueue");
        self.db.flush().expect("flush");
    }

    fn spawn(&self) {
        let _entered = self.runtime.enter();
        self.rw.spawn(self.stop.subscribe());
    }

    /// `name{remote="..."}` -> value.
    fn metrics(&self) -> BTreeMap<String, f64> {
        let mut text = String::new();
        self.rw.render_metrics(&mut text);
        parse(&text).expect("remote write metrics")
    }

    fn metric(&self, name: &str, remote: &str) -> f64 {
        let key = format!("twinwatch_remote_write_{name}{{remote=\"{remote}\"}}");
        self.metrics().get(&key).copied().unwrap_or_else(|| panic!("no {key} in {:?}", self.metrics()))
    }

    fn dropped(&self, remote: &str, reason: &str) -> f64 {
        self.metrics()
            [&format!("twinwatch_remote_write_samples_dropped_total{{remote=\"{remote}\",reason=\"{reason}\"}}")]
    }

    /// Stops the senders, flushes and lets go of the directory, as a stopping aggregator would.
    fn close(self) -> PathBuf {
        let _ = self.stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        drop(self.rw);
        self.db.flush().expect("flush");
        self.dir
    }
}

/// Waits until Prometheus holds exactly `n` samples for `selector` over the last 10 minutes.
fn wait_for_samples(prom: &PrometheusServer, selector: &str, n: usize) -> Vec<(Value, Vec<(i64, f64)>)> {
    wait_for(&format!("{n} samples of {selector}"), Duration::from_secs(30), || {
        let got = prom.samples(selector, "10m", now_ms() as f64 / 1000.0 + 1.0);
        (got.iter().map(|(_, p)| p.len()).sum::<usize>() == n).then_some(got)
    })
}

/// How many remote write requests Prometheus answered with `code`.
fn write_requests(prom: &PrometheusServer, code: u16) -> f64 {
    let key = format!("prometheus_http_requests_total{{code=\"{code}\",handler=\"/api/v1/write\"}}");
    prom.self_metrics().get(&key).copied().unwrap_or(0.0)
}

#[test]
fn remote_write_lands_exact_values_and_times() {
    let tmp = TempDir::new("prom-exact");
    let prom = PrometheusServer::start(&tmp.path().join("prom"), NO_SCRAPES, RECEIVER);
    let w = Writer::open(&tmp.path().join("db"), &[RemoteWriteConfig::new("prom", &prom.remote_write_url())]);

    // Millisecond times, 15 s apart, ending now; integers up to 2^53 - 1 and fractions that
    // only an exact float encoding keeps.
    let t0 = now_ms() - 60_000 + 7;
    let at = |i: i64| t0 + i * 15_000;
    let counter: Vec<(i64, f64)> = [1.0, 1000.0, 1_099_511_627_776.0, 9_007_199_254_740_000.0, 9_007_199_254_740_991.0]
        .iter()
        .enumerate()
        .map(|(i, v)| (at(i as i64), *v))
        .collect();
    let gauge: Vec<(i64, f64)> =
        [0.1, -2.5e-7, 1.0 / 3.0, 123.456, 6.02214076e23].iter().enumerate().map(|(i, v)| (at(i as i64), *v)).collect();
    let special = vec![(at(0), f64::INFINITY), (at(1), f64::NEG_INFINITY), (at(2), f64::NAN)];
    let c_labels =
        [("__name__", "tw_test_bytes_total"), ("host", "h1"), ("dc", "dc1"), ("device", "eth0"), ("empty", "")];
    let g_labels = [("dc", "dc1"), ("__name__", "tw_test_ratio"), ("host", "h1"), ("mode", "a b\"c\\d")];
    // Two enqueues, so the request joins entries.
    w.enqueue(&[series(&c_labels, &counter[..3]), series(&g_labels, &gauge)]);
    w.enqueue(&[
        series(&c_labels, &counter[3..]),
        series(&[("__name__", "tw_test_special"), ("host", "h1")], &special),
    ]);
    assert_eq!(w.metric("queue_samples", "prom"), 13.0);
    w.spawn();

    let got = wait_for_samples(&prom, "{__name__=~\"tw_test_.*\"}", 13);
    let by_name: BTreeMap<String, (Value, Vec<(i64, f64)>)> =
        got.into_iter().map(|(m, p)| (m["__name__"].as_str().unwrap().to_owned(), (m, p))).collect();
    let (labels, points) = &by_name["tw_test_bytes_total"];
    assert_eq!(labels, &json!({"__name__": "tw_test_bytes_total", "host": "h1", "dc": "dc1", "device": "eth0"}));
    assert_eq!(points, &counter, "exact times and values");
    let (labels, points) = &by_name["tw_test_ratio"];
    assert_eq!(labels["mode"], "a b\"c\\d");
    assert_eq!(points, &gauge);
    let (_, points) = &by_name["tw_test_special"];
    assert_eq!(points[..2], special[..2]);
    assert!(points[2].0 == special[2].0 && points[2].1.is_nan(), "{points:?}");
    // The same values through PromQL at an exact time.
    let at_3 = (at(3) as f64) / 1000.0;
    let v = prom.query("tw_test_bytes_total", Some(at_3));
    assert_eq!(v[0]["value"][1], "9007199254740000");

    assert_eq!(w.metric("samples_sent_total", "prom"), 13.0);
    assert_eq!(w.metric("queue_samples", "prom"), 0.0);
    assert_eq!(w.metric("queue_bytes", "prom"), 0.0);
    assert_eq!((w.metric("retries_total", "prom"), w.dropped("prom", "rejected")), (0.0, 0.0));
    assert!(w.metric("last_success_timestamp_seconds", "prom") * 1000.0 >= t0 as f64);
    assert_eq!(write_requests(&prom, 204), 1.0, "both entries in one request");
}

#[test]
fn an_unreachable_remote_keeps_the_queue_across_a_restart_and_gets_everything() {
    let tmp = TempDir::new("prom-late");
    // Nobody listens on it until Prometheus does, and nothing else can take it meanwhile.
    let port = ReservedPort::new();
    let config = RemoteWriteConfig::new("late", &format!("http://127.0.0.1:{}/api/v1/write", port.port()));
    let t0 = now_ms() - 30_000;
    let points = |from: i64, n: i64| (from..from + n).map(|i| (t0 + i * 1000, i as f64 * 1.5)).collect::<Vec<_>>();
    let a = [("__name__", "tw_late"), ("host", "a")];
    let b = [("__name__", "tw_late"), ("host", "b")];

    let w = Writer::open(&tmp.path().join("db"), std::slice::from_ref(&config));
    w.enqueue(&[series(&a, &points(0, 4)), series(&b, &points(0, 4))]);
    w.spawn();
    wait_for("two retries", Duration::from_secs(20), || (w.metric("retries_total", "late") >= 2.0).then_some(()));
    assert_eq!(w.metric("queue_samples", "late"), 8.0);
    assert_eq!((w.metric("samples_sent_total", "late"), w.dropped("late", "queue_full")), (0.0, 0.0));
    eprintln!("queued with the remote down: {} bytes for 8 samples", w.metric("queue_bytes", "late"));

    // Restart before the remote is up: the queue is still there, and keeps filling.
    let dir = w.close();
    let w = Writer::open(&dir, std::slice::from_ref(&config));
    assert_eq!(w.metric("queue_samples", "late"), 8.0, "the queue survived the restart");
    w.enqueue(&[series(&a, &points(4, 2))]);
    w.spawn();
    wait_for("a retry after the restart", Duration::from_secs(20), || {
        (w.metric("retries_total", "late") >= 1.0).then_some(())
    });

    let prom = PrometheusServer::start_on(&tmp.path().join("prom"), &port, NO_SCRAPES, RECEIVER);
    eprintln!("{} retries after the restart before the remote was up", w.metric("retries_total", "late"));
    let got = wait_for_samples(&prom, "tw_late", 10);
    let hosts: BTreeMap<String, Vec<(i64, f64)>> =
        got.into_iter().map(|(m, p)| (m["host"].as_str().unwrap().to_owned(), p)).collect();
    assert_eq!(hosts["a"], points(0, 6));
    assert_eq!(hosts["b"], points(0, 4));
    wait_for("sent counted", Duration::from_secs(5), || (w.metric("samples_sent_total", "late") == 10.0).then_some(()));
    assert_eq!(w.metric("queue_samples", "late"), 0.0);
    assert_eq!((w.dropped("late", "queue_full"), w.dropped("late", "rejected")), (0.0, 0.0));
}

#[test]
fn a_full_queue_and_a_rejecting_remote_count_what_they_drop() {
    let tmp = TempDir::new("prom-drops");
    let prom = PrometheusServer::start(&tmp.path().join("prom"), NO_SCRAPES, RECEIVER);
    let t0 = now_ms() - 60_000;
    let one = |i: i64| series(&[("__name__", "tw_full"), ("host", "h1")], &[(t0 + i * 1000, i as f64)]);

    // The size of one entry, measured on a scratch queue, so the cap holds exactly three.
    let scratch = Writer::open(&tmp.path().join("scratch"), &[RemoteWriteConfig::new("s", "http://127.0.0.1:9/")]);
    scratch.enqueue(&[one(0)]);
    let entry = scratch.metric("queue_bytes", "s") as u64;
    drop(scratch.close());

    let mut small = RemoteWriteConfig::new("small", &prom.remote_write_url());
    small.max_queue_bytes = Bytes(3 * entry);
    let w = Writer::open(&tmp.path().join("db"), &[small]);
    for i in 0..10 {
        w.enqueue(&[one(i)]);
    }
    assert_eq!(w.metric("queue_samples", "small"), 3.0);
    assert_eq!(w.metric("queue_bytes", "small"), (3 * entry) as f64);
    assert_eq!(w.dropped("small", "queue_full"), 7.0, "the seven oldest");
    w.spawn();
    let got = wait_for_samples(&prom, "tw_full", 3);
    assert_eq!(got[0].1, (7..10).map(|i| (t0 + i * 1000, i as f64)).collect::<Vec<_>>(), "the newest three");
    wait_for("sent counted", Duration::from_secs(5), || (w.metric("samples_sent_total", "small") == 3.0).then_some(()));

    // Prometheus refuses a sample older than its series' newest (400, out of order). Queued
    // ahead of a good one, it must cost only itself.
    let x = [("__name__", "tw_order"), ("host", "x")];
    let first = Writer::open(&tmp.path().join("db1"), &[RemoteWriteConfig::new("first", &prom.remote_write_url())]);
    first.enqueue(&[series(&x, &[(t0 + 20_000, 2.0)])]);
    first.spawn();
    wait_for_samples(&prom, "tw_order", 1);
    let late = Writer::open(&tmp.path().join("db2"), &[RemoteWriteConfig::new("late", &prom.remote_write_url())]);
    late.enqueue(&[series(&x, &[(t0 + 10_000, 1.0)])]);
    late.enqueue(&[series(&[("__name__", "tw_order"), ("host", "y")], &[(t0 + 30_000, 3.0)])]);
    late.spawn();
    wait_for("one rejected, one sent", Duration::from_secs(20), || {
        (late.dropped("late", "rejected") == 1.0 && late.metric("samples_sent_total", "late") == 1.0).then_some(())
    });
    let got = wait_for_samples(&prom, "tw_order", 2);
    let points: BTreeMap<String, Vec<(i64, f64)>> =
        got.into_iter().map(|(m, p)| (m["host"].as_str().unwrap().to_owned(), p)).collect();
    assert_eq!(points["x"], [(t0 + 20_000, 2.0)]);
    assert_eq!(points["y"], [(t0 + 30_000, 3.0)]);
    assert_eq!(late.metric("queue_samples", "late"), 0.0);
    assert_eq!(late.metric("retries_total", "late"), 0.0);
    // The joined request, then the old sample alone; and Prometheus says why.
    assert_eq!(write_requests(&prom, 400), 2.0);
    assert!(prom.log().to_lowercase().contains("out of order sample"), "{}", prom.log());
}

#[test]
fn prometheus_scrapes_the_aggregator_without_a_complaint() {
    let tmp = TempDir::new("prom-scrape");
    let agg = Aggregator::start(&tmp.path().join("agg"));
    let agent_dir = tmp.path().join("agent");
    agg.issue("udm", "dc1", &agent_dir.join("certs"));
    let _agent = start_agent(&agent_dir, agg.quic_port, "500ms");
    wait_for("the agent's twin", Duration::from_secs(20), || agg.get("/api/v1/hosts/udm"));

    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: twinwatch\n    honor_labels: true\n    \
         authorization:\n      credentials: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        agg.token, agg.http_port
    );
    let prom = PrometheusServer::start(&tmp.path().join("prom"), &config, &[]);
    let target = prom.wait_for_target_up("twinwatch", Duration::from_secs(30));
    assert_eq!(target["lastError"], "", "{target}");

    // A value that does not move, read both ways.
    let ours = agg.metrics().expect("/metrics");
    let total = ours["node_memory_MemTotal_bytes{dc=\"dc1\",host=\"udm\",instance=\"udm\"}"];
    let theirs = wait_for("MemTotal in Prometheus", Duration::from_secs(20), || {
        prom.value("node_memory_MemTotal_bytes{host=\"udm\",dc=\"dc1\",instance=\"udm\"}")
    });
    assert_eq!(theirs, total);
    assert_eq!(prom.value("twinwatch_host_status{host=\"udm\",status=\"online\"}"), Some(1.0));

    // Every family the aggregator exports reaches Prometheus (slow sources show up later).
    let families = |text: &str| -> BTreeSet<String> {
        let lines = lines(text).expect("the aggregator's /metrics");
        lines
            .iter()
            .filter_map(|l| if let Line::Type { name, .. } = l { Some(name.to_string()) } else { None })
            .collect()
    };
    let names = wait_for("every family scraped", Duration::from_secs(30), || {
        let (_, text) = http_get(agg.http_port, "/metrics", Some(&agg.token)).ok()?;
        let ours = families(&text);
        let theirs: BTreeSet<String> = prom
            .query("count by (__name__) ({job=\"twinwatch\"})", None)
            .iter()
            .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
            .filter(|n| n != "up" && !n.starts_with("scrape_"))
            .collect();
        (ours == theirs).then_some(ours)
    });
    assert!(names.len() > 50, "only {} families", names.len());

    let scraped = prom.value("scrape_samples_scraped{job=\"twinwatch\"}").unwrap();
    assert!(scraped > 150.0, "{scraped} samples scraped");
    eprintln!("prometheus scraped {scraped} samples in {} families", names.len());
    let target = prom.wait_for_target_up("twinwatch", Duration::from_secs(5));
    assert_eq!(target["lastError"], "", "{target}");
    let own = prom.self_metrics();
    for counter in [
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
        "prometheus_target_scrapes_exceeded_sample_limit_total",
        "prometheus_target_scrapes_exceeded_body_size_limit_total",
    ] {
        assert_eq!(own.get(counter), Some(&0.0), "{counter}");
    }
}

/// The real agent and aggregator, the aggregator remote-writing to a real Prometheus: every
/// sample Prometheus holds equals the point the history API serves at the same time.
#[test]
fn the_aggregator_remote_writes_its_history_and_prometheus_holds_the_same_values() {
    let tmp = TempDir::new("prom-history");
    let prom = PrometheusServer::start(&tmp.path().join("prom"), NO_SCRAPES, RECEIVER);
    let extra = format!(
        "[history]\ncheckpoint_interval = \"1s\"\n\n[[remote_write]]\nname = \"prom\"\nurl = \"{}\"\n",
        prom.remote_write_url()
    );
    let agg = Aggregator::start_with(&tmp.path().join("agg"), &extra);
    let agent_dir = tmp.path().join("agent");
    agg.issue("rw", "dc2", &agent_dir.join("certs"));
    let _agent = start_agent(&agent_dir, agg.quic_port, "500ms");

    for (metric, selector, filter) in [
        ("node_load1", "node_load1{host=\"rw\",dc=\"dc2\"}", ""),
        ("node_cpu_seconds_total", "node_cpu_seconds_total{host=\"rw\",cpu=\"0\",mode=\"idle\"}", "&cpu=0&mode=idle"),
    ] {
        let theirs = wait_for(&format!("10 samples of {selector} in Prometheus"), Duration::from_secs(60), || {
            let s = prom.samples(selector, "10m", now_ms() as f64 / 1000.0);
            (s.len() == 1 && s[0].1.len() >= 10).then(|| s[0].1.clone())
        });
        let from = theirs[0].0 as f64 / 1000.0;
        let ours = agg.get(&format!("/api/v1/hosts/rw/metrics/{metric}?from={from}{filter}")).unwrap();
        assert_eq!(ours["resolution"], "raw", "{ours}");
        let ours: BTreeMap<i64, f64> = ours["series"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["t"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
            .collect();
        for (t, v) in &theirs {
            assert_eq!(ours.get(t), Some(v), "{metric} at {t}: Prometheus has {v}, history has {:?}", ours.get(t));
        }
    }
    let metrics = agg.metrics().expect("/metrics");
    assert!(metrics["twinwatch_remote_write_samples_sent_total{remote=\"prom\"}"] >= 20.0, "{metrics:?}");
}
