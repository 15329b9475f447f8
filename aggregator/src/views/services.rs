//! What the services API shows: every service a host reports or an endpoint names, with one line
//! of figures over its endpoints and vantages, and each host's view of its spec and coverage.
//! Sans-IO, like the endpoint views it builds on.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use twinwatch_common::delta::SeriesState;
use twinwatch_common::probe;

use super::endpoints::{gather, service_of, verdict, window_results, Probe, Scope, Series, Verdict};
use crate::twin::endpoints::stats;
use crate::twin::{HostStatus, HostTwin, Twin};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Coverage {
    pub operations: Option<u32>,
    /// GET operations: the only ones probed.
    pub gets: Option<u32>,
    /// GET operations the agent may call (no credentials needed, or it has them).
    pub callable_gets: Option<u32>,
    pub probed: Option<u32>,
    /// Probed over callable GETs, 0 to 1.
    pub ratio: Option<f64>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct Unprobed {
    pub operation: String,
    pub method: String,
    pub path: String,
    pub reason: String,
}

/// A service as one host sees it: its spec and how much of it is probed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceState {
    pub name: String,
    pub coverage: Coverage,
    pub spec_ok: Option<bool>,
    pub title: Option<String>,
    pub version: Option<String>,
    pub base_url: Option<String>,
    pub spec_url: Option<String>,
    pub error: Option<String>,
    pub unprobed: Vec<Unprobed>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceVantage {
    pub host: String,
    pub dc: String,
    pub host_status: HostStatus,
    #[serde(flatten)]
    pub state: ServiceState,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceEndpoint {
    pub id: String,
    pub operation: Option<String>,
    pub verdict: Verdict,
}

/// A service: one line of figures over all its endpoints and vantages, then the parts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Service {
    pub name: String,
    pub window: String,
    pub endpoints_monitored: u32,
    pub endpoints_up: u32,
    /// Over every result of its endpoints in the window, from every vantage.
    pub success_rate: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub endpoints: Vec<ServiceEndpoint>,
    pub vantages: Vec<ServiceVantage>,
}

/// Every service that a host reports or an endpoint names, by name.
pub fn services(twin: &Twin, scope: &Scope) -> Vec<Service> {
    let endpoints = gather(twin, None);
    let mut names: BTreeSet<&str> = twin.hosts().flat_map(|h| service_series(h, None)).filter_map(service_of).collect();
    let mut by_service: BTreeMap<&str, Vec<(&str, &[Probe])>> = BTreeMap::new();
    for (id, probes) in &endpoints {
        if let Some(name) = probes.iter().find_map(|p| p.series.find(probe::INFO)).and_then(service_of) {
            names.insert(name);
            by_service.entry(name).or_default().push((id, probes));
        }
    }
    names
        .into_iter()
        .map(|name| {
            let members = by_service.remove(name).unwrap_or_default();
            let mut pooled = Vec::new();
            let mut list = Vec::new();
            for (id, probes) in members {
                for p in probes {
                    pooled.extend(window_results(twin, id, p, scope));
                }
                let (across, _) = verdict(probes.iter().map(|p| (p.host.dc.as_str(), p.status(scope))));
                let operation = probes.iter().find_map(|p| p.series.label(probe::INFO, "operation"));
                list.push(ServiceEndpoint { id: id.to_owned(), operation, verdict: across });
            }
            let stats = stats::summarize(&pooled);
            let vantages = twin
                .hosts()
                .filter(|h| service_series(h, Some(name)).next().is_some())
                .map(|h| ServiceVantage {
                    host: h.id.clone(),
                    dc: h.dc.clone(),
                    host_status: h.status(scope.now_ms, scope.offline_after_ms),
                    state: service_state(h, name),
                })
                .collect();
            Service {
                name: name.to_owned(),
                window: scope.window.text.clone(),
                endpoints_monitored: list.len() as u32,
                endpoints_up: list.iter().filter(|e| e.verdict == Verdict::Up).count() as u32,
                success_rate: stats.success_rate,
                latency_p50: stats.latency.p50,
                latency_p95: stats.latency.p95,
                endpoints: list,
                vantages,
            }
        })
        .collect()
}

/// `host`'s service series, of service `name` if given.
fn service_series<'a>(host: &'a HostTwin, name: Option<&'a str>) -> impl Iterator<Item = &'a SeriesState> {
    host.state
        .series()
        .filter(|s| s.key.name.starts_with("twinwatch_service_"))
        .filter(move |s| name.is_none_or(|n| s.key.label(probe::SERVICE) == Some(n)))
}

pub(super) fn service_state(host: &HostTwin, name: &str) -> ServiceState {
    let s = Series(service_series(host, Some(name)).collect());
    let count = |name: &str| s.value(name).map(|v| v as u32);
    let operations = count(probe::SERVICE_OPERATIONS);
    let (gets, callable_gets) = (count(probe::SERVICE_GETS), count(probe::SERVICE_CALLABLE));
    let probed = count(probe::SERVICE_PROBED);
    let ratio = match (callable_gets, probed) {
        (Some(callable), Some(probed)) if callable > 0 => Some(f64::from(probed) / f64::from(callable)),
        _ => None,
    };
    let info = |label: &str| s.label(probe::SERVICE_INFO, label);
    let mut unprobed: Vec<Unprobed> = s
        .named(probe::SERVICE_UNPROBED_INFO)
        .map(|u| {
            let label = |l: &str| u.key.label(l).unwrap_or_default().to_owned();
            Unprobed {
                operation: label("operation"),
                method: label("method"),
                path: label("path"),
                reason: label("reason"),
            }
        })
        .collect();
    unprobed.sort();
    ServiceState {
        name: name.to_owned(),
        coverage: Coverage { operations, gets, callable_gets, probed, ratio },
        spec_ok: s.value(probe::SERVICE_SPEC_OK).map(|v| v == 1.0),
        title: info("title"),
        version: info("version"),
        base_url: info("base_url"),
        spec_url: info("spec_url"),
        error: info("error"),
        unprobed,
    }
}
