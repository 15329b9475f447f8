//! Reconnect delays, chosen by how the last attempt ended.
//!
//! - **Nobody answered** (the path is down: an uplink outage, a blackhole): nothing is loading the
//!   aggregator, so the agent keeps probing. The shipper starts a fresh handshake every second,
//!   overlapping slower ones still pending (a lossy path may need several seconds), and between
//!   such 30 s probing windows waits only a little jitter. Each attempt costs one ~1.2 KB
//!   Initial packet and, when given up, its close. Once the outage has lasted
//!   [`FAST_PROBING_FOR`], the windows are spaced by a few seconds.
//! - **The aggregator restarted** (a stateless reset: it no longer knows the connection, so it is
//!   up): reconnect at once, after a little jitter. Agents are already spread out by when each
//!   next sent a packet, and past its admission limit the aggregator refuses handshakes, which
//!   lands in the next case.
//! - **The aggregator answered and failed or turned us away for now** (busy, shutting down, a
//!   protocol or storage error): exponential backoff with jitter from 0.5 s to 30 s, so hundreds
//!   of agents that lost the same aggregator come back spread out instead of in a storm.
//! - **The aggregator refused this agent** (certificate revoked, from another CA, expired; its
//!   identity held by another connection; see [`super::refusal`]): the same answer is likely
//!   until an operator acts, so the backoff starts at [`REFUSED_BASE`] and grows to
//!   [`REFUSED_MAX`].

use std::time::{Duration, Instant};

pub use twinwatch_common::backoff::{unit_random, Backoff};

/// How long an unanswered agent keeps probing quickly.
pub const FAST_PROBING_FOR: Duration = Duration::from_secs(600);
/// The first delay after a refusal is between half this and this.
pub const REFUSED_BASE: Duration = Duration::from_secs(5);
pub const REFUSED_MAX: Duration = Duration::from_secs(600);
/// After a stateless reset, the reconnect waits up to this long.
pub const RESET_JITTER: Duration = Duration::from_millis(100);

/// How an attempt (or a session) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No answer: the handshake timed out, or an established path stopped answering.
    Unanswered,
    /// The aggregator no longer knew the connection (it restarted).
    Reset,
    /// The aggregator answered: closed, or failed the session.
    Answered,
    /// The aggregator refused this agent's certificate or identity (or we refused its).
    Refused,
}

/// The reconnect policy across attempts.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    refused: Backoff,
    unanswered_since: Option<Instant>,
    /// A reset was already answered with a quick reconnect that has not connected since.
    reset_seen: bool,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            refused: Backoff::new(REFUSED_BASE, REFUSED_MAX),
            unanswered_since: None,
            reset_seen: false,
        }
    }
}

impl Reconnect {
    /// A session was established.
    pub fn connected(&mut self) {
        self.backoff.reset();
        self.refused.reset();
        self.unanswered_since = None;
        self.reset_seen = false;
    }

    /// The delay before the next attempt, given a uniform random number in `[0, 1)`.
    pub fn delay(&mut self, ended: Ended, now: Instant, unit_random: f64) -> Duration {
        let r = unit_random.clamp(0.0, 1.0);
        match ended {
            Ended::Unanswered => {
                let since = *self.unanswered_since.get_or_insert(now);
                if now.saturating_duration_since(since) < FAST_PROBING_FOR {
                    Duration::from_millis(250).mul_f64(r)
                } else {
                    Duration::from_millis(2500).mul_f64(1.0 + r)
                }
            }
            // Only the first reset in a row: one that keeps coming is a failing aggregator.
            Ended::Reset if !std::mem::replace(&mut self.reset_seen, true) => {
                self.unanswered_since = None;
                RESET_JITTER.mul_f64(r)
            }
            Ended::Reset | Ended::Answered => {
                self.unanswered_since = None;
                self.backoff.next_delay(r)
            }
            Ended::Refused => {
                self.unanswered_since = None;
                self.refused.next_delay(r)
            }
        }
    }
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
    fn a_refusal_backs_off_longer_than_anything_else() {
        let t0 = Instant::now();
        let mut r = Reconnect::default();
        let refused: Vec<_> = (0..8).map(|_| r.delay(Ended::Refused, t0, 1.0).as_secs()).collect();
        assert_eq!(refused, [5, 10, 20, 40, 80, 160, 320, 600]);
        // Even its shortest draw waits longer than the longest unanswered or answered first delay.
        let mut fresh = Reconnect::default();
        assert!(fresh.delay(Ended::Refused, t0, 0.0) >= Duration::from_millis(2500));
        assert!(Reconnect::default().delay(Ended::Answered, t0, 1.0) <= Duration::from_millis(500));
        assert!(Reconnect::default().delay(Ended::Unanswered, t0, 1.0) <= Duration::from_millis(250));
        r.connected();
        assert_eq!(r.delay(Ended::Refused, t0, 1.0), REFUSED_BASE);
    }

    #[test]
    fn a_reset_reconnects_at_once_but_not_twice_in_a_row() {
        let t0 = Instant::now();
        let mut r = Reconnect::default();
        assert!(r.delay(Ended::Reset, t0, 0.99) < RESET_JITTER);
        // Reset again before connecting: the aggregator is failing, so back off.
        assert_eq!(r.delay(Ended::Reset, t0, 1.0), Duration::from_millis(500));
        r.connected();
        assert!(r.delay(Ended::Reset, t0, 0.99) < RESET_JITTER);
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
