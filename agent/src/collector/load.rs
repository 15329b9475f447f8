//! Load averages from /proc/loadavg.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::CollectError;

pub fn parse(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let mut fields = text.split_ascii_whitespace();
    for name in ["node_load1", "node_load5", "node_load15"] {
        let field = fields.next().unwrap_or_default();
        let value: f64 = field
            .parse()
            .map_err(|_| CollectError::Parse { what: "/proc/loadavg", detail: format!("not a number: {field:?}") })?;
        out.push(Metric::gauge(SeriesKey::new(name), Value::Float(value)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_load_averages() {
        let mut out = Vec::new();
        parse("0.20 0.18 0.12 1/80 11206\n", &mut out).unwrap();
        let v: Vec<_> = out.iter().map(|m| (m.key.name.as_str(), m.value.as_f64())).collect();
        assert_eq!(v, [("node_load1", 0.20), ("node_load5", 0.18), ("node_load15", 0.12)]);
        assert!(parse("0.20", &mut Vec::new()).is_err());
    }
}
