//! What `nvidia-smi` is asked and how its CSV answer becomes series.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::CollectError;

/// The fields asked of `nvidia-smi`, in this order.
pub(super) const NVIDIA_SMI_QUERY: &str = concat!(
    "--query-gpu=index,uuid,name,",
    "utilization.gpu,utilization.memory,memory.used,memory.total,temperature.gpu,power.draw"
);

pub(super) const NVIDIA_SMI_FORMAT: &str = "--format=csv,noheader,nounits";

/// The value columns after index, uuid and name: series name, decimals kept in the raw integer,
/// and the scale from that integer to the named unit. Percentages become ratios, MiB bytes and
/// watts are kept to the milliwatt, all as integers for the delta codec.
const NVIDIA_FIELDS: [(&str, u32, f64); 6] = [
    ("nvidia_smi_utilization_gpu_ratio", 0, 0.01),
    ("nvidia_smi_utilization_memory_ratio", 0, 0.01),
    ("nvidia_smi_memory_used_bytes", 0, 1048576.0),
    ("nvidia_smi_memory_total_bytes", 0, 1048576.0),
    ("nvidia_smi_temperature_gpu", 0, 1.0),
    ("nvidia_smi_power_draw_watts", 3, 0.001),
];

/// A decimal number as an integer count of `10^-decimals` units (`"28.07"` with 3 decimals is
/// 28070), rounding away further digits. `None` for anything else (`[N/A]`, `[Not Supported]`).
pub(super) fn parse_fixed(text: &str, decimals: u32) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let mut value: i64 = whole.parse().ok()?;
    let mut fraction = fraction.bytes();
    for _ in 0..decimals {
        let digit = fraction.next().map_or(0, |b| i64::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    if fraction.next().is_some_and(|b| b >= b'5') {
        value = value.checked_add(1)?;
    }
    Some(if negative { -value } else { value })
}

/// Parses `nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY> --format=csv,noheader,nounits` output. Every
/// series is labelled with the GPU's uuid (lower case, without `GPU-`, as nvidia_gpu_exporter
/// does), name and index; `nvidia_smi_gpu_info` carries the same labels for dashboards that list
/// GPUs from it. Values a GPU does not report (`[N/A]`, `[Not Supported]`) are left out. A row
/// with too few fields is an error, after the good rows' metrics are added.
pub(super) fn parse_nvidia_smi(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let values_from = cells.len().saturating_sub(NVIDIA_FIELDS.len());
        if values_from < 3 || cells[1].is_empty() {
            bad += 1;
            continue;
        }
        let index = cells[0];
        let uuid = cells[1].to_ascii_lowercase();
        let uuid = uuid.strip_prefix("gpu-").unwrap_or(&uuid);
        // A name with a comma in it spans several cells: the fixed fields are counted from both ends.
        let name = cells[2..values_from].join(", ");
        let key =
            |metric: &str| SeriesKey::new(metric).with("index", index).with("name", name.as_str()).with("uuid", uuid);
        out.push(Metric::gauge(key("nvidia_smi_gpu_info"), Value::Int(1)));
        for ((metric, decimals, scale), cell) in NVIDIA_FIELDS.iter().zip(&cells[values_from..]) {
            if let Some(raw) = parse_fixed(cell, *decimals) {
                out.push(Metric::gauge(key(metric), Value::Int(raw)).scaled(*scale));
            }
        }
    }
    if bad > 0 {
        return Err(CollectError::Parse { what: "nvidia-smi output", detail: format!("{bad} malformed rows") });
    }
    Ok(())
}
