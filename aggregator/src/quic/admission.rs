//! Admission: how many connections may be between accept and `Welcome` at once, and how many
//! are, so a reconnect storm is served in waves whose size `/metrics` shows.

use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::counters::Counters;

/// The handshake slots.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    in_flight: AtomicUsize,
    /// The most in flight at once since start.
    peak: AtomicUsize,
}

/// A slot, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Admission> {
        Arc::new(Admission { limit, in_flight: AtomicUsize::new(0), peak: AtomicUsize::new(0) })
    }

    /// A slot, or `None` when all are taken.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let taken = self.in_flight.fetch_update(Relaxed, Relaxed, |n| (n < self.limit).then_some(n + 1)).ok()?;
        self.peak.fetch_max(taken + 1, Relaxed);
        Some(Slot(self.clone()))
    }
}

impl Counters for Admission {
    fn render_metrics(&self, out: &mut String) {
        let rows = [
            (
                "twinwatch_quic_handshakes_in_flight",
                "QUIC connections between accept and welcome now.",
                &self.in_flight,
            ),
            (
                "twinwatch_quic_handshakes_peak",
                "The most QUIC connections between accept and welcome at once since start.",
                &self.peak,
            ),
        ];
        for (name, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }
        let name = "twinwatch_quic_handshakes_limit";
        let _ = writeln!(out, "# HELP {name} QUIC connections allowed between accept and welcome at once.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_come_back_when_dropped_and_the_peak_is_kept() {
        let a = Admission::new(2);
        let one = a.try_admit().expect("first");
        let two = a.try_admit().expect("second");
        assert!(a.try_admit().is_none(), "no third slot");
        drop(one);
        let three = a.try_admit().expect("a slot given back");
        drop((two, three));
        let mut text = String::new();
        a.render_metrics(&mut text);
        assert!(text.contains("twinwatch_quic_handshakes_in_flight 0\n"), "{text}");
        assert!(text.contains("twinwatch_quic_handshakes_peak 2\n"), "{text}");
        assert!(text.contains("twinwatch_quic_handshakes_limit 2\n"), "{text}");
    }
}
