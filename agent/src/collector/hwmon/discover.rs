//! Discovery: which files under a hwmon chip are sensor attributes, and the finished series key,
//! kind and scale of each, built once per rediscovery rather than every collection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use twinwatch_common::sample::{Kind, Metric, SeriesKey, Value};

use super::super::read_attr;

/// The sensor types node_exporter reads; other files in a hwmon directory are not sensors.
const SENSOR_TYPES: &[&str] = &[
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
    "freq",
];

/// node_exporter's `cleanMetricName`: lower case, anything outside `[a-z0-9:_]` becomes `_`, and
/// no `_` at either end. Chip names and property names go through it; sensor labels do not.
pub(crate) fn clean(raw: &str) -> String {
    let mapped: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' { c } else { '_' })
        .collect();
    mapped.trim_matches('_').to_owned()
}

/// Splits an attribute file name into type, number and property the way node_exporter's
/// `^([^0-9]+)([0-9]*)?(_(.+))?$` does: the type runs up to the first digit, so `temp1_crit_alarm`
/// is `("temp", 1, "crit_alarm")` and `beep_enable` is a type with number 0 and no property.
pub(super) fn explode(file: &str) -> Option<(&str, u32, &str)> {
    let type_end = file.find(|c: char| c.is_ascii_digit()).unwrap_or(file.len());
    if type_end == 0 {
        return None;
    }
    let rest = &file[type_end..];
    let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (digits, after) = rest.split_at(digits_end);
    let property = if after.is_empty() { "" } else { after.strip_prefix('_').filter(|p| !p.is_empty())? };
    let number = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    Some((&file[..type_end], number, property))
}

/// The `chip` label node_exporter gives a hwmon directory: the bus and name of the device it
/// belongs to (`platform_coretemp_0`, `pci0000:00_0000:00:18_3`), which stay put across reboots
/// while hwmon numbers do not; else the chip's `name` file; else the directory's own name.
fn chip_label(dir: &Path, buf: &mut String) -> Option<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let part = |p: Option<&Path>| p.and_then(Path::file_name).map(|n| clean(&n.to_string_lossy()));
        let name = part(Some(&device)).unwrap_or_default();
        let bus = part(device.parent()).unwrap_or_default();
        if !bus.is_empty() && !name.is_empty() {
            return Some(format!("{bus}_{name}"));
        }
        if !name.is_empty() {
            return Some(name);
        }
    }
    if read_attr(&dir.join("name"), buf).is_some() {
        let name = clean(buf);
        if !name.is_empty() {
            return Some(name);
        }
    }
    let real = std::fs::canonicalize(dir).ok()?;
    let name = clean(&real.file_name()?.to_string_lossy());
    (!name.is_empty()).then_some(name)
}

/// How the text of an attribute file becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// A number, in the file's own unit (the series' scale converts it).
    Number,
    /// `beep_enable`: 1 if the file says `1`, else 0.
    Flag,
}

/// One attribute file and the series it feeds.
#[derive(Debug)]
pub(super) struct Attr {
    pub(super) path: PathBuf,
    pub(super) key: SeriesKey,
    pub(super) kind: Kind,
    pub(super) scale: f64,
    pub(super) read: Read,
}

/// The series name suffix, kind and scale node_exporter gives property `prop` of a sensor of
/// type `ty`, from the file's unit (millidegrees, millivolts, milliamps, microwatts, microjoules,
/// milliseconds) to the one in the name.
fn unit(ty: &str, prop: &str) -> (&'static str, Kind, f64) {
    let gauge = Kind::Gauge;
    match (ty, prop) {
        (_, "fault" | "alarm") => ("", gauge, 1.0),
        (_, "beep") => ("_enabled", gauge, 1.0),
        ("in" | "cpu", _) => ("_volts", gauge, 1e-3),
        // node_exporter also puts `crit_alarm` and the like in degrees: kept for the same names.
        ("temp", p) if p != "type" => ("_celsius", gauge, 1e-3),
        ("curr", _) => ("_amps", gauge, 1e-3),
        ("energy", _) => ("_joule_total", Kind::Counter, 1e-6),
        ("power", "accuracy") => ("", gauge, 1e-6),
        ("power", "average_interval" | "average_interval_min" | "average_interval_max") => ("_seconds", gauge, 1e-3),
        ("power", _) => ("_watt", gauge, 1e-6),
        // Milli-percent, divided as node_exporter divides it.
        ("humidity", _) => ("", gauge, 1e-6),
        ("fan", "input" | "min" | "max" | "target") => ("_rpm", gauge, 1.0),
        ("freq", "input") => ("_freq_mhz", gauge, 1e-6),
        _ => ("", gauge, 1.0),
    }
}

/// One sensor's attribute files, by property (`""` for a bare `pwm1`).
type Sensor = BTreeMap<String, PathBuf>;

/// Adds the sensor attribute files in `dir` to `sensors`, keyed by `(type, number)`. Files that
/// cannot be read at all (write-only controls) are left out so they are not tried every tick.
fn list_sensor_files(dir: &Path, sensors: &mut BTreeMap<(String, u32), Sensor>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some((ty, number, prop)) = explode(file) else { continue };
        if !SENSOR_TYPES.contains(&ty) {
            continue;
        }
        // `power` (a directory in every device) and links are not attributes.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o444 == 0 {
            continue;
        }
        sensors.entry((ty.to_owned(), number)).or_default().insert(prop.to_owned(), entry.path());
    }
}

/// One chip's series: values read every tick and the constant `1` annotations.
pub(super) fn discover_chip(
    dir: &Path,
    buf: &mut String,
    attrs: &mut Vec<Attr>,
    annotations: &mut Vec<Metric>,
) -> Option<()> {
    let chip = chip_label(dir, buf)?;
    let mut sensors = BTreeMap::new();
    list_sensor_files(dir, &mut sensors);
    let device = dir.join("device");
    if device.is_dir() {
        // Read after the hwmon directory, so a file in both places is taken from the device, as
        // node_exporter (which overwrites) does.
        list_sensor_files(&device, &mut sensors);
    }
    if read_attr(&dir.join("name"), buf).is_some() {
        let chip_name = clean(buf);
        if !chip_name.is_empty() {
            let key = SeriesKey::new("node_hwmon_chip_names").with("chip", chip.as_str()).with("chip_name", chip_name);
            annotations.push(Metric::gauge(key, Value::Int(1)));
        }
    }
    for ((ty, number), props) in &sensors {
        let sensor = format!("{ty}{number}");
        let label = props.get("label").and_then(|p| read_attr(p, buf)).map(|()| buf.clone());
        if let Some(label) = &label {
            let key = SeriesKey::new("node_hwmon_sensor_label")
                .with("chip", chip.as_str())
                .with("sensor", sensor.as_str())
                .with("label", label.as_str());
            annotations.push(Metric::gauge(key, Value::Int(1)));
        }
        let key = |name: &str, sensor: &str| SeriesKey::new(name).with("chip", chip.as_str()).with("sensor", sensor);
        let special = match ty.as_str() {
            "beep_enable" => Some(("node_hwmon_beep_enabled", 1.0, Read::Flag)),
            "vrm" => Some(("node_hwmon_voltage_regulator_version", 1.0, Read::Number)),
            "update_interval" => Some(("node_hwmon_update_interval_seconds", 1e-3, Read::Number)),
            _ => None,
        };
        if let Some((name, scale, read)) = special {
            if let Some(path) = props.get("") {
                let key = key(name, &sensor);
                attrs.push(Attr { path: path.clone(), key, kind: Kind::Gauge, scale, read });
            }
            continue;
        }
        for (prop, path) in props {
            if prop == "label" {
                continue;
            }
            let mut name = format!("node_hwmon_{ty}");
            if prop == "input" {
                // `input` is the value itself, unless the sensor also has a bare file.
                if props.contains_key("") {
                    name.push_str("_input");
                }
            } else if !prop.is_empty() {
                name.push('_');
                name.push_str(&clean(prop));
            }
            let (suffix, kind, scale) = unit(ty, prop);
            name.push_str(suffix);
            let key = if ty == "freq" && prop == "input" {
                // A clock (amdgpu's sclk, mclk) is only reported under its label, which stands in
                // for the sensor name.
                let Some(label) = &label else { continue };
                key(&name, &clean(label))
            } else {
                key(&name, &sensor)
            };
            attrs.push(Attr { path: path.clone(), key, kind, scale, read: Read::Number });
        }
    }
    Some(())
}
