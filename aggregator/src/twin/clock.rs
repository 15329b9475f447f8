//! Per-agent clock offset, estimated NTP-style on the aggregator's clock alone.
//!
//! The aggregator stamps `server_time_ms` on every `Welcome` and `Ack`; the agent echoes the
//! latest one at once with its own clock (`TimeEcho`). One exchange gives, on the aggregator's
//! clock, the round trip `rtt = received − sent` and the offset `agent − (sent + received) / 2`,
//! uncertain by at most `rtt / 2`. The estimate is the offset of the exchange with the smallest
//! round trip among the recent ones, the one least disturbed by queueing.
//!
//! Timestamps an agent sends are corrected (shifted onto the aggregator's clock) only when the
//! estimated offset exceeds [`CORRECT_BEYOND_MS`]: an NTP-synchronised host is left exactly as it
//! reported.

use bincode::{Decode, Encode};

/// Offsets within this bound are left uncorrected.
pub const CORRECT_BEYOND_MS: i64 = 1_000;
/// Exchanges kept for the estimate.
const WINDOW: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct Clock {
    /// `(offset_ms, rtt_ms)` of the recent exchanges, oldest first.
    exchanges: Vec<(i64, i64)>,
    pub observed: u64,
}

/// What [`Clock::estimate`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Estimate {
    /// Agent clock minus aggregator clock.
    pub offset_ms: i64,
    /// Round trip of the exchange the estimate comes from; the offset is within half of it.
    pub rtt_ms: i64,
    /// What is added to the agent's timestamps: `-offset_ms` beyond the bound, else 0.
    pub correction_ms: i64,
}

impl Clock {
    /// One exchange: the aggregator sent `sent_ms`, the agent echoed it at `agent_ms`, and the
    /// echo arrived at `received_ms` (both aggregator clock). Exchanges that run backwards (the
    /// aggregator's clock stepped) are ignored.
    pub fn observe(&mut self, sent_ms: i64, agent_ms: i64, received_ms: i64) {
        let rtt = received_ms - sent_ms;
        if rtt < 0 {
            return;
        }
        let offset = agent_ms - (sent_ms + rtt / 2);
        if self.exchanges.len() >= WINDOW {
            self.exchanges.remove(0);
        }
        self.exchanges.push((offset, rtt));
        self.observed += 1;
    }

    /// Forgets the exchanges: a new agent process may run on a re-set clock.
    pub fn reset(&mut self) {
        self.exchanges.clear();
    }

    pub fn estimate(&self) -> Option<Estimate> {
        let &(offset_ms, rtt_ms) = self.exchanges.iter().min_by_key(|(_, rtt)| *rtt)?;
        let correction_ms = if offset_ms.abs() > CORRECT_BEYOND_MS { -offset_ms } else { 0 };
        Some(Estimate { offset_ms, rtt_ms, correction_ms })
    }

    /// `ts_ms` from the agent, on the aggregator's clock where the offset is beyond the bound.
    pub fn correct(&self, ts_ms: i64) -> i64 {
        ts_ms + self.estimate().map_or(0, |e| e.correction_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent 5 s ahead, seen over a path whose delays vary: the least-delayed exchange wins.
    #[test]
    fn the_quickest_exchange_gives_the_offset() {
        let mut c = Clock::default();
        let skew = 5_000;
        // (delay out, delay back) in ms on the aggregator's clock.
        for (i, (out, back)) in [(40, 300), (20, 25), (200, 10), (22, 21)].into_iter().enumerate() {
            let sent = 1_000_000 + i as i64 * 10_000;
            c.observe(sent, sent + out + skew, sent + out + back);
        }
        let e = c.estimate().unwrap();
        assert_eq!(e.rtt_ms, 43);
        assert!((e.offset_ms - skew).abs() <= e.rtt_ms / 2, "{e:?}");
        assert_eq!(e.correction_ms, -e.offset_ms);
        assert_eq!(c.correct(10_000), 10_000 - e.offset_ms);
    }

    #[test]
    fn small_offsets_are_reported_but_not_corrected() {
        let mut c = Clock::default();
        c.observe(1_000, 1_300, 1_010);
        let e = c.estimate().unwrap();
        assert_eq!((e.offset_ms, e.correction_ms), (295, 0));
        assert_eq!(c.correct(42), 42);
        c.observe(2_000, 0, 1_999); // ran backwards
        assert_eq!(c.observed, 1);
    }
}
