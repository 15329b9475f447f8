//! Per-device I/O counters from /proc/diskstats, skipping partitions and virtual devices the way
//! node_exporter does by default.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, CollectError};

/// `(name, kind scale)` for fields 4..=14 of a diskstats line: sectors are 512 bytes, times are
/// milliseconds. `None` marks a field node_exporter does not export.
const FIELDS: [(&str, f64, bool); 11] = [
    ("node_disk_reads_completed_total", 1.0, true),
    ("node_disk_reads_merged_total", 1.0, true),
    ("node_disk_read_bytes_total", 512.0, true),
    ("node_disk_read_time_seconds_total", 0.001, true),
    ("node_disk_writes_completed_total", 1.0, true),
    ("node_disk_writes_merged_total", 1.0, true),
    ("node_disk_written_bytes_total", 512.0, true),
    ("node_disk_write_time_seconds_total", 0.001, true),
    ("node_disk_io_now", 1.0, false),
    ("node_disk_io_time_seconds_total", 0.001, true),
    ("node_disk_io_time_weighted_seconds_total", 0.001, true),
];

/// node_exporter's default `^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`, without a regex
/// engine.
pub fn ignored(device: &str) -> bool {
    let digits_from = device.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits_from == device.len() {
        return false; // must end in a number
    }
    let stem = &device[..digits_from];
    if matches!(stem, "ram" | "zram" | "loop" | "fd") {
        return true;
    }
    let b = stem.as_bytes();
    let disk_letter = |prefix: &str| {
        stem.len() == prefix.len() + 1 && stem.starts_with(prefix) && b[prefix.len()].is_ascii_lowercase()
    };
    if disk_letter("hd") || disk_letter("sd") || disk_letter("vd") || disk_letter("xvd") {
        return true;
    }
    // nvme<digits>n<digits>p
    if let Some(rest) = stem.strip_prefix("nvme").and_then(|r| r.strip_suffix('p')) {
        if let Some((ctrl, ns)) = rest.split_once('n') {
            let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
            return all_digits(ctrl) && all_digits(ns);
        }
    }
    false
}

pub fn parse(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_major), Some(_minor), Some(device)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if ignored(device) {
            continue;
        }
        for (name, scale, counter) in FIELDS {
            let value = Value::Int(num(fields.next(), "/proc/diskstats")? as i64);
            let key = SeriesKey::new(name).with("device", device);
            let metric = if counter { Metric::counter(key, value) } else { Metric::gauge(key, value) };
            out.push(metric.scaled(scale));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_virtual_devices_are_skipped() {
        for d in ["sda1", "vda2", "xvdb3", "nvme0n1p1", "loop0", "ram3", "zram0", "fd0", "hdc7"] {
            assert!(ignored(d), "{d} should be ignored");
        }
        for d in ["sda", "vda", "nvme0n1", "mmcblk0", "mmcblk0p1", "dm-0", "md127", "sr0"] {
            assert!(!ignored(d), "{d} should be kept");
        }
    }

    #[test]
    fn fields_scale_to_bytes_and_seconds() {
        let text = "   8       0 sda 100 2 4000 350 200 3 8000 700 1 900 1050 0 0 0 0\n   8       1 sda1 1 1 1 1 1 1 1 1 1 1 1\n 179 0 mmcblk0 5 0 10 20 6 0 12 30 0 40 50\n";
        let mut out = Vec::new();
        parse(text, &mut out).unwrap();
        let get = |dev: &str, name: &str| {
            out.iter().find(|m| m.key.label("device") == Some(dev) && m.key.name == name).map(|m| m.real())
        };
        assert_eq!(get("sda", "node_disk_read_bytes_total"), Some(4000.0 * 512.0));
        assert_eq!(get("sda", "node_disk_write_time_seconds_total"), Some(0.7));
        assert_eq!(get("sda", "node_disk_io_now"), Some(1.0));
        assert_eq!(get("mmcblk0", "node_disk_io_time_weighted_seconds_total"), Some(0.05));
        assert_eq!(get("sda1", "node_disk_reads_completed_total"), None);
        assert_eq!(out.len(), 22);
    }

    #[test]
    fn truncated_line_is_an_error() {
        assert!(parse("8 0 sda 1 2 3", &mut Vec::new()).is_err());
    }
}
