//! A real VictoriaMetrics (Debian's `/usr/bin/victoria-metrics`) on loopback, for the scale-out
//! test: its storage in a directory, remote write in, raw samples out through `/api/v1/export`,
//! killed on drop.
//!
//! Not a mock: what it stores and answers is VictoriaMetrics' own behaviour. Its flags make every
//! accepted sample visible as stored: a retention of a century (nothing a test sends is too old),
//! no deduplication (a sample sent twice is held twice), no query latency offset and no response
//! cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::prometheus_server::encode;
use crate::{http_get, wait_for, Proc, ReservedPort};

pub const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

/// The flags the server runs with, besides its address and storage path.
pub const FLAGS: &[&str] = &[
    "-retentionPeriod=100y",
    "-dedup.minScrapeInterval=0s",
    "-search.latencyOffset=0s",
    "-search.disableCache",
    "-memory.allowedBytes=512MiB",
];

/// A series' labels, `__name__` among them.
pub type Labels = BTreeMap<String, String>;

/// A running VictoriaMetrics.
pub struct VictoriaMetrics {
    pub port: u16,
    pub dir: PathBuf,
    proc: Proc,
    /// Held while it runs, so nothing else takes the port between the choice and the listen.
    _port: ReservedPort,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics on a free loopback port with its storage in `dir`, and waits until
    /// it answers `/health`.
    pub fn start(dir: &Path) -> VictoriaMetrics {
        assert!(
            Path::new(VICTORIA_METRICS).exists(),
            "{VICTORIA_METRICS} is missing: run the tests with `cargo xtask test`, which installs Debian's \
             victoria-metrics"
        );
        std::fs::create_dir_all(dir).expect("victoria-metrics dir");
        // It cannot listen on port 0 and say which port it got, so it takes a reserved one (Go's
        // listeners set SO_REUSEADDR).
        let reserved = ReservedPort::new();
        let port = reserved.port();
        let args: Vec<String> =
            [format!("-httpListenAddr=127.0.0.1:{port}"), format!("-storageDataPath={}", dir.join("data").display())]
                .into_iter()
                .chain(FLAGS.iter().map(|f| f.to_string()))
                .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = Proc::spawn(Path::new(VICTORIA_METRICS), &args, dir.join("victoria-metrics.log"));
        wait_for("victoria-metrics ready", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("victoria-metrics exited ({status}) before it was ready:\n{}", proc.log_text());
            }
            matches!(http_get(port, "/health", None), Ok((200, _))).then_some(())
        });
        VictoriaMetrics { port, dir: dir.to_owned(), proc, _port: reserved }
    }

    /// Its log (stderr).
    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    /// The Prometheus remote write receiver's URL.
    pub fn remote_write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Makes every sample accepted so far searchable (`/internal/force_flush`); without it a
    /// sample waits in memory for a second or two.
    pub fn flush(&self) {
        let (status, body) = http_get(self.port, "/internal/force_flush", None).expect("force_flush");
        assert_eq!(status, 200, "force_flush: {body}");
    }

    /// The raw samples of every series `selector` matches between `start_ms` and `end_ms`, as
    /// stored: `labels -> [(milliseconds, value)]` in time order, a sample held twice listed twice.
    pub fn export(&self, selector: &str, start_ms: i64, end_ms: i64) -> BTreeMap<Labels, Vec<(i64, f64)>> {
        let path = format!(
            "/api/v1/export?match%5B%5D={}&start={:.3}&end={:.3}",
            encode(selector),
            start_ms as f64 / 1000.0,
            end_ms as f64 / 1000.0
        );
        let (status, body) = http_get(self.port, &path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let (labels, samples) = export_line(line).unwrap_or_else(|e| panic!("export line {line:?}: {e}"));
            // A series may come in more than one line.
            out.entry(labels).or_default().extend(samples);
        }
        for samples in out.values_mut() {
            samples.sort_by_key(|s| s.0);
        }
        out
    }

    /// Its own metrics (`/metrics`): `name{labels}` -> value, the labels as written but for the
    /// space it puts after each comma.
    pub fn self_metrics(&self) -> BTreeMap<String, f64> {
        let (status, body) = http_get(self.port, "/metrics", None).expect("victoria-metrics /metrics");
        assert_eq!(status, 200);
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("victoria-metrics /metrics: {l:?}"));
                let value = value.parse().unwrap_or_else(|_| panic!("victoria-metrics /metrics: {l:?}"));
                (key.replace(", ", ","), value)
            })
            .collect()
    }
}

/// One line of `/api/v1/export`: `{"metric":{...},"values":[...],"timestamps":[...]}`. The labels
/// are read as JSON; the numbers are read from their text with Rust's own parser, which rounds
/// correctly (serde_json's default float parsing may miss by one unit in the last place).
pub fn export_line(line: &str) -> Result<(Labels, Vec<(i64, f64)>), String> {
    let json: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let labels = json["metric"]
        .as_object()
        .ok_or("no metric")?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or("a label value that is no string")?.to_owned())))
        .collect::<Result<Labels, String>>()?;
    let values = array(line, "values")?
        .iter()
        .map(|v| match *v {
            "NaN" | "\"NaN\"" => Ok(f64::NAN),
            "Inf" | "+Inf" | "\"Inf\"" | "\"+Inf\"" => Ok(f64::INFINITY),
            "-Inf" | "\"-Inf\"" => Ok(f64::NEG_INFINITY),
            v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}")),
        })
        .collect::<Result<Vec<f64>, String>>()?;
    let times = array(line, "timestamps")?
        .iter()
        .map(|t| t.parse::<i64>().map_err(|e| format!("timestamp {t:?}: {e}")))
        .collect::<Result<Vec<i64>, String>>()?;
    if values.len() != times.len() {
        return Err(format!("{} values for {} timestamps", values.len(), times.len()));
    }
    Ok((labels, times.into_iter().zip(values).collect()))
}

/// The elements of the top-level array `"key":[...]` of an export line, as text. Label values
/// come first, inside `"metric"`, and a JSON string cannot hold the unescaped `"` that would let
/// one of them look like the key.
fn array<'a>(line: &'a str, key: &str) -> Result<Vec<&'a str>, String> {
    let open = format!("\"{key}\":[");
    let at = line.rfind(&open).ok_or_else(|| format!("no {key}"))? + open.len();
    let end = line[at..].find(']').ok_or_else(|| format!("{key} not closed"))? + at;
    Ok(line[at..end].split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        // `Proc` kills it; a failing test leaves the end of its log on stderr for the reader.
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(6000)..];
            eprintln!("--- victoria-metrics log ({}), its end ---\n{tail}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_line_gives_labels_and_exact_samples() {
        let line = r#"{"metric":{"__name__":"m","mode":"a \"values\":[9]"},"values":[0.1,12345678901234567,-2.5e-7,0.30000000000000004],"timestamps":[1,2,3,4]}"#;
        let (labels, samples) = export_line(line).unwrap();
        assert_eq!(labels["mode"], "a \"values\":[9]");
        assert_eq!(samples, vec![(1, 0.1), (2, 12345678901234567.0), (3, -2.5e-7), (4, 0.30000000000000004)]);
        assert!(export_line(r#"{"metric":{},"values":[1],"timestamps":[]}"#).is_err());
    }
}
