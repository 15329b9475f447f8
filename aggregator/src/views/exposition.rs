//! The Prometheus text exposition of the twins: every host's latest values under the names the
//! agent sent (node_exporter's, where one exists), labelled with `host`, `dc` and `instance`.
//!
//! Plain text rendering over the twin, with no I/O: the `/metrics` handler calls [`render`].
//! `instance` is the host id, so a dashboard built for node_exporter, which selects hosts by
//! `instance`, sees one instance per host when Prometheus scrapes with `honor_labels: true`.

use std::collections::BTreeMap;
use std::fmt::Write;

use twinwatch_common::delta::SeriesState;
use twinwatch_common::sample::{Kind, Value};

use crate::twin::{HostStatus, HostTwin};

/// Labels the twin adds to every series; an agent's own label of the same name is dropped.
const HOST_LABELS: [&str; 3] = ["dc", "host", "instance"];

/// A label value with `\`, `"` and newlines escaped.
pub(crate) fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as Prometheus reads it: integers exactly, `NaN`, `+Inf`, `-Inf`.
fn number(series: &SeriesState, out: &mut String) {
    if !series.float && series.scale == 1.0 {
        let _ = write!(out, "{}", Value::from_bits(series.bits, false).as_f64() as i64);
        return;
    }
    float(series.value(), out);
}

fn float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Writes `name{labels} value` lines into chunks of about [`CHUNK_BYTES`], handing each full
/// chunk to `emit`, which says whether to go on (false: the reader went away).
struct Chunks<F: FnMut(String) -> bool> {
    out: String,
    emit: F,
    going: bool,
}

/// The size of the pieces `/metrics` is sent in: a scrape of a thousand hosts is tens of
/// megabytes of text, never held whole.
pub const CHUNK_BYTES: usize = 64 * 1024;

impl<F: FnMut(String) -> bool> Chunks<F> {
    fn family(&mut self, name: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: impl FnOnce(&mut String)) {
        let body = &mut self.out;
        body.push_str(name);
        if !labels.is_empty() {
            body.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(k);
                body.push_str("=\"");
                escape(v, body);
                body.push('"');
            }
            body.push('}');
        }
        body.push(' ');
        value(body);
        body.push('\n');
        if self.out.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.going && !self.out.is_empty() {
            let full = std::mem::replace(&mut self.out, String::with_capacity(CHUNK_BYTES + 1024));
            self.going = (self.emit)(full);
        }
        self.out.clear();
    }
}

/// Per-host families: the status and the ingest counters.
const STATUS: &str = "twinwatch_host_status";
const COUNTERS: [&str; 9] = [
    "twinwatch_ingest_batches_applied_total",
    "twinwatch_ingest_batches_backfilled_total",
    "twinwatch_ingest_duplicate_batches_total",
    "twinwatch_ingest_dropped_ticks_total",
    "twinwatch_ingest_refused_connections_total",
    "twinwatch_ingest_missing_batches_total",
    "twinwatch_ingest_keyframe_requests_total",
    "twinwatch_ingest_connects_total",
    "twinwatch_host_reboots_total",
];

fn counter_values(host: &HostTwin) -> [u64; 9] {
    let c = &host.counters;
    [
        c.batches_applied,
        c.batches_backfilled,
        c.duplicates,
        c.dropped_ticks,
        c.refused,
        c.missing_batches,
        c.keyframe_requests,
        c.connects,
        c.reboots,
    ]
}

/// Renders every host's twin, plus per-host status and ingest counters, in pieces of about
/// [`CHUNK_BYTES`] handed to `emit` until it returns false. Offline hosts export only their
/// status: their last values are not current, as with a failed scrape.
///
/// Each family (one `# TYPE` and all its lines, over every host) is written once: hosts' series
/// are sorted by name and walked together, so the text is made a piece at a time, never whole.
pub fn render_chunked(hosts: &[&HostTwin], now_ms: i64, offline_after_ms: i64, emit: impl FnMut(String) -> bool) {
    let mut out = Chunks { out: String::with_capacity(CHUNK_BYTES + 1024), emit, going: true };
    let statuses: Vec<HostStatus> = hosts.iter().map(|h| h.status(now_ms, offline_after_ms)).collect();
    out.family(STATUS, Kind::Gauge);
    for (host, status) in hosts.iter().zip(&statuses) {
        for s in ["online", "stale", "offline"] {
            let on = status.as_str() == s;
            let labels = [("dc", host.dc.as_str()), ("host", host.id.as_str()), ("status", s)];
            out.line(STATUS, &labels, |o| o.push(if on { '1' } else { '0' }));
        }
    }
    for (i, name) in COUNTERS.iter().enumerate() {
        out.family(name, Kind::Counter);
        for host in hosts {
            let v = counter_values(host)[i];
            out.line(name, &[("dc", host.dc.as_str()), ("host", host.id.as_str())], |o| {
                let _ = write!(o, "{v}");
            });
        }
    }
    // Each online host's series by name; a series named like a per-host family would repeat it.
    let reserved = |name: &str| name == STATUS || COUNTERS.contains(&name);
    let mut sorted: Vec<(&HostTwin, Vec<&SeriesState>)> = hosts
        .iter()
        .zip(&statuses)
        .filter(|(_, status)| **status != HostStatus::Offline)
        .map(|(host, _)| {
            let mut series: Vec<&SeriesState> = host.state.series().filter(|s| !reserved(&s.key.name)).collect();
            series.sort_by(|a, b| a.key.name.cmp(&b.key.name));
            (*host, series)
        })
        .collect();
    let names: BTreeMap<&str, Kind> =
        sorted.iter().flat_map(|(_, series)| series.iter().map(|s| (s.key.name.as_str(), s.kind))).rev().collect();
    let mut at = vec![0usize; sorted.len()];
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for (name, kind) in names {
        if !out.going {
            return;
        }
        out.family(name, kind);
        for ((host, series), at) in sorted.iter_mut().zip(at.iter_mut()) {
            while let Some(series) = series.get(*at).filter(|s| s.key.name == name) {
                *at += 1;
                labels.clear();
                labels.extend(
                    series
                        .key
                        .labels
                        .iter()
                        .filter(|(k, _)| !HOST_LABELS.contains(&k.as_str()))
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                );
                labels.extend([("dc", host.dc.as_str()), ("host", host.id.as_str()), ("instance", host.id.as_str())]);
                labels.sort_unstable_by_key(|(k, _)| *k);
                out.line(name, &labels, |o| number(series, o));
            }
        }
    }
    out.flush();
}

/// [`render_chunked`] into one string.
#[cfg(test)]
pub fn render<'a>(hosts: impl Iterator<Item = &'a HostTwin>, now_ms: i64, offline_after_ms: i64, out: &mut String) {
    let hosts: Vec<&HostTwin> = hosts.collect();
    render_chunked(&hosts, now_ms, offline_after_ms, |chunk| {
        out.push_str(&chunk);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::identity::AgentIdentity;
    use crate::twin::Twin;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::message::{Batch, Hello};
    use twinwatch_common::probe;
    use twinwatch_common::sample::{Metric, Sample, SeriesKey};

    /// Host `id` of `dc1` connects and sends one sample of `metrics` at t = 1 s.
    fn connect(twin: &mut Twin, id: &str, metrics: Vec<Metric>) {
        let who = AgentIdentity { id: id.into(), dc: "dc1".into() };
        let hello = Hello {
            agent_version: "t".into(),
            incarnation: 1,
            agent_time_ms: 0,
            interval_ms: 1000,
            host: Default::default(),
        };
        twin.handle_hello(&who, 1, &hello, 1000);
        let tick = DeltaEncoder::new(10).encode(&Sample::new(1000, metrics));
        twin.handle_batch(id, 1, &Batch { incarnation: 1, seq: 1, ticks: vec![tick] }, 1000);
    }

    fn twin_with(metrics: Vec<Metric>) -> Twin {
        let mut twin = Twin::default();
        connect(&mut twin, "udm", metrics);
        twin
    }

    #[test]
    fn series_keep_their_names_and_gain_host_labels() {
        let twin = twin_with(vec![
            Metric::counter(
                SeriesKey::new("node_cpu_seconds_total").with("cpu", "0").with("mode", "idle"),
                Value::Int(12345),
            )
            .scaled(0.01),
            Metric::gauge(SeriesKey::new("node_memory_MemTotal_bytes"), Value::Int(1 << 40)),
            Metric::gauge(
                SeriesKey::new("odd").with("path", "a \"b\"\\c\nd").with("host", "spoofed"),
                Value::Float(f64::NAN),
            ),
            Metric::gauge(SeriesKey::new("inf"), Value::Float(f64::NEG_INFINITY)),
        ]);
        let mut out = String::new();
        render(twin.hosts(), 1000, 60_000, &mut out);
        for expected in [
            "# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{cpu=\"0\",dc=\"dc1\",host=\"udm\",instance=\"udm\",mode=\"idle\"} 123.45\n",
            "# TYPE node_memory_MemTotal_bytes gauge\nnode_memory_MemTotal_bytes{dc=\"dc1\",host=\"udm\",instance=\"udm\"} 1099511627776\n",
            "odd{dc=\"dc1\",host=\"udm\",instance=\"udm\",path=\"a \\\"b\\\"\\\\c\\nd\"} NaN\n",
            "inf{dc=\"dc1\",host=\"udm\",instance=\"udm\"} -Inf\n",
            "twinwatch_host_status{dc=\"dc1\",host=\"udm\",status=\"online\"} 1\n",
            "twinwatch_host_status{dc=\"dc1\",host=\"udm\",status=\"offline\"} 0\n",
            "twinwatch_ingest_batches_applied_total{dc=\"dc1\",host=\"udm\"} 1\n",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
        assert_eq!(out.matches("# TYPE").count(), out.lines().filter(|l| l.starts_with("# TYPE")).count());
    }

    #[test]
    fn probe_series_come_out_as_blackbox_exporter_names_them() {
        let mut metrics = crate::twin::endpoints::tests::http_result("shop", 1_795_332_000_123, 200, 0.25);
        let key = |name: &str| SeriesKey::new(name).with(probe::ENDPOINT, "shop");
        metrics.push(Metric::counter(key(probe::RUNS), Value::Int(7)));
        metrics.push(Metric::gauge(
            key(probe::TLS_CHAIN_INFO)
                .with("issuer", "CN=\"Test\" CA")
                .with("subjectalternative", "a.example,b.example"),
            Value::Int(1),
        ));
        let twin = twin_with(metrics);
        let mut out = String::new();
        render(twin.hosts(), 1000, 60_000, &mut out);
        let labels = "dc=\"dc1\",endpoint=\"shop\",host=\"udm\",instance=\"udm\"";
        for expected in [
            format!("# TYPE probe_success gauge\nprobe_success{{{labels}}} 1\n"),
            format!("# TYPE probe_duration_seconds gauge\nprobe_duration_seconds{{{labels}}} 0.25\n"),
            format!("# TYPE probe_http_status_code gauge\nprobe_http_status_code{{{labels}}} 200\n"),
            format!("probe_http_duration_seconds{{{labels},phase=\"connect\"}} {}\n", 0.25 * 2.0 / 15.0),
            // Milliseconds at scale 1e-3 read as seconds, as Prometheus timestamps do.
            format!("twinwatch_probe_timestamp_seconds{{{labels}}} 1795332000.123\n"),
            format!("# TYPE twinwatch_probe_runs_total counter\ntwinwatch_probe_runs_total{{{labels}}} 7\n"),
            format!("twinwatch_probe_info{{{labels},kind=\"http\",target=\"https://shop.example/\"}} 1\n"),
            format!(
                "probe_ssl_last_chain_info{{{labels},issuer=\"CN=\\\"Test\\\" CA\",subjectalternative=\"a.example,b.example\"}} 1\n"
            ),
            "twinwatch_probe_result_info{address=\"[::1]:443\",dc=\"dc1\",detail=\"\",endpoint=\"shop\",host=\"udm\",instance=\"udm\",outcome=\"success\"} 1\n".to_owned(),
        ] {
            assert!(out.contains(&expected), "missing {expected:?} in\n{out}");
        }
        for name in [probe::SUCCESS, probe::DURATION, probe::HTTP_DURATION, probe::INFO, probe::RESULT_INFO] {
            assert!(out.contains(&format!("# TYPE {name} gauge\n")), "{name}");
        }
    }

    #[test]
    fn a_large_fleet_comes_out_in_bounded_pieces_each_family_once_and_stops_when_told() {
        let mut twin = Twin::default();
        for h in 0..200 {
            let metrics = (0..50)
                .map(|i| {
                    Metric::gauge(SeriesKey::new(format!("m{}", (i + h) % 50)).with("i", i.to_string()), Value::Int(i))
                })
                .collect();
            connect(&mut twin, &format!("h{h:03}"), metrics);
        }
        let hosts: Vec<&HostTwin> = twin.hosts().collect();
        let mut chunks = Vec::new();
        render_chunked(&hosts, 1000, 60_000, |c| {
            chunks.push(c);
            true
        });
        assert!(chunks.len() > 5, "{} pieces", chunks.len());
        assert!(chunks.iter().all(|c| c.len() < CHUNK_BYTES + 1024));
        let whole = chunks.concat();
        assert_eq!(whole.lines().filter(|l| l.starts_with("m7{")).count(), 200);
        let mut families: Vec<&str> = whole.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let n = families.len();
        families.sort_unstable();
        families.dedup();
        assert_eq!(families.len(), n, "a family repeated");
        // Each line follows its own family's header.
        let mut family = "";
        for line in whole.lines() {
            match line.strip_prefix("# TYPE ") {
                Some(t) => family = t.split(' ').next().unwrap(),
                None => assert_eq!(line.split(['{', ' ']).next(), Some(family), "{line}"),
            }
        }
        let mut taken = 0;
        render_chunked(&hosts, 1000, 60_000, |_| {
            taken += 1;
            taken < 2
        });
        assert_eq!(taken, 2, "rendering goes on after the reader left");
    }

    #[test]
    fn an_offline_host_exports_its_status_only() {
        let twin = twin_with(vec![Metric::gauge(SeriesKey::new("node_load1"), Value::Int(1))]);
        let mut out = String::new();
        render(twin.hosts(), 1000 + 61_000, 60_000, &mut out);
        assert!(!out.contains("node_load1"));
        assert!(out.contains("twinwatch_host_status{dc=\"dc1\",host=\"udm\",status=\"offline\"} 1\n"));
    }
}
