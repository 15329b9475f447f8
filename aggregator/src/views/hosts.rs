//! Host twins in a shape a person can read, for `/api/v1/hosts`, `/api/v1/hosts/{id}` and
//! `/api/v1/hosts/{id}/batches`. Pure functions of a host twin and the time passed in.
//!
//! Series keep node_exporter's names in `metrics`; the sections above them (`cpu`, `memory`,
//! `network`, …) regroup the same values with units in the field names and counters turned into
//! per-second rates.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use twinwatch_common::delta::SeriesState;
use twinwatch_common::time::rfc3339;

use crate::twin::HostTwin;

/// Contiguous runs of stored sequence numbers of one incarnation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct StoredRuns {
    incarnation: u64,
    count: u64,
    /// `[first, last]` pairs; more than one run means a hole.
    runs: Vec<(u64, u64)>,
}

/// A host's line in the list of hosts.
pub fn summary(host: &HostTwin, now: i64, offline_after: i64) -> Value {
    json!({
        "id": host.id,
        "dc": host.dc,
        "hostname": host.info.hostname,
        "status": host.status(now, offline_after),
        "last_seen": rfc3339(host.last_seen_ms),
        "agent_version": host.agent_version,
    })
}

/// What the aggregator stored of a host's batches: its counters and stored runs per incarnation.
pub fn batches(host: &HostTwin) -> Value {
    let runs: Vec<StoredRuns> = host
        .ledgers
        .iter()
        .map(|l| StoredRuns { incarnation: l.incarnation, count: l.stored.len(), runs: l.stored.iter().collect() })
        .collect();
    json!({ "id": host.id, "incarnation": host.incarnation, "counters": host.counters, "stored": runs })
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

    fn rate(&self, name: &str) -> Option<f64> {
        self.named(name).next().and_then(SeriesState::rate)
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
    // Per core: (busy rate, all rate).
    let mut cores: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    for s in series.named("node_cpu_seconds_total") {
        if let (Some(mode), Some(core)) = (s.key.label("mode"), s.key.label("cpu")) {
            let rate = s.rate().unwrap_or(0.0);
            let c = cores.entry(core.parse().unwrap_or(u32::MAX)).or_default();
            if !matches!(mode, "idle" | "iowait") {
                c.0 += rate;
            }
            c.1 += rate;
            let e = by_mode.entry(mode).or_default();
            e.0 += s.value();
            e.1 += rate;
        }
    }
    let per_core: Vec<Value> = cores
        .iter()
        .map(|(core, (busy, all))| json!({ "cpu": core, "usage_percent": percent(Some(*busy), Some(*all)) }))
        .collect();
    let busy_rate: f64 = by_mode.iter().filter(|(m, _)| !matches!(**m, "idle" | "iowait")).map(|(_, v)| v.1).sum();
    let all_rate: f64 = by_mode.values().map(|v| v.1).sum();
    let usage = if all_rate > 0.0 { number(100.0 * busy_rate / all_rate) } else { Value::Null };
    json!({
        "cores": cores.len(),
        "usage_percent": usage,
        "per_core": per_core,
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
    let swap_total = series.value("node_memory_SwapTotal_bytes");
    let swap_used = swap_total.zip(series.value("node_memory_SwapFree_bytes")).map(|(t, f)| t - f);
    json!({
        "total_bytes": total,
        "available_bytes": available,
        "used_bytes": used,
        "used_percent": percent(used, total),
        "free_bytes": series.value("node_memory_MemFree_bytes"),
        "buffers_bytes": series.value("node_memory_Buffers_bytes"),
        "cached_bytes": series.value("node_memory_Cached_bytes"),
        "shmem_bytes": series.value("node_memory_Shmem_bytes"),
        "slab_bytes": series.value("node_memory_Slab_bytes"),
        "dirty_bytes": series.value("node_memory_Dirty_bytes"),
        "writeback_bytes": series.value("node_memory_Writeback_bytes"),
        "swap_total_bytes": swap_total,
        "swap_free_bytes": series.value("node_memory_SwapFree_bytes"),
        "swap_used_percent": percent(swap_used, swap_total),
        "page_faults_per_second": series.rate("node_vmstat_pgfault"),
        "major_page_faults_per_second": series.rate("node_vmstat_pgmajfault"),
        "swap_in_pages_per_second": series.rate("node_vmstat_pswpin"),
        "swap_out_pages_per_second": series.rate("node_vmstat_pswpout"),
        "oom_kills": series.value("node_vmstat_oom_kill"),
    })
}

fn percent(part: Option<f64>, whole: Option<f64>) -> Option<f64> {
    part.zip(whole).filter(|(_, w)| *w > 0.0).map(|(p, w)| 100.0 * p / w)
}

/// Share of wall time some (or all) tasks stalled on each resource, from PSI counters.
fn pressure(series: &Series) -> Value {
    let mut m = Map::new();
    for resource in ["cpu", "io", "memory"] {
        for (what, label) in [("waiting", "some"), ("stalled", "full")] {
            let rate = series.rate(&format!("node_pressure_{resource}_{what}_seconds_total"));
            if let Some(rate) = rate {
                m.insert(format!("{resource}_{label}_percent"), number(100.0 * rate));
            }
        }
    }
    Value::Object(m)
}

fn sockets(series: &Series) -> Value {
    let states: Map<String, Value> = series
        .named("node_tcp_connection_states")
        .filter_map(|s| Some((s.key.label("state")?.to_owned(), number(s.value()))))
        .collect();
    let own = |prefix: &str| {
        let list: Vec<&SeriesState> = series.0.iter().copied().filter(|s| s.key.name.starts_with(prefix)).collect();
        Value::Object(fields(&list, prefix))
    };
    let entries = series.value("node_nf_conntrack_entries");
    let limit = series.value("node_nf_conntrack_entries_limit");
    json!({
        "tcp_states": states,
        "sockstat": own("node_sockstat_"),
        "netstat": own("node_netstat_"),
        "conntrack": entries.map(|e| json!({
            "entries": e,
            "limit": limit,
            "used_percent": percent(Some(e), limit),
        })),
    })
}

/// hwmon sensors and thermal zones, in degrees Celsius, with fans beside them.
fn sensors(series: &Series) -> Value {
    let label = |s: &SeriesState, name: &str| s.key.label(name).unwrap_or_default().to_owned();
    let sensor_label = |chip: &str, sensor: &str| {
        series
            .named("node_hwmon_sensor_label")
            .find(|l| l.key.label("chip") == Some(chip) && l.key.label("sensor") == Some(sensor))
            .and_then(|l| l.key.label("label").map(str::to_owned))
    };
    let chip_name = |chip: &str| {
        series
            .named("node_hwmon_chip_names")
            .find(|l| l.key.label("chip") == Some(chip))
            .and_then(|l| l.key.label("chip_name").map(str::to_owned))
    };
    let limit = |name: &str, chip: &str, sensor: &str| {
        series
            .named(name)
            .find(|l| l.key.label("chip") == Some(chip) && l.key.label("sensor") == Some(sensor))
            .map(SeriesState::value)
    };
    let temperatures: Vec<Value> = series
        .named("node_hwmon_temp_celsius")
        .map(|s| {
            let (chip, sensor) = (label(s, "chip"), label(s, "sensor"));
            json!({
                "chip": chip,
                "chip_name": chip_name(&chip),
                "sensor": sensor,
                "label": sensor_label(&chip, &sensor),
                "celsius": number(s.value()),
                "max_celsius": limit("node_hwmon_temp_max_celsius", &chip, &sensor),
                "critical_celsius": limit("node_hwmon_temp_crit_celsius", &chip, &sensor),
            })
        })
        .collect();
    let fans: Vec<Value> = series
        .named("node_hwmon_fan_rpm")
        .map(|s| {
            let (chip, sensor) = (label(s, "chip"), label(s, "sensor"));
            json!({ "chip": chip, "sensor": sensor, "label": sensor_label(&chip, &sensor), "rpm": number(s.value()) })
        })
        .collect();
    let zones: Vec<Value> = series
        .named("node_thermal_zone_temp")
        .map(|s| json!({ "zone": label(s, "zone"), "type": label(s, "type"), "celsius": number(s.value()) }))
        .collect();
    json!({ "temperatures": temperatures, "fans": fans, "thermal_zones": zones })
}

fn processes(series: &Series) -> Value {
    let by_state: Map<String, Value> = series
        .named("node_processes_state")
        .filter_map(|s| Some((s.key.label("state")?.to_owned(), number(s.value()))))
        .collect();
    let mut top: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for s in series.0.iter().copied().filter(|s| s.key.name.starts_with("twinwatch_top_process_")) {
        let Some(pid) = s.key.label("pid") else { continue };
        let entry = top.entry(pid.to_owned()).or_default();
        for label in ["pid", "name", "user", "state"] {
            if let Some(v) = s.key.label(label) {
                entry.insert(label.into(), v.into());
            }
        }
        match s.key.name.strip_prefix("twinwatch_top_process_").unwrap_or_default() {
            "info" => {}
            "cpu_ratio" => {
                entry.insert("cpu_percent".into(), number(100.0 * s.value()));
            }
            "start_time_seconds" => {
                entry.insert("started".into(), rfc3339((s.value() * 1000.0) as i64).into());
            }
            field => {
                entry.insert(field.to_owned(), number(s.value()));
            }
        }
    }
    let mut top: Vec<Value> = top.into_values().map(Value::Object).collect();
    let cpu = |v: &Value| v["cpu_percent"].as_f64().unwrap_or(0.0);
    top.sort_by(|a, b| cpu(b).total_cmp(&cpu(a)));
    json!({
        "total": series.value("node_processes_pids"),
        "threads": series.value("node_processes_threads"),
        "by_state": by_state,
        "max_processes": series.value("node_processes_max_processes"),
        "forks_per_second": series.rate("node_forks_total"),
        "file_descriptors": {
            "allocated": series.value("node_filefd_allocated"),
            "maximum": series.value("node_filefd_maximum"),
        },
        "top": top,
    })
}

/// GPUs: AMD and Intel cards from the drm series, NVIDIA ones from nvidia-smi's.
fn gpus(series: &Series) -> Vec<Value> {
    let mut out = grouped(series, "node_drm_", "card");
    out.extend(grouped(series, "nvidia_smi_", "uuid"));
    out
}

/// One object per value of `label` among the series named `prefix*`; an `*_info` series
/// contributes its labels as fields.
fn grouped(series: &Series, prefix: &str, label: &str) -> Vec<Value> {
    series
        .by_label(prefix, label)
        .into_iter()
        .map(|(name, list)| {
            let (info, values): (Vec<&SeriesState>, Vec<&SeriesState>) =
                list.into_iter().partition(|s| s.key.name.ends_with("_info"));
            let mut m = fields(&values, prefix);
            for s in info {
                for (k, v) in &s.key.labels {
                    m.entry(k.clone()).or_insert_with(|| v.clone().into());
                }
            }
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
    let boot_time = series.value("node_boot_time_seconds");
    let sampled = host.state.last_ts_ms();
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
        "sampled_at_ms": (host.state.last_ts_ms() > 0).then(|| host.state.last_ts_ms()),
        "clock": clock(host),
        "cpu": cpu(&series),
        "memory": memory(&series),
        "load": {
            "load1": series.value("node_load1"),
            "load5": series.value("node_load5"),
            "load15": series.value("node_load15"),
        },
        "boot_time": boot_time.map(|s| rfc3339(s as i64 * 1000)),
        "uptime_seconds": boot_time.filter(|_| sampled > 0).map(|b| (sampled / 1000) - b as i64),
        "pressure": pressure(&series),
        "network": grouped(&series, "node_network_", "device"),
        "sockets": sockets(&series),
        "disks": grouped(&series, "node_disk_", "device"),
        "filesystems": filesystems(&series),
        "sensors": sensors(&series),
        "power_supplies": grouped(&series, "node_power_supply_", "power_supply"),
        "gpus": gpus(&series),
        "processes": processes(&series),
        "agent": agent(&series),
        "ingest": ingest(host, now),
        "metrics": metrics,
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
        base.extend(more);
    }
    whole_numbers_as_integers(&mut v);
    v
}

/// The clock offset estimate and the correction in force.
fn clock(host: &HostTwin) -> Value {
    let estimate = host.clock.estimate();
    json!({
        "offset_ms": estimate.map(|e| e.offset_ms),
        "uncertainty_ms": estimate.map(|e| e.rtt_ms / 2),
        "correction_ms": estimate.map_or(0, |e| e.correction_ms),
        "corrected_beyond_ms": crate::twin::clock::CORRECT_BEYOND_MS,
        "exchanges": host.clock.observed,
    })
}

/// What is stored of each incarnation, the known gaps, backfills under way and identity conflicts.
fn ingest(host: &HostTwin, now: i64) -> Value {
    let incarnations: Vec<Value> = host
        .ledgers
        .iter()
        .map(|l| {
            json!({
                "incarnation": l.incarnation,
                "ticks_stored": l.ticks_stored,
                "ticks_dropped": l.ticks_dropped,
                "batches_stored": l.stored.len(),
                "stored": l.stored,
                "dropped": l.dropped,
                "accounted_through": l.accounted_through(),
                "newest_tick_ms": l.newest_tick_ms,
                "gaps": l.gaps.iter().map(|g| json!({
                    "first_seq": g.first_seq,
                    "last_seq": g.last_seq,
                    "ticks": g.ticks,
                    "from": rfc3339(g.from_ms),
                    "to": rfc3339(g.to_ms),
                    "from_ms": g.from_ms,
                    "to_ms": g.to_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "counters": host.counters,
        "incarnation": host.incarnation,
        "live_through": host.live_through,
        "stored_through": host.accounted_through(host.incarnation),
        "awaiting_keyframe": host.awaiting_keyframe,
        "missed_intervals": host.missed_intervals(now),
        "backfilling": host.backfill.iter().map(|c| json!({ "incarnation": c.incarnation, "through": c.through })).collect::<Vec<_>>(),
        "incarnations": incarnations,
        "conflicts": host.conflicts.iter().map(|c| json!({
            "at": rfc3339(c.at_ms),
            "count": c.count,
            "last": rfc3339(c.last_ms),
            "outcome": c.outcome,
            "machine_id": c.machine_id,
            "hostname": c.hostname,
            "incarnation": c.incarnation,
            "holder": { "machine_id": c.holder_machine_id, "hostname": c.holder_hostname, "incarnation": c.holder_incarnation },
        })).collect::<Vec<_>>(),
    })
}

/// Writes `502.0` as `502`: counts and byte sizes read as integers, as a person expects.
fn whole_numbers_as_integers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => *v = number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}
