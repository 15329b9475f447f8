//! One probe run's result, and the series it becomes (named in `common::probe`).

use std::net::SocketAddr;
use std::time::Duration;

use twinwatch_common::probe::{self as names, label_value, Outcome, MAX_VIOLATIONS};
use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::definition::ProbeDef;
use super::openapi::Violation;
use super::tls::{CertInfo, Seen};

/// Seconds per HTTP phase, in the order of `common::probe::PHASES`.
pub type Phases = [Duration; 5];

#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Wall clock at the start, ms since the epoch.
    pub started_ms: i64,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Why it failed; empty on success.
    pub detail: String,
    /// The address finally connected to.
    pub address: Option<SocketAddr>,
    /// Time spent resolving names.
    pub resolve: Duration,
    /// Addresses a DNS probe received.
    pub answers: Vec<std::net::IpAddr>,
    pub http: Option<HttpResult>,
    /// What the last TLS handshake showed.
    pub tls: Option<Seen>,
    /// Schema violations of the response, for probes generated from an OpenAPI spec.
    pub violations: Option<Vec<Violation>>,
}

#[derive(Debug, Clone, Default)]
pub struct HttpResult {
    /// Summed over redirects.
    pub phases: Phases,
    /// 0 if no response arrived.
    pub status: u16,
    pub version: f64,
    pub body_bytes: u64,
    pub redirects: u32,
    /// Whether the final request went over TLS.
    pub ssl: bool,
    pub assertion_failed: bool,
}

impl ProbeResult {
    pub fn new(started_ms: i64) -> Self {
        ProbeResult {
            started_ms,
            duration: Duration::ZERO,
            outcome: Outcome::Success,
            detail: String::new(),
            address: None,
            resolve: Duration::ZERO,
            answers: Vec::new(),
            http: None,
            tls: None,
            violations: None,
        }
    }

    /// Records a failure; the first one stands.
    pub fn fail(&mut self, outcome: Outcome, detail: impl Into<String>) {
        if self.outcome == Outcome::Success {
            self.outcome = outcome;
            self.detail = detail.into();
        }
    }

    /// The series of this result, with the probe's own counters.
    pub fn metrics(&self, def: &ProbeDef, runs: u64, skipped: u64, out: &mut Vec<Metric>) {
        let key = |name: &str| SeriesKey::new(name).with(names::ENDPOINT, def.id.as_str());
        let gauge = |out: &mut Vec<Metric>, name: &str, v: Value| out.push(Metric::gauge(key(name), v));
        let seconds = |d: Duration| Value::Float(d.as_secs_f64());

        let mut info = key(names::INFO).with("kind", def.kind()).with("target", label_value(def.target()));
        for (k, v) in &def.info {
            info = info.with(k, label_value(v));
        }
        out.push(Metric::gauge(info, Value::Int(1)));
        gauge(out, names::SUCCESS, Value::Int((self.outcome == Outcome::Success) as i64));
        gauge(out, names::DURATION, seconds(self.duration));
        out.push(Metric::gauge(key(names::TIMESTAMP), Value::Int(self.started_ms)).scaled(1e-3));
        out.push(Metric::counter(key(names::RUNS), Value::Int(runs as i64)));
        out.push(Metric::counter(key(names::SKIPPED), Value::Int(skipped as i64)));
        let address = self.address.map(|a| a.to_string()).unwrap_or_default();
        let result = key(names::RESULT_INFO)
            .with("outcome", self.outcome.as_str())
            .with("detail", label_value(&self.detail))
            .with("address", address);
        out.push(Metric::gauge(result, Value::Int(1)));
        if let Some(a) = self.address {
            gauge(out, names::IP_PROTOCOL, Value::Int(if a.is_ipv4() { 4 } else { 6 }));
        }
        gauge(out, names::DNS_LOOKUP, seconds(self.resolve));
        if def.kind() == "dns" {
            gauge(out, names::DNS_ANSWERS, Value::Int(self.answers.len() as i64));
            for a in self.answers.iter().take(16) {
                out.push(Metric::gauge(key(names::DNS_ANSWER_INFO).with("address", a.to_string()), Value::Int(1)));
            }
        }
        if let Some(h) = &self.http {
            for (phase, d) in names::PHASES.iter().zip(h.phases) {
                out.push(Metric::gauge(key(names::HTTP_DURATION).with("phase", *phase), seconds(d)));
            }
            gauge(out, names::HTTP_STATUS, Value::Int(h.status as i64));
            gauge(out, names::HTTP_BODY_BYTES, Value::Int(h.body_bytes as i64));
            gauge(out, names::HTTP_VERSION, Value::Float(h.version));
            gauge(out, names::HTTP_REDIRECTS, Value::Int(h.redirects as i64));
            gauge(out, names::HTTP_SSL, Value::Int(h.ssl as i64));
            gauge(out, names::HTTP_ASSERTION_FAILED, Value::Int(h.assertion_failed as i64));
        }
        if let Some(seen) = &self.tls {
            tls_metrics(seen, &key, out);
        }
        if let Some(violations) = &self.violations {
            gauge(out, names::SCHEMA_VIOLATIONS, Value::Int(violations.len() as i64));
            for v in violations.iter().take(MAX_VIOLATIONS) {
                let k = key(names::SCHEMA_VIOLATION_INFO)
                    .with("pointer", label_value(&v.pointer))
                    .with("message", label_value(&v.message));
                out.push(Metric::gauge(k, Value::Int(1)));
            }
        }
    }
}

fn tls_metrics(seen: &Seen, key: &dyn Fn(&str) -> SeriesKey, out: &mut Vec<Metric>) {
    let certs: Vec<CertInfo> = seen.certificates();
    let Some(leaf) = certs.first() else { return };
    let earliest = certs.iter().map(|c| c.not_after).min().unwrap_or(leaf.not_after);
    out.push(Metric::gauge(key(names::TLS_EARLIEST_EXPIRY), Value::Int(earliest)));
    out.push(Metric::gauge(key(names::TLS_LEAF_EXPIRY), Value::Int(leaf.not_after)));
    out.push(Metric::gauge(key(names::TLS_VERIFIED), Value::Int(seen.invalid.is_none() as i64)));
    if let Some(version) = &seen.version {
        out.push(Metric::gauge(key(names::TLS_VERSION_INFO).with("version", version.as_str()), Value::Int(1)));
    }
    let chain = key(names::TLS_CHAIN_INFO)
        .with("fingerprint_sha256", leaf.fingerprint_sha256.as_str())
        .with("issuer", label_value(&leaf.issuer))
        .with("serialnumber", leaf.serial.as_str())
        .with("subject", label_value(&leaf.subject))
        .with("subjectalternative", label_value(&leaf.sans.join(",")));
    out.push(Metric::gauge(chain, Value::Int(1)));
}
