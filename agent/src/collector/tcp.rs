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
    text.lines().skip(1).try_for_each(|line| count_line(line, counts))
}

/// Adds the connection one line (not the header) of a /proc/net/tcp-format file lists.
fn count_line(line: &str, counts: &mut [u64; 11]) -> Result<(), CollectError> {
    // `sl local_address rem_address st ...`
    let Some(st) = line.split_ascii_whitespace().nth(3) else { return Ok(()) };
    let state = u8::from_str_radix(st, 16)
        .ok()
        .filter(|s| (1..=11).contains(s))
        .ok_or_else(|| CollectError::Parse { what: "/proc/net/tcp", detail: format!("state {st:?}") })?;
    counts[state as usize - 1] += 1;
    Ok(())
}

/// The files are read a chunk at a time: a host with tens of thousands of sockets lists
/// megabytes there, which the agent need not hold to count them.
pub struct TcpStates {
    files: [ProcFile; 2],
    buf: Vec<u8>,
}

impl TcpStates {
    pub fn new(roots: &Roots) -> Self {
        let files = [ProcFile::new(roots.proc.join("net/tcp")), ProcFile::new(roots.proc.join("net/tcp6"))];
        TcpStates { files, buf: Vec::new() }
    }

    /// Counts one file's connections into `counts`, past its header line.
    fn count_file(&mut self, i: usize, counts: &mut [u64; 11]) -> Result<(), CollectError> {
        let mut header = true;
        self.files[i].for_each_line(&mut self.buf, |line| {
            if std::mem::take(&mut header) {
                return Ok(());
            }
            count_line(line, counts)
        })
    }
}

impl Collector for TcpStates {
    fn collect(&mut self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let mut counts = [0u64; 11];
        self.count_file(0, &mut counts)?;
        // No IPv6 is no error; a malformed line is.
        let mut v6 = [0u64; 11];
        match self.count_file(1, &mut v6) {
            Ok(()) => counts.iter_mut().zip(v6).for_each(|(c, n)| *c += n),
            Err(e @ CollectError::Parse { .. }) => return Err(e),
            Err(_) => {}
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

    #[test]
    fn a_table_of_many_connections_is_counted_whole_from_a_small_buffer() {
        let proc = std::env::temp_dir().join(format!("twinwatch-tcp-{}", std::process::id()));
        std::fs::create_dir_all(proc.join("net")).unwrap();
        let header =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let mut table = String::from(header);
        for i in 0..20_000 {
            let st = if i % 4 == 0 { "06" } else { "01" };
            table.push_str(&format!(
                "{i:>5}: 0100007F:1F90 0100007F:C350 {st} 00000000:00000000 00:00000000 00000000  1000        0 40321 1 0000000000000000 20 4 30 10 -1\n"
            ));
        }
        std::fs::write(proc.join("net/tcp"), &table).unwrap();
        // No tcp6: a host without IPv6 counts its IPv4 connections.
        let mut states = TcpStates::new(&Roots { proc: proc.clone(), sys: proc.clone() });
        let mut out = Vec::new();
        states.collect(&mut out).unwrap();
        let n = |state: &str| out.iter().find(|m| m.key.labels.iter().any(|(_, v)| v == state)).map(|m| m.real());
        assert_eq!((n("established"), n("time_wait")), (Some(15_000.0), Some(5_000.0)));
        assert!(table.len() > 2 << 20 && states.buf.len() <= 2 * super::super::procfile::CHUNK);
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
