//! A rollup block: one series' buckets of one tier over one period. Stored together with the
//! blocks of the host's other series (see `chunk.rs`), or alone and zstd-compressed as stores
//! before chunks wrote them.
//!
//! ```text
//! version 2, bucket count, starts (delta-of-delta of the step index), counts, scale (f64),
//! then last, min, max, sum: each a kind byte and its column
//!   floats:    XOR of the bits
//!   integers:  the values divided by the scale, exactly
//!   relative:  integers against another field (min and max against last, sum against
//!              count times min)
//! ```
//!
//! Integer columns are zig-zag varints of the residual of the cheapest of three predictors.
//! Version 1 (every field as floats) is still read.

use twinwatch_common::sample::apply_scale;

use super::{Bucket, Tier};
use crate::history::codec::{put_dod, put_varint, put_xor, read_dod, read_xor, unzigzag, zigzag, CodecError, Cursor};

/// Blocks are written in version 2 (integer fields); version 1 (every field as float XOR) is read.
const VERSION: u8 = 2;
/// Most bytes a stored rollup value may decompress to: a block alone (a period holds at most 720
/// buckets), or a chunk of whole blocks.
pub const MAX_DECOMPRESSED: usize = 1 << 20;

/// Encodes and compresses one block alone.
#[cfg(test)]
pub fn encode(tier: Tier, period_ms: i64, buckets: &[Bucket], scale: Option<f64>) -> Vec<u8> {
    crate::history::zstd_context::compress(&encode_body(tier, period_ms, buckets, scale), 3)
}

/// Encodes one period block of `tier` starting at `period_ms`, uncompressed. `scale` is the
/// series' scale when it is read as integers: a field whose every value is exactly such an
/// integer times `scale` is stored as those integers (see [`IntColumn`]), any other as XOR of
/// the float bits.
pub fn encode_body(tier: Tier, period_ms: i64, buckets: &[Bucket], scale: Option<f64>) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_varint(&mut out, buckets.len() as u64);
    put_dod(&mut out, buckets.iter().map(|b| (b.start_ms - period_ms) / tier.step_ms()));
    put_ints(&mut out, &buckets.iter().map(|b| b.count as i64).collect::<Vec<_>>());
    let scale = scale.filter(|s| s.is_finite() && *s != 0.0).unwrap_or(1.0);
    out.extend_from_slice(&scale.to_le_bytes());
    let ints =
        |field: fn(&Bucket) -> f64| -> Option<Vec<i64>> { buckets.iter().map(|b| unscale(field(b), scale)).collect() };
    let last = ints(|b| b.last);
    let min = ints(|b| b.min);
    let max = ints(|b| b.max);
    let sum = ints(|b| b.sum);
    // Last first: the others are written relative to it (or to min) where both are integers.
    put_field(&mut out, buckets, |b| b.last, last.as_deref(), None);
    put_field(&mut out, buckets, |b| b.min, min.as_deref(), last.as_ref().map(|l| (l.as_slice(), Relation::Below)));
    put_field(&mut out, buckets, |b| b.max, max.as_deref(), last.as_ref().map(|l| (l.as_slice(), Relation::Above)));
    let weighted_min: Option<Vec<i64>> =
        min.as_ref().map(|m| m.iter().zip(buckets).map(|(m, b)| m.wrapping_mul(b.count as i64)).collect());
    put_field(
        &mut out,
        buckets,
        |b| b.sum,
        sum.as_deref(),
        weighted_min.as_ref().map(|w| (w.as_slice(), Relation::Above)),
    );
    out
}

/// How an integer field is written against another field of the same buckets.
#[derive(Clone, Copy)]
enum Relation {
    /// `base - value` (min below last).
    Below,
    /// `value - base` (max above last, sum above count times min).
    Above,
}

const FLOATS: u8 = 0;
const INTEGERS: u8 = 1;
const RELATIVE: u8 = 2;

/// `v` as the integer it is `scale` times, if it is exactly that.
fn unscale(v: f64, scale: f64) -> Option<i64> {
    let r = (v / scale).round();
    // NaN and infinities fail this too.
    if r.is_nan() || r.abs() >= 9.0e15 {
        return None;
    }
    let r = r as i64;
    (apply_scale(r as f64, scale).to_bits() == v.to_bits()).then_some(r)
}

fn put_field(
    out: &mut Vec<u8>,
    buckets: &[Bucket],
    field: fn(&Bucket) -> f64,
    ints: Option<&[i64]>,
    base: Option<(&[i64], Relation)>,
) {
    match (ints, base) {
        (Some(v), Some((base, relation))) => {
            out.push(RELATIVE);
            let d: Vec<i64> = v
                .iter()
                .zip(base)
                .map(|(&v, &b)| match relation {
                    Relation::Below => b.wrapping_sub(v),
                    Relation::Above => v.wrapping_sub(b),
                })
                .collect();
            put_ints(out, &d);
        }
        (Some(v), None) => {
            out.push(INTEGERS);
            put_ints(out, v);
        }
        (None, _) => {
            out.push(FLOATS);
            put_xor(out, buckets.iter().map(|b| field(b).to_bits()));
        }
    }
}

/// Integers as zig-zag varints of the residual of the cheapest of three predictors: none, the
/// previous value, or the line through the previous two (a counter's steady growth).
fn put_ints(out: &mut Vec<u8>, v: &[i64]) {
    let residual = |order: u8, i: usize| -> i64 {
        let at = |k: usize| if i >= k { v[i - k] } else { 0 };
        match order {
            0 => v[i],
            1 => v[i].wrapping_sub(at(1)),
            _ => v[i].wrapping_sub(at(1).wrapping_mul(2)).wrapping_add(at(2)),
        }
    };
    let cost = |order: u8| -> usize { (0..v.len()).map(|i| varint_len(zigzag(residual(order, i)))).sum() };
    let order = (0..3u8).min_by_key(|&o| cost(o)).unwrap_or(0);
    out.push(order);
    for i in 0..v.len() {
        put_varint(out, zigzag(residual(order, i)));
    }
}

fn read_ints(c: &mut Cursor<'_>, n: usize) -> Result<Vec<i64>, CodecError> {
    let order = c.byte()?;
    if order > 2 {
        return Err(CodecError::Corrupt("rollup predictor"));
    }
    let mut v: Vec<i64> = Vec::with_capacity(n);
    for i in 0..n {
        let r = unzigzag(c.varint()?);
        let at = |k: usize| if i >= k { v[i - k] } else { 0 };
        let x = match order {
            0 => r,
            1 => r.wrapping_add(at(1)),
            _ => r.wrapping_add(at(1).wrapping_mul(2)).wrapping_sub(at(2)),
        };
        v.push(x);
    }
    Ok(v)
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Reads one field written by [`put_field`], as float bits.
fn read_field(
    c: &mut Cursor<'_>,
    n: usize,
    scale: f64,
    base: Option<(&[i64], Relation)>,
) -> Result<(Vec<u64>, Option<Vec<i64>>), CodecError> {
    let ints = match c.byte()? {
        FLOATS => {
            let mut bits = Vec::with_capacity(n);
            read_xor(c, n, &mut bits)?;
            return Ok((bits, None));
        }
        INTEGERS => read_ints(c, n)?,
        RELATIVE => {
            let (base, relation) = base.ok_or(CodecError::Corrupt("rollup field relative to a float field"))?;
            let d = read_ints(c, n)?;
            d.iter()
                .zip(base)
                .map(|(&d, &b)| match relation {
                    Relation::Below => b.wrapping_sub(d),
                    Relation::Above => d.wrapping_add(b),
                })
                .collect()
        }
        _ => return Err(CodecError::Corrupt("rollup field kind")),
    };
    Ok((ints.iter().map(|&r| apply_scale(r as f64, scale).to_bits()).collect(), Some(ints)))
}

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("rollup block: {0}")]
    Codec(#[from] CodecError),
    #[error("rollup block does not decompress: {0}")]
    Zstd(std::io::Error),
}

/// Decompresses and decodes one block stored alone.
#[cfg(test)]
pub fn decode(tier: Tier, period_ms: i64, bytes: &[u8]) -> Result<Vec<Bucket>, RollupError> {
    let raw = crate::history::zstd_context::decompress(bytes, MAX_DECOMPRESSED).map_err(RollupError::Zstd)?;
    decode_body(tier, period_ms, &raw)
}

/// Decodes one block from its uncompressed bytes.
pub fn decode_body(tier: Tier, period_ms: i64, raw: &[u8]) -> Result<Vec<Bucket>, RollupError> {
    let mut c = Cursor::new(raw);
    let version = c.byte()?;
    if version != 1 && version != VERSION {
        return Err(CodecError::Corrupt("rollup version").into());
    }
    // Each bucket takes at least six bytes: start, count and four one-byte fields.
    let n = c.count(6)?;
    let mut starts = Vec::with_capacity(n);
    read_dod(&mut c, n, &mut starts)?;
    let (counts, [min, max, sum, last]) = if version == 1 {
        let counts = (0..n).map(|_| c.varint().map(|v| v as i64)).collect::<Result<Vec<_>, _>>()?;
        let mut fields = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for f in &mut fields {
            read_xor(&mut c, n, f)?;
        }
        (counts, fields)
    } else {
        let counts = read_ints(&mut c, n)?;
        let scale = f64::from_le_bytes(c.take(8)?.try_into().map_err(|_| CodecError::Corrupt("rollup scale"))?);
        let (last, last_ints) = read_field(&mut c, n, scale, None)?;
        let below = last_ints.as_deref().map(|l| (l, Relation::Below));
        let (min, min_ints) = read_field(&mut c, n, scale, below)?;
        let above = last_ints.as_deref().map(|l| (l, Relation::Above));
        let (max, _) = read_field(&mut c, n, scale, above)?;
        let weighted: Option<Vec<i64>> =
            min_ints.map(|m| m.iter().zip(&counts).map(|(m, &k)| m.wrapping_mul(k)).collect());
        let (sum, _) = read_field(&mut c, n, scale, weighted.as_deref().map(|w| (w, Relation::Above)))?;
        (counts, [min, max, sum, last])
    };
    if c.remaining() > 0 {
        return Err(CodecError::Corrupt("rollup block has trailing bytes").into());
    }
    let f = |v: &[u64], i: usize| f64::from_bits(v[i]);
    Ok((0..n)
        .map(|i| Bucket {
            start_ms: period_ms.wrapping_add(starts[i].wrapping_mul(tier.step_ms())),
            min: f(&min, i),
            max: f(&max, i),
            sum: f(&sum, i),
            count: counts[i] as u64,
            last: f(&last, i),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::codec::tests::Rng;
    use crate::history::rollup::tests::same;
    use crate::history::rollup::{align, fold, fold_scaled};

    /// Bit-exact comparison (`-0.0` is not `0.0` here).
    fn identical(a: &[Bucket], b: &[Bucket]) {
        assert_eq!(a.len(), b.len());
        let bits =
            |x: &Bucket| (x.start_ms, x.count, x.min.to_bits(), x.max.to_bits(), x.sum.to_bits(), x.last.to_bits());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(bits(x), bits(y), "bucket {i}: {x:?} vs {y:?}");
        }
    }

    /// A counter of kernel ticks read every second (about 100 a second, with jitter) for six
    /// hours, as its raw integers.
    fn ticks(rng: &mut Rng, period: i64) -> Vec<(i64, i64)> {
        let mut v = 1_234_567_i64;
        (0..6 * 3600)
            .map(|i| {
                v += 95 + rng.below(11) as i64;
                (period + i * 1000 + rng.below(40) as i64, v)
            })
            .collect()
    }

    /// Version 1 as it was written: every field as float XOR. Stores hold such blocks.
    fn encode_v1(tier: Tier, period_ms: i64, buckets: &[Bucket]) -> Vec<u8> {
        let mut out = vec![1];
        put_varint(&mut out, buckets.len() as u64);
        put_dod(&mut out, buckets.iter().map(|b| (b.start_ms - period_ms) / tier.step_ms()));
        for b in buckets {
            put_varint(&mut out, b.count);
        }
        for field in [|b: &Bucket| b.min, |b: &Bucket| b.max, |b: &Bucket| b.sum, |b: &Bucket| b.last] {
            put_xor(&mut out, buckets.iter().map(|b| field(b).to_bits()));
        }
        crate::history::zstd_context::compress(&out, 3)
    }

    #[test]
    fn an_integer_series_is_folded_with_exact_sums_and_stored_as_integers_a_third_the_size() {
        let mut rng = Rng(5);
        let tier = Tier::Minute;
        let period = align(1_700_000_000_000, tier.period_ms());
        let raw = ticks(&mut rng, period);
        let scale = 0.01;
        let reals: Vec<(i64, f64)> = raw.iter().map(|&(t, r)| (t, apply_scale(r as f64, scale))).collect();
        let buckets = fold_scaled(raw.iter().copied(), scale, tier.step_ms());
        // The same buckets as folding the scaled values, the sum exact rather than rounded on the way.
        same(&buckets, &fold(reals.iter().copied(), tier.step_ms()));
        for b in &buckets {
            let exact: i128 =
                raw.iter().filter(|p| align(p.0, tier.step_ms()) == b.start_ms).map(|p| p.1 as i128).sum();
            assert_eq!(b.sum.to_bits(), apply_scale(exact as f64, scale).to_bits());
        }
        let v2 = encode(tier, period, &buckets, Some(scale));
        identical(&decode(tier, period, &v2).unwrap(), &buckets);
        let v1 = encode_v1(tier, period, &buckets);
        identical(&decode(tier, period, &v1).unwrap(), &buckets);
        assert!(v2.len() * 3 < v1.len(), "{} bytes as integers, {} as floats", v2.len(), v1.len());
        // 21,600 raw points: under 0.1 bytes each for the minute tier.
        assert!(v2.len() * 10 < raw.len(), "{} bytes for {} points", v2.len(), raw.len());
    }

    #[test]
    fn fields_that_are_not_exact_integers_fall_back_to_floats_and_every_block_round_trips_bit_exactly() {
        let mut rng = Rng(77);
        let period = align(1_700_000_000_000, Tier::Hour.period_ms());
        let specials = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE, 1e300, -4.5e15, 0.1];
        for round in 0..200 {
            let n = rng.below(720) as usize;
            let scale = [None, Some(1.0), Some(0.01), Some(1e-3), Some(1e-9), Some(4096.0), Some(f64::NAN)][round % 7];
            let buckets: Vec<Bucket> = (0..n)
                .map(|i| {
                    let v = |rng: &mut Rng| match rng.below(6) {
                        0 => specials[rng.below(specials.len() as u64) as usize],
                        1 => (rng.unit() - 0.5) * 1e6,
                        _ => apply_scale((rng.below(1 << 40) as i64 - (1 << 39)) as f64, scale.unwrap_or(1.0)),
                    };
                    Bucket {
                        start_ms: period + i as i64 * Tier::Hour.step_ms(),
                        min: v(&mut rng),
                        max: v(&mut rng),
                        sum: v(&mut rng),
                        count: rng.below(5000),
                        last: v(&mut rng),
                    }
                })
                .collect();
            let bytes = encode(Tier::Hour, period, &buckets, scale);
            identical(&decode(Tier::Hour, period, &bytes).unwrap(), &buckets);
        }
    }

    #[test]
    fn a_damaged_block_is_an_error_never_a_panic() {
        let mut rng = Rng(3);
        let period = align(1_700_000_000_000, Tier::Minute.period_ms());
        let buckets = fold_scaled(ticks(&mut rng, period).into_iter().take(3600), 0.01, Tier::Minute.step_ms());
        let good = crate::history::zstd_context::decompress(
            &encode(Tier::Minute, period, &buckets, Some(0.01)),
            MAX_DECOMPRESSED,
        )
        .unwrap();
        let mut errors = 0;
        for _ in 0..3000 {
            let mut bad = good.clone();
            match rng.below(3) {
                0 => bad.truncate(rng.below(good.len() as u64) as usize),
                1 => {
                    let i = rng.below(good.len() as u64) as usize;
                    bad[i] = rng.below(256) as u8;
                }
                _ => bad.extend((0..rng.below(9)).map(|_| rng.below(256) as u8)),
            }
            let compressed = crate::history::zstd_context::compress(&bad, 1);
            errors += decode(Tier::Minute, period, &compressed).is_err() as usize;
        }
        assert!(errors > 1000, "only {errors} of 3000 damaged blocks were refused");
    }
}
