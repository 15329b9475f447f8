//! Rollups: min, max, sum, count and last of a series per step, at three tiers.
//!
//! A tier's buckets are kept per series in period blocks (six hours of minutes, a day of five
//! minutes, thirty days of hours), a host's blocks of one period stored together in chunks, so a
//! day's query reads one or two values. Buckets are folded
//! from raw points, and coarser buckets from finer ones: every field merges exactly, so an hour
//! made of twelve five-minute buckets equals the hour folded from the raw points.
//!
//! NaN points are kept in raw history but skipped here: a bucket's count is of the numbers it
//! summarises, and `sum / count` is their mean.

use twinwatch_common::sample::apply_scale;

mod block;
pub mod chunk;

#[cfg(test)]
pub use block::{decode, encode};
pub use block::{decode_body, encode_body, RollupError};

/// A rollup resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Minute,
    FiveMinutes,
    Hour,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Minute, Tier::FiveMinutes, Tier::Hour];

    pub fn step_ms(self) -> i64 {
        match self {
            Tier::Minute => 60_000,
            Tier::FiveMinutes => 300_000,
            Tier::Hour => 3_600_000,
        }
    }

    /// The span one stored block covers.
    pub fn period_ms(self) -> i64 {
        match self {
            Tier::Minute => 6 * 3_600_000,
            Tier::FiveMinutes => 24 * 3_600_000,
            Tier::Hour => 30 * 24 * 3_600_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Minute => "1m",
            Tier::FiveMinutes => "5m",
            Tier::Hour => "1h",
        }
    }

    /// The byte that tells tiers apart in storage keys.
    pub fn tag(self) -> u8 {
        match self {
            Tier::Minute => 1,
            Tier::FiveMinutes => 2,
            Tier::Hour => 3,
        }
    }
}

/// Aligns `t` down to a multiple of `step` (also for times before the epoch).
pub fn align(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start_ms: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    pub last: f64,
}

impl Bucket {
    pub fn of(start_ms: i64, v: f64) -> Self {
        Bucket { start_ms, min: v, max: v, sum: v, count: 1, last: v }
    }

    pub fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
        self.last = v;
    }

    /// Folds in a bucket that comes after this one in time.
    pub fn merge(&mut self, later: &Bucket) {
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.sum += later.sum;
        self.count += later.count;
        self.last = later.last;
    }

    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// Buckets of `step_ms` from points ascending in time.
pub fn fold(points: impl IntoIterator<Item = (i64, f64)>, step_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for (t, v) in points {
        if v.is_nan() {
            continue;
        }
        let start = align(t, step_ms);
        match out.last_mut() {
            Some(b) if b.start_ms == start => b.add(v),
            _ => out.push(Bucket::of(start, v)),
        }
    }
    out
}

/// Buckets of `step_ms` from an integer series' raw points ascending in time, each value `scale`
/// times its integer (`scale` positive): as [`fold`] of the scaled values, except that a bucket's
/// sum is the exact sum of the integers, scaled once, so that it too is stored as an integer.
pub fn fold_scaled(points: impl IntoIterator<Item = (i64, i64)>, scale: f64, step_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    let mut open: Option<(i64, i64, i64, i128, u64, i64)> = None;
    let close = |(start, min, max, sum, count, last): (i64, i64, i64, i128, u64, i64)| {
        let s = |r: i64| apply_scale(r as f64, scale);
        Bucket { start_ms: start, min: s(min), max: s(max), sum: apply_scale(sum as f64, scale), count, last: s(last) }
    };
    for (t, r) in points {
        let start = align(t, step_ms);
        match &mut open {
            Some(b) if b.0 == start => {
                b.1 = b.1.min(r);
                b.2 = b.2.max(r);
                b.3 += r as i128;
                b.4 += 1;
                b.5 = r;
            }
            _ => {
                if let Some(b) = open.take() {
                    out.push(close(b));
                }
                open = Some((start, r, r, r as i128, 1, r));
            }
        }
    }
    out.extend(open.map(close));
    out
}

/// Coarser buckets of `step_ms` from finer ones ascending in time.
pub fn refold(buckets: impl IntoIterator<Item = Bucket>, step_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for b in buckets {
        let start = align(b.start_ms, step_ms);
        match out.last_mut() {
            Some(o) if o.start_ms == start => o.merge(&b),
            _ => out.push(Bucket { start_ms: start, ..b }),
        }
    }
    out
}

/// Puts `fresh` buckets into `block` (both ascending), replacing any with the same start.
pub fn upsert(block: &mut Vec<Bucket>, fresh: &[Bucket]) {
    if fresh.is_empty() {
        return;
    }
    block.retain(|b| fresh.binary_search_by_key(&b.start_ms, |f| f.start_ms).is_err());
    block.extend_from_slice(fresh);
    block.sort_by_key(|b| b.start_ms);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::history::codec::tests::Rng;

    /// The obvious way: filter the points of each bucket and compute every field from scratch.
    fn naive(points: &[(i64, f64)], step: i64) -> Vec<Bucket> {
        let mut starts: Vec<i64> = points.iter().filter(|p| !p.1.is_nan()).map(|p| align(p.0, step)).collect();
        starts.dedup();
        starts
            .into_iter()
            .map(|s| {
                let vs: Vec<f64> =
                    points.iter().filter(|p| align(p.0, step) == s && !p.1.is_nan()).map(|p| p.1).collect();
                Bucket {
                    start_ms: s,
                    min: vs.iter().copied().fold(f64::INFINITY, f64::min),
                    max: vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    sum: vs.iter().sum(),
                    count: vs.len() as u64,
                    last: *vs.last().unwrap(),
                }
            })
            .collect()
    }

    fn random_points(rng: &mut Rng, n: usize) -> Vec<(i64, f64)> {
        let mut t = 1_700_000_000_000 + rng.below(100_000) as i64;
        (0..n)
            .map(|_| {
                t += 1 + rng.below(4000) as i64;
                let v = match rng.below(20) {
                    0 => f64::NAN,
                    1 => -1e12,
                    _ => (rng.unit() - 0.5) * 1000.0,
                };
                (t, v)
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    pub(crate) fn same(a: &[Bucket], b: &[Bucket]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!((x.start_ms, x.count, x.min, x.max, x.last), (y.start_ms, y.count, y.min, y.max, y.last));
            assert!(close(x.sum, y.sum), "{} vs {}", x.sum, y.sum);
        }
    }

    #[test]
    fn folding_matches_the_naive_reference_at_every_tier() {
        let mut rng = Rng(42);
        for round in 0..20 {
            let points = random_points(&mut rng, 200 + round * 300);
            for tier in Tier::ALL {
                same(&fold(points.iter().copied(), tier.step_ms()), &naive(&points, tier.step_ms()));
            }
        }
    }

    #[test]
    fn coarser_tiers_from_finer_buckets_equal_folding_the_raw_points() {
        let mut rng = Rng(9);
        let points = random_points(&mut rng, 20_000);
        let minutes = fold(points.iter().copied(), Tier::Minute.step_ms());
        let fives = refold(minutes.iter().copied(), Tier::FiveMinutes.step_ms());
        same(&fives, &naive(&points, Tier::FiveMinutes.step_ms()));
        let hours = refold(fives.iter().copied(), Tier::Hour.step_ms());
        same(&hours, &naive(&points, Tier::Hour.step_ms()));
    }

    #[test]
    fn blocks_round_trip_and_upsert_replaces_by_start() {
        let mut rng = Rng(1);
        let period = align(1_700_000_000_000, Tier::FiveMinutes.period_ms());
        let points: Vec<(i64, f64)> =
            random_points(&mut rng, 5000).into_iter().map(|(t, v)| (period + (t % 86_400_000), v)).collect();
        let mut points = points;
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        let buckets = fold(points.iter().copied(), Tier::FiveMinutes.step_ms());
        let back = decode(Tier::FiveMinutes, period, &encode(Tier::FiveMinutes, period, &buckets, None)).unwrap();
        assert_eq!(back, buckets);

        let mut block = buckets[..10].to_vec();
        let replacement = Bucket::of(buckets[3].start_ms, 7.0);
        upsert(&mut block, &[replacement, buckets[20]]);
        assert_eq!(block.len(), 11);
        assert_eq!(block[3], replacement);
        assert_eq!(block[10], buckets[20]);
        assert!(decode(Tier::Hour, 0, b"not zstd").is_err());
    }
}
