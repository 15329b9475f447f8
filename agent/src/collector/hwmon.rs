//! Temperatures, fans, voltages, currents, power and energy from /sys/class/hwmon, named as
//! node_exporter's hwmon collector names them.
//!
//! Each `hwmonN` directory (and its `device` directory, where older drivers put their files) holds
//! one small file per sensor attribute, `<type><n>_<property>`: `temp1_input`, `fan2_min`,
//! `in0_input`. Listing directories and resolving links costs more than reading those files, so
//! the list of attribute files, each with its finished series key, is built once and rebuilt every
//! [`REDISCOVER_EVERY`] collections, or sooner when a file has vanished (a driver reload renumbers
//! the chips). Labels and chip names are read at discovery only: they do not change while a chip
//! exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use twinwatch_common::sample::{Kind, Metric, SeriesKey, Value};

use super::{list_dir, read_attr, read_into, CollectError, Collector, Roots};

/// How many collections a discovered file list serves before the directories are listed again.
pub(crate) const REDISCOVER_EVERY: u64 = 60;

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
fn explode(file: &str) -> Option<(&str, u32, &str)> {
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
pub(crate) fn chip_label(dir: &Path, buf: &mut String) -> Option<String> {
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
enum Read {
    /// A number, in the file's own unit (the series' scale converts it).
    Number,
    /// `beep_enable`: 1 if the file says `1`, else 0.
    Flag,
}

/// One attribute file and the series it feeds.
#[derive(Debug)]
struct Attr {
    path: PathBuf,
    key: SeriesKey,
    kind: Kind,
    scale: f64,
    read: Read,
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
fn discover_chip(dir: &Path, buf: &mut String, attrs: &mut Vec<Attr>, annotations: &mut Vec<Metric>) -> Option<()> {
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

/// A sensor value as node_exporter parses it: integers stay integers, anything else that reads as
/// a number becomes a float.
fn parse_value(text: &str) -> Option<Value> {
    if let Ok(v) = text.parse::<i64>() {
        return Some(Value::Int(v));
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Value::Float)
}

/// Whether a failed read means the file list is out of date: the file or its device is gone.
pub(crate) fn vanished(e: &CollectError) -> bool {
    match e {
        CollectError::Read { source, .. } => {
            source.kind() == std::io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ENODEV)
        }
        CollectError::Parse { .. } => false,
    }
}

/// Every hwmon chip's sensors.
pub struct Hwmon {
    class: PathBuf,
    attrs: Vec<Attr>,
    annotations: Vec<Metric>,
    collections: u64,
    stale: bool,
    buf: String,
}

impl Hwmon {
    pub fn new(roots: &Roots) -> Self {
        Hwmon {
            class: roots.sys.join("class/hwmon"),
            attrs: Vec::new(),
            annotations: Vec::new(),
            collections: 0,
            stale: true,
            buf: String::with_capacity(64),
        }
    }

    /// Lists the chips and their attribute files. A host without hwmon has none.
    fn discover(&mut self) -> Result<(), CollectError> {
        self.attrs.clear();
        self.annotations.clear();
        for (_, dir) in list_dir(&self.class)?.into_iter().filter(|(_, p)| p.is_dir()) {
            // A chip that cannot be named is skipped; the others are still reported.
            discover_chip(&dir, &mut self.buf, &mut self.attrs, &mut self.annotations);
        }
        Ok(())
    }
}

impl Collector for Hwmon {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.stale || self.collections % REDISCOVER_EVERY == 0 {
            self.stale = false;
            self.discover()?;
        }
        self.collections += 1;
        out.extend(self.annotations.iter().cloned());
        for attr in &self.attrs {
            if let Err(e) = read_into(&attr.path, &mut self.buf) {
                // Sensors that are not wired up answer EIO or ENODATA: skip them quietly.
                self.stale |= vanished(&e);
                continue;
            }
            let text = self.buf.trim();
            let value = match attr.read {
                Read::Flag => Value::Int((text == "1") as i64),
                Read::Number => match parse_value(text) {
                    Some(v) => v,
                    None => continue,
                },
            };
            let metric = match attr.kind {
                Kind::Counter => Metric::counter(attr.key.clone(), value),
                Kind::Gauge => Metric::gauge(attr.key.clone(), value),
            };
            out.push(metric.scaled(attr.scale));
        }
        Ok(())
    }
}

/// Fixture sysfs trees for the sensor collectors' tests.
#[cfg(test)]
pub(crate) mod fixture {
    use std::path::{Path, PathBuf};

    use twinwatch_common::sample::Metric;

    /// A directory under the system temp dir, unique to this process and test, removed on drop.
    pub struct Tree(pub PathBuf);

    impl Tree {
        pub fn new(test: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("twinwatch-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        /// Writes `text` to `rel`, creating its directories.
        pub fn put(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        /// Makes `rel` a symbolic link to `target` (relative to the link's directory, as sysfs does).
        pub fn link(&self, rel: &str, target: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn roots(&self) -> super::Roots {
            super::Roots { proc: self.0.join("proc"), sys: self.0.join("sys") }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Every series as `name{label=value,...} value`, sorted, for exact comparison.
    pub fn render(out: &[Metric]) -> Vec<String> {
        let mut lines: Vec<String> = out
            .iter()
            .map(|m| {
                let labels: Vec<String> = m.key.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{}{{{}}} {}", m.key.name, labels.join(","), m.real())
            })
            .collect();
        lines.sort();
        lines
    }

    /// Expected lines, sorted as [`render`] sorts.
    pub fn sorted<S: Into<String>>(lines: impl IntoIterator<Item = S>) -> Vec<String> {
        let mut lines: Vec<String> = lines.into_iter().map(Into::into).collect();
        lines.sort();
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{render, sorted, Tree};
    use super::*;

    #[test]
    fn file_names_split_like_node_exporter() {
        assert_eq!(explode("temp1_input"), Some(("temp", 1, "input")));
        assert_eq!(explode("temp12_crit_alarm"), Some(("temp", 12, "crit_alarm")));
        assert_eq!(explode("in0_input"), Some(("in", 0, "input")));
        assert_eq!(explode("pwm1"), Some(("pwm", 1, "")));
        assert_eq!(explode("beep_enable"), Some(("beep_enable", 0, "")));
        assert_eq!(explode("name"), Some(("name", 0, "")));
        assert_eq!(explode("temp1x"), None);
        assert_eq!(explode("temp1_"), None);
        assert_eq!(explode("1temp"), None);
        assert_eq!(clean("Package id 0\n"), "package_id_0");
        assert_eq!(clean("coretemp.0"), "coretemp_0");
        assert_eq!(clean("0000:00:18.3"), "0000:00:18_3");
    }

    /// An x86 desktop: coretemp with labels, a k10temp-style PCI chip with a fan, voltages and
    /// power, plus the files that must not turn into series.
    fn x86(tree: &Tree) {
        let core = "sys/devices/platform/coretemp.0/hwmon/hwmon1";
        tree.put(&format!("{core}/name"), "coretemp\n");
        tree.put(&format!("{core}/temp1_input"), "45000\n");
        tree.put(&format!("{core}/temp1_label"), "Package id 0\n");
        tree.put(&format!("{core}/temp1_max"), "80000\n");
        tree.put(&format!("{core}/temp1_crit"), "100000\n");
        tree.put(&format!("{core}/temp2_input"), "44000\n");
        tree.put(&format!("{core}/temp2_label"), "Core 0\n");
        // Truncated: the sensor has no reading this time.
        tree.put(&format!("{core}/temp3_input"), "");
        // Not a number.
        tree.put(&format!("{core}/temp4_input"), "N/A\n");
        // Write-only control: never read.
        let reset = tree.put(&format!("{core}/temp1_reset_history"), "1\n");
        std::fs::set_permissions(&reset, std::os::unix::fs::PermissionsExt::from_mode(0o200)).unwrap();
        tree.put(&format!("{core}/uevent"), "DRIVER=coretemp\n");
        std::fs::create_dir_all(tree.path().join(format!("{core}/power"))).unwrap();
        tree.link(&format!("{core}/device"), "../../../coretemp.0");
        tree.link("sys/class/hwmon/hwmon1", &format!("../../{}", core.trim_start_matches("sys/")));

        let pci = "sys/devices/pci0000:00/0000:00:18.3/hwmon/hwmon2";
        tree.put(&format!("{pci}/name"), "k10temp\n");
        tree.put(&format!("{pci}/fan1_input"), "1200\n");
        tree.put(&format!("{pci}/fan1_min"), "300\n");
        tree.put(&format!("{pci}/fan1_alarm"), "0\n");
        tree.put(&format!("{pci}/in0_input"), "12000\n");
        tree.put(&format!("{pci}/power1_average"), "15000000\n");
        tree.put(&format!("{pci}/energy1_input"), "123456789\n");
        tree.put(&format!("{pci}/beep_enable"), "1\n");
        tree.link(&format!("{pci}/device"), "../../../0000:00:18.3");
        tree.link("sys/class/hwmon/hwmon2", &format!("../../{}", pci.trim_start_matches("sys/")));
    }

    /// A UDM-Pro-like ARM board: thermal-zone hwmon chips with a name but no device link.
    fn arm(tree: &Tree) {
        for (n, name, temp) in [(0, "cpu_thermal", "52500"), (1, "soc_thermal", "-1500")] {
            let dir = format!("sys/devices/virtual/hwmon/hwmon{n}");
            tree.put(&format!("{dir}/name"), &format!("{name}\n"));
            tree.put(&format!("{dir}/temp1_input"), &format!("{temp}\n"));
            tree.link(&format!("sys/class/hwmon/hwmon{n}"), &format!("../../devices/virtual/hwmon/hwmon{n}"));
        }
    }

    #[test]
    fn x86_chips_are_named_by_device_with_labels_fans_and_units() {
        let tree = Tree::new("hwmon-x86");
        x86(&tree);
        let mut hwmon = Hwmon::new(&tree.roots());
        let mut out = Vec::new();
        hwmon.collect(&mut out).unwrap();
        assert_eq!(
            render(&out),
            sorted([
                r#"node_hwmon_beep_enabled{chip="pci0000:00_0000:00:18_3",sensor="beep_enable0"} 1"#,
                r#"node_hwmon_chip_names{chip="pci0000:00_0000:00:18_3",chip_name="k10temp"} 1"#,
                r#"node_hwmon_chip_names{chip="platform_coretemp_0",chip_name="coretemp"} 1"#,
                r#"node_hwmon_energy_joule_total{chip="pci0000:00_0000:00:18_3",sensor="energy1"} 123.456789"#,
                r#"node_hwmon_fan_alarm{chip="pci0000:00_0000:00:18_3",sensor="fan1"} 0"#,
                r#"node_hwmon_fan_min_rpm{chip="pci0000:00_0000:00:18_3",sensor="fan1"} 300"#,
                r#"node_hwmon_fan_rpm{chip="pci0000:00_0000:00:18_3",sensor="fan1"} 1200"#,
                r#"node_hwmon_in_volts{chip="pci0000:00_0000:00:18_3",sensor="in0"} 12"#,
                r#"node_hwmon_power_average_watt{chip="pci0000:00_0000:00:18_3",sensor="power1"} 15"#,
                r#"node_hwmon_sensor_label{chip="platform_coretemp_0",label="Core 0",sensor="temp2"} 1"#,
                r#"node_hwmon_sensor_label{chip="platform_coretemp_0",label="Package id 0",sensor="temp1"} 1"#,
                r#"node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp1"} 45"#,
                r#"node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp2"} 44"#,
                r#"node_hwmon_temp_crit_celsius{chip="platform_coretemp_0",sensor="temp1"} 100"#,
                r#"node_hwmon_temp_max_celsius{chip="platform_coretemp_0",sensor="temp1"} 80"#,
            ])
        );
        // Integers with a scale, not floats: the delta codec sends them as small varints.
        let temp = out.iter().find(|m| m.key.name == "node_hwmon_temp_celsius").unwrap();
        assert_eq!((temp.value, temp.scale), (Value::Int(45000), 0.001));
        let energy = out.iter().find(|m| m.key.name == "node_hwmon_energy_joule_total").unwrap();
        assert_eq!(energy.kind, Kind::Counter);
    }

    #[test]
    fn arm_chips_without_a_device_are_named_by_their_name_file() {
        let tree = Tree::new("hwmon-arm");
        arm(&tree);
        let mut out = Vec::new();
        Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
        assert_eq!(
            render(&out),
            sorted([
                r#"node_hwmon_chip_names{chip="cpu_thermal",chip_name="cpu_thermal"} 1"#,
                r#"node_hwmon_chip_names{chip="soc_thermal",chip_name="soc_thermal"} 1"#,
                r#"node_hwmon_temp_celsius{chip="cpu_thermal",sensor="temp1"} 52.5"#,
                r#"node_hwmon_temp_celsius{chip="soc_thermal",sensor="temp1"} -1.5"#,
            ])
        );
    }

    #[test]
    fn a_chip_with_neither_device_nor_name_is_named_by_its_directory() {
        let tree = Tree::new("hwmon-bare");
        tree.put("sys/devices/virtual/hwmon/hwmon7/temp1_input", "30000\n");
        tree.link("sys/class/hwmon/hwmon7", "../../devices/virtual/hwmon/hwmon7");
        let mut out = Vec::new();
        Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
        assert_eq!(render(&out), [r#"node_hwmon_temp_celsius{chip="hwmon7",sensor="temp1"} 30"#]);
    }

    #[test]
    fn no_hwmon_class_is_no_metrics_and_no_error() {
        let tree = Tree::new("hwmon-none");
        let mut out = Vec::new();
        Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn files_are_listed_once_and_again_after_one_vanishes() {
        let tree = Tree::new("hwmon-rediscover");
        arm(&tree);
        let mut hwmon = Hwmon::new(&tree.roots());
        let temps = |hwmon: &mut Hwmon| {
            let mut out = Vec::new();
            hwmon.collect(&mut out).unwrap();
            out.iter().filter(|m| m.key.name == "node_hwmon_temp_celsius").map(|m| m.real()).collect::<Vec<_>>()
        };
        assert_eq!(temps(&mut hwmon), [52.5, -1.5]);
        // A new sensor is not seen while the list is fresh: the directory is not read every tick.
        tree.put("sys/devices/virtual/hwmon/hwmon1/temp2_input", "20000\n");
        tree.put("sys/devices/virtual/hwmon/hwmon0/temp1_input", "53000\n");
        assert_eq!(temps(&mut hwmon), [53.0, -1.5]);
        // A vanished file is skipped silently, and the next collection lists the files again.
        std::fs::remove_file(tree.path().join("sys/devices/virtual/hwmon/hwmon0/temp1_input")).unwrap();
        assert_eq!(temps(&mut hwmon), [-1.5]);
        assert_eq!(temps(&mut hwmon), [-1.5, 20.0]);
    }

    #[test]
    fn files_are_listed_again_every_so_many_collections() {
        let tree = Tree::new("hwmon-periodic");
        arm(&tree);
        let mut hwmon = Hwmon::new(&tree.roots());
        let mut out = Vec::new();
        hwmon.collect(&mut out).unwrap();
        tree.put("sys/devices/virtual/hwmon/hwmon1/fan1_input", "900\n");
        let fans = |hwmon: &mut Hwmon| {
            let mut out = Vec::new();
            hwmon.collect(&mut out).unwrap();
            out.iter().filter(|m| m.key.name == "node_hwmon_fan_rpm").count()
        };
        for _ in 1..REDISCOVER_EVERY {
            assert_eq!(fans(&mut hwmon), 0);
        }
        assert_eq!(fans(&mut hwmon), 1);
    }

    #[test]
    fn bare_values_special_types_and_clocks_follow_node_exporter() {
        let tree = Tree::new("hwmon-special");
        let dir = "sys/devices/pci0000:00/0000:03:00.0/hwmon/hwmon3";
        tree.put(&format!("{dir}/name"), "amdgpu\n");
        tree.put(&format!("{dir}/pwm1"), "128\n");
        tree.put(&format!("{dir}/pwm1_enable"), "2\n");
        tree.put(&format!("{dir}/fan1_input"), "0\n");
        tree.put(&format!("{dir}/fan1"), "7\n");
        tree.put(&format!("{dir}/freq1_input"), "1800000000\n");
        tree.put(&format!("{dir}/freq1_label"), "sclk\n");
        tree.put(&format!("{dir}/freq2_input"), "96000000\n");
        tree.put(&format!("{dir}/power1_input"), "5000000\n");
        tree.put(&format!("{dir}/power1_average_interval"), "1000\n");
        tree.put(&format!("{dir}/curr1_input"), "2500\n");
        tree.put(&format!("{dir}/update_interval"), "500\n");
        tree.put(&format!("{dir}/temp1_crit_alarm"), "1\n");
        tree.put(&format!("{dir}/temp1_type"), "4\n");
        tree.link(&format!("{dir}/device"), "../../../0000:03:00.0");
        tree.link("sys/class/hwmon/hwmon3", "../../devices/pci0000:00/0000:03:00.0/hwmon/hwmon3");
        let mut out = Vec::new();
        Hwmon::new(&tree.roots()).collect(&mut out).unwrap();
        let chip = "pci0000:00_0000:03:00_0";
        assert_eq!(
            render(&out),
            sorted([
                format!(r#"node_hwmon_chip_names{{chip="{chip}",chip_name="amdgpu"}} 1"#),
                format!(r#"node_hwmon_curr_amps{{chip="{chip}",sensor="curr1"}} 2.5"#),
                format!(r#"node_hwmon_fan{{chip="{chip}",sensor="fan1"}} 7"#),
                format!(r#"node_hwmon_fan_input_rpm{{chip="{chip}",sensor="fan1"}} 0"#),
                format!(r#"node_hwmon_freq_freq_mhz{{chip="{chip}",sensor="sclk"}} 1800"#),
                format!(r#"node_hwmon_power_average_interval_seconds{{chip="{chip}",sensor="power1"}} 1"#),
                format!(r#"node_hwmon_power_watt{{chip="{chip}",sensor="power1"}} 5"#),
                format!(r#"node_hwmon_pwm{{chip="{chip}",sensor="pwm1"}} 128"#),
                format!(r#"node_hwmon_pwm_enable{{chip="{chip}",sensor="pwm1"}} 2"#),
                format!(r#"node_hwmon_sensor_label{{chip="{chip}",label="sclk",sensor="freq1"}} 1"#),
                format!(r#"node_hwmon_temp_crit_alarm_celsius{{chip="{chip}",sensor="temp1"}} 0.001"#),
                format!(r#"node_hwmon_temp_type{{chip="{chip}",sensor="temp1"}} 4"#),
                format!(r#"node_hwmon_update_interval_seconds{{chip="{chip}",sensor="update_interval0"}} 0.5"#),
            ])
        );
    }
}
