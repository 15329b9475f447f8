//! File descriptors allocated and the system maximum, from /proc/sys/fs/file-nr.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::{num, CollectError};

/// Parses `allocated  unused  maximum`.
pub fn parse(text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let mut f = text.split_ascii_whitespace();
    let allocated = num(f.next(), "/proc/sys/fs/file-nr")?;
    let _unused = f.next();
    let maximum = num(f.next(), "/proc/sys/fs/file-nr")?;
    out.push(Metric::gauge(SeriesKey::new("node_filefd_allocated"), Value::Int(allocated as i64)));
    out.push(Metric::gauge(SeriesKey::new("node_filefd_maximum"), Value::Int(maximum as i64)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_and_maximum() {
        let mut out = Vec::new();
        parse("1344\t0\t9223372036854775807\n", &mut out).unwrap();
        assert_eq!(out[0].value, Value::Int(1344));
        assert_eq!(out[1].value, Value::Int(i64::MAX));
        assert!(parse("1344\t0\n", &mut Vec::new()).is_err());
    }
}
