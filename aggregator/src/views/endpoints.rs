//! What the endpoints API shows: every endpoint with its vantages and a verdict across them, one
//! endpoint in detail, and services. Built from the host twins' current probe series (the latest
//! state, persisted) and the result rings (the window, not persisted). Sans-IO: `now` comes in
//! with the [`Scope`].
//!
//! A vantage is **up** when its host is online and its last result succeeded, **down** when its
//! host is online and its last result failed, and **unknown** otherwise: an offline host's last
//! result says nothing about now.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use twinwatch_common::config::Span;
use twinwatch_common::delta::SeriesState;
use twinwatch_common::probe::{self, PHASES};
use twinwatch_common::time::rfc3339;

use super::services::{service_state, ServiceState};
use crate::twin::endpoints::stats::{self, Latency, Stats};
use crate::twin::endpoints::{is_probe_series, timestamp_ms, ProbeResult};
use crate::twin::{HostStatus, HostTwin, Twin};

pub const DEFAULT_WINDOW: &str = "1h";

/// The span statistics cover, as asked for (`?window=15m`). Longer than the rings hold is
/// allowed: the statistics then cover what the rings hold, and `since` says from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub text: String,
    pub ms: i64,
}

impl Window {
    pub fn parse(text: Option<&str>) -> Result<Window, String> {
        let text = text.unwrap_or(DEFAULT_WINDOW).trim();
        let span: Span = text.parse()?;
        let ms = i64::try_from(span.0.as_millis()).unwrap_or(i64::MAX);
        if ms <= 0 {
            return Err(format!("window {text:?} is empty"));
        }
        Ok(Window { text: text.to_owned(), ms })
    }
}

/// When, and over which window, a view is built.
#[derive(Debug, Clone)]
pub struct Scope {
    pub now_ms: i64,
    pub offline_after_ms: i64,
    pub window: Window,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VantageStatus {
    Up,
    Down,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every vantage that knows sees it up.
    Up,
    /// Every vantage that knows sees it down.
    Down,
    /// Some see it down: `down_dcs` says where.
    Partial,
    /// No vantage knows.
    Unknown,
}

/// The verdict across `(dc, status)` vantages, and the DCs that see the endpoint down.
pub fn verdict<'a>(vantages: impl IntoIterator<Item = (&'a str, VantageStatus)>) -> (Verdict, Vec<String>) {
    let (mut up, mut down) = (0, BTreeSet::new());
    let mut down_count = 0;
    for (dc, status) in vantages {
        match status {
            VantageStatus::Up => up += 1,
            VantageStatus::Down => {
                down_count += 1;
                down.insert(dc.to_owned());
            }
            VantageStatus::Unknown => {}
        }
    }
    let verdict = match (up, down_count) {
        (0, 0) => Verdict::Unknown,
        (_, 0) => Verdict::Up,
        (0, _) => Verdict::Down,
        _ => Verdict::Partial,
    };
    (verdict, down.into_iter().collect())
}

/// What `twinwatch_probe_info` says about the endpoint.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ProbeInfo {
    pub kind: Option<String>,
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One endpoint; `V` is a [`VantageSummary`] in the list and a [`VantageDetail`] alone.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Endpoint<V> {
    pub id: String,
    #[serde(flatten)]
    pub info: ProbeInfo,
    pub verdict: Verdict,
    pub down_dcs: Vec<String>,
    pub window: String,
    pub vantages: Vec<V>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VantageSummary {
    pub host: String,
    pub dc: String,
    pub host_status: HostStatus,
    pub status: VantageStatus,
    pub last_probe: Option<String>,
    pub last_probe_ms: Option<i64>,
    pub last_latency_seconds: Option<f64>,
    pub outcome: Option<String>,
    /// Over the window, from the results seen since this aggregator started.
    pub success_rate: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VantageDetail {
    #[serde(flatten)]
    pub summary: VantageSummary,
    pub window: String,
    pub results: u32,
    /// Start of the oldest result in the window.
    pub since: Option<String>,
    pub latency: Latency,
    pub status_classes: BTreeMap<&'static str, u32>,
    /// JSON keys are strings: the codes as `"200"`.
    #[schema(value_type = BTreeMap<String, u32>)]
    pub status_codes: BTreeMap<u16, u32>,
    pub outcomes: BTreeMap<&'static str, u32>,
    pub phases: Option<Phases>,
    pub last: Option<Last>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Schema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceState>,
}

/// One HTTP phase, seconds: the last result's, and the window's median and 95th percentile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Phase {
    pub last: Option<f64>,
    pub median: Option<f64>,
    pub p95: Option<f64>,
}

/// The HTTP phases in the order they happen, and time to first byte (all but `transfer`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Phases {
    pub resolve: Phase,
    pub connect: Phase,
    pub tls: Phase,
    pub processing: Phase,
    pub transfer: Phase,
    pub ttfb: Phase,
}

/// The last result, from the host twin's current series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Last {
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub success: Option<bool>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub address: Option<String>,
    pub status_code: Option<u16>,
    pub http_version: Option<f64>,
    pub body_bytes: Option<u64>,
    pub redirects: Option<u32>,
    pub ip_protocol: Option<u8>,
    /// Seconds.
    pub duration: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tls {
    pub leaf_expiry: Option<String>,
    pub leaf_expiry_unix: Option<i64>,
    /// Until the leaf expires (or, without a leaf time, the earliest in the chain); negative once
    /// expired.
    pub seconds_left: Option<i64>,
    pub earliest_expiry: Option<String>,
    pub earliest_expiry_unix: Option<i64>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub sans: Vec<String>,
    pub fingerprint_sha256: Option<String>,
    pub version: Option<String>,
    pub verified: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dns {
    pub lookup_seconds: Option<f64>,
    pub answer_count: Option<u32>,
    pub answers: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

/// Schema validation of an OpenAPI-generated probe's last response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Schema {
    pub count: u32,
    pub violations: Vec<Violation>,
}

/// Every endpoint, by id.
pub fn list(twin: &Twin, scope: &Scope) -> Vec<Endpoint<VantageSummary>> {
    gather(twin, None)
        .into_iter()
        .map(|(id, probes)| {
            endpoint(id, &probes, scope, |p| {
                let rate = stats::success_rate(&window_results(twin, id, p, scope));
                summary(p, scope, rate)
            })
        })
        .collect()
}

/// One endpoint with statistics per vantage; `None` if no host probes `id`.
pub fn detail(twin: &Twin, id: &str, scope: &Scope) -> Option<Endpoint<VantageDetail>> {
    let probes = gather(twin, Some(id)).remove(id)?;
    Some(endpoint(id, &probes, scope, |p| vantage_detail(twin, id, p, scope)))
}

/// Some of one host's series, looked up by name.
pub(super) struct Series<'a>(pub(super) Vec<&'a SeriesState>);

impl<'a> Series<'a> {
    pub(super) fn named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a SeriesState> + 's {
        self.0.iter().copied().filter(move |s| s.key.name == name)
    }

    pub(super) fn find(&self, name: &str) -> Option<&'a SeriesState> {
        self.named(name).next()
    }

    /// The value, if the series exists and its value is a number.
    pub(super) fn value(&self, name: &str) -> Option<f64> {
        self.find(name).map(SeriesState::value).filter(|v| v.is_finite())
    }

    pub(super) fn value_where(&self, name: &str, label: &str, is: &str) -> Option<f64> {
        self.named(name).find(|s| s.key.label(label) == Some(is)).map(SeriesState::value).filter(|v| v.is_finite())
    }

    /// A label of the series called `name`, unless empty.
    pub(super) fn label(&self, name: &str, label: &str) -> Option<String> {
        self.find(name).and_then(|s| text(s, label))
    }
}

fn text(series: &SeriesState, label: &str) -> Option<String> {
    series.key.label(label).filter(|v| !v.is_empty()).map(str::to_owned)
}

pub(super) fn service_of(series: &SeriesState) -> Option<&str> {
    series.key.label(probe::SERVICE).filter(|s| !s.is_empty())
}

/// One host's current series of one endpoint.
pub(super) struct Probe<'a> {
    pub(super) host: &'a HostTwin,
    pub(super) series: Series<'a>,
}

impl Probe<'_> {
    fn last_ms(&self) -> Option<i64> {
        self.series.find(probe::TIMESTAMP).and_then(timestamp_ms)
    }

    pub(super) fn status(&self, scope: &Scope) -> VantageStatus {
        if self.host.status(scope.now_ms, scope.offline_after_ms) != HostStatus::Online || self.last_ms().is_none() {
            return VantageStatus::Unknown;
        }
        match self.series.value(probe::SUCCESS) {
            Some(1.0) => VantageStatus::Up,
            Some(_) => VantageStatus::Down,
            None => VantageStatus::Unknown,
        }
    }
}

/// Every host's probe series grouped by endpoint (only `only`'s, if given); hosts in id order.
pub(super) fn gather<'a>(twin: &'a Twin, only: Option<&str>) -> BTreeMap<&'a str, Vec<Probe<'a>>> {
    let mut out: BTreeMap<&str, Vec<Probe>> = BTreeMap::new();
    for host in twin.hosts() {
        let mut mine: BTreeMap<&str, Vec<&SeriesState>> = BTreeMap::new();
        for s in host.state.series().filter(|s| is_probe_series(&s.key.name)) {
            match s.key.label(probe::ENDPOINT) {
                Some(e) if only.is_none_or(|o| o == e) => mine.entry(e).or_default().push(s),
                _ => {}
            }
        }
        for (endpoint, series) in mine {
            out.entry(endpoint).or_default().push(Probe { host, series: Series(series) });
        }
    }
    out
}

/// The results of `probe`'s ring in the window. Results carry the agent's clock and the window
/// is the aggregator's, so the window is shifted by the host's clock correction (zero unless its
/// offset is beyond [`crate::twin::clock::CORRECT_BEYOND_MS`]).
pub(super) fn window_results(twin: &Twin, id: &str, probe: &Probe, scope: &Scope) -> Vec<ProbeResult> {
    let correction = probe.host.clock.estimate().map_or(0, |e| e.correction_ms);
    let since = scope.now_ms.saturating_sub(scope.window.ms).saturating_sub(correction);
    twin.endpoints().vantage(id, &probe.host.id).map(|v| v.since(since)).unwrap_or_default()
}

fn endpoint<V>(id: &str, probes: &[Probe], scope: &Scope, vantage: impl FnMut(&Probe) -> V) -> Endpoint<V> {
    let (verdict, down_dcs) = verdict(probes.iter().map(|p| (p.host.dc.as_str(), p.status(scope))));
    // The first host that reports the probe's description speaks for all.
    let info = probes.iter().find_map(|p| p.series.find(probe::INFO));
    let label = |name: &str| info.and_then(|s| text(s, name));
    Endpoint {
        id: id.to_owned(),
        info: ProbeInfo {
            kind: label("kind"),
            target: label("target"),
            service: label(probe::SERVICE),
            operation: label("operation"),
            method: label("method"),
            path: label("path"),
        },
        verdict,
        down_dcs,
        window: scope.window.text.clone(),
        vantages: probes.iter().map(vantage).collect(),
    }
}

fn summary(p: &Probe, scope: &Scope, success_rate: Option<f64>) -> VantageSummary {
    let last = p.last_ms();
    VantageSummary {
        host: p.host.id.clone(),
        dc: p.host.dc.clone(),
        host_status: p.host.status(scope.now_ms, scope.offline_after_ms),
        status: p.status(scope),
        last_probe: last.map(rfc3339),
        last_probe_ms: last,
        last_latency_seconds: p.series.value(probe::DURATION),
        outcome: p.series.label(probe::RESULT_INFO, "outcome"),
        success_rate,
    }
}

fn vantage_detail(twin: &Twin, id: &str, p: &Probe, scope: &Scope) -> VantageDetail {
    let results = window_results(twin, id, p, scope);
    let stats = stats::summarize(&results);
    VantageDetail {
        summary: summary(p, scope, stats.success_rate),
        window: scope.window.text.clone(),
        results: stats.results,
        since: results.iter().map(|r| r.ts_ms).min().map(rfc3339),
        latency: stats.latency,
        phases: phases(p, &stats),
        status_classes: stats.status_classes,
        status_codes: stats.status_codes,
        outcomes: stats.outcomes,
        last: last(p),
        tls: tls(p, scope.now_ms),
        dns: dns(p),
        schema: schema(p),
        service: p.series.label(probe::INFO, probe::SERVICE).map(|name| service_state(p.host, &name)),
    }
}

fn phases(p: &Probe, stats: &Stats) -> Option<Phases> {
    let last: [Option<f64>; PHASES.len()] =
        std::array::from_fn(|i| p.series.value_where(probe::HTTP_DURATION, "phase", PHASES[i]));
    if last.iter().all(Option::is_none) && stats.phases.iter().all(|s| s.median.is_none()) {
        return None;
    }
    let phase = |i: usize| Phase { last: last[i], median: stats.phases[i].median, p95: stats.phases[i].p95 };
    let before_transfer = &last[..4];
    let last_ttfb = before_transfer
        .iter()
        .any(Option::is_some)
        .then(|| stats::microseconds(before_transfer.iter().flatten().sum()));
    Some(Phases {
        resolve: phase(0),
        connect: phase(1),
        tls: phase(2),
        processing: phase(3),
        transfer: phase(4),
        ttfb: Phase { last: last_ttfb, median: stats.ttfb.median, p95: stats.ttfb.p95 },
    })
}

fn last(p: &Probe) -> Option<Last> {
    let ts = p.last_ms()?;
    let s = &p.series;
    let result = |label: &str| s.label(probe::RESULT_INFO, label);
    // `as` saturates, so a nonsensical value cannot wrap into a plausible one.
    Some(Last {
        timestamp: rfc3339(ts),
        timestamp_ms: ts,
        success: s.value(probe::SUCCESS).map(|v| v == 1.0),
        outcome: result("outcome"),
        detail: result("detail"),
        address: result("address"),
        status_code: s.value(probe::HTTP_STATUS).map(|v| v as u16),
        http_version: s.value(probe::HTTP_VERSION),
        body_bytes: s.value(probe::HTTP_BODY_BYTES).map(|v| v as u64),
        redirects: s.value(probe::HTTP_REDIRECTS).map(|v| v as u32),
        ip_protocol: s.value(probe::IP_PROTOCOL).map(|v| v as u8),
        duration: s.value(probe::DURATION),
    })
}

fn tls(p: &Probe, now_ms: i64) -> Option<Tls> {
    let s = &p.series;
    let leaf = s.value(probe::TLS_LEAF_EXPIRY).map(|v| v as i64);
    let earliest = s.value(probe::TLS_EARLIEST_EXPIRY).map(|v| v as i64);
    let chain = s.find(probe::TLS_CHAIN_INFO);
    let version = s.label(probe::TLS_VERSION_INFO, "version");
    let verified = s.value(probe::TLS_VERIFIED).map(|v| v == 1.0);
    if leaf.is_none() && earliest.is_none() && chain.is_none() && version.is_none() && verified.is_none() {
        return None;
    }
    let chain_label = |label: &str| chain.and_then(|c| text(c, label));
    let sans = chain_label("subjectalternative")
        .map(|list| list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let unix = |secs: i64| rfc3339(secs.saturating_mul(1000));
    Some(Tls {
        leaf_expiry: leaf.map(unix),
        leaf_expiry_unix: leaf,
        seconds_left: leaf.or(earliest).map(|e| e.saturating_sub(now_ms.div_euclid(1000))),
        earliest_expiry: earliest.map(unix),
        earliest_expiry_unix: earliest,
        issuer: chain_label("issuer"),
        subject: chain_label("subject"),
        sans,
        fingerprint_sha256: chain_label("fingerprint_sha256"),
        version,
        verified,
    })
}

fn dns(p: &Probe) -> Option<Dns> {
    let s = &p.series;
    let lookup_seconds = s.value(probe::DNS_LOOKUP);
    let answer_count = s.value(probe::DNS_ANSWERS).map(|v| v as u32);
    let mut answers: Vec<String> = s.named(probe::DNS_ANSWER_INFO).filter_map(|a| text(a, "address")).collect();
    answers.sort();
    if lookup_seconds.is_none() && answer_count.is_none() && answers.is_empty() {
        return None;
    }
    Some(Dns { lookup_seconds, answer_count, answers })
}

fn schema(p: &Probe) -> Option<Schema> {
    let s = &p.series;
    let count = s.value(probe::SCHEMA_VIOLATIONS);
    let mut violations: Vec<Violation> = s
        .named(probe::SCHEMA_VIOLATION_INFO)
        .map(|v| Violation {
            pointer: v.key.label("pointer").unwrap_or_default().to_owned(),
            message: v.key.label("message").unwrap_or_default().to_owned(),
        })
        .collect();
    let generated = s.label(probe::INFO, "operation").is_some();
    if !generated && count.is_none() && violations.is_empty() {
        return None;
    }
    violations.sort();
    // The agent reports at most `MAX_VIOLATIONS` of them; the gauge has the full count.
    let count = count.map_or(violations.len() as u32, |c| c as u32);
    Some(Schema { count, violations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use VantageStatus::{Down, Unknown, Up};

    #[test]
    fn verdicts_across_vantages() {
        assert_eq!(verdict([]), (Verdict::Unknown, vec![]));
        assert_eq!(verdict([("dc1", Unknown), ("dc2", Unknown)]), (Verdict::Unknown, vec![]));
        assert_eq!(verdict([("dc1", Up), ("dc2", Unknown)]), (Verdict::Up, vec![]));
        assert_eq!(verdict([("dc1", Down), ("dc2", Unknown)]), (Verdict::Down, vec!["dc1".to_owned()]));
        let (v, dcs) = verdict([("dc2", Down), ("dc1", Up), ("dc3", Down), ("dc2", Down), ("dc1", Unknown)]);
        assert_eq!((v, dcs), (Verdict::Partial, vec!["dc2".to_owned(), "dc3".to_owned()]));
    }

    #[test]
    fn windows_parse_with_a_default() {
        assert_eq!(Window::parse(None), Ok(Window { text: "1h".into(), ms: 3_600_000 }));
        assert_eq!(Window::parse(Some("15m")).map(|w| w.ms), Ok(900_000));
        assert!(Window::parse(Some("0s")).is_err());
        assert!(Window::parse(Some("soon")).is_err());
        assert!(Window::parse(Some("99999999999999999999999d")).is_err());
    }
}
