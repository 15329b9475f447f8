//! Page faults, paging and swapping, and OOM kills from /proc/vmstat.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, CollectError};

/// node_exporter's default field filter, `^(oom_kill|pgpg|pswp|pg.*fault).*`.
fn wanted(field: &str) -> bool {
    field.starts_with("oom_kill")
        || field.starts_with("pgpg")
        || field.starts_with("pswp")
        || (field.starts_with("pg") && field[2..].contains("fault"))
}

pub fn parse(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let before = out.len();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(field) = fields.next().filter(|f| wanted(f)) else { continue };
        let value = num(fields.next(), "/proc/vmstat")?;
        out.push(Metric::counter(SeriesKey::new(format!("node_vmstat_{field}")), Value::Int(value as i64)));
    }
    if out.len() == before {
        return Err(CollectError::Parse { what: "/proc/vmstat", detail: "no paging fields".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_node_exporter_keeps() {
        let text = "nr_free_pages 12345\npgpgin 100\npgpgout 200\npswpin 3\npswpout 4\npgfault 5000\npgmajfault 6\npgfree 9\noom_kill 1\n";
        let mut out = Vec::new();
        parse(text, &mut out).unwrap();
        let got: Vec<_> = out.iter().map(|m| (m.key.name.as_str(), m.value)).collect();
        assert_eq!(
            got,
            [
                ("node_vmstat_pgpgin", Value::Int(100)),
                ("node_vmstat_pgpgout", Value::Int(200)),
                ("node_vmstat_pswpin", Value::Int(3)),
                ("node_vmstat_pswpout", Value::Int(4)),
                ("node_vmstat_pgfault", Value::Int(5000)),
                ("node_vmstat_pgmajfault", Value::Int(6)),
                ("node_vmstat_oom_kill", Value::Int(1)),
            ]
        );
        assert!(parse("pgfault\n", &mut out).is_err(), "a truncated line is an error");
    }
}
