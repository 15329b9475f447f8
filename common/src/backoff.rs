//! Exponential backoff with jitter, shared by the agent's reconnects and the aggregator's remote
//! write senders and local agent; [`unit_random`] draws the jitter.

use std::time::Duration;

/// The ceiling doubles from `base` to `max` with each failure; the delay is drawn between half
/// the ceiling and the ceiling, so peers coming back are not hit all at once and a delay never
/// collapses to zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay, given a uniform random number in `[0, 1)`: somewhere between half the
    /// exponential ceiling and the ceiling itself, so a delay never collapses to zero.
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
    }
}

/// A uniform random number in `[0, 1)` from the system's generator; 0.5 if it fails.
pub fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
