//! A service twinned from its OpenAPI spec: fetch the spec, probe every GET operation that can be
//! called without guessing, validate the answers, and re-fetch the spec so the probe set follows it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use twinwatch_common::probe::{self as names, label_value, MAX_UNPROBED};
use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::definition::{Check, HttpCheck, IpPref, ProbeDef};
use super::http;
use super::openapi::{PlanOptions, Spec};
use super::result::ProbeResult;
use super::runner;
use super::schedule::fnv1a;
use super::table::Table;
use super::tls::TlsContext;

/// Largest spec the agent downloads.
const SPEC_LIMIT: usize = 8 << 20;

/// One `[[service]]` entry, resolved.
#[derive(Clone)]
pub struct ServiceDef {
    pub name: String,
    /// What operation paths are appended to.
    pub base_url: String,
    pub spec_url: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: Duration,
    /// How often the spec is fetched again.
    pub refresh: Duration,
    /// Sent with every request (the spec fetch too), e.g. an `Authorization` header.
    pub headers: Vec<(String, String)>,
    pub ip: IpPref,
    pub tls: TlsContext,
    pub violations_fail: bool,
}

impl ServiceDef {
    fn get(&self, url: String) -> HttpCheck {
        HttpCheck {
            headers: self.headers.clone(),
            ip: self.ip,
            body_limit: SPEC_LIMIT,
            violations_fail: self.violations_fail,
            ..HttpCheck::get(url, self.tls.clone())
        }
    }

    /// Its entry in the result table.
    pub fn key(&self) -> String {
        format!("service:{}", self.name)
    }
}

/// The spec's operations as probes, and the series describing the service.
pub fn plan(svc: &ServiceDef, spec: &Spec) -> (Vec<ProbeDef>, Vec<Metric>) {
    let mut probes = Vec::new();
    let mut unprobed = Vec::new();
    for (index, op) in spec.operations.iter().enumerate() {
        let plan = match &op.plan {
            Ok(plan) => plan,
            Err(reason) => {
                unprobed.push((op, reason.clone()));
                continue;
            }
        };
        let validator = match spec.validator(index) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                unprobed.push((op, format!("its response schema does not compile: {e}")));
                continue;
            }
        };
        let mut check = svc.get(format!("{}{}", svc.base_url.trim_end_matches('/'), plan.path_and_query));
        check.headers.extend(plan.headers.iter().cloned());
        check.body_limit = 10 << 20;
        check.validator = Some(validator);
        let mut id = format!("{}.{}", svc.name, op.id);
        id.truncate(128);
        probes.push(ProbeDef {
            id,
            interval: svc.interval,
            timeout: svc.timeout,
            jitter: svc.jitter,
            check: Check::Http(Box::new(check)),
            info: vec![
                (names::SERVICE.into(), svc.name.clone()),
                ("operation".into(), op.id.clone()),
                ("method".into(), op.method.clone()),
                ("path".into(), op.path.clone()),
            ],
        });
    }
    let key = |name: &str| SeriesKey::new(name).with(names::SERVICE, svc.name.as_str());
    let coverage = Coverage::of(spec, probes.len());
    let mut metrics = vec![
        Metric::gauge(key(names::SERVICE_OPERATIONS), Value::Int(coverage.operations as i64)),
        Metric::gauge(key(names::SERVICE_GETS), Value::Int(coverage.gets as i64)),
        Metric::gauge(key(names::SERVICE_CALLABLE), Value::Int(coverage.callable_gets as i64)),
        Metric::gauge(key(names::SERVICE_PROBED), Value::Int(coverage.probed as i64)),
    ];
    if let Some(ratio) = coverage.ratio() {
        metrics.push(Metric::gauge(key(names::SERVICE_COVERAGE), Value::Float(ratio)));
    }
    for (op, reason) in unprobed.into_iter().take(MAX_UNPROBED) {
        let k = key(names::SERVICE_UNPROBED_INFO)
            .with("operation", label_value(&op.id))
            .with("method", op.method.as_str())
            .with("path", label_value(&op.path))
            .with("reason", label_value(&reason));
        metrics.push(Metric::gauge(k, Value::Int(1)));
    }
    (probes, metrics)
}

/// How much of a spec is probed. Only GETs are ever probed, and only those the agent may call,
/// so coverage is measured against those; the other totals stand beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub probed: usize,
    pub callable_gets: usize,
    pub gets: usize,
    pub operations: usize,
}

impl Coverage {
    pub fn of(spec: &Spec, probed: usize) -> Coverage {
        let gets = spec.operations.iter().filter(|op| op.method == "GET");
        Coverage {
            probed,
            callable_gets: gets.clone().filter(|op| op.callable).count(),
            gets: gets.count(),
            operations: spec.operations.len(),
        }
    }

    /// Probed over callable GETs; `None` when there are none.
    pub fn ratio(&self) -> Option<f64> {
        (self.callable_gets > 0).then(|| self.probed as f64 / self.callable_gets as f64)
    }
}

fn info(svc: &ServiceDef, spec: Option<&Spec>, error: &str) -> Vec<Metric> {
    let key = |name: &str| SeriesKey::new(name).with(names::SERVICE, svc.name.as_str());
    let k = key(names::SERVICE_INFO)
        .with("base_url", label_value(&svc.base_url))
        .with("spec_url", label_value(&svc.spec_url))
        .with("title", label_value(spec.map_or("", |s| s.title.as_str())))
        .with("version", label_value(spec.map_or("", |s| s.version.as_str())))
        .with("error", label_value(error));
    vec![
        Metric::gauge(k, Value::Int(1)),
        Metric::gauge(key(names::SERVICE_SPEC_OK), Value::Int(error.is_empty() as i64)),
    ]
}

/// Fetches and parses the spec.
pub async fn fetch(svc: &ServiceDef) -> Result<(u64, Spec), String> {
    let check = svc.get(svc.spec_url.clone());
    let mut result = ProbeResult::new(0);
    let response =
        tokio::time::timeout(svc.timeout.max(Duration::from_secs(10)), http::fetch(&check, true, &mut result))
            .await
            .map_err(|_| format!("{}: no answer in time", svc.spec_url))?;
    let Some(response) = response else { return Err(format!("{}: {}", svc.spec_url, result.detail)) };
    if !(200..300).contains(&response.status) {
        return Err(format!("{}: status {}", svc.spec_url, response.status));
    }
    let hash = fnv1a(&response.body);
    // Headers in the service entry are its credentials: secured operations are probed with them.
    let options = PlanOptions { authenticated: !svc.headers.is_empty() };
    let spec = Spec::parse_with(&response.body, options).map_err(|e| format!("{}: {e}", svc.spec_url))?;
    Ok((hash, spec))
}

/// Keeps the service's probe set in step with its spec until `stop` turns true.
pub async fn run_forever(svc: ServiceDef, table: Arc<Table>, permits: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    let mut current: Option<(u64, Vec<Metric>, Spec)> = None;
    let prefix = format!("{}.", svc.name);
    loop {
        let mut retry = svc.refresh;
        match fetch(&svc).await {
            Ok((hash, _)) if current.as_ref().is_some_and(|(h, _, _)| *h == hash) => {
                let (_, coverage, spec) = current.as_ref().expect("checked");
                let mut metrics = info(&svc, Some(spec), "");
                metrics.extend_from_slice(coverage);
                table.put(&svc.key(), metrics);
            }
            Ok((hash, spec)) => {
                let (probes, coverage) = plan(&svc, &spec);
                let c = Coverage::of(&spec, probes.len());
                tracing::info!(
                    service = %svc.name,
                    probed = c.probed,
                    callable_gets = c.callable_gets,
                    gets = c.gets,
                    operations = c.operations,
                    "spec loaded"
                );
                for task in running.drain(..) {
                    task.abort();
                }
                table.remove(|k| k.starts_with(&prefix));
                for def in probes {
                    running.push(tokio::spawn(runner::run_forever(def, table.clone(), permits.clone(), stop.clone())));
                }
                let mut metrics = info(&svc, Some(&spec), "");
                metrics.extend_from_slice(&coverage);
                table.put(&svc.key(), metrics);
                current = Some((hash, coverage, spec));
            }
            Err(e) => {
                // The probes of the last good spec go on; the service reports why it is stale.
                tracing::warn!(service = %svc.name, "spec: {e}");
                let mut metrics = info(&svc, current.as_ref().map(|(_, _, s)| s), &e);
                if let Some((_, coverage, _)) = &current {
                    metrics.extend_from_slice(coverage);
                }
                table.put(&svc.key(), metrics);
                retry = retry.min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for task in running {
        task.abort();
    }
}
