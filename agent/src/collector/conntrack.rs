//! Connection-tracking table use on routers: `nf_conntrack_count` and `_max`, when present.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::procfile::ProcFile;
use super::{num, CollectError, Collector, Roots};

pub struct Conntrack {
    files: [ProcFile; 2],
    buf: String,
}

impl Conntrack {
    pub fn new(roots: &Roots) -> Self {
        let dir = roots.proc.join("sys/net/netfilter");
        let files = [ProcFile::new(dir.join("nf_conntrack_count")), ProcFile::new(dir.join("nf_conntrack_max"))];
        Conntrack { files, buf: String::new() }
    }
}

impl Collector for Conntrack {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let names = ["node_nf_conntrack_entries", "node_nf_conntrack_entries_limit"];
        for (file, name) in self.files.iter_mut().zip(names) {
            match file.read(&mut self.buf) {
                Ok(()) => {}
                // No netfilter connection tracking loaded: a host, not a router.
                Err(CollectError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
            let value = num(self.buf.split_ascii_whitespace().next(), "nf_conntrack")?;
            out.push(Metric::gauge(SeriesKey::new(name), Value::Int(value as i64)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_limit_when_present_nothing_when_absent() {
        let dir = std::env::temp_dir().join(format!("twinwatch-conntrack-{}", std::process::id()));
        let nf = dir.join("sys/net/netfilter");
        std::fs::create_dir_all(&nf).unwrap();
        let roots = Roots { proc: dir.clone(), sys: dir.clone() };
        let mut out = Vec::new();
        Conntrack::new(&roots).collect(&mut out).unwrap();
        assert!(out.is_empty());

        std::fs::write(nf.join("nf_conntrack_count"), "1532\n").unwrap();
        std::fs::write(nf.join("nf_conntrack_max"), "65536\n").unwrap();
        Conntrack::new(&roots).collect(&mut out).unwrap();
        let got: Vec<_> = out.iter().map(|m| (m.key.name.as_str(), m.value)).collect();
        assert_eq!(
            got,
            [("node_nf_conntrack_entries", Value::Int(1532)), ("node_nf_conntrack_entries_limit", Value::Int(65536))]
        );
        std::fs::write(nf.join("nf_conntrack_max"), "").unwrap();
        assert!(Conntrack::new(&roots).collect(&mut Vec::new()).is_err(), "a truncated file is an error");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
