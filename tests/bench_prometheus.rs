//! History beside Prometheus 2.42, both fed the same data in the same run.
//!
//! `cargo xtask bench` runs it (release binaries, loopback only). Two measurements:
//!
//! - **Ingest CPU per value.** An hour of the [synthetic](twinwatch_tests::synthetic) host (500
//!   series at 1 s, 1.8 M values) goes into a fresh aggregator the way it does in production: the
//!   real agent replays it from its buffer over QUIC, and the aggregator, in its default
//!   configuration, decodes it, applies it to the twin, logs it, acknowledges it, and at its
//!   next checkpoint writes it as history segments and compacts the finished windows into
//!   rollups. Counted is the aggregator's CPU (every thread's schedstat) from the agent's start
//!   until the ledger holds the hour and [`SETTLE`] (a checkpoint interval and a little more)
//!   has passed, divided by the values in the backlog (the agent's live samples, this host's own
//!   series for the run's duration, also count against it). Prometheus
//!   gets the same values, labelled the same way, by remote write 1.0 (snappy protobuf, 2000
//!   samples a request, as twinwatch's own sender cuts them) POSTed in time order over one
//!   keep-alive connection; counted is its CPU from the first request until the last answer and
//!   the same [`SETTLE`], divided by the samples its `prometheus_tsdb_head_samples_appended_total`
//!   grew by, which must equal the values sent. Runs alternate, [`REPS`] of each; medians.
//! - **24 h query at a 5-minute step.** A day of ten of those series (node_load1,
//!   node_memory_MemFree_bytes and the eight node_cpu_seconds_total modes of cpu 0: 864,000
//!   values) goes into an aggregator by the same agent replay and is compacted, and into
//!   Prometheus as blocks written by `promtool tsdb create-blocks-from openmetrics`, which
//!   Prometheus then loads and compacts itself. Each query asks for the 24 h at a 300 s step:
//!   a gauge's 5-minute means (Prometheus: `avg_over_time(node_load1[5m])`) and a counter's
//!   per-second rates (`rate(node_cpu_seconds_total{cpu="0",mode="idle"}[5m])`). The same
//!   minimal HTTP/1.1 client asks both, a new loopback connection per request, alternating
//!   between the two; after [`WARMUP`] unmeasured rounds, [`ROUNDS`] measured ones give the
//!   median and p99 of the full request's time.
//!
//! Results also go to `target/bench/prometheus.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use twinwatch_aggregator::remote_write::proto;
use twinwatch_aggregator::remote_write::SeriesPoints;
use twinwatch_common::sample::Metric;
use twinwatch_tests::backlog::{start_agent, ticks_stored, write_agent_config, write_backlog_of, Backlog, SEED};
use twinwatch_tests::bench::{median, report_dir, usage};
use twinwatch_tests::http::Connection;
use twinwatch_tests::prometheus_server::{encode, PrometheusServer};
use twinwatch_tests::synthetic::{Host, SERIES};
use twinwatch_tests::{http_get, Aggregator, TempDir};

/// Ingest runs of each kind.
const REPS: usize = 3;
/// An hour, and a day, of one-second ticks.
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// After the data is in: a checkpoint (every 30 s by default) and its compaction pass for
/// twinwatch, the same time for Prometheus to do what it does after appending.
const SETTLE: Duration = Duration::from_secs(35);
/// Samples per remote write request.
const PER_REQUEST: usize = 2000;
const WARMUP: usize = 20;
const ROUNDS: usize = 300;
/// Longest a replay may take before the run fails.
const REPLAY_LIMIT: Duration = Duration::from_secs(900);
const PROMETHEUS_CONFIG: &str = "global:\n  scrape_interval: 1h\nscrape_configs: []\n";

/// Labels of a synthetic series as both systems store it: name, host, dc, then its own.
fn labels(m: &Metric) -> Vec<(String, String)> {
    let mut out = vec![("__name__".to_owned(), m.key.name.clone()), ("host".into(), "bench".into())];
    out.push(("dc".into(), "dc1".into()));
    out.extend(m.key.labels.iter().cloned());
    out
}

/// The synthetic host's ticks from `first_ms`, one a second, with only the series `keep` takes.
fn ticks(first_ms: i64, count: u64, keep: fn(&Metric) -> bool) -> impl Iterator<Item = (i64, Vec<Metric>)> {
    let mut host = Host::new(SEED);
    (0..count as i64).map(move |i| {
        let ts = first_ms + i * 1000;
        let mut metrics = host.sample(ts).metrics;
        metrics.retain(keep);
        (ts, metrics)
    })
}

fn every(_: &Metric) -> bool {
    true
}

/// The day's ten series.
fn queried(m: &Metric) -> bool {
    match m.key.name.as_str() {
        "node_load1" | "node_memory_MemFree_bytes" => true,
        "node_cpu_seconds_total" => m.key.label("cpu") == Some("0"),
        _ => false,
    }
}

/// A fresh aggregator holding `ticks` seconds of the series `keep` takes, replayed by the real
/// agent; returns it, the backlog, and the aggregator's CPU seconds from the agent's start
/// until the data was stored and [`SETTLE`] had passed.
fn replayed(dir: &Path, ticks: u64, keep: fn(&Metric) -> bool) -> (Aggregator, Backlog, f64) {
    let agg = Aggregator::start(&dir.join("aggregator"));
    let agent_dir = dir.join("agent");
    agg.issue("bench", "dc1", &agent_dir.join("certs"));
    write_agent_config(&agent_dir, &agg, "[buffer]\nreplay_rate = \"0\"\n");
    let backlog = write_backlog_of(&agent_dir, ticks, keep);
    let pid = agg.proc.as_ref().expect("aggregator running").pid();
    let cpu0 = usage(pid).expect("aggregator alive").0;
    let mut agent = start_agent(&agent_dir);
    let deadline = Instant::now() + REPLAY_LIMIT;
    while ticks_stored(&agg, backlog.incarnation) != Some(ticks) {
        assert!(
            Instant::now() < deadline,
            "replay of {ticks} ticks not done in {REPLAY_LIMIT:?}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The settling time is part of what is measured: the same for both sides.
    std::thread::sleep(SETTLE);
    let cpu = (usage(pid).expect("aggregator alive").0 - cpu0) as f64 / 1e9;
    agent.terminate();
    let counters = agg.get("/api/v1/hosts/bench").map(|h| h["ingest"]["counters"].clone()).unwrap_or_default();
    assert_eq!(counters["unapplied"].as_u64(), Some(0), "every batch decodes: {counters}");
    (agg, backlog, cpu)
}

/// Points the history API returns for `node_load1` over the backlog at its raw resolution.
fn raw_points(agg: &Aggregator, backlog: &Backlog, ticks: u64) -> usize {
    let from = backlog.first_ms / 1000;
    let path = format!("/api/v1/hosts/bench/metrics/node_load1?from={from}&to={}&step=1", from + ticks as i64);
    let answer = agg.get(&path).unwrap_or_else(|| panic!("GET {path}"));
    answer["series"][0]["points"].as_array().map_or(0, Vec::len)
}

/// Remote write request bodies (snappy-compressed) for the hour ending about now, and its
/// sample count.
fn write_requests(first_ms: i64) -> (Vec<Vec<u8>>, u64) {
    let mut bodies = Vec::new();
    let mut samples = 0;
    let mut chunk: Vec<(i64, Vec<Metric>)> = Vec::new();
    let per_chunk = PER_REQUEST / SERIES;
    let flush = |chunk: &mut Vec<(i64, Vec<Metric>)>, bodies: &mut Vec<Vec<u8>>| {
        let Some((_, first)) = chunk.first() else { return };
        let series: Vec<SeriesPoints> = (0..first.len())
            .map(|s| SeriesPoints {
                labels: labels(&first[s]),
                points: chunk.iter().map(|(ts, metrics)| (*ts, metrics[s].real())).collect(),
            })
            .collect();
        for fragment in proto::fragments(&series, PER_REQUEST, usize::MAX) {
            bodies.push(snap::raw::Encoder::new().compress_vec(&fragment.bytes).expect("snappy"));
        }
        chunk.clear();
    };
    for (ts, metrics) in ticks(first_ms, HOUR, every) {
        samples += metrics.len() as u64;
        chunk.push((ts, metrics));
        if chunk.len() == per_chunk {
            flush(&mut chunk, &mut bodies);
        }
    }
    flush(&mut chunk, &mut bodies);
    (bodies, samples)
}

/// POSTs one remote write request on a keep-alive connection; the status.
fn post(connection: &mut Connection, body: &[u8]) -> u16 {
    let headers = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    let answer = connection.send("POST", "/api/v1/write", &headers, body).expect("remote write request");
    assert!(answer.status == 204 || answer.status == 200, "remote write answered {}: {}", answer.status, answer.body);
    answer.status
}

fn appended(prom: &PrometheusServer) -> f64 {
    let m = prom.self_metrics();
    m.iter().filter(|(k, _)| k.starts_with("prometheus_tsdb_head_samples_appended_total")).map(|(_, v)| v).sum()
}

/// Prometheus' CPU seconds for taking the hour by remote write, and the samples it appended.
fn prometheus_ingest(dir: &Path) -> (f64, u64) {
    let now = twinwatch_common::time::now_ms();
    let (bodies, samples) = write_requests(now - (HOUR as i64 - 1) * 1000);
    let prom = PrometheusServer::start(dir, PROMETHEUS_CONFIG, &["--web.enable-remote-write-receiver"]);
    let before = appended(&prom);
    let cpu0 = usage(prom.pid()).expect("prometheus alive").0;
    let mut connection = Connection::open(SocketAddr::from(([127, 0, 0, 1], prom.port))).expect("connect");
    for body in &bodies {
        post(&mut connection, body);
    }
    // The settling time is part of what is measured: the same for both sides.
    std::thread::sleep(SETTLE);
    let cpu = (usage(prom.pid()).expect("prometheus alive").0 - cpu0) as f64 / 1e9;
    let got = appended(&prom) - before;
    assert_eq!(got as u64, samples, "Prometheus appended every sample sent");
    (cpu, samples)
}

/// Writes the day's series as OpenMetrics and has promtool turn them into blocks in `data`.
fn prometheus_blocks(first_ms: i64, tmp: &Path, data: &Path) -> u64 {
    let mut text = String::new();
    let mut values = 0;
    // promtool wants each series' samples together.
    let mut by_series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (ts, metrics) in ticks(first_ms, DAY, queried) {
        for m in metrics {
            let mut series = m.key.name.clone();
            let rest: Vec<String> = labels(&m)[1..].iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let _ = write!(series, "{{{}}}", rest.join(","));
            by_series.entry(series).or_default().push((ts, m.real()));
        }
    }
    for (series, points) in &by_series {
        for (ts, v) in points {
            values += 1;
            let _ = writeln!(text, "{series} {v} {:.3}", *ts as f64 / 1000.0);
        }
    }
    text.push_str("# EOF\n");
    let om = tmp.join("day.om");
    std::fs::write(&om, &text).expect("openmetrics");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&om)
        .arg(data)
        .output()
        .expect("promtool (cargo xtask test installs the prometheus package)");
    assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&om);
    values
}

/// One GET's time in milliseconds, with its body.
fn timed(port: u16, path: &str, token: Option<&str>) -> (f64, String) {
    let start = Instant::now();
    let (status, body) = http_get(port, path, token).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert_eq!(status, 200, "GET {path}: {body}");
    (ms, body)
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

struct Query {
    what: &'static str,
    ours: String,
    theirs: String,
}

/// Values in an answer: twinwatch's `series[0].points` or Prometheus' `data.result[0].values`.
fn answer_points(body: &str, ours: bool) -> usize {
    let v: Json = serde_json::from_str(body).expect("json answer");
    let points = if ours { &v["series"][0]["points"] } else { &v["data"]["result"][0]["values"] };
    points.as_array().map_or(0, Vec::len)
}

fn main() {
    let tmp = TempDir::new("bench-prometheus");

    // Ingest.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for rep in 0..REPS {
        let dir = tmp.path().join(format!("ingest-{rep}"));
        let (agg, backlog, cpu) = replayed(&dir, HOUR, every);
        assert_eq!(raw_points(&agg, &backlog, HOUR), HOUR as usize, "the hour is in history");
        drop(agg);
        ours.push(cpu / backlog.values as f64 * 1e6);
        let (cpu, samples) = prometheus_ingest(&dir.join("prometheus"));
        theirs.push(cpu / samples as f64 * 1e6);
        eprintln!(
            "bench: ingest run {}: twinwatch {:.3} µs/value, Prometheus {:.3} µs/sample",
            rep + 1,
            ours[rep],
            theirs[rep]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (ours_us, theirs_us) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "ingest CPU, 1 h of {SERIES} series at 1 s ({} values), median of {REPS}\n\
         | receiver | CPU µs per value | every run |\n| --- | --- | --- |\n\
         | twinwatch aggregator (QUIC, log, twin, segments, rollups) | {ours_us:.3} | {} |\n\
         | Prometheus 2.42 remote-write receiver | {theirs_us:.3} | {} |\n\
         Prometheus / twinwatch: {:.1}x",
        HOUR as usize * SERIES,
        ours.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", "),
        theirs.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", "),
        theirs_us / ours_us
    );

    // A day, queried.
    eprintln!("bench: a day of 10 series into the aggregator (agent replay) and into Prometheus (promtool)");
    let dir = tmp.path().join("query");
    let (agg, backlog, _) = replayed(&dir, DAY, queried);
    let prom_dir = dir.join("prometheus");
    let values = prometheus_blocks(backlog.first_ms, &dir, &prom_dir.join("data"));
    assert_eq!(values, backlog.values, "both hold the same values");
    let prom = PrometheusServer::start(&prom_dir, PROMETHEUS_CONFIG, &[]);
    // Let Prometheus compact the imported two-hour blocks as it would its own history.
    let blocks = |p: &PrometheusServer| p.self_metrics().get("prometheus_tsdb_blocks_loaded").copied().unwrap_or(0.0);
    let compactions = |p: &PrometheusServer| {
        p.self_metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("prometheus_tsdb_compactions_total"))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let loaded = blocks(&prom);
    let settle_until = Instant::now() + Duration::from_secs(240);
    let mut last = (loaded, Instant::now());
    while Instant::now() < settle_until {
        std::thread::sleep(Duration::from_secs(2));
        let now = blocks(&prom);
        if now != last.0 {
            last = (now, Instant::now());
        } else if compactions(&prom) > 0.0 && last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let compacted = blocks(&prom);
    eprintln!("bench: Prometheus loaded {loaded} blocks, {compacted} after its compaction");

    let from = backlog.first_ms / 1000;
    let to = from + DAY as i64;
    let queries = [
        Query {
            what: "gauge, 5-minute means (node_load1)",
            ours: format!("/api/v1/hosts/bench/metrics/node_load1?from={from}&to={to}&step=300"),
            theirs: "avg_over_time(node_load1[5m])".into(),
        },
        Query {
            what: "counter, per-second rates (cpu 0 idle)",
            ours: format!(
                "/api/v1/hosts/bench/metrics/node_cpu_seconds_total?cpu=0&mode=idle&rate=true&from={from}&to={to}&step=300"
            ),
            theirs: "rate(node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}[5m])".into(),
        },
    ];
    let mut rows = Vec::new();
    for q in &queries {
        let theirs_path =
            format!("/api/v1/query_range?query={}&start={}&end={to}&step=300", encode(&q.theirs), from + 300);
        let (mut ours_ms, mut theirs_ms) = (Vec::new(), Vec::new());
        for round in 0..WARMUP + ROUNDS {
            let (a, body_a) = timed(agg.http_port, &q.ours, Some(&agg.token));
            let (b, body_b) = timed(prom.port, &theirs_path, None);
            if round == 0 {
                let (na, nb) = (answer_points(&body_a, true), answer_points(&body_b, false));
                assert!((287..=290).contains(&na), "{}: twinwatch answered {na} points", q.what);
                assert!((287..=290).contains(&nb), "{}: Prometheus answered {nb} points", q.what);
            }
            if round >= WARMUP {
                ours_ms.push(a);
                theirs_ms.push(b);
            }
        }
        let row = json!({
            "query": q.what,
            "twinwatch_ms": { "median": median(ours_ms.clone()), "p99": p99(ours_ms) },
            "prometheus_ms": { "median": median(theirs_ms.clone()), "p99": p99(theirs_ms) },
            "prometheus_expr": q.theirs,
        });
        rows.push(row);
    }
    println!(
        "\n24 h query at a 300 s step, 10 series x 1 day at 1 s ({values} values in each), {ROUNDS} requests each, \
         alternating; Prometheus holding {compacted} blocks"
    );
    println!("| query | twinwatch median / p99 ms | Prometheus median / p99 ms | p99 ratio Prometheus / twinwatch |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        let (o, t) = (&r["twinwatch_ms"], &r["prometheus_ms"]);
        println!(
            "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1}x |",
            r["query"].as_str().unwrap_or_default(),
            o["median"].as_f64().unwrap_or(f64::NAN),
            o["p99"].as_f64().unwrap_or(f64::NAN),
            t["median"].as_f64().unwrap_or(f64::NAN),
            t["p99"].as_f64().unwrap_or(f64::NAN),
            t["p99"].as_f64().unwrap_or(f64::NAN) / o["p99"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let report = json!({
        "ingest": {
            "values": HOUR as usize * SERIES,
            "twinwatch_cpu_us_per_value": { "median": ours_us, "runs": ours },
            "prometheus_cpu_us_per_sample": { "median": theirs_us, "runs": theirs },
            "ratio": theirs_us / ours_us,
        },
        "query": { "values": values, "rounds": ROUNDS, "prometheus_blocks": compacted, "rows": rows },
    });
    let _ =
        std::fs::write(report_dir().join("prometheus.json"), serde_json::to_string_pretty(&report).unwrap_or_default());
}
