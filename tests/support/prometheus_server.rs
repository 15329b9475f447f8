//! A real Prometheus (Debian's `/usr/bin/prometheus`) on loopback, for interop tests and
//! benchmarks: its own config and TSDB in a directory, its HTTP API, killed on drop.
//!
//! Not a mock: what it accepts, rejects and answers is Prometheus' own behaviour.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{http_get, wait_for, Proc, ReservedPort};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A running Prometheus. `pid` lets a benchmark read its CPU time from `/proc`.
pub struct PrometheusServer {
    pub port: u16,
    pub dir: PathBuf,
    proc: Proc,
}

impl PrometheusServer {
    /// Starts Prometheus on a loopback port of its own (it listens on port 0 and logs the port
    /// it got) with `config` (YAML) and `extra_flags`, in `dir`, and waits until it is ready.
    pub fn start(dir: &Path, config: &str, extra_flags: &[&str]) -> PrometheusServer {
        Self::launch(dir, 0, config, extra_flags)
    }

    /// The same on a port reserved before, e.g. one a client has been failing to reach: Prometheus
    /// listens on it while the reservation still holds it, so nothing else can take it between.
    pub fn start_on(dir: &Path, port: &ReservedPort, config: &str, extra_flags: &[&str]) -> PrometheusServer {
        let server = Self::launch(dir, port.port(), config, extra_flags);
        assert_eq!(server.port, port.port(), "prometheus on the reserved port");
        server
    }

    fn launch(dir: &Path, port: u16, config: &str, extra_flags: &[&str]) -> PrometheusServer {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: run the tests with `cargo xtask test`, which installs Debian's prometheus"
        );
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let args: Vec<String> = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=info".into(),
        ]
        .into_iter()
        .chain(extra_flags.iter().map(|f| f.to_string()))
        .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = Proc::spawn(Path::new(PROMETHEUS), &args, dir.join("prometheus.log"));
        let port = proc.wait_logged_addr("msg=\"Listening on\"", "address").port();
        let mut server = PrometheusServer { port, dir: dir.to_owned(), proc };
        wait_for("prometheus ready", Duration::from_secs(30), || {
            if let Ok(Some(status)) = server.proc.child.try_wait() {
                panic!("prometheus exited ({status}) before it was ready:\n{}", server.log());
            }
            matches!(http_get(port, "/-/ready", None), Ok((200, _))).then_some(())
        });
        server
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Prometheus' own log (stderr).
    pub fn log(&self) -> String {
        self.proc.log_text()
    }

    /// The remote write receiver's URL (needs `--web.enable-remote-write-receiver`).
    pub fn remote_write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// GETs an API path and returns its `data`, panicking with the answer if it failed.
    pub fn api(&self, path_and_query: &str) -> Value {
        let (status, body) =
            http_get(self.port, path_and_query, None).unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path_and_query}: {e}: {body}"));
        assert!(status == 200 && json["status"] == "success", "GET {path_and_query}: {status} {body}");
        json["data"].clone()
    }

    /// An instant query, at `time` (Unix seconds) or now: the `result` array.
    pub fn query(&self, expr: &str, time: Option<f64>) -> Vec<Value> {
        let mut path = format!("/api/v1/query?query={}", encode(expr));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        result(self.api(&path))
    }

    /// A range query from `start` to `end` (Unix seconds) every `step` seconds: the `result`.
    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Vec<Value> {
        let path = format!("/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}", encode(expr));
        result(self.api(&path))
    }

    /// Raw samples of every series `selector` matches in the last `window` before `at`
    /// (seconds): `(labels, [(milliseconds, value)])`, the values parsed exactly as sent.
    pub fn samples(&self, selector: &str, window: &str, at: f64) -> Vec<(Value, Vec<(i64, f64)>)> {
        self.query(&format!("{selector}[{window}]"), Some(at))
            .into_iter()
            .map(|series| {
                let values = series["values"].as_array().cloned().unwrap_or_default();
                let points = values.iter().map(point).collect();
                (series["metric"].clone(), points)
            })
            .collect()
    }

    /// The one value of an instant query returning one series, if it does.
    pub fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr, None).as_slice() {
            [one] => Some(point(&one["value"]).1),
            _ => None,
        }
    }

    /// `/api/v1/targets`: the active targets.
    pub fn targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets")["activeTargets"].as_array().cloned().unwrap_or_default()
    }

    /// Prometheus' own metrics (`/metrics`), parsed.
    pub fn self_metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (status, body) = http_get(self.port, "/metrics", None).expect("prometheus /metrics");
        assert_eq!(status, 200);
        crate::prometheus::parse(&body).unwrap_or_else(|e| panic!("prometheus /metrics: {e}"))
    }

    /// Waits until a target of `job` has been scraped successfully, and returns it.
    pub fn wait_for_target_up(&self, job: &str, within: Duration) -> Value {
        wait_for(&format!("target {job} up"), within, || {
            self.targets().into_iter().find(|t| t["labels"]["job"] == job && t["health"] == "up")
        })
    }
}

/// `[seconds, "value"]` as `(milliseconds, value)`.
fn point(v: &Value) -> (i64, f64) {
    let t = v[0].as_f64().expect("timestamp");
    let value = v[1].as_str().expect("value string");
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value {v:?}")),
    };
    ((t * 1000.0).round() as i64, value)
}

fn result(data: Value) -> Vec<Value> {
    data["result"].as_array().cloned().unwrap_or_default()
}

/// Percent-encodes a query parameter (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        // `Proc` kills it; a failing test leaves its log on stderr for the reader.
        if std::thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(6000)..];
            eprintln!("--- prometheus log ({}), its end ---\n{tail}", self.dir.display());
        }
    }
}
