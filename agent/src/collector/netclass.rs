//! Link state, carrier, speed and MTU per interface, from /sys/class/net.

use std::path::PathBuf;

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::procfile::ProcFile;
use super::{CollectError, Collector, Roots};

/// The attributes read per interface, in the order of [`Link`]'s files.
const ATTRS: [&str; 9] =
    ["operstate", "address", "broadcast", "duplex", "ifalias", "carrier", "mtu", "speed", "tx_queue_len"];

/// Interfaces are listed again every this many collections (or when one vanishes); in between,
/// their attribute files stay open.
const RELIST_EVERY: u32 = 12;

struct Link {
    device: String,
    files: Vec<ProcFile>,
}

pub struct NetClass {
    dir: PathBuf,
    links: Vec<Link>,
    runs: u32,
    buf: String,
}

impl NetClass {
    pub fn new(roots: &Roots) -> Self {
        NetClass { dir: roots.sys.join("class/net"), links: Vec::new(), runs: 0, buf: String::new() }
    }

    fn relist(&mut self) -> Result<(), CollectError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| CollectError::Read { path: self.dir.clone(), source })?;
        let mut devices: Vec<String> =
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        devices.sort_unstable();
        let mut old = std::mem::take(&mut self.links);
        for device in devices {
            let link = match old.iter().position(|l| l.device == device) {
                Some(at) => old.swap_remove(at),
                None => {
                    let dir = self.dir.join(&device);
                    Link { files: ATTRS.iter().map(|a| ProcFile::new(dir.join(a))).collect(), device }
                }
            };
            self.links.push(link);
        }
        Ok(())
    }
}

/// One attribute's text, trimmed; empty when absent or refused (`speed` on a link that is down
/// reads as an error or -1).
fn text(file: &mut ProcFile, buf: &mut String) -> String {
    match file.read(buf) {
        Ok(()) => buf.trim_end().to_owned(),
        Err(_) => String::new(),
    }
}

fn int(file: &mut ProcFile, buf: &mut String) -> Option<i64> {
    file.read(buf).ok()?;
    buf.trim_end().parse().ok()
}

impl Collector for NetClass {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        if self.runs % RELIST_EVERY == 0 {
            self.relist()?;
        }
        self.runs += 1;
        let buf = &mut self.buf;
        for link in &mut self.links {
            let [operstate, address, broadcast, duplex, ifalias, carrier, mtu, speed, qlen] = &mut link.files[..]
            else {
                continue;
            };
            let state = text(operstate, buf);
            if state.is_empty() {
                // Not an interface (bonding_masters), or gone since the listing.
                self.runs = 0;
                continue;
            }
            let device = link.device.as_str();
            let key = |name: &str| SeriesKey::new(name).with("device", device);
            let info = key("node_network_info")
                .with("address", text(address, buf))
                .with("broadcast", text(broadcast, buf))
                .with("duplex", text(duplex, buf))
                .with("ifalias", text(ifalias, buf))
                .with("operstate", state.as_str());
            out.push(Metric::gauge(info, Value::Int(1)));
            out.push(Metric::gauge(key("node_network_up"), Value::Int((state == "up") as i64)));
            if let Some(carrier) = int(carrier, buf) {
                out.push(Metric::gauge(key("node_network_carrier"), Value::Int(carrier)));
            }
            if let Some(mtu) = int(mtu, buf) {
                out.push(Metric::gauge(key("node_network_mtu_bytes"), Value::Int(mtu)));
            }
            // Mbit/s in sysfs, bytes per second in node_exporter.
            if let Some(speed) = int(speed, buf).filter(|s| *s >= 0) {
                out.push(Metric::gauge(key("node_network_speed_bytes"), Value::Int(speed * 125_000)));
            }
            if let Some(qlen) = int(qlen, buf) {
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
