//! Link state, carrier, speed and MTU per interface, from /sys/class/net.

use std::path::PathBuf;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{read_attr, CollectError, Collector, Roots};

pub struct NetClass {
    dir: PathBuf,
    buf: String,
}

impl NetClass {
    pub fn new(roots: &Roots) -> Self {
        NetClass { dir: roots.sys.join("class/net"), buf: String::new() }
    }

    /// One attribute as an integer; `None` when absent or refused (`speed` on a link that is down
    /// reads as an error or -1).
    fn int(&mut self, device: &str, attr: &str) -> Option<i64> {
        read_attr(&self.dir.join(device).join(attr), &mut self.buf)?;
        self.buf.parse().ok()
    }

    fn text(&mut self, device: &str, attr: &str) -> String {
        match read_attr(&self.dir.join(device).join(attr), &mut self.buf) {
            Some(()) => self.buf.clone(),
            None => String::new(),
        }
    }
}

impl Collector for NetClass {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| CollectError::Read { path: self.dir.clone(), source })?;
        let mut devices: Vec<String> =
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        devices.sort_unstable();
        for device in devices {
            let operstate = self.text(&device, "operstate");
            if operstate.is_empty() {
                continue; // not an interface (bonding_masters) or gone since the listing
            }
            let key = |name: &str| SeriesKey::new(name).with("device", device.as_str());
            let info = key("node_network_info")
                .with("address", self.text(&device, "address"))
                .with("broadcast", self.text(&device, "broadcast"))
                .with("duplex", self.text(&device, "duplex"))
                .with("ifalias", self.text(&device, "ifalias"))
                .with("operstate", operstate.as_str());
            out.push(Metric::gauge(info, Value::Int(1)));
            out.push(Metric::gauge(key("node_network_up"), Value::Int((operstate == "up") as i64)));
            if let Some(carrier) = self.int(&device, "carrier") {
                out.push(Metric::gauge(key("node_network_carrier"), Value::Int(carrier)));
            }
            if let Some(mtu) = self.int(&device, "mtu") {
                out.push(Metric::gauge(key("node_network_mtu_bytes"), Value::Int(mtu)));
            }
            // Mbit/s in sysfs, bytes per second in node_exporter.
            if let Some(speed) = self.int(&device, "speed").filter(|s| *s >= 0) {
                out.push(Metric::gauge(key("node_network_speed_bytes"), Value::Int(speed * 125_000)));
            }
            if let Some(qlen) = self.int(&device, "tx_queue_len") {
                out.push(Metric::gauge(key("node_network_transmit_queue_length"), Value::Int(qlen)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(dir: &std::path::Path, name: &str, attrs: &[(&str, &str)]) {
        let d = dir.join("class/net").join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (attr, value) in attrs {
            std::fs::write(d.join(attr), format!("{value}\n")).unwrap();
        }
    }

    #[test]
    fn links_with_odd_names_down_links_and_missing_attributes() {
        let dir = std::env::temp_dir().join(format!("twinwatch-netclass-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        iface(&dir, "eth8.100", &[("operstate", "up"), ("carrier", "1"), ("mtu", "1500"), ("speed", "1000")]);
        // A link that is down: speed reads -1 (or fails), carrier fails.
        iface(&dir, "br:lan", &[("operstate", "down"), ("mtu", "9000"), ("speed", "-1"), ("address", "aa:bb")]);
        iface(&dir, "bonding_masters", &[]);
        let roots = Roots { proc: dir.clone(), sys: dir.clone() };
        let mut out = Vec::new();
        NetClass::new(&roots).collect(&mut out).unwrap();
        let got: Vec<String> = out
            .iter()
            .map(|m| {
                let labels: Vec<String> = m.key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}{{{}}} {}", m.key.name, labels.join(","), m.value.as_f64())
            })
            .collect();
        assert_eq!(
            got,
            [
                "node_network_info{address=aa:bb,broadcast=,device=br:lan,duplex=,ifalias=,operstate=down} 1",
                "node_network_up{device=br:lan} 0",
                "node_network_mtu_bytes{device=br:lan} 9000",
                "node_network_info{address=,broadcast=,device=eth8.100,duplex=,ifalias=,operstate=up} 1",
                "node_network_up{device=eth8.100} 1",
                "node_network_carrier{device=eth8.100} 1",
                "node_network_mtu_bytes{device=eth8.100} 1500",
                "node_network_speed_bytes{device=eth8.100} 125000000",
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
