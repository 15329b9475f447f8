//! `/api/v1/hosts` and `/api/v1/hosts/{id}`: host twins in a shape a person can read.
//!
//! Series keep node_exporter's names in `metrics`; the sections above them (`cpu`, `memory`,
//! `network`, …) regroup the same values with units in the field names and counters turned into
//! per-second rates.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};
use twinwatch_common::delta::SeriesState;
use twinwatch_common::time::rfc3339;

use super::{ApiError, AppState};
use crate::ingest::now_ms;
use crate::twin::HostTwin;

fn summary(host: &HostTwin, now: i64, offline_after: i64) -> Value {
    json!({
        "id": host.id,
        "dc": host.dc,
        "hostname": host.info.hostname,
        "status": host.status(now, offline_after),
        "last_seen": rfc3339(host.last_seen_ms),
        "agent_version": host.agent_version,
    })
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let now = now_ms();
    let offline_after = state.offline_after.as_millis() as i64;
    let twin = state.twin();
    Json(Value::Array(twin.hosts().map(|h| summary(h, now, offline_after)).collect()))
}

pub async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let offline_after = state.offline_after.as_millis() as i64;
    let twin = state.twin();
    let host = twin.host(&id).ok_or_else(|| ApiError::not_found(format!("no host {id:?}")))?;
    Ok(Json(detail(host, now, offline_after)))
}

pub async fn batches(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (counters, incarnation) = {
        let twin = state.twin();
        let host = twin.host(&id).ok_or_else(|| ApiError::not_found(format!("no host {id:?}")))?;
        (host.counters.clone(), host.incarnation)
    };
    let runs = state.store.stored_runs(&id).map_err(ApiError::internal)?;
    Ok(Json(json!({ "id": id, "incarnation": incarnation, "counters": counters, "stored": runs })))
}

/// The series of one host, looked up by name and labels.
struct Series<'a>(Vec<&'a SeriesState>);

impl<'a> Series<'a> {
    fn named(&self, name: &str) -> impl Iterator<Item = &'a SeriesState> + '_ {
        let name = name.to_owned();
        self.0.iter().copied().filter(move |s| s.key.name == name)
    }

    fn value(&self, name: &str) -> Option<f64> {
        self.named(name).next().map(SeriesState::value)
    }

    /// `(label value, series)` for every series called `name`, grouped by `label`.
    fn by_label(&self, prefix: &str, label: &str) -> BTreeMap<String, Vec<&'a SeriesState>> {
        let mut out: BTreeMap<String, Vec<&SeriesState>> = BTreeMap::new();
        for s in self.0.iter().copied().filter(|s| s.key.name.starts_with(prefix)) {
            if let Some(v) = s.key.label(label) {
                out.entry(v.to_owned()).or_default().push(s);
            }
        }
        out
    }
}

/// A JSON number: an integer when the value is whole, `null` for NaN and infinities.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return Value::from(v as i64);
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Turns node_exporter-style series into `field: value` pairs, stripping `prefix`, and adds
/// `_per_second` rates for counters.
fn fields(series: &[&SeriesState], prefix: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for s in series {
        let name = s.key.name.strip_prefix(prefix).unwrap_or(&s.key.name);
        m.insert(name.to_owned(), number(s.value()));
        if let Some(rate) = s.rate() {
            let base = name.strip_suffix("_total").unwrap_or(name);
            m.insert(format!("{base}_per_second"), number(rate));
        }
    }
    m
}

fn cpu(series: &Series) -> Value {
    let mut by_mode: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut cores = std::collections::BTreeSet::new();
    for s in series.named("node_cpu_seconds_total") {
        if let (Some(mode), Some(core)) = (s.key.label("mode"), s.key.label("cpu")) {
            cores.insert(core.to_owned());
            let e = by_mode.entry(mode).or_default();
            e.0 += s.value();
            e.1 += s.rate().unwrap_or(0.0);
        }
    }
    let busy_rate: f64 = by_mode.iter().filter(|(m, _)| !matches!(**m, "idle" | "iowait")).map(|(_, v)| v.1).sum();
    let all_rate: f64 = by_mode.values().map(|v| v.1).sum();
    let usage = if all_rate > 0.0 { number(100.0 * busy_rate / all_rate) } else { Value::Null };
    json!({
        "cores": cores.len(),
        "usage_percent": usage,
        "seconds_total": by_mode.iter().map(|(m, v)| (m.to_string(), number(v.0))).collect::<Map<_, _>>(),
        "context_switches_per_second": series.named("node_context_switches_total").next().and_then(SeriesState::rate),
        "interrupts_per_second": series.named("node_intr_total").next().and_then(SeriesState::rate),
        "forks_per_second": series.named("node_forks_total").next().and_then(SeriesState::rate),
        "procs_running": series.value("node_procs_running"),
        "procs_blocked": series.value("node_procs_blocked"),
    })
}

fn memory(series: &Series) -> Value {
    let total = series.value("node_memory_MemTotal_bytes");
    let available = series.value("node_memory_MemAvailable_bytes");
    let used = total.zip(available).map(|(t, a)| t - a);
    json!({
        "total_bytes": total,
        "available_bytes": available,
        "used_bytes": used,
        "used_percent": used.zip(total).filter(|(_, t)| *t > 0.0).map(|(u, t)| 100.0 * u / t),
        "free_bytes": series.value("node_memory_MemFree_bytes"),
        "buffers_bytes": series.value("node_memory_Buffers_bytes"),
        "cached_bytes": series.value("node_memory_Cached_bytes"),
        "swap_total_bytes": series.value("node_memory_SwapTotal_bytes"),
        "swap_free_bytes": series.value("node_memory_SwapFree_bytes"),
    })
}

fn grouped(series: &Series, prefix: &str, label: &str) -> Vec<Value> {
    series
        .by_label(prefix, label)
        .into_iter()
        .map(|(name, list)| {
            let mut m = fields(&list, prefix);
            m.insert(label.to_owned(), Value::String(name));
            Value::Object(m)
        })
        .collect()
}

fn filesystems(series: &Series) -> Vec<Value> {
    let mut out = Vec::new();
    for (mountpoint, list) in series.by_label("node_filesystem_", "mountpoint") {
        let mut m = fields(&list, "node_filesystem_");
        if let Some(first) = list.first() {
            for label in ["device", "fstype"] {
                m.insert(label.into(), first.key.label(label).unwrap_or_default().into());
            }
        }
        let size = m.get("size_bytes").and_then(Value::as_f64);
        let avail = m.get("avail_bytes").and_then(Value::as_f64);
        let free = m.get("free_bytes").and_then(Value::as_f64);
        if let (Some(size), Some(avail), Some(free)) = (size, avail, free) {
            // As df computes it: used over what non-root users could have.
            let used = size - free;
            if used + avail > 0.0 {
                m.insert("used_percent".into(), number(100.0 * used / (used + avail)));
            }
        }
        m.insert("mountpoint".into(), mountpoint.into());
        out.push(Value::Object(m));
    }
    out
}

fn agent(series: &Series) -> Value {
    let own: Vec<&SeriesState> =
        series.0.iter().copied().filter(|s| s.key.name.starts_with("twinwatch_agent_")).collect();
    let mut m = fields(&own, "twinwatch_agent_");
    let samples = series.value("twinwatch_agent_samples_total");
    let sent = series.value("twinwatch_agent_sent_bytes_total");
    if let (Some(samples), Some(sent)) = (samples, sent) {
        if samples > 0.0 {
            m.insert("sent_bytes_per_sample".into(), number(sent / samples));
        }
    }
    Value::Object(m)
}

pub fn detail(host: &HostTwin, now: i64, offline_after: i64) -> Value {
    let series = Series(host.state.series().collect());
    let mut metrics: Vec<Value> = series
        .0
        .iter()
        .map(|s| {
            json!({
                "name": s.key.name,
                "labels": s.key.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                "kind": s.kind,
                "value": number(s.value()),
                "rate_per_second": s.rate(),
            })
        })
        .collect();
    metrics.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut v = summary(host, now, offline_after);
    let extra = json!({
        "identity": {
            "kernel": host.info.kernel,
            "os": host.info.os,
            "arch": host.info.arch,
            "cpu_count": host.info.cpu_count,
            "cpu_model": host.info.cpu_model,
            "machine_id": host.info.machine_id,
            "boot_id": host.info.boot_id,
        },
        "incarnation": host.incarnation,
        "sampled_at": (host.state.last_ts_ms() > 0).then(|| rfc3339(host.state.last_ts_ms())),
        "clock_offset_ms": host.clock_offset_ms,
        "cpu": cpu(&series),
        "memory": memory(&series),
        "load": {
            "load1": series.value("node_load1"),
            "load5": series.value("node_load5"),
            "load15": series.value("node_load15"),
        },
        "boot_time": series.value("node_boot_time_seconds").map(|s| rfc3339(s as i64 * 1000)),
        "network": grouped(&series, "node_network_", "device"),
        "disks": grouped(&series, "node_disk_", "device"),
        "filesystems": filesystems(&series),
        "agent": agent(&series),
        "ingest": {
            "counters": host.counters,
            "stored_through": host.stored_through(host.incarnation),
            "awaiting_keyframe": host.awaiting_keyframe,
        },
        "metrics": metrics,
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
        base.extend(more);
    }
    v
}
