//! Sockets in use per protocol, from /proc/net/sockstat and sockstat6.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::procfile::ProcFile;
use super::{CollectError, Collector, Roots};

/// Parses `TCP: inuse 9 orphan 0 tw 2 alloc 12 mem 1` lines into `node_sockstat_TCP_inuse` and
/// friends. `mem` counts pages, so it is also given in bytes, as node_exporter does.
pub fn parse(text: &str, page_size: i64, out: &mut Vec<Metric>) -> Result<(), CollectError> {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else { continue };
        let mut fields = rest.split_ascii_whitespace();
        while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
            let value: i64 = value
                .parse()
                .map_err(|_| CollectError::Parse { what: "/proc/net/sockstat", detail: format!("in {line:?}") })?;
            let name = format!("node_sockstat_{proto}_{field}");
            if field == "mem" {
                out.push(Metric::gauge(SeriesKey::new(format!("{name}_bytes")), Value::Int(value * page_size)));
            }
            out.push(Metric::gauge(SeriesKey::new(name), Value::Int(value)));
        }
    }
    Ok(())
}

pub struct Sockstat {
    files: [ProcFile; 2],
    page_size: i64,
    buf: String,
}

impl Sockstat {
    pub fn new(roots: &Roots) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as i64;
        let files = [ProcFile::new(roots.proc.join("net/sockstat")), ProcFile::new(roots.proc.join("net/sockstat6"))];
        Sockstat { files, page_size, buf: String::new() }
    }
}

impl Collector for Sockstat {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.files[0].read(&mut self.buf)?;
        parse(&self.buf, self.page_size, out)?;
        // No sockstat6 on a kernel without IPv6.
        if self.files[1].read(&mut self.buf).is_ok() {
            parse(&self.buf, self.page_size, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_becomes_a_gauge() {
        let text = "sockets: used 215\nTCP: inuse 9 orphan 0 tw 2 alloc 12 mem 3\nUDP: inuse 5 mem 2\nFRAG: inuse 0 memory 0\n";
        let mut out = Vec::new();
        parse(text, 4096, &mut out).unwrap();
        let got: Vec<_> = out.iter().map(|m| (m.key.name.as_str(), m.value.as_f64())).collect();
        assert_eq!(
            got,
            [
                ("node_sockstat_sockets_used", 215.0),
                ("node_sockstat_TCP_inuse", 9.0),
                ("node_sockstat_TCP_orphan", 0.0),
                ("node_sockstat_TCP_tw", 2.0),
                ("node_sockstat_TCP_alloc", 12.0),
                ("node_sockstat_TCP_mem_bytes", 12288.0),
                ("node_sockstat_TCP_mem", 3.0),
                ("node_sockstat_UDP_inuse", 5.0),
                ("node_sockstat_UDP_mem_bytes", 8192.0),
                ("node_sockstat_UDP_mem", 2.0),
                ("node_sockstat_FRAG_inuse", 0.0),
                ("node_sockstat_FRAG_memory", 0.0),
            ]
        );
        assert!(parse("TCP: inuse x\n", 4096, &mut out).is_err());
    }
}
