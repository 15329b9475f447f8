//! History: every point of every host series, recorded and encoded small. Sans-IO: the bytes
//! made here are stored, compacted, expired and queried by `store/archive.rs` and
//! `store/query.rs`.
//!
//! - `recorder` (in the twin): decoded ticks → pending columns per raw window.
//! - `codec`, `segment`: delta-of-delta and XOR columns, one zstd segment per host window.
//! - `pending`: a host window's points as rows of ticks, a few bytes each, until a checkpoint.
//! - [`rollup`]: min, max, sum, count, last at 1 m, 5 m and 1 h.
//! - `zstd_context`: one reused zstd context per thread.
//! - [`Retention`]: how long each tier is kept.
//!
//! Durability: a batch is acknowledged once its frame is in the write-ahead log (see
//! `store/mod.rs`). A checkpoint writes the recorder's pending points as segments together with
//! the host's twin and truncates the log in one atomic batch; after a crash, the log since the
//! last checkpoint is replayed through the twin, which records the same points again.

pub(crate) mod codec;
pub(crate) mod pending;
pub(crate) mod recorder;
pub mod rollup;
pub(crate) mod segment;
pub(crate) mod zstd_context;

use std::time::Duration;

use rollup::Tier;

const DAY_MS: i64 = 86_400_000;

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw_ms: i64,
    pub minute_ms: i64,
    pub five_minutes_ms: i64,
    pub hour_ms: i64,
}

impl Default for Retention {
    /// Raw and 1 m for 7 days, 5 m for 30, 1 h for 400.
    fn default() -> Self {
        Retention { raw_ms: 7 * DAY_MS, minute_ms: 7 * DAY_MS, five_minutes_ms: 30 * DAY_MS, hour_ms: 400 * DAY_MS }
    }
}

impl Retention {
    pub fn of(&self, tier: Tier) -> i64 {
        match tier {
            Tier::Minute => self.minute_ms,
            Tier::FiveMinutes => self.five_minutes_ms,
            Tier::Hour => self.hour_ms,
        }
    }

    /// Whether a block of `tier` for the period starting at `period_ms` is still kept at `now_ms`.
    pub fn keeps(&self, tier: Tier, period_ms: i64, now_ms: i64) -> bool {
        period_ms + tier.period_ms() > now_ms - self.of(tier)
    }

    pub fn from_durations(raw: Duration, minute: Duration, five: Duration, hour: Duration) -> Self {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        Retention { raw_ms: ms(raw), minute_ms: ms(minute), five_minutes_ms: ms(five), hour_ms: ms(hour) }
    }
}
