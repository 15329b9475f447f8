//! Every /proc/meminfo field, named as node_exporter names it.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, CollectError};

/// Parses /proc/meminfo: `Active(anon):  1234 kB` becomes `node_memory_Active_anon_bytes`;
/// fields without a unit (`HugePages_Total`) keep their bare name.
pub fn parse(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let before = out.len();
    for line in text.lines() {
        let Some((field, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let value = num(parts.next(), "/proc/meminfo")?;
        let kb = parts.next() == Some("kB");
        let mut name = String::with_capacity(field.len() + 20);
        name.push_str("node_memory_");
        for c in field.chars() {
            match c {
                '(' => name.push('_'),
                ')' => {}
                c => name.push(c),
            }
        }
        if kb {
            name.push_str("_bytes");
        }
        // Kept in kB with a scale: a page-cache change of 180 kB then travels as a delta of 180,
        // one or two bytes, instead of 184320.
        let metric = Metric::gauge(SeriesKey::new(name), Value::Int(value as i64));
        out.push(if kb { metric.scaled(1024.0) } else { metric });
    }
    if out.len() == before {
        return Err(CollectError::Parse { what: "/proc/meminfo", detail: "no fields".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_follow_node_exporter() {
        let text = "MemTotal:       16318208 kB\nMemAvailable:    9001000 kB\nActive(anon):     123 kB\nHugePages_Total:       0\n";
        let mut out = Vec::new();
        parse(text, &mut out).unwrap();
        let names: Vec<_> = out.iter().map(|m| (m.key.name.as_str(), m.real())).collect();
        assert_eq!(
            names,
            [
                ("node_memory_MemTotal_bytes", 16318208.0 * 1024.0),
                ("node_memory_MemAvailable_bytes", 9001000.0 * 1024.0),
                ("node_memory_Active_anon_bytes", 123.0 * 1024.0),
                ("node_memory_HugePages_Total", 0.0),
            ]
        );
    }

    #[test]
    fn truncated_line_is_an_error() {
        assert!(parse("MemTotal:", &mut Vec::new()).is_err());
        assert!(parse("", &mut Vec::new()).is_err());
    }
}
