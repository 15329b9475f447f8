//! Thermal zone temperatures and cooling device states from /sys/class/thermal, named as
//! node_exporter's thermal_zone collector names them.
//!
//! `thermal_zoneN/temp` is in millidegrees Celsius; `cooling_deviceN/{cur,max}_state` are
//! throttle steps. The zones and devices, and their `type`, are listed once and listed again
//! every [`REDISCOVER_EVERY`] collections or when one vanishes; each tick reads only the values.

use std::path::{Path, PathBuf};

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::hwmon::{vanished, REDISCOVER_EVERY};
use super::{list_dir, read_attr, read_into, CollectError, Collector, Roots};

/// One zone: where its files are and its finished series key.
struct Zone {
    temp: PathBuf,
    mode: PathBuf,
    key: SeriesKey,
}

/// One cooling device (a fan, a CPU frequency cap): its state files and series keys.
struct Cooling {
    cur: PathBuf,
    max: PathBuf,
    cur_key: SeriesKey,
    max_key: SeriesKey,
}

pub struct Thermal {
    class: PathBuf,
    zones: Vec<Zone>,
    cooling: Vec<Cooling>,
    collections: u64,
    stale: bool,
    buf: String,
}

/// The entries of the thermal class named `<prefix><digits...>`, sorted, with what follows the
/// prefix (the zone or device number node_exporter labels them with).
fn numbered(entries: &[(String, PathBuf)], prefix: &str) -> Vec<(String, PathBuf)> {
    entries
        .iter()
        .filter_map(|(name, path)| {
            let number = name.strip_prefix(prefix)?;
            number.starts_with(|c: char| c.is_ascii_digit()).then(|| (number.to_owned(), path.clone()))
        })
        .collect()
}

impl Thermal {
    pub fn new(roots: &Roots) -> Self {
        Thermal {
            class: roots.sys.join("class/thermal"),
            zones: Vec::new(),
            cooling: Vec::new(),
            collections: 0,
            stale: true,
            buf: String::with_capacity(32),
        }
    }

    fn discover(&mut self) -> Result<(), CollectError> {
        self.zones.clear();
        self.cooling.clear();
        let entries = list_dir(&self.class)?;
        for (zone, dir) in numbered(&entries, "thermal_zone") {
            // A zone without a type or temperature is one node_exporter skips too.
            if !dir.join("temp").is_file() || read_attr(&dir.join("type"), &mut self.buf).is_none() {
                continue;
            }
            let key = SeriesKey::new("node_thermal_zone_temp").with("type", self.buf.trim()).with("zone", zone);
            self.zones.push(Zone { temp: dir.join("temp"), mode: dir.join("mode"), key });
        }
        for (name, dir) in numbered(&entries, "cooling_device") {
            let has_states = dir.join("cur_state").is_file() && dir.join("max_state").is_file();
            if !has_states || read_attr(&dir.join("type"), &mut self.buf).is_none() {
                continue;
            }
            let key = |metric: &str| SeriesKey::new(metric).with("name", name.as_str()).with("type", self.buf.trim());
            self.cooling.push(Cooling {
                cur: dir.join("cur_state"),
                max: dir.join("max_state"),
                cur_key: key("node_cooling_device_cur_state"),
                max_key: key("node_cooling_device_max_state"),
            });
        }
        Ok(())
    }

    /// Reads one integer file; `None` if it cannot be read now (some sensors answer EINVAL or
    /// ENODATA until they have a reading), marking the list stale if the file is gone.
    fn read_int(&mut self, path: &Path) -> Option<i64> {
        if let Err(e) = read_into(path, &mut self.buf) {
            self.stale |= vanished(&e);
            return None;
        }
        self.buf.trim().parse().ok()
    }
}

impl Collector for Thermal {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.stale || self.collections % REDISCOVER_EVERY == 0 {
            self.stale = false;
            self.discover()?;
        }
        self.collections += 1;
        let zones = std::mem::take(&mut self.zones);
        for zone in &zones {
            // A disabled zone is not being measured; node_exporter leaves it out.
            if read_attr(&zone.mode, &mut self.buf).is_some() && self.buf.trim() == "disabled" {
                continue;
            }
            if let Some(millidegrees) = self.read_int(&zone.temp) {
                out.push(Metric::gauge(zone.key.clone(), Value::Int(millidegrees)).scaled(1e-3));
            }
        }
        self.zones = zones;
        let cooling = std::mem::take(&mut self.cooling);
        for device in &cooling {
            if let Some(cur) = self.read_int(&device.cur) {
                out.push(Metric::gauge(device.cur_key.clone(), Value::Int(cur)));
            }
            if let Some(max) = self.read_int(&device.max) {
                out.push(Metric::gauge(device.max_key.clone(), Value::Int(max)));
            }
        }
        self.cooling = cooling;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{render, sorted, Tree};
    use super::*;

    fn zone(tree: &Tree, n: u32, kind: &str, temp: Option<&str>) {
        tree.put(&format!("sys/devices/virtual/thermal/thermal_zone{n}/type"), &format!("{kind}\n"));
        if let Some(temp) = temp {
            tree.put(&format!("sys/devices/virtual/thermal/thermal_zone{n}/temp"), temp);
        }
        tree.link(
            &format!("sys/class/thermal/thermal_zone{n}"),
            &format!("../../devices/virtual/thermal/thermal_zone{n}"),
        );
    }

    #[test]
    fn zones_in_celsius_labelled_by_number_and_type() {
        let tree = Tree::new("thermal-zones");
        zone(&tree, 0, "cpu-thermal", Some("47250\n"));
        zone(&tree, 1, "acpitz", Some("-1500\n"));
        // No reading (the read fails on real hardware; here the file is empty).
        zone(&tree, 2, "iwlwifi_1", Some(""));
        // A zone whose temp file is missing.
        zone(&tree, 3, "pch_cometlake", None);
        // Disabled: reported by nobody.
        zone(&tree, 10, "x86_pkg_temp", Some("50000\n"));
        tree.put("sys/devices/virtual/thermal/thermal_zone10/mode", "disabled\n");
        zone(&tree, 11, "soc_thermal", Some("61000\n"));
        tree.put("sys/devices/virtual/thermal/thermal_zone11/mode", "enabled\n");
        tree.put("sys/devices/virtual/thermal/cooling_device0/type", "Processor\n");
        tree.put("sys/devices/virtual/thermal/cooling_device0/cur_state", "3\n");
        tree.put("sys/devices/virtual/thermal/cooling_device0/max_state", "10\n");
        tree.link("sys/class/thermal/cooling_device0", "../../devices/virtual/thermal/cooling_device0");
        let mut thermal = Thermal::new(&tree.roots());
        let mut out = Vec::new();
        thermal.collect(&mut out).unwrap();
        assert!(!thermal.stale, "a zone without a temp file is not a vanished one");
        assert_eq!(
            render(&out),
            sorted([
                r#"node_cooling_device_cur_state{name="0",type="Processor"} 3"#,
                r#"node_cooling_device_max_state{name="0",type="Processor"} 10"#,
                r#"node_thermal_zone_temp{type="acpitz",zone="1"} -1.5"#,
                r#"node_thermal_zone_temp{type="cpu-thermal",zone="0"} 47.25"#,
                r#"node_thermal_zone_temp{type="soc_thermal",zone="11"} 61"#,
            ])
        );
        let temp = out.iter().find(|m| m.key.label("zone") == Some("0")).unwrap();
        assert_eq!((temp.value, temp.scale), (Value::Int(47250), 0.001));
        // A zone that goes away is skipped, and the list is read again next time.
        std::fs::remove_dir_all(tree.path().join("sys/devices/virtual/thermal/thermal_zone1")).unwrap();
        let mut out = Vec::new();
        thermal.collect(&mut out).unwrap();
        assert_eq!(out.iter().filter(|m| m.key.name == "node_thermal_zone_temp").count(), 2);
        assert!(thermal.stale);
    }

    #[test]
    fn no_thermal_class_is_no_metrics_and_no_error() {
        let tree = Tree::new("thermal-none");
        let mut out = Vec::new();
        Thermal::new(&tree.roots()).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
