//! Per-interface traffic counters from /proc/net/dev.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, CollectError};

const RECEIVE: [&str; 8] = ["bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast"];
const TRANSMIT: [&str; 8] = ["bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed"];

/// Parses /proc/net/dev. The interface name is everything before the last `:` of the line, so
/// names such as `eth0.100` or `br:lan` survive.
pub fn parse(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    for line in text.lines().skip(2) {
        let Some(colon) = line.rfind(':') else {
            continue;
        };
        let device = line[..colon].trim();
        let mut fields = line[colon + 1..].split_ascii_whitespace();
        for (direction, names) in [("receive", RECEIVE), ("transmit", TRANSMIT)] {
            for name in names {
                let value = num(fields.next(), "/proc/net/dev")?;
                let key = SeriesKey::new(format!("node_network_{direction}_{name}_total")).with("device", device);
                out.push(Metric::counter(key, Value::Int(value as i64)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 2776770   11307    0    0    0     0          0         0  2776770   11307    0    0    0     0       0          0
eth0.100:1215645    2751    1    2    0     0          0         7  1782404    4324    0    3    0   427       0          0
 br:lan: 5 6 0 0 0 0 0 0 7 8 0 0 0 0 0 0
";

    #[test]
    fn names_with_dots_and_colons_and_no_space_after_the_colon() {
        let mut out = Vec::new();
        parse(DEV, &mut out).unwrap();
        let get = |dev: &str, name: &str| {
            out.iter().find(|m| m.key.label("device") == Some(dev) && m.key.name == name).map(|m| m.value)
        };
        assert_eq!(get("eth0.100", "node_network_receive_bytes_total"), Some(Value::Int(1215645)));
        assert_eq!(get("eth0.100", "node_network_receive_multicast_total"), Some(Value::Int(7)));
        assert_eq!(get("eth0.100", "node_network_transmit_colls_total"), Some(Value::Int(427)));
        assert_eq!(get("br:lan", "node_network_transmit_packets_total"), Some(Value::Int(8)));
        assert_eq!(out.len(), 3 * 16);
    }

    #[test]
    fn truncated_line_is_an_error() {
        let cut = &DEV[..DEV.len() - 20];
        assert!(parse(cut, &mut Vec::new()).is_err());
    }
}
