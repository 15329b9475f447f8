//! Reconnect delays: exponential with full jitter, so hundreds of agents that lost the same
//! aggregator come back spread out instead of in a storm.

use std::time::Duration;

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
