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
use twinwatch_common::time::now_ms;
use twinwatch_common::time::rfc3339;

use super::{ApiError, AppState};
use crate::history::recorder::WINDOW_MS;
use crate::store::archive::ArchiveError;
use crate::store::query::{self, Budget, Pending, Points, MAX_POINTS, MAX_RAW_POINTS};

const RESERVED: [&str; 5] = ["from", "to", "step", "rate", "trend"];

/// `GET /api/v1/hosts/{id}/metrics`: every series name the host has history for, with its label sets.
#[utoipa::path(
    get,
    path = "/hosts/{id}/metrics",
    tag = "history",
    summary = "Every series name a host has history for, with its label sets",
    params(("id" = String, Path, description = "The host's id (its agent certificate's name)")),
    security(("bearer" = [])),
    responses((status = 200, description = "Series names and label sets", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::api::openapi::ErrorBody)),
)]
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

/// Earliest time a query may name: the Unix epoch (history holds nothing before it).
const MIN_TIME_MS: i64 = 0;
/// Latest: the end of year 9999, the last instant RFC 3339 can write.
const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// Longest step: a year.
const MAX_STEP_MS: i64 = 366 * 86_400_000;

/// `s` as milliseconds since the epoch: unix seconds (a finite number) or RFC 3339, between 1970
/// and the end of 9999. Anything else is a 400 that says what was wrong.
fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    let ms = match f64::from_str(s) {
        Ok(secs) if !secs.is_finite() => {
            return Err(ApiError::bad_request(format!("`{name}` must be a finite number of unix seconds, not {s:?}")))
        }
        Ok(secs) => secs * 1000.0,
        Err(_) => match twinwatch_common::time::parse_rfc3339(s) {
            Some(ms) => ms as f64,
            None => return Err(ApiError::bad_request(format!("`{name}` must be RFC 3339 or unix seconds, not {s:?}"))),
        },
    };
    if !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
        return Err(ApiError::bad_request(format!(
            "`{name}` = {s:?} is outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z"
        )));
    }
    Ok(ms as i64)
}

/// `s` as milliseconds: seconds, or a duration such as `5m`; from 1 ms to a year.
fn parse_step(s: &str) -> Result<i64, ApiError> {
    let ms = match f64::from_str(s) {
        Ok(secs) if secs.is_finite() => secs * 1000.0,
        Ok(_) => return Err(ApiError::bad_request(format!("`step` must be a finite number of seconds, not {s:?}"))),
        Err(_) => Span::from_str(s).map_err(|e| ApiError::bad_request(format!("`step`: {e}")))?.0.as_millis() as f64,
    };
    if ms < 1.0 {
        return Err(ApiError::bad_request(format!("`step` must be at least 1 ms, not {s:?}")));
    }
    if ms > MAX_STEP_MS as f64 {
        return Err(ApiError::bad_request(format!("`step` must be at most a year, not {s:?}")));
    }
    Ok(ms as i64)
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
#[utoipa::path(
    get,
    path = "/hosts/{id}/metrics/{metric}",
    tag = "history",
    summary = "History of one metric's series over a range, raw or from a rollup",
    params(("id" = String, Path, description = "The host's id (its agent certificate's name)"), ("metric" = String, Path, description = "A series name, e.g. `node_load1`"), ("from" = Option<String>, Query, description = "Start: RFC 3339 or unix seconds, 1970 to 9999 (default: an hour before `to`)", pattern = r"^([0-9]{1,15}(\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))$"), ("to" = Option<String>, Query, description = "End: RFC 3339 or unix seconds (default: now)", pattern = r"^([0-9]{1,15}(\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))$"), ("step" = Option<String>, Query, description = "Seconds or a duration such as `5m`, 1 ms to a year; 60 s or more reads rollups", pattern = r"^[0-9]{1,12}(\.[0-9]+)?(ms|s|m|h|d)?$"), ("rate" = Option<bool>, Query, description = "Counters as per-second rates"), ("trend" = Option<bool>, Query, description = "Add each series' mean over the window before, and the change")),
    security(("bearer" = [])),
    responses((status = 200, description = "Points per series", body = serde_json::Value), (status = 400, description = "A parameter is not valid", body = crate::api::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::api::openapi::ErrorBody), (status = 403, description = "The token may not do this", body = crate::api::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::api::openapi::ErrorBody)),
)]
pub async fn series(
    State(state): State<AppState>,
    Path((id, metric)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let to = params.get("to").map(|s| parse_time("to", s)).transpose()?.unwrap_or(now);
    let from =
        params.get("from").map(|s| parse_time("from", s)).transpose()?.unwrap_or((to - 3_600_000).max(MIN_TIME_MS));
    if from >= to {
        return Err(ApiError::bad_request(format!("`from` ({}) must be before `to` ({})", rfc3339(from), rfc3339(to))));
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
        let live_kind: HashMap<&SeriesKey, Kind> = host.state.series().map(|s| (&*s.key, s.kind)).collect();
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
            let counter = column.as_ref().map(|c| c.counter).or(live_kind.get(&**key).map(|k| *k == Kind::Counter));
            let windows = rec.windows().filter(|w| *w + WINDOW_MS > read_from && *w < to).collect();
            selected.push(Selected { idx: idx as u32, key: SeriesKey::clone(key), counter: counter.unwrap_or(false) });
            pending.push(Pending { column, windows });
        }
        (dc, selected, pending)
    };

    let mut out = Vec::new();
    let budget = Budget::new(MAX_RAW_POINTS);
    for (s, pending) in selected.iter().zip(&pending) {
        let read = |from: i64, to: i64| {
            query::read(&state.store.archive, &id, s.idx, plan, from, to, pending, &budget).map_err(|e| match e {
                ArchiveError::TooManyPoints { limit } => ApiError::bad_request(format!(
                    "this range holds more than {limit} raw points: give a larger `step` (60 or more reads rollups) \
                     or a shorter range"
                )),
                e => ApiError::internal(e),
            })
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

#[cfg(test)]
mod tests {
    use super::{parse_step, parse_time, MAX_TIME_MS};

    #[test]
    fn times_outside_1970_to_9999_or_not_finite_are_refused() {
        for bad in [
            "-inf",
            "inf",
            "NaN",
            "-1e300",
            "1e300",
            "-9223372036854775808",
            "9223372036854775807",
            "-1",
            "9e15",
            "10000-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-02-30T00:00:00Z",
            "yesterday",
            "",
        ] {
            let e = parse_time("from", bad).expect_err(bad);
            assert_eq!(e.status, 400, "{bad}");
            assert!(e.detail.as_str().is_some_and(|d| d.contains("`from`")), "{bad}: {:?}", e.detail);
        }
        assert_eq!(parse_time("to", "0").unwrap(), 0);
        assert_eq!(parse_time("to", "1.5").unwrap(), 1500);
        assert_eq!(parse_time("to", "2026-12-07T00:00:00Z").unwrap(), 1_796_601_600_000);
        assert_eq!(parse_time("to", "9999-12-31T23:59:59.999Z").unwrap(), MAX_TIME_MS);
    }

    #[test]
    fn steps_from_a_millisecond_to_a_year() {
        for bad in ["0", "-5", "NaN", "inf", "1e300", "0.0001", "100000000000000d", "400d", "5x", ""] {
            assert_eq!(parse_step(bad).expect_err(bad).status, 400, "{bad}");
        }
        assert_eq!(parse_step("0.001").unwrap(), 1);
        assert_eq!(parse_step("60").unwrap(), 60_000);
        assert_eq!(parse_step("5m").unwrap(), 300_000);
        assert_eq!(parse_step("366d").unwrap(), 366 * 86_400_000);
    }
}
