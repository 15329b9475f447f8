//! Counters of one remote's sender, and all remotes' metrics as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use super::queue::Counts;

/// What the sender task has done since this process started.
#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    /// Unix milliseconds of the last accepted request; 0 before the first.
    last_success_ms: AtomicI64,
}

impl Stats {
    pub fn sent(&self, samples: u64) {
        self.sent.fetch_add(samples, Relaxed);
        self.last_success_ms.store(twinwatch_common::time::now_ms(), Relaxed);
    }

    pub fn rejected(&self, samples: u64) {
        self.rejected.fetch_add(samples, Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
}

/// One remote as the metrics see it.
pub struct Snapshot<'a> {
    pub name: &'a str,
    pub stats: &'a Stats,
    pub queue: Counts,
}

/// A value of one remote, read from its snapshot.
type Read = fn(&Snapshot<'_>) -> String;

/// One metric family: its name, type, help and lines per remote (by `reason`, or one unlabelled).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    lines: &'static [(&'static str, Read)],
}

const FAMILIES: [Family; 6] = [
    Family {
        name: "twinwatch_remote_write_samples_sent_total",
        kind: "counter",
        help: "Samples the remote accepted.",
        lines: &[("", |s| s.stats.sent.load(Relaxed).to_string())],
    },
    Family {
        name: "twinwatch_remote_write_samples_dropped_total",
        kind: "counter",
        help: "Samples given up: the queue was full (the oldest go), or the remote rejected them.",
        lines: &[
            ("queue_full", |s| s.queue.dropped_samples.to_string()),
            ("rejected", |s| s.stats.rejected.load(Relaxed).to_string()),
        ],
    },
    Family {
        name: "twinwatch_remote_write_retries_total",
        kind: "counter",
        help: "Requests that failed (no answer, 5xx or 429) and will be tried again.",
        lines: &[("", |s| s.stats.retries.load(Relaxed).to_string())],
    },
    Family {
        name: "twinwatch_remote_write_queue_samples",
        kind: "gauge",
        help: "Samples queued and not yet accepted.",
        lines: &[("", |s| s.queue.samples.to_string())],
    },
    Family {
        name: "twinwatch_remote_write_queue_bytes",
        kind: "gauge",
        help: "Bytes the queue holds against its cap.",
        lines: &[("", |s| s.queue.bytes.to_string())],
    },
    Family {
        name: "twinwatch_remote_write_last_success_timestamp_seconds",
        kind: "gauge",
        help: "When the remote last accepted a request (0: not since this process started).",
        lines: &[("", |s| (s.stats.last_success_ms.load(Relaxed) as f64 / 1000.0).to_string())],
    },
];

/// The families, each with its `# HELP` and `# TYPE` and one line per remote.
pub fn render(remotes: &[Snapshot<'_>], out: &mut String) {
    if remotes.is_empty() {
        return;
    }
    for Family { name, kind, help, lines } in &FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for remote in remotes {
            for (reason, value) in *lines {
                let _ = write!(out, "{name}{{remote=\"");
                crate::views::exposition::escape(remote.name, out);
                if !reason.is_empty() {
                    let _ = write!(out, "\",reason=\"{reason}");
                }
                let _ = writeln!(out, "\"}} {}", value(remote));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_type_and_a_line_per_remote() {
        let a = Stats::default();
        a.rejected(7);
        a.retried();
        let b = Stats::default();
        b.sent(5);
        let queue = Counts { samples: 3, bytes: 120, entries: 1, dropped_samples: 2 };
        let mut out = String::new();
        render(&[Snapshot { name: "a", stats: &a, queue }, Snapshot { name: "b\"c", stats: &b, queue }], &mut out);
        for expected in [
            "# HELP twinwatch_remote_write_samples_sent_total Samples the remote accepted.\n# TYPE twinwatch_remote_write_samples_sent_total counter\ntwinwatch_remote_write_samples_sent_total{remote=\"a\"} 0\ntwinwatch_remote_write_samples_sent_total{remote=\"b\\\"c\"} 5\n",
            "twinwatch_remote_write_samples_dropped_total{remote=\"a\",reason=\"queue_full\"} 2\n",
            "twinwatch_remote_write_samples_dropped_total{remote=\"a\",reason=\"rejected\"} 7\n",
            "twinwatch_remote_write_retries_total{remote=\"a\"} 1\n",
            "# TYPE twinwatch_remote_write_queue_samples gauge\ntwinwatch_remote_write_queue_samples{remote=\"a\"} 3\n",
            "twinwatch_remote_write_queue_bytes{remote=\"b\\\"c\"} 120\n",
            "twinwatch_remote_write_last_success_timestamp_seconds{remote=\"a\"} 0\n",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in\n{out}");
        }
        assert_eq!(out.matches("# TYPE").count(), 6);
        let mut none = String::new();
        render(&[], &mut none);
        assert!(none.is_empty());
    }
}
