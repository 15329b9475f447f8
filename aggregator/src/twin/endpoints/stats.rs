//! Statistics over a window of probe results: pure functions of a slice, no state.
//!
//! Percentiles are **nearest-rank**: the p-th percentile of n values is the value at rank
//! ⌈p·n/100⌉ (1-based) in sorted order, so it is always a value that was observed. Latency and
//! phase figures cover **successful results only**: a refused connection is fast and a timeout is
//! as slow as its limit, and neither says how fast the endpoint answers; failures show in
//! `success_rate`, `outcomes` and the status classes instead.

use std::collections::BTreeMap;

use serde::Serialize;
use twinwatch_common::probe::PHASES;

use super::ProbeResult;

/// Latency of the whole probe, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

/// Median and 95th percentile of one HTTP phase, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Spread {
    pub median: Option<f64>,
    pub p95: Option<f64>,
}

/// What a window of results says.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub results: u32,
    pub successes: u32,
    /// Successes over results, 0 to 1; `None` without results.
    pub success_rate: Option<f64>,
    pub latency: Latency,
    /// Results per status class: `1xx` to `5xx`, and `none` (no HTTP status, or not a valid one).
    pub status_classes: BTreeMap<&'static str, u32>,
    /// Results per HTTP status code, codes that were seen only.
    pub status_codes: BTreeMap<u16, u32>,
    /// Results per outcome name (`unknown` when the agent reported none we know), seen only.
    pub outcomes: BTreeMap<&'static str, u32>,
    /// Per phase, in the order of [`PHASES`].
    pub phases: [Spread; PHASES.len()],
    /// Time to first byte: resolve, connect, tls and processing together.
    pub ttfb: Spread,
}

pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The status class of an HTTP status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=599 => STATUS_CLASSES[usize::from(status / 100 - 1)],
        _ => "none",
    }
}

/// Successes over results, 0 to 1; `None` without results.
pub fn success_rate(results: &[ProbeResult]) -> Option<f64> {
    let ok = results.iter().filter(|r| r.success).count();
    (!results.is_empty()).then(|| ok as f64 / results.len() as f64)
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `sorted`, which is sorted ascending.
pub fn percentile(sorted: &[f64], p: u32) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // Integer arithmetic: ⌈p·n/100⌉ exactly, with no float rounding at the boundaries.
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

/// Seconds from a stored `f32`, rounded to the microsecond so `0.1f32` reads as 0.1 again.
fn seconds(v: f32) -> f64 {
    microseconds(f64::from(v))
}

/// `v` rounded to the microsecond: finer than any probe measures, and it reads well.
pub fn microseconds(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The finite values, sorted.
fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

fn spread(values: impl Iterator<Item = f64>) -> Spread {
    let v = sorted(values);
    Spread { median: percentile(&v, 50), p95: percentile(&v, 95) }
}

/// Time to first byte of one result: the sum of the reported phases before `transfer`; `None`
/// when none of them was reported (not an HTTP probe).
pub fn ttfb(result: &ProbeResult) -> Option<f64> {
    let first = &result.phases[..4];
    let sum: f32 = first.iter().filter(|p| p.is_finite()).sum();
    first.iter().any(|p| p.is_finite()).then(|| seconds(sum))
}

pub fn summarize(results: &[ProbeResult]) -> Stats {
    let ok: Vec<&ProbeResult> = results.iter().filter(|r| r.success).collect();
    let durations = sorted(ok.iter().map(|r| seconds(r.duration)));
    let mean = (!durations.is_empty()).then(|| microseconds(durations.iter().sum::<f64>() / durations.len() as f64));
    let latency = Latency {
        p50: percentile(&durations, 50),
        p95: percentile(&durations, 95),
        p99: percentile(&durations, 99),
        mean,
    };
    let mut status_classes: BTreeMap<&'static str, u32> = STATUS_CLASSES.iter().map(|c| (*c, 0)).collect();
    let mut status_codes = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for r in results {
        *status_classes.entry(status_class(r.status)).or_default() += 1;
        if r.status != 0 {
            *status_codes.entry(r.status).or_default() += 1;
        }
        *outcomes.entry(r.outcome.map_or("unknown", |o| o.as_str())).or_default() += 1;
    }
    let phases: [Spread; PHASES.len()] = std::array::from_fn(|i| spread(ok.iter().map(|r| seconds(r.phases[i]))));
    Stats {
        results: results.len() as u32,
        successes: ok.len() as u32,
        success_rate: success_rate(results),
        latency,
        status_classes,
        status_codes,
        outcomes,
        phases,
        ttfb: spread(ok.iter().filter_map(|r| ttfb(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinwatch_common::probe::Outcome;

    /// The definition, checked value by value: the smallest observed value with at least p % of
    /// the values at or below it.
    fn naive_percentile(values: &[f64], p: u32) -> Option<f64> {
        let n = values.len() as f64;
        values
            .iter()
            .copied()
            .filter(|x| values.iter().filter(|v| *v <= x).count() as f64 * 100.0 >= p as f64 * n)
            .min_by(f64::total_cmp)
    }

    /// A small deterministic generator, so the tests need no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
    }

    fn random_results(rng: &mut Lcg, n: usize) -> Vec<ProbeResult> {
        const CODES: [u16; 7] = [0, 101, 200, 204, 301, 404, 503];
        (0..n)
            .map(|i| {
                // Durations in whole milliseconds, so ties happen.
                let duration = (rng.next() % 300) as f32 / 1000.0;
                let success = rng.next() % 4 != 0;
                let mut phases = [f32::NAN; 5];
                if rng.next() % 3 != 0 {
                    for p in &mut phases {
                        *p = (rng.next() % 50) as f32 / 1000.0;
                    }
                }
                ProbeResult {
                    ts_ms: i as i64,
                    duration,
                    phases,
                    status: CODES[rng.next() as usize % CODES.len()],
                    success,
                    outcome: if success { Some(Outcome::Success) } else { Some(Outcome::Timeout) },
                }
            })
            .collect()
    }

    #[test]
    fn percentiles_match_the_definition() {
        let mut rng = Lcg(7);
        for n in [1, 2, 3, 10, 19, 20, 21, 99, 100, 101, 1024] {
            let values: Vec<f64> = (0..n).map(|_| (rng.next() % 97) as f64).collect();
            let mut s = values.clone();
            s.sort_by(f64::total_cmp);
            for p in [1, 25, 50, 90, 95, 99, 100] {
                assert_eq!(percentile(&s, p), naive_percentile(&values, p), "n={n} p={p}");
            }
        }
        assert_eq!(percentile(&[], 50), None);
        // Nearest rank: the median of 1..=4 is 2, an observed value, not 2.5.
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50), Some(2.0));
    }

    #[test]
    fn summaries_match_a_naive_count() {
        let mut rng = Lcg(42);
        for n in [0, 1, 5, 64, 1024] {
            let results = random_results(&mut rng, n);
            let stats = summarize(&results);
            let ok: Vec<&ProbeResult> = results.iter().filter(|r| r.success).collect();
            assert_eq!((stats.results as usize, stats.successes as usize), (n, ok.len()));
            assert_eq!(stats.success_rate, (n > 0).then(|| ok.len() as f64 / n as f64));

            let durations: Vec<f64> = ok.iter().map(|r| seconds(r.duration)).collect();
            assert_eq!(stats.latency.p50, naive_percentile(&durations, 50));
            assert_eq!(stats.latency.p95, naive_percentile(&durations, 95));
            assert_eq!(stats.latency.p99, naive_percentile(&durations, 99));
            let mean = durations.iter().sum::<f64>() / durations.len() as f64;
            assert_eq!(stats.latency.mean.is_some(), !durations.is_empty());
            if let Some(m) = stats.latency.mean {
                assert!((m - mean).abs() <= 1e-6);
            }

            for class in STATUS_CLASSES {
                let expected = results
                    .iter()
                    .filter(|r| match class {
                        "none" => !(100..600).contains(&r.status),
                        c => r.status / 100 == c[..1].parse::<u16>().unwrap(),
                    })
                    .count();
                assert_eq!(stats.status_classes[class] as usize, expected, "{class}");
            }
            let codes: u32 = stats.status_codes.values().sum();
            assert_eq!(codes as usize, results.iter().filter(|r| r.status != 0).count());
            assert!(!stats.status_codes.contains_key(&0));
            assert_eq!(stats.outcomes.get("success").copied().unwrap_or(0) as usize, ok.len());

            for (i, spread) in stats.phases.iter().enumerate() {
                let values: Vec<f64> = ok.iter().map(|r| r.phases[i]).filter(|p| p.is_finite()).map(seconds).collect();
                assert_eq!(spread.median, naive_percentile(&values, 50));
                assert_eq!(spread.p95, naive_percentile(&values, 95));
            }
            let ttfbs: Vec<f64> =
                ok.iter().filter(|r| r.phases[0].is_finite()).map(|r| seconds(r.phases[..4].iter().sum())).collect();
            assert_eq!(stats.ttfb.median, naive_percentile(&ttfbs, 50));
        }
    }

    #[test]
    fn classes_and_ttfb() {
        assert_eq!(
            [0, 99, 100, 204, 399, 404, 599, 600].map(status_class),
            ["none", "none", "1xx", "2xx", "3xx", "4xx", "5xx", "none"]
        );
        let mut r = ProbeResult::at(1);
        assert_eq!(ttfb(&r), None);
        r.phases = [0.001, 0.002, f32::NAN, 0.1, 0.5];
        assert_eq!(ttfb(&r), Some(0.103));
        assert_eq!(seconds(0.1), 0.1);
    }
}
