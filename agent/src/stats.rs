//! The agent's own counters, shipped with every sample as `twinwatch_agent_*` series.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use twinwatch_common::sample::{Metric, SeriesKey, Value};

#[derive(Debug, Default)]
pub struct Stats {
    /// Series values sampled (the Prometheus sense of "samples").
    pub samples: AtomicU64,
    pub ticks: AtomicU64,
    pub batches: AtomicU64,
    /// Frame bytes written to QUIC streams.
    pub sent_bytes: AtomicU64,
    /// UDP payload bytes the QUIC connections sent, headers and retransmissions included.
    pub udp_tx_bytes: AtomicU64,
    pub acked_batches: AtomicU64,
    /// Backlog batches sent (first sends and resends).
    pub backlog_batches: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub dropped_ticks: AtomicU64,
    /// Buffer group commits, and the batch bytes they wrote to disk.
    pub spills: AtomicU64,
    pub spilled_bytes: AtomicU64,
    pub connects: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

impl Stats {
    pub fn metrics(&self, out: &mut Vec<Metric>) {
        let counter =
            |name: &str, v: &AtomicU64| Metric::counter(SeriesKey::new(name), Value::Int(v.load(Relaxed) as i64));
        out.push(counter("twinwatch_agent_samples_total", &self.samples));
        out.push(counter("twinwatch_agent_ticks_total", &self.ticks));
        out.push(counter("twinwatch_agent_batches_total", &self.batches));
        out.push(counter("twinwatch_agent_sent_bytes_total", &self.sent_bytes));
        out.push(counter("twinwatch_agent_udp_tx_bytes_total", &self.udp_tx_bytes));
        out.push(counter("twinwatch_agent_acked_batches_total", &self.acked_batches));
        out.push(counter("twinwatch_agent_backlog_batches_total", &self.backlog_batches));
        out.push(counter("twinwatch_agent_dropped_batches_total", &self.dropped_batches));
        out.push(counter("twinwatch_agent_dropped_ticks_total", &self.dropped_ticks));
        out.push(counter("twinwatch_agent_buffer_spills_total", &self.spills));
        out.push(counter("twinwatch_agent_buffer_spilled_bytes_total", &self.spilled_bytes));
        out.push(counter("twinwatch_agent_connects_total", &self.connects));
        out.push(counter("twinwatch_agent_keyframe_requests_total", &self.keyframe_requests));
    }
}

/// CPU seconds and resident bytes of this process, from /proc/self/stat and statm.
pub fn process_metrics(out: &mut Vec<Metric>, user_hz: f64) {
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        if let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) {
            let f: Vec<&str> = rest.split_ascii_whitespace().collect();
            if let (Some(u), Some(s)) =
                (f.get(11).and_then(|v| v.parse::<i64>().ok()), f.get(12).and_then(|v| v.parse::<i64>().ok()))
            {
                out.push(
                    Metric::counter(SeriesKey::new("twinwatch_agent_cpu_seconds_total"), Value::Int(u + s))
                        .scaled(1.0 / user_hz),
                );
            }
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(pages) = statm.split_ascii_whitespace().nth(1).and_then(|v| v.parse::<i64>().ok()) {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as i64;
            out.push(Metric::gauge(SeriesKey::new("twinwatch_agent_resident_memory_bytes"), Value::Int(pages * page)));
        }
    }
}
