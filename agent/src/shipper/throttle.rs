//! A token bucket in bytes per second: how fast the backlog may drain behind live data.
//! Sans-IO: the time is passed in.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Throttle {
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    /// At most this many bytes may go at once after a quiet spell: one second's worth.
    tokens: f64,
    last: Instant,
}

impl Throttle {
    pub fn new(rate: u64, now: Instant) -> Self {
        Throttle { rate, tokens: rate as f64, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
    }

    /// Whether anything may be sent now. A frame larger than the bucket goes once the bucket is
    /// full, so no frame waits forever.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.rate == 0 || self.tokens > 0.0
    }

    /// Takes `bytes` just sent; the bucket may go negative, which delays what follows.
    pub fn spend(&mut self, bytes: usize, now: Instant) {
        self.refill(now);
        if self.rate > 0 {
            self.tokens -= bytes as f64;
        }
    }

    /// How long until [`Throttle::ready`] turns true.
    pub fn wait(&self) -> Duration {
        if self.rate == 0 || self.tokens > 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((-self.tokens + 1.0) / self.rate as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_at_the_rate_over_time() {
        let t0 = Instant::now();
        let mut t = Throttle::new(1000, t0);
        let mut sent = 0;
        let mut now = t0;
        // Ten simulated seconds in 10 ms steps, sending 300-byte frames whenever allowed.
        for _ in 0..1000 {
            while t.ready(now) {
                t.spend(300, now);
                sent += 300;
            }
            now += Duration::from_millis(10);
        }
        // One second of burst plus ten of rate, give or take a frame.
        assert!((10_800..=11_400).contains(&sent), "{sent}");
        assert!(t.wait() > Duration::ZERO);
    }

    #[test]
    fn zero_is_unlimited() {
        let now = Instant::now();
        let mut t = Throttle::new(0, now);
        for _ in 0..1000 {
            assert!(t.ready(now));
            t.spend(1 << 20, now);
        }
        assert_eq!(t.wait(), Duration::ZERO);
    }
}
