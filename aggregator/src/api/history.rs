//! `/api/v1/hosts/{id}/metrics` and `/api/v1/hosts/{id}/metrics/{metric}`: a host's series and
//! their history.
//!
//! `from` and `to` are RFC 3339 or unix seconds (default: the last hour); `step` is seconds or a
//! duration such as `5m` and picks raw points or a rollup tier (see `history/query.rs`);
//! `rate=true` turns counters into per-second rates; `trend=true` adds each series' mean over the
//! window before, and the percent change. Every other parameter filters on a label
//! (`?mode=user&cpu=0`); `vantage` matches the host's DC.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};
use twinwatch_common::config::Span;
use twinwatch_common::sample::{Kind, SeriesKey};
use twinwatch_common::time::rfc3339;

use super::{ApiError, AppState};
use crate::history::query::{self, Pending, Points, MAX_POINTS};
use crate::history::recorder::WINDOW_MS;
use crate::ingest::now_ms;

const RESERVED: [&str; 5] = ["from", "to", "step", "rate", "trend"];

/// `GET /api/v1/hosts/{id}/metrics`: every series name the host has history for, with its label sets.
pub async fn names(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let twin = state.twin();
    let rec = twin.history.host(&id).ok_or_else(|| ApiError::not_found(format!("no history for host {id:?}")))?;
    let mut by_name: BTreeMap<&str, Vec<&Vec<(String, String)>>> = BTreeMap::new();
    for key in rec.keys() {
        by_name.entry(&key.name).or_default().push(&key.labels);
    }
    let names: Vec<Value> = by_name
        .into_iter()
        .map(|(name, labels)| {
            let sets: Vec<BTreeMap<&str, &str>> =
                labels.iter().map(|l| l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).collect();
            json!({ "name": name, "series": sets })
        })
        .collect();
    Ok(Json(json!({ "host": id, "metrics": names })))
}

fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = f64::from_str(s) {
        return Ok((secs * 1000.0) as i64);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::bad_request(format!("`{name}` must be RFC 3339 or unix seconds, not {s:?}")))
}

fn parse_step(s: &str) -> Result<i64, ApiError> {
    let ms = match f64::from_str(s) {
        Ok(secs) => (secs * 1000.0) as i64,
        Err(_) => Span::from_str(s).map_err(ApiError::bad_request)?.0.as_millis() as i64,
    };
    if ms < 1 {
        return Err(ApiError::bad_request("`step` must be positive"));
    }
    Ok(ms)
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// One matching series: its index, key and kind.
struct Selected {
    idx: u32,
    key: SeriesKey,
    counter: bool,
}

/// `GET /api/v1/hosts/{id}/metrics/{metric}`.
pub async fn series(
    State(state): State<AppState>,
    Path((id, metric)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let to = params.get("to").map(|s| parse_time("to", s)).transpose()?.unwrap_or(now);
    let from = params.get("from").map(|s| parse_time("from", s)).transpose()?.unwrap_or(to - 3_600_000);
    if from >= to {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    let step = params.get("step").map(|s| parse_step(s)).transpose()?;
    if step.is_some_and(|s| (to - from) / s > MAX_POINTS) {
        return Err(ApiError::bad_request(format!("more than {MAX_POINTS} points: use a larger `step`")));
    }
    let (rate, trend) = (flag(&params, "rate"), flag(&params, "trend"));
    let filters: Vec<(&String, &String)> = params.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())).collect();
    let span = to - from;
    let read_from = if trend { from - span } else { from };
    let plan = query::plan(read_from, to, step, now, &state.store.archive.retention);

    let (dc, selected, pending) = {
        let twin = state.twin();
        let host = twin.host(&id).ok_or_else(|| ApiError::not_found(format!("no host {id:?}")))?;
        let dc = host.dc.clone();
        let Some(rec) = twin.history.host(&id) else {
            return Err(ApiError::not_found(format!("no history for host {id:?}")));
        };
        let live_kind: HashMap<&SeriesKey, Kind> = host.state.series().map(|s| (&s.key, s.kind)).collect();
        let mut selected = Vec::new();
        let mut pending = Vec::new();
        for (idx, key) in rec.keys().iter().enumerate() {
            let matches = key.name == metric
                && filters.iter().all(|(k, v)| match k.as_str() {
                    "vantage" => *v == &dc,
                    _ => key.label(k) == Some(v.as_str()),
                });
            if !matches {
                continue;
            }
            let column = rec.points(idx as u32, read_from, to);
            let counter = column.as_ref().map(|c| c.counter).or(live_kind.get(key).map(|k| *k == Kind::Counter));
            let windows = rec.windows().filter(|w| *w + WINDOW_MS > read_from && *w < to).collect();
            selected.push(Selected { idx: idx as u32, key: key.clone(), counter: counter.unwrap_or(false) });
            pending.push(Pending { column, windows });
        }
        (dc, selected, pending)
    };

    let mut out = Vec::new();
    for (s, pending) in selected.iter().zip(&pending) {
        let read = |from: i64, to: i64| {
            query::read(&state.store.archive, &id, s.idx, plan, from, to, pending).map_err(ApiError::internal)
        };
        let points = read(from, to)?;
        let values = query::values(&points, s.counter);
        let rates = (rate && s.counter).then(|| query::rates(&values));
        let mut entry = json!({
            "labels": s.key.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "kind": if s.counter { "counter" } else { "gauge" },
            "points": render(&points, rates.as_deref()),
        });
        if trend {
            let before = read(from - span, from)?;
            let before_rates = rates.as_ref().map(|_| query::rates(&query::values(&before, s.counter)));
            let (was, is) = (query::mean(&before, before_rates.as_deref()), query::mean(&points, rates.as_deref()));
            entry["trend"] = json!({ "previous_mean": was, "mean": is, "change_pct": query::change_pct(was, is) });
        }
        out.push(entry);
    }
    let (resolution, step) = plan;
    Ok(Json(json!({
        "host": id,
        "dc": dc,
        "metric": metric,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "resolution": resolution.name(),
        "step_seconds": step.map(|s| s as f64 / 1000.0),
        "rate": rate,
        "series": out,
    })))
}

fn render(points: &Points, rates: Option<&[(i64, f64)]>) -> Value {
    if let Some(rates) = rates {
        return rates.iter().map(|(t, r)| json!({ "t": t, "rate": r })).collect();
    }
    match points {
        Points::Raw(p) => p.iter().map(|(t, v)| json!({ "t": t, "value": v })).collect(),
        Points::Buckets(b) => b
            .iter()
            .map(|b| json!({ "t": b.start_ms, "min": b.min, "max": b.max, "avg": b.avg(), "last": b.last, "count": b.count }))
            .collect(),
    }
}
