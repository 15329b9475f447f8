//! When a probe runs: fixed slots, a stable offset per probe, random jitter, and no pile-up.
//!
//! Sans-IO: time is milliseconds since the prober started, passed in. Slot `k` is at
//! `offset + k * interval`; the offset comes from the probe's id, so probes spread over the
//! interval instead of firing together, and each run starts a random `0..jitter` after its slot.
//! A run that overruns (a slow endpoint) or waits too long for a concurrency permit does not make
//! the next runs stack up: the slots it covered are skipped and counted.

/// One probe's slots.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval_ms: u64,
    offset_ms: u64,
    jitter_ms: u64,
    /// The slot last handed out.
    last: Option<u64>,
}

/// A slot to run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// When to start, ms since the prober started.
    pub at_ms: u64,
    /// When the slot after it begins: a run still waiting for a permit then gives this one up.
    pub until_ms: u64,
    /// Slots passed over since the last one handed out.
    pub skipped: u64,
}

impl Schedule {
    pub fn new(id: &str, interval_ms: u64, jitter_ms: u64) -> Self {
        let interval_ms = interval_ms.max(1);
        // Stable across runs and hosts, so the same probe keeps the same place.
        Schedule {
            interval_ms,
            offset_ms: fnv1a(id.as_bytes()) % interval_ms,
            jitter_ms: jitter_ms.min(interval_ms / 2),
            last: None,
        }
    }

    /// The next slot to run in, at or after `now_ms`. `random` is any random number.
    pub fn next(&mut self, now_ms: u64, random: u64) -> Slot {
        let first_open = self.last.map_or(0, |l| l + 1);
        let due_now = now_ms.saturating_sub(self.offset_ms).div_ceil(self.interval_ms);
        let slot = first_open.max(due_now);
        self.last = Some(slot);
        let start = self.offset_ms + slot * self.interval_ms;
        let jitter = if self.jitter_ms == 0 { 0 } else { random % self.jitter_ms };
        Slot { at_ms: start + jitter, until_ms: start + self.interval_ms, skipped: slot - first_open }
    }
}

/// FNV-1a: a fast, stable 64-bit hash of bytes (not for anything adversarial).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A small xorshift generator for jitter; no need for anything stronger.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_interval_and_a_slow_run_skips_beats() {
        let mut s = Schedule::new("x", 1000, 0);
        let offset = s.offset_ms;
        let first = s.next(0, 0);
        assert_eq!((first.at_ms, first.until_ms, first.skipped), (offset, offset + 1000, 0));
        // A quick run: the next slot is the following one.
        let second = s.next(offset + 30, 0);
        assert_eq!((second.at_ms, second.skipped), (offset + 1000, 0));
        // A run that takes 2.5 intervals: two slots pass, and are counted, rather than stacking.
        let third = s.next(offset + 1000 + 2500, 0);
        assert_eq!((third.at_ms, third.skipped), (offset + 4000, 2));
    }

    #[test]
    fn jitter_stays_inside_its_bound_and_probes_spread_out() {
        let mut rng = Jitter::new(7);
        let mut s = Schedule::new("api.listPets", 10_000, 1000);
        let mut now = 0;
        for _ in 0..100 {
            let slot = s.next(now, rng.next_u64());
            let base = slot.until_ms - 10_000;
            assert!(slot.at_ms >= base && slot.at_ms < base + 1000, "{slot:?}");
            assert_eq!(slot.skipped, 0);
            now = slot.at_ms + 50;
        }
        let offsets: std::collections::BTreeSet<u64> =
            (0..20).map(|i| Schedule::new(&format!("probe-{i}"), 10_000, 0).offset_ms).collect();
        assert!(offsets.len() >= 18, "ids spread over the interval: {offsets:?}");
        assert_eq!(Schedule::new("same", 10_000, 0).offset_ms, Schedule::new("same", 10_000, 0).offset_ms);
    }
}
