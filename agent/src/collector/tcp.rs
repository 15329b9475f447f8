//! TCP connections by state, counted from /proc/net/tcp and /proc/net/tcp6.

use twinwatch_common::sample::{Metric, SeriesKey, Value};

use super::procfile::ProcFile;
use super::{CollectError, Collector, Roots};

/// Kernel state numbers 1..=11 (`include/net/tcp_states.h`), named as node_exporter's tcpstat
/// collector names them.
const STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

/// Adds the connections listed in one /proc/net/tcp-format file to `counts`.
pub fn count(text: &str, counts: &mut [u64; 11]) -> Result<(), CollectError> {
    for line in text.lines().skip(1) {
        // `sl local_address rem_address st ...`
        let Some(st) = line.split_ascii_whitespace().nth(3) else { continue };
        let state = u8::from_str_radix(st, 16)
            .ok()
            .filter(|s| (1..=11).contains(s))
            .ok_or_else(|| CollectError::Parse { what: "/proc/net/tcp", detail: format!("state {st:?}") })?;
        counts[state as usize - 1] += 1;
    }
    Ok(())
}

pub struct TcpStates {
    files: [ProcFile; 2],
    buf: String,
}

impl TcpStates {
    pub fn new(roots: &Roots) -> Self {
        let files = [ProcFile::new(roots.proc.join("net/tcp")), ProcFile::new(roots.proc.join("net/tcp6"))];
        TcpStates { files, buf: String::new() }
    }
}

impl Collector for TcpStates {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let mut counts = [0u64; 11];
        self.files[0].read(&mut self.buf)?;
        count(&self.buf, &mut counts)?;
        if self.files[1].read(&mut self.buf).is_ok() {
            count(&self.buf, &mut counts)?;
        }
        // Every state, zeros included, so the set of series stays put.
        for (state, n) in STATES.iter().zip(counts) {
            let key = SeriesKey::new("node_tcp_connection_states").with("state", *state);
            out.push(Metric::gauge(key, Value::Int(n as i64)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_counted_from_the_fourth_column() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20321 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 40321 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 06 00000000:00000000 03:000016C8 00000000     0        0 0 3 0000000000000000
";
        let mut counts = [0; 11];
        count(text, &mut counts).unwrap();
        count(text, &mut counts).unwrap();
        assert_eq!(counts, [2, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0]);
        let bad = "header\n   0: 00000000:0016 00000000:0000 ZZ 0\n";
        assert!(count(bad, &mut counts).is_err());
        // A line cut short before the state column is skipped, not misread.
        count("header\n   0: 00000000:0016\n", &mut counts).unwrap();
    }
}
