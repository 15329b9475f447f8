//! The scale-out path on a real engine: the aggregator remote-writes its history to Debian's
//! VictoriaMetrics (installed by `cargo xtask test`) through an aggregator outage and the agent's
//! backfill after it, and VictoriaMetrics then holds every point the history API serves, at the
//! same millisecond, with the same value.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use twinwatch_tests::victoria::{Labels, VictoriaMetrics, FLAGS};
use twinwatch_tests::{bin, http_get_at, wait_for, Aggregator, Proc, TempDir};

const HOST: &str = "vm-host";
const DC: &str = "dc-vm";
/// How long the aggregator is away: the agent samples every 200 ms into its buffer meanwhile.
const OUTAGE: Duration = Duration::from_secs(5);

/// One series' points, `(milliseconds, value)`.
type Points = Vec<(i64, f64)>;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The value of `key=N` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The first line of a log that contains `text`, after skipping `skip` such lines.
fn nth_line_with(log: &str, text: &str, skip: usize) -> Option<String> {
    log.lines().filter(|l| l.contains(text)).nth(skip).map(str::to_owned)
}

/// Starts the agent, sampling every 200 ms, with its backlog sent at 512 bytes a second after an
/// outage (a few batches a second), so that it trickles in over several of the aggregator's
/// checkpoints (1 s) behind the present.
fn start_agent(dir: &Path, quic_port: u16) -> Proc {
    std::fs::create_dir_all(dir).expect("agent dir");
    let config = dir.join("agent.toml");
    let text = format!(
        "aggregator = \"127.0.0.1:{quic_port}\"\nserver_name = \"localhost\"\nstate_dir = \"{}\"\n\
         interval = \"200ms\"\n[buffer]\nflush_interval = \"100ms\"\nreplay_rate = \"512\"\n",
        dir.display()
    );
    std::fs::write(&config, text).expect("agent config");
    Proc::spawn(&bin("twinwatch-agent"), &["--config", config.to_str().expect("utf-8"), "run"], dir.join("agent.log"))
}

/// The runs of stored sequence numbers of the host's only incarnation.
fn stored_runs(agg: &Aggregator) -> Option<Vec<Value>> {
    let v = agg.get(&format!("/api/v1/hosts/{HOST}/batches"))?;
    v["stored"].as_array()?.first()?["runs"].as_array().cloned()
}

/// One remote write counter of the aggregator's `/metrics` (`reason` for the dropped ones).
fn remote_metric(agg: &Aggregator, name: &str, reason: Option<&str>) -> f64 {
    let series = match reason {
        Some(r) => format!("twinwatch_remote_write_{name}{{remote=\"vm\",reason=\"{r}\"}}"),
        None => format!("twinwatch_remote_write_{name}{{remote=\"vm\"}}"),
    };
    let metrics = agg.metrics().expect("/metrics");
    metrics.get(&series).copied().unwrap_or_else(|| panic!("no {series} on /metrics"))
}

/// Every raw point the history API serves for the host from `from_ms` on, under the labels remote
/// write gives its series: `__name__`, `host` and `dc` first, then the series' own labels, empty
/// values left out (remote write's rules, `remote_write/proto.rs::normalize`).
fn history(agg: &Aggregator, from_ms: i64) -> BTreeMap<Labels, Points> {
    let names = agg.get(&format!("/api/v1/hosts/{HOST}/metrics")).expect("the host's series names");
    let mut out: BTreeMap<Labels, Points> = BTreeMap::new();
    for name in names["metrics"].as_array().expect("metrics") {
        let name = name["name"].as_str().expect("name");
        let path = format!("/api/v1/hosts/{HOST}/metrics/{name}?from={:.3}", from_ms as f64 / 1000.0);
        let (status, body) =
            http_get_at(agg.http_addr(), &path, Some(&agg.token)).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(json["resolution"], "raw", "{path}: {body}");
        let mut points = raw_points(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")).into_iter();
        for series in json["series"].as_array().expect("series") {
            let n = series["points"].as_array().expect("points").len();
            let mut labels = Labels::new();
            for (k, v) in [("__name__", name), ("host", HOST), ("dc", DC)] {
                labels.insert(k.to_owned(), v.to_owned());
            }
            for (k, v) in series["labels"].as_object().expect("labels") {
                let v = v.as_str().expect("label value");
                if !v.is_empty() {
                    labels.entry(k.clone()).or_insert_with(|| v.to_owned());
                }
            }
            let taken: Points = points.by_ref().take(n).collect();
            assert_eq!(taken.len(), n, "{path}: points in the text and in the JSON differ");
            out.entry(labels).or_default().extend(taken);
        }
        assert!(points.next().is_none(), "{path}: points in the text and in the JSON differ");
    }
    for points in out.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    out
}

/// The raw points of a history answer, `{"t":<ms>,"value":<number>}` in the order they appear,
/// the numbers read from their text with Rust's parser, which rounds correctly (serde_json's
/// default float parsing may miss by one unit in the last place). A JSON string cannot hold the
/// unescaped `"` of `{"t":`, so no label value is taken for a point.
fn raw_points(body: &str) -> Result<Points, String> {
    const OPEN: &str = "{\"t\":";
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        let (t, after) = rest.split_once(",\"value\":").ok_or("a point without a value")?;
        let (v, after) = after.split_once('}').ok_or("a point not closed")?;
        let t = t.parse::<i64>().map_err(|e| format!("time {t:?}: {e}"))?;
        // Not a number in JSON: NaN or an infinity.
        let v = if v == "null" { f64::NAN } else { v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))? };
        out.push((t, v));
        rest = after;
    }
    Ok(out)
}

/// VictoriaMetrics stores a value as a decimal mantissa and exponent (its `lib/decimal`): an
/// integer below 2^55 exactly, any other value to 12 significant digits (its
/// `conversionPrecision`). So a value that 12 significant digits write must come back bit for
/// bit, and any other within a relative 1e-11.
fn within_decimal_precision(ours: f64, theirs: f64) -> bool {
    let twelve_digits: f64 = format!("{ours:.11e}").parse().expect("a formatted float");
    twelve_digits != ours && (theirs - ours).abs() <= 1e-11 * ours.abs()
}

/// What a comparison saw.
#[derive(Debug, Default)]
struct Tally {
    series: usize,
    points: usize,
    /// Points whose value came back bit for bit.
    exact: usize,
    /// Points whose value has more than 12 significant digits and came back rounded to them.
    rounded: usize,
    /// NaN points: VictoriaMetrics drops NaN on ingestion (only the staleness marker is kept).
    nan: usize,
    /// Samples VictoriaMetrics holds twice (sent again after the aggregator's kill -9).
    duplicates: usize,
}

/// Compares the history with VictoriaMetrics' samples: the same series, the same timestamps,
/// and the same values as far as VictoriaMetrics' decimal storage keeps them. `Err` lists the
/// first differences.
fn compare(ours: &BTreeMap<Labels, Points>, theirs: &BTreeMap<Labels, Points>) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut problems: Vec<String> = Vec::new();
    let mut missing_points = 0usize;
    let mut wrong_values = 0usize;
    for (labels, points) in ours {
        tally.series += 1;
        tally.points += points.len();
        let mut expected: BTreeMap<i64, f64> = BTreeMap::new();
        for &(t, v) in points {
            if let Some(old) = expected.insert(t, v) {
                problems.push(format!("{labels:?}: the history holds {t} twice ({old} and {v})"));
            }
        }
        let nan = expected.values().filter(|v| v.is_nan()).count();
        tally.nan += nan;
        expected.retain(|_, v| !v.is_nan());
        let Some(samples) = theirs.get(labels) else {
            if !expected.is_empty() {
                missing_points += expected.len();
                problems.push(format!("{labels:?}: no series in VictoriaMetrics ({} points)", expected.len()));
            }
            continue;
        };
        let mut held: BTreeMap<i64, f64> = BTreeMap::new();
        for &(t, v) in samples {
            match held.insert(t, v) {
                Some(old) if old.to_bits() == v.to_bits() => tally.duplicates += 1,
                Some(old) => problems.push(format!("{labels:?}: VictoriaMetrics holds {t} with {old} and {v}")),
                None => {}
            }
        }
        for (&t, &v) in &expected {
            match held.get(&t) {
                None => {
                    missing_points += 1;
                    problems.push(format!("{labels:?}: no sample at {t} (history: {v})"));
                }
                Some(&w) if w.to_bits() == v.to_bits() => tally.exact += 1,
                Some(&w) if within_decimal_precision(v, w) => tally.rounded += 1,
                Some(&w) => {
                    wrong_values += 1;
                    problems.push(format!("{labels:?}: at {t} VictoriaMetrics holds {w:?}, the history {v:?}"));
                }
            }
        }
        for (t, v) in held.iter().filter(|(t, _)| !expected.contains_key(t)) {
            problems.push(format!("{labels:?}: VictoriaMetrics holds {t} ({v}), the history does not"));
        }
    }
    for (labels, samples) in theirs.iter().filter(|(l, _)| !ours.contains_key(*l)) {
        problems.push(format!("{labels:?}: a series the history lacks ({} samples)", samples.len()));
    }
    if problems.is_empty() {
        return Ok(tally);
    }
    let shown = problems.iter().take(12).cloned().collect::<Vec<_>>().join("\n  ");
    Err(format!(
        "{} differences ({missing_points} points missing, {wrong_values} values wrong) over {} series and {} \
         points; the first:\n  {shown}",
        problems.len(),
        tally.series,
        tally.points
    ))
}

/// The real agent and aggregator, the aggregator remote-writing to a real VictoriaMetrics. The
/// aggregator is killed (-9) and comes back after the agent has buffered a backlog; the agent
/// sends the present first and the backlog behind it, slowly, so VictoriaMetrics is sent points
/// older than ones it already holds (checked while it happens). Once the agent has
/// stopped and the aggregator's queue is empty, every point of the history API is in
/// VictoriaMetrics (`/api/v1/export`, raw samples), and nothing else is.
#[test]
fn victoria_metrics_holds_every_stored_point_after_an_outage_and_its_backfill() {
    let started = now_ms();
    let tmp = TempDir::new("victoria");
    let vm = VictoriaMetrics::start(&tmp.path().join("vm"));
    let extra = format!(
        "[history]\ncheckpoint_interval = \"1s\"\n\n[[remote_write]]\nname = \"vm\"\nurl = \"{}\"\n",
        vm.remote_write_url()
    );
    let mut agg = Aggregator::start_with(&tmp.path().join("agg"), &extra);
    let dir = tmp.path().join("agent");
    agg.issue(HOST, DC, &dir.join("certs"));
    let mut agent = start_agent(&dir, agg.quic_port);
    wait_for("20 stored batches", Duration::from_secs(30), || agg.stored_through(HOST, 20));
    wait_for("a first remote write accepted", Duration::from_secs(30), || {
        (remote_metric(&agg, "samples_sent_total", None) > 0.0).then_some(())
    });
    // The first process's counters go with it.
    let sent_before = remote_metric(&agg, "samples_sent_total", None);
    for reason in ["queue_full", "rejected"] {
        assert_eq!(remote_metric(&agg, "samples_dropped_total", Some(reason)), 0.0, "dropped: {reason}");
    }

    // The outage is the experiment: real time in which the agent samples into its buffer.
    agg.proc.as_mut().expect("the aggregator runs").kill9();
    let killed_ms = now_ms();
    std::thread::sleep(OUTAGE);
    let back_ms = now_ms();
    agg.restart();

    let connected = wait_for("the agent to reconnect", Duration::from_secs(30), || {
        nth_line_with(&agent.log_text(), "connected to aggregator", 1)
    });
    let backlog = field(&connected, "backlog_batches").expect("backlog_batches in the connected line");
    assert!(backlog >= 10, "a {OUTAGE:?} outage at 200 ms leaves a backlog: {connected}");
    let resumed = wait_for("the aggregator's view of the reconnect", Duration::from_secs(10), || {
        nth_line_with(&agg.proc.as_ref().expect("the aggregator runs").log_text(), "agent connected", 0)
    });
    let stored_before = field(&resumed, "stored_through").expect("stored_through in the connected line");
    // The present reaches VictoriaMetrics while the backlog is still missing: the backlog's
    // points arrive behind newer ones of their series.
    wait_for("VictoriaMetrics holding the present while the backlog is missing", Duration::from_secs(30), || {
        let gap = stored_runs(&agg)?.len() > 1;
        vm.flush();
        let ticks = vm.export(&format!("twinwatch_agent_ticks_total{{host=\"{HOST}\"}}"), killed_ms, now_ms() + 60_000);
        let newest = ticks.values().flatten().map(|s| s.0).max()?;
        (gap && newest > back_ms).then_some(())
    });
    let (_, counters) = wait_for("the backlog stored", Duration::from_secs(60), || {
        agg.stored_through(HOST, stored_before + backlog + 5)
    });
    assert!(counters["batches_backfilled"].as_u64() > Some(0), "the backlog was decoded as a backfill: {counters}");

    // The agent stops, so the history stops growing; its last points go out at the next
    // checkpoint, and the queue drains.
    agent.terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (ours, tally) = loop {
        let drained = remote_metric(&agg, "queue_samples", None) == 0.0;
        let ours = history(&agg, started - 60_000);
        vm.flush();
        let theirs = vm.export(&format!("{{host=\"{HOST}\"}}"), started - 60_000, now_ms() + 60_000);
        match compare(&ours, &theirs) {
            Ok(tally) if drained => break (ours, tally),
            Ok(_) => {}
            Err(diff) if std::time::Instant::now() > deadline => {
                panic!("VictoriaMetrics does not hold the history after 60 s: {diff}")
            }
            Err(_) => {}
        }
        assert!(std::time::Instant::now() < deadline, "the remote write queue did not drain in 60 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    // Points sampled while the aggregator was away: they came with the backlog, behind newer ones.
    let in_outage = |p: &Points| p.iter().filter(|(t, _)| *t > killed_ms && *t < back_ms).count();
    let outage_points: usize = ours.values().map(in_outage).sum();
    let outage_series = ours.values().filter(|p| in_outage(p) > 0).count();

    let sent_after = remote_metric(&agg, "samples_sent_total", None);
    let retries = remote_metric(&agg, "retries_total", None);
    for reason in ["queue_full", "rejected"] {
        assert_eq!(remote_metric(&agg, "samples_dropped_total", Some(reason)), 0.0, "dropped: {reason}");
    }
    let theirs = vm.self_metrics();
    let inserted = theirs["vm_rows_inserted_total{type=\"promremotewrite\"}"];
    eprintln!(
        "victoria-metrics ({}) holds {} series, {} points of the history, each at its millisecond: {} values bit \
         for bit, {} rounded to 12 significant digits; {} NaN points (not stored); {} samples held twice",
        FLAGS.join(" "),
        tally.series,
        tally.points,
        tally.exact,
        tally.rounded,
        tally.nan,
        tally.duplicates,
    );
    eprintln!(
        "{outage_points} points of {outage_series} series sampled during the outage; backlog {backlog} batches, {} \
         backfilled; samples sent {sent_before} + {sent_after}, {retries} retries; victoria-metrics inserted \
         {inserted}; {:.1} s",
        counters["batches_backfilled"],
        (now_ms() - started) as f64 / 1000.0,
    );
    for counter in [
        "vm_rows_ignored_total{reason=\"big_timestamp\"}",
        "vm_rows_ignored_total{reason=\"small_timestamp\"}",
        "vm_metrics_with_dropped_labels_total",
        "vm_http_request_errors_total{path=\"/api/v1/write\",protocol=\"promremotewrite\"}",
    ] {
        assert_eq!(theirs.get(counter), Some(&0.0), "{counter}");
    }
    assert!(inserted >= (tally.points - tally.nan) as f64, "victoria-metrics inserted {inserted} rows");
    assert!(tally.series >= 300, "only {} series compared", tally.series);
    assert!(outage_series >= 300, "only {outage_series} series have points from the outage");
}
