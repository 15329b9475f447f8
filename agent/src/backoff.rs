//! Reconnect delays, chosen by how the last attempt ended.
//!
//! - **The aggregator answered and refused or failed** (it is busy, restarting, or rejects us):
//!   exponential backoff with jitter, so hundreds of agents that lost the same aggregator come
//!   back spread out instead of in a storm. The aggregator also refuses handshakes past its
//!   admission limit, which lands here.
//! - **Nobody answered** (the path is down: an uplink outage, a blackhole): nothing is loading the
//!   aggregator, so the agent keeps probing. The shipper starts a fresh handshake every second,
//!   overlapping slower ones still pending (a lossy path may need several seconds), and between
//!   such 30 s probing windows waits only a little jitter. Each attempt costs a few ~1.2 KB
//!   Initial packets. Once the outage has lasted [`FAST_PROBING_FOR`], the windows are spaced by
//!   a few seconds.

use std::time::{Duration, Instant};

pub use twinwatch_common::backoff::Backoff;

/// How long an unanswered agent keeps probing quickly.
pub const FAST_PROBING_FOR: Duration = Duration::from_secs(600);

/// How an attempt (or a session) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No answer: the handshake timed out, or an established path stopped answering.
    Unanswered,
    /// The aggregator answered: refused, closed, or failed the session.
    Answered,
}

/// The reconnect policy across attempts.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    unanswered_since: Option<Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)), unanswered_since: None }
    }
}

impl Reconnect {
    /// A session was established.
    pub fn connected(&mut self) {
        self.backoff.reset();
        self.unanswered_since = None;
    }

    /// The delay before the next attempt, given a uniform random number in `[0, 1)`.
    pub fn delay(&mut self, ended: Ended, now: Instant, unit_random: f64) -> Duration {
        match ended {
            Ended::Unanswered => {
                let since = *self.unanswered_since.get_or_insert(now);
                if now.saturating_duration_since(since) < FAST_PROBING_FOR {
                    Duration::from_millis(250).mul_f64(unit_random.clamp(0.0, 1.0))
                } else {
                    Duration::from_millis(2500).mul_f64(1.0 + unit_random.clamp(0.0, 1.0))
                }
            }
            Ended::Answered => {
                self.unanswered_since = None;
                self.backoff.next_delay(unit_random)
            }
        }
    }
}

/// A uniform random number in `[0, 1)` from the system's generator.
pub fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let top: Vec<_> = (0..8).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(top, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
        b.next_delay(0.0);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }

    #[test]
    fn unanswered_probes_quickly_then_slows_and_answers_back_off() {
        let t0 = Instant::now();
        let mut r = Reconnect::default();
        assert!(r.delay(Ended::Unanswered, t0, 0.99) <= Duration::from_millis(250));
        let late = t0 + FAST_PROBING_FOR + Duration::from_secs(1);
        assert!(r.delay(Ended::Unanswered, late, 0.0) >= Duration::from_millis(2500));
        // A refusal backs off exponentially, and a refused attempt resets the outage clock.
        let refused: Vec<_> = (0..4).map(|_| r.delay(Ended::Answered, late, 1.0).as_millis()).collect();
        assert_eq!(refused, [500, 1000, 2000, 4000]);
        assert!(r.delay(Ended::Unanswered, late, 0.99) <= Duration::from_millis(250));
        r.connected();
        assert_eq!(r.delay(Ended::Answered, late, 1.0), Duration::from_millis(500));
    }

    #[test]
    fn jitter_spreads_reconnects() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(30));
            seen.insert(b.next_delay(unit_random()).as_millis());
        }
        assert!(seen.len() > 25, "only {} distinct delays", seen.len());
        assert!(seen.iter().all(|d| (500..=1000).contains(d)));
    }
}
