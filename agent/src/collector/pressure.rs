//! Pressure stall information (PSI) from /proc/pressure/{cpu,io,memory}, where the kernel has it.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::procfile::ProcFile;
use super::{CollectError, Collector, Roots};

const RESOURCES: [&str; 3] = ["cpu", "io", "memory"];

/// Parses one pressure file: the `total=` microseconds of its `some` line (some task waiting) and
/// `full` line (all tasks stalled), named as node_exporter names them.
pub fn parse(resource: &str, text: &str, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    let before = out.len();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let what = match fields.next() {
            Some("some") => "waiting",
            Some("full") => "stalled",
            _ => continue,
        };
        let total = fields
            .find_map(|f| f.strip_prefix("total="))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| CollectError::Parse { what: "/proc/pressure", detail: format!("no total in {line:?}") })?;
        let name = format!("node_pressure_{resource}_{what}_seconds_total");
        out.push(Metric::counter(SeriesKey::new(name), Value::Int(total as i64)).scaled(1e-6));
    }
    if out.len() == before {
        return Err(CollectError::Parse { what: "/proc/pressure", detail: format!("no lines for {resource}") });
    }
    Ok(())
}

pub struct Pressure {
    files: Vec<ProcFile>,
    buf: String,
}

impl Pressure {
    pub fn new(roots: &Roots) -> Self {
        let dir = roots.proc.join("pressure");
        Pressure { files: RESOURCES.iter().map(|r| ProcFile::new(dir.join(r))).collect(), buf: String::new() }
    }
}

impl Collector for Pressure {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        for (resource, file) in RESOURCES.iter().zip(&mut self.files) {
            match file.read(&mut self.buf) {
                Ok(()) => parse(resource, &self.buf, out)?,
                // Kernels before 4.20, or booted with psi=0, have no pressure files (or refuse
                // reads of them): nothing to report, and nothing wrong.
                Err(CollectError::Read { source, .. })
                    if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::Unsupported)
                        || source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full_totals_in_seconds() {
        let text =
            "some avg10=0.00 avg60=0.12 avg300=0.05 total=1234567\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=89\n";
        let mut out = Vec::new();
        parse("io", text, &mut out).unwrap();
        let got: Vec<_> = out.iter().map(|m| (m.key.name.as_str(), m.real())).collect();
        assert_eq!(
            got,
            [
                ("node_pressure_io_waiting_seconds_total", 1.234567),
                ("node_pressure_io_stalled_seconds_total", 0.000089)
            ]
        );
        assert!(parse("cpu", "some avg10=0.00 avg60=0.00 avg300=0.00\n", &mut out).is_err());
        assert!(parse("cpu", "", &mut out).is_err());
    }

    #[test]
    fn a_kernel_without_psi_reports_nothing() {
        let roots = Roots { proc: "/nonexistent-proc".into(), sys: "/nonexistent-sys".into() };
        let mut out = Vec::new();
        Pressure::new(&roots).collect(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
