//! Reading history: which tier answers a range and step, and how stored and pending points meet.
//!
//! A step below a minute reads raw points; otherwise the coarsest tier whose step fits in the
//! requested one and whose retention still covers the start of the range. Rolled windows come
//! from the tier's blocks; windows not rolled yet (recent, or given late points) are folded from
//! raw segments and the recorder's pending points at query time, so an answer never waits for
//! compaction. Counter rates are taken between consecutive points (or buckets' last values),
//! counting a drop as a reset from zero, as Prometheus' `rate` does.

use std::cell::Cell;
use std::collections::BTreeSet;

use super::archive::{Archive, ArchiveError};
use crate::history::recorder::WINDOW_MS;
use crate::history::rollup::{self, align, Bucket, Tier};
use crate::history::segment::Column;
use crate::history::Retention;

/// Most points one series may return.
pub const MAX_POINTS: i64 = 11_000;
/// Points aimed at when no step is given.
const AUTO_POINTS: i64 = 1_500;
/// Most raw points one request may decode, over all its series: about 16 MiB of points, so a
/// wide range at a fine step is refused at a memory bound instead of read whole.
pub const MAX_RAW_POINTS: usize = 1_000_000;

/// What is left of a request's raw points ([`MAX_RAW_POINTS`]), shared by its series.
#[derive(Debug)]
pub struct Budget(Cell<usize>);

impl Budget {
    pub fn new(points: usize) -> Self {
        Budget(Cell::new(points))
    }
}

/// Where an answer is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Raw,
    Tier(Tier),
}

impl Resolution {
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Tier(t) => t.name(),
        }
    }

    fn step_ms(self) -> i64 {
        match self {
            Resolution::Raw => 0,
            Resolution::Tier(t) => t.step_ms(),
        }
    }
}

/// Chooses the resolution for `[from, to)` at `step_ms` (none: about `AUTO_POINTS` points), and
/// the step of the answer (none: raw points as stored).
pub fn plan(from: i64, to: i64, step_ms: Option<i64>, now_ms: i64, retention: &Retention) -> (Resolution, Option<i64>) {
    let span = (to - from).max(1);
    let step = step_ms.or_else(|| (span > AUTO_POINTS * 1000).then(|| (span / AUTO_POINTS).max(60_000)));
    let Some(step) = step else {
        return (Resolution::Raw, None);
    };
    let covers = |keep: i64| from >= now_ms - keep;
    if step < Tier::Minute.step_ms() && covers(retention.raw_ms) {
        return (Resolution::Raw, Some(step));
    }
    let fitting = Tier::ALL.iter().rev().find(|t| t.step_ms() <= step && covers(retention.of(**t)));
    let tier = fitting.or_else(|| Tier::ALL.iter().find(|t| covers(retention.of(**t)))).copied().unwrap_or(Tier::Hour);
    (Resolution::Tier(tier), Some(step.max(tier.step_ms())))
}

/// The recorder's share of one series: points not yet written, and the windows they are in.
#[derive(Debug, Default)]
pub struct Pending {
    pub column: Option<Column>,
    pub windows: BTreeSet<i64>,
}

/// One series' answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Points {
    Raw(Vec<(i64, f64)>),
    Buckets(Vec<Bucket>),
}

/// Reads series `idx` of `host` over `[from, to)` at `resolution`, re-bucketed to `step`, taking
/// the raw points it decodes from `budget`.
#[allow(clippy::too_many_arguments)] // One series of one query: each argument is a different part of it.
pub fn read(
    archive: &Archive,
    host: &str,
    idx: u32,
    (resolution, step): (Resolution, Option<i64>),
    from: i64,
    to: i64,
    pending: &Pending,
    budget: &Budget,
) -> Result<Points, ArchiveError> {
    let raw = |from: i64, to: i64| -> Result<Vec<(i64, f64)>, ArchiveError> {
        let mut left = budget.0.get();
        let limit = left;
        let mut col = archive.raw_bounded(host, idx, from, to, &mut left)?;
        if let Some(p) = &pending.column {
            let mut p = p.clone();
            p.points.retain(|x| x.0 >= from && x.0 < to);
            left = left.checked_sub(p.points.len()).ok_or(ArchiveError::TooManyPoints { limit })?;
            match &mut col {
                Some(c) => c.merge(&p),
                None => col = Some(p),
            }
        }
        budget.0.set(left);
        Ok(col.map(|c| c.reals().collect()).unwrap_or_default())
    };
    let tier = match resolution {
        Resolution::Raw => {
            let points = raw(from, to)?;
            return Ok(match step {
                None => Points::Raw(points),
                Some(step) => Points::Buckets(rollup::fold(points, step)),
            });
        }
        Resolution::Tier(t) => t,
    };
    let from = align(from, tier.step_ms());
    let mut unrolled: BTreeSet<i64> = archive.unrolled(host);
    unrolled.extend(pending.windows.iter().copied());
    let unrolled: Vec<i64> = unrolled.range(align(from, WINDOW_MS)..to).copied().collect();
    let mut buckets = archive.buckets(tier, host, idx, from, to)?;
    if !unrolled.is_empty() && tier.step_ms() <= WINDOW_MS {
        // Minutes and five minutes lie within one window: fold the unrolled ones from raw.
        buckets.retain(|b| unrolled.binary_search(&align(b.start_ms, WINDOW_MS)).is_err());
        for &w in &unrolled {
            buckets.extend(rollup::fold(raw(w.max(from), (w + WINDOW_MS).min(to))?, tier.step_ms()));
        }
        buckets.sort_by_key(|b| b.start_ms);
    } else if !unrolled.is_empty() {
        // An hour with an unrolled window: its rolled windows' five minutes, the others from raw.
        let redo: BTreeSet<i64> = unrolled.iter().map(|w| align(*w, tier.step_ms())).collect();
        buckets.retain(|b| !redo.contains(&b.start_ms));
        for &hour in &redo {
            let mut parts = Vec::new();
            for w in (hour..hour + tier.step_ms()).step_by(WINDOW_MS as usize) {
                if unrolled.binary_search(&w).is_ok() {
                    parts.extend(rollup::fold(raw(w, w + WINDOW_MS)?, Tier::FiveMinutes.step_ms()));
                } else {
                    parts.extend(archive.buckets(Tier::FiveMinutes, host, idx, w, w + WINDOW_MS)?);
                }
            }
            parts.retain(|b| b.start_ms >= from && b.start_ms < to);
            buckets.extend(rollup::refold(parts, tier.step_ms()));
        }
        buckets.sort_by_key(|b| b.start_ms);
    }
    let step = step.unwrap_or(resolution.step_ms());
    if step > tier.step_ms() {
        buckets = rollup::refold(buckets, step);
    }
    Ok(Points::Buckets(buckets))
}

/// `(time, value)` of each point: the raw value, or a bucket's mean (`last` for counters, whose
/// rates are read from it).
pub fn values(points: &Points, counter: bool) -> Vec<(i64, f64)> {
    match points {
        Points::Raw(p) => p.clone(),
        Points::Buckets(b) => b.iter().map(|b| (b.start_ms, if counter { b.last } else { b.avg() })).collect(),
    }
}

/// Per-second rates between consecutive points of a counter; a drop is a reset from zero.
pub fn rates(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    points
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| {
            let grown = if w[1].1 >= w[0].1 { w[1].1 - w[0].1 } else { w[1].1 };
            (w[1].0, grown * 1000.0 / (w[1].0 - w[0].0) as f64)
        })
        .collect()
}

/// Mean of a series over its points: weighted by count for buckets, by point otherwise.
pub fn mean(points: &Points, counter_rates: Option<&[(i64, f64)]>) -> Option<f64> {
    if let Some(rates) = counter_rates {
        return (!rates.is_empty()).then(|| rates.iter().map(|r| r.1).sum::<f64>() / rates.len() as f64);
    }
    match points {
        Points::Raw(p) => {
            let nums: Vec<f64> = p.iter().map(|x| x.1).filter(|v| !v.is_nan()).collect();
            (!nums.is_empty()).then(|| nums.iter().sum::<f64>() / nums.len() as f64)
        }
        Points::Buckets(b) => {
            let count: u64 = b.iter().map(|b| b.count).sum();
            (count > 0).then(|| b.iter().map(|b| b.sum).sum::<f64>() / count as f64)
        }
    }
}

/// Percent change from `before` to `now`; none when there is nothing to compare with.
pub fn change_pct(before: Option<f64>, now: Option<f64>) -> Option<f64> {
    let (b, n) = (before?, now?);
    (b != 0.0 && b.is_finite() && n.is_finite()).then(|| (n - b) / b.abs() * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const H: i64 = 3_600_000;

    #[test]
    fn the_step_picks_the_coarsest_fitting_tier_the_retention_still_covers() {
        let r = Retention::default();
        assert_eq!(plan(NOW - H, NOW, None, NOW, &r), (Resolution::Tier(Tier::Minute), Some(60_000)));
        assert_eq!(plan(NOW - 600_000, NOW, None, NOW, &r), (Resolution::Raw, None));
        assert_eq!(plan(NOW - 600_000, NOW, Some(10_000), NOW, &r), (Resolution::Raw, Some(10_000)));
        assert_eq!(
            plan(NOW - 24 * H, NOW, Some(300_000), NOW, &r),
            (Resolution::Tier(Tier::FiveMinutes), Some(300_000))
        );
        assert_eq!(
            plan(NOW - 24 * H, NOW, Some(600_000), NOW, &r),
            (Resolution::Tier(Tier::FiveMinutes), Some(600_000))
        );
        assert_eq!(plan(NOW - 24 * H, NOW, Some(7_200_000), NOW, &r), (Resolution::Tier(Tier::Hour), Some(7_200_000)));
        // Ten days back: raw and minutes are gone, five minutes remain.
        assert_eq!(plan(NOW - 240 * H, NOW, Some(1000), NOW, &r), (Resolution::Tier(Tier::FiveMinutes), Some(300_000)));
        assert_eq!(plan(NOW - 1000 * H, NOW, Some(60_000), NOW, &r), (Resolution::Tier(Tier::Hour), Some(H)));
    }

    #[test]
    fn rates_count_a_drop_as_a_reset() {
        let r = rates(&[(0, 100.0), (1000, 150.0), (2000, 10.0), (4000, 30.0)]);
        assert_eq!(r, [(1000, 50.0), (2000, 10.0), (4000, 10.0)]);
        assert_eq!(change_pct(Some(200.0), Some(224.0)), Some(12.0));
        assert_eq!(change_pct(Some(0.0), Some(1.0)), None);
    }
}
