//! Power supplies (mains adapters, batteries, UPSes, USB ports) from /sys/class/power_supply,
//! named as node_exporter's powersupplyclass collector names them.
//!
//! Each supply's directory holds one file per property, in micro-units (µV, µA, µW, µWh, µAh),
//! tenths of a degree for temperatures, and plain numbers for percentages, counts and seconds.
//! Text properties (type, status, model, ...) become the labels of one `node_power_supply_info`
//! series. Which files each supply has is found once and again every [`REDISCOVER_EVERY`]
//! collections or when one vanishes.

use std::path::PathBuf;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::hwmon::{vanished, REDISCOVER_EVERY};
use super::{list_dir, read_into, CollectError, Collector, Roots};

const MICRO: f64 = 1e-6;
const TENTH: f64 = 0.1;

/// Numeric property files: `(file, series name after node_power_supply_, scale)`.
const NUMBERS: &[(&str, &str, f64)] = &[
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", MICRO),
    ("current_max", "current_max", MICRO),
    ("current_now", "current_ampere", MICRO),
    ("energy_empty", "energy_empty", MICRO),
    ("energy_empty_design", "energy_empty_design", MICRO),
    ("energy_full", "energy_full", MICRO),
    ("energy_full_design", "energy_full_design", MICRO),
    ("energy_now", "energy_watthour", MICRO),
    ("voltage_boot", "voltage_boot", MICRO),
    ("voltage_max", "voltage_max", MICRO),
    ("voltage_max_design", "voltage_max_design", MICRO),
    ("voltage_min", "voltage_min", MICRO),
    ("voltage_min_design", "voltage_min_design", MICRO),
    ("voltage_now", "voltage_volt", MICRO),
    ("voltage_ocv", "voltage_ocv", MICRO),
    ("charge_control_limit", "charge_control_limit", MICRO),
    ("charge_control_limit_max", "charge_control_limit_max", MICRO),
    ("charge_counter", "charge_counter", MICRO),
    ("charge_empty", "charge_empty", MICRO),
    ("charge_empty_design", "charge_empty_design", MICRO),
    ("charge_full", "charge_full", MICRO),
    ("charge_full_design", "charge_full_design", MICRO),
    ("charge_now", "charge_ampere", MICRO),
    ("charge_term_current", "charge_term_current", MICRO),
    ("constant_charge_current", "constant_charge_current", MICRO),
    ("constant_charge_current_max", "constant_charge_current_max", MICRO),
    ("constant_charge_voltage", "constant_charge_voltage", MICRO),
    ("constant_charge_voltage_max", "constant_charge_voltage_max", MICRO),
    ("precharge_current", "precharge_current", MICRO),
    ("input_current_limit", "input_current_limit", MICRO),
    ("power_now", "power_watt", MICRO),
    ("temp", "temp_celsius", TENTH),
    ("temp_alert_max", "temp_alert_max_celsius", TENTH),
    ("temp_alert_min", "temp_alert_min_celsius", TENTH),
    ("temp_ambient", "temp_ambient_celsius", TENTH),
    ("temp_ambient_max", "temp_ambient_max_celsius", TENTH),
    ("temp_ambient_min", "temp_ambient_min_celsius", TENTH),
    ("temp_max", "temp_max_celsius", TENTH),
    ("temp_min", "temp_min_celsius", TENTH),
];

/// Text property files, each a label of `node_power_supply_info` named as the file is.
const TEXTS: &[&str] = &[
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
    "scope",
];

/// One supply: its numeric files with finished keys, and its text files.
struct Supply {
    name: String,
    numbers: Vec<(PathBuf, SeriesKey, f64)>,
    texts: Vec<(&'static str, PathBuf)>,
}

pub struct PowerSupply {
    class: PathBuf,
    supplies: Vec<Supply>,
    collections: u64,
    stale: bool,
    buf: String,
}

impl PowerSupply {
    pub fn new(roots: &Roots) -> Self {
        PowerSupply {
            class: roots.sys.join("class/power_supply"),
            supplies: Vec::new(),
            collections: 0,
            stale: true,
            buf: String::with_capacity(64),
        }
    }

    fn discover(&mut self) -> Result<(), CollectError> {
        self.supplies.clear();
        for (name, dir) in list_dir(&self.class)? {
            let Ok(files) = std::fs::read_dir(&dir) else { continue };
            let mut supply = Supply { name, numbers: Vec::new(), texts: Vec::new() };
            let mut present: Vec<String> = files
                .flatten()
                .filter(|f| f.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|f| f.file_name().into_string().ok())
                .collect();
            present.sort();
            for (file, metric, scale) in NUMBERS {
                if present.binary_search_by(|p| p.as_str().cmp(file)).is_ok() {
                    let key = SeriesKey::new(format!("node_power_supply_{metric}"))
                        .with("power_supply", supply.name.as_str());
                    supply.numbers.push((dir.join(file), key, *scale));
                }
            }
            for file in TEXTS {
                if present.binary_search_by(|p| p.as_str().cmp(file)).is_ok() {
                    supply.texts.push((file, dir.join(file)));
                }
            }
            self.supplies.push(supply);
        }
        Ok(())
    }
}

impl Collector for PowerSupply {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.stale || self.collections % REDISCOVER_EVERY == 0 {
            self.stale = false;
            self.discover()?;
        }
        self.collections += 1;
        for supply in &self.supplies {
            for (path, key, scale) in &supply.numbers {
                // Some properties refuse reads in some states (ENODATA while charging, EINVAL):
                // that property is left out this time.
                if let Err(e) = read_into(path, &mut self.buf) {
                    self.stale |= vanished(&e);
                    continue;
                }
                let Ok(value) = self.buf.trim().parse::<i64>() else { continue };
                out.push(Metric::gauge(key.clone(), Value::Int(value)).scaled(*scale));
            }
            let mut info = SeriesKey::new("node_power_supply_info").with("power_supply", supply.name.as_str());
            for (label, path) in &supply.texts {
                // Read as bytes: a serial number with stray bytes still makes a label.
                let Ok(bytes) = std::fs::read(path) else { continue };
                let text = String::from_utf8_lossy(&bytes);
                let text = text.trim();
                if !text.is_empty() {
                    info = info.with(label, text);
                }
            }
            out.push(Metric::gauge(info, Value::Int(1)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{render, sorted, Tree};
    use super::*;

    fn supply(tree: &Tree, name: &str, files: &[(&str, &str)]) {
        let dir = format!("sys/devices/LNXSYSTM:00/device:00/PNP0C0A:00/power_supply/{name}");
        for (file, text) in files {
            tree.put(&format!("{dir}/{file}"), text);
        }
        std::fs::create_dir_all(tree.path().join(format!("{dir}/power"))).unwrap();
        tree.link(&format!("sys/class/power_supply/{name}"), &format!("../../{}", dir.trim_start_matches("sys/")));
    }

    #[test]
    fn a_battery_and_an_ac_adapter_in_base_units() {
        let tree = Tree::new("power-supply");
        supply(
            &tree,
            "BAT0",
            &[
                ("type", "Battery\n"),
                ("status", "Discharging\n"),
                ("present", "1\n"),
                ("capacity", "87\n"),
                ("capacity_level", "Normal\n"),
                ("cycle_count", "42\n"),
                ("energy_now", "45230000\n"),
                ("energy_full", "52000000\n"),
                ("energy_full_design", "57000000\n"),
                ("voltage_now", "12345000\n"),
                ("voltage_min_design", "11400000\n"),
                ("power_now", "8123000\n"),
                ("current_now", "1500000\n"),
                ("temp", "251\n"),
                ("time_to_empty_now", "900\n"),
                ("technology", "Li-ion\n"),
                ("manufacturer", "SMP\n"),
                ("model_name", "5B10W13930\n"),
                ("serial_number", "  123 \n"),
                // Empty text is no label; a number that is not one is no series.
                ("health", "\n"),
                ("charge_now", "unknown\n"),
                ("uevent", "POWER_SUPPLY_NAME=BAT0\n"),
            ],
        );
        supply(&tree, "AC", &[("type", "Mains\n"), ("online", "1\n")]);
        let mut out = Vec::new();
        PowerSupply::new(&tree.roots()).collect(&mut out).unwrap();
        assert_eq!(
            render(&out),
            sorted([
                r#"node_power_supply_capacity{power_supply="BAT0"} 87"#,
                r#"node_power_supply_current_ampere{power_supply="BAT0"} 1.5"#,
                r#"node_power_supply_cyclecount{power_supply="BAT0"} 42"#,
                r#"node_power_supply_energy_full{power_supply="BAT0"} 52"#,
                r#"node_power_supply_energy_full_design{power_supply="BAT0"} 57"#,
                r#"node_power_supply_energy_watthour{power_supply="BAT0"} 45.23"#,
                r#"node_power_supply_info{power_supply="AC",type="Mains"} 1"#,
                concat!(
                    r#"node_power_supply_info{capacity_level="Normal",manufacturer="SMP","#,
                    r#"model_name="5B10W13930",power_supply="BAT0",serial_number="123","#,
                    r#"status="Discharging",technology="Li-ion",type="Battery"} 1"#
                ),
                r#"node_power_supply_online{power_supply="AC"} 1"#,
                r#"node_power_supply_power_watt{power_supply="BAT0"} 8.123"#,
                r#"node_power_supply_present{power_supply="BAT0"} 1"#,
                r#"node_power_supply_temp_celsius{power_supply="BAT0"} 25.1"#,
                r#"node_power_supply_time_to_empty_seconds{power_supply="BAT0"} 900"#,
                r#"node_power_supply_voltage_min_design{power_supply="BAT0"} 11.4"#,
                r#"node_power_supply_voltage_volt{power_supply="BAT0"} 12.345"#,
            ])
        );
        let energy = out.iter().find(|m| m.key.name == "node_power_supply_energy_watthour").unwrap();
        assert_eq!((energy.value, energy.scale), (Value::Int(45230000), 1e-6));
    }

    #[test]
    fn status_changes_are_seen_without_listing_again() {
        let tree = Tree::new("power-supply-status");
        supply(&tree, "BAT1", &[("type", "Battery\n"), ("status", "Charging\n"), ("capacity", "50\n")]);
        let mut ps = PowerSupply::new(&tree.roots());
        let mut out = Vec::new();
        ps.collect(&mut out).unwrap();
        let dir = "sys/devices/LNXSYSTM:00/device:00/PNP0C0A:00/power_supply/BAT1";
        tree.put(&format!("{dir}/status"), "Full\n");
        tree.put(&format!("{dir}/capacity"), "100\n");
        let mut out = Vec::new();
        ps.collect(&mut out).unwrap();
        assert_eq!(
            render(&out),
            [
                r#"node_power_supply_capacity{power_supply="BAT1"} 100"#,
                r#"node_power_supply_info{power_supply="BAT1",status="Full",type="Battery"} 1"#,
            ]
        );
    }

    #[test]
    fn no_power_supply_class_is_no_metrics_and_no_error() {
        let tree = Tree::new("power-supply-none");
        let mut out = Vec::new();
        PowerSupply::new(&tree.roots()).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
