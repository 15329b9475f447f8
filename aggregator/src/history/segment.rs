//! A raw segment: one host's points over one window, one column per series, zstd-compressed.
//!
//! ```text
//! version 1
//! series count
//! per series: index, flags (float, counter), scale (f64), point count, body length,
//!             body = timestamps (delta-of-delta from the window start) then values
//!             (integers delta-of-delta, floats XOR)
//! ```
//!
//! Integer series keep the raw integers the agent read (kernel ticks, bytes) and their scale, so a
//! counter costs a zero byte per point while it grows steadily. Every column of a host repeats
//! the same timestamps, which zstd stores once. Merging two segments is how late points (a
//! backfill) land in their place: points are ordered by time, and at equal times the newer
//! segment wins.

use std::collections::BTreeMap;

use twinwatch_common::sample::apply_scale;

use super::codec::{put_dod, put_varint, put_xor, read_dod, read_xor, CodecError, Cursor};

const VERSION: u8 = 1;
/// Most bytes a stored segment may decompress to.
pub const MAX_DECOMPRESSED: usize = 256 << 20;

const FLOAT: u8 = 1;
const COUNTER: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment: {0}")]
    Codec(#[from] CodecError),
    #[error("segment does not decompress: {0}")]
    Zstd(std::io::Error),
    #[error("segment version {0} is not known")]
    Version(u8),
}

/// One series' points in a segment. Values are raw 64-bit patterns: an `i64` for integer series,
/// an `f64` for float series.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub float: bool,
    pub counter: bool,
    pub scale: f64,
    /// `(ms since the epoch, bits)`, ascending by time, one point per time.
    pub points: Vec<(i64, u64)>,
}

impl Column {
    pub fn new(float: bool, counter: bool, scale: f64) -> Self {
        Column { float, counter, scale, points: Vec::new() }
    }

    /// A raw value in the unit the series name states.
    pub fn real(&self, bits: u64) -> f64 {
        if self.float {
            apply_scale(f64::from_bits(bits), self.scale)
        } else {
            apply_scale(bits as i64 as f64, self.scale)
        }
    }

    /// Every point as `(ms, value in the named unit)`.
    pub fn reals(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.points.iter().map(|&(t, b)| (t, self.real(b)))
    }

    /// Adds points from `newer`, which win at equal times. Integer and float columns of one series
    /// (an agent that changed how it reads a value) meet as floats in the named unit.
    pub fn merge(&mut self, newer: &Column) {
        if self.float != newer.float || self.scale != newer.scale {
            let (a, b) = (self.as_real(), newer.as_real());
            *self = a;
            self.merge(&b);
            return;
        }
        self.counter = newer.counter;
        let sorted = |p: &[(i64, u64)]| p.windows(2).all(|w| w[0].0 < w[1].0);
        if self.points.last().is_none_or(|l| newer.points.first().is_none_or(|f| l.0 < f.0)) && sorted(&newer.points) {
            self.points.extend_from_slice(&newer.points);
            return;
        }
        let mut by_time: BTreeMap<i64, u64> = self.points.iter().copied().collect();
        by_time.extend(newer.points.iter().copied());
        self.points = by_time.into_iter().collect();
    }

    fn as_real(&self) -> Column {
        Column {
            float: true,
            counter: self.counter,
            scale: 1.0,
            points: self.points.iter().map(|&(t, b)| (t, self.real(b).to_bits())).collect(),
        }
    }
}

/// Series index (in the host's registry) → column.
pub type Columns = BTreeMap<u32, Column>;

/// Merges `newer` into `base`, series by series.
pub fn merge(base: &mut Columns, newer: &Columns) {
    for (idx, col) in newer {
        match base.get_mut(idx) {
            Some(b) => b.merge(col),
            None => {
                let mut fresh = Column::new(col.float, col.counter, col.scale);
                fresh.merge(col);
                base.insert(*idx, fresh);
            }
        }
    }
}

/// Encodes and compresses `columns` of the window starting at `window_ms`.
#[cfg(test)]
pub fn encode(window_ms: i64, columns: &Columns, level: i32) -> Vec<u8> {
    encode_chunks(window_ms, columns, level, usize::MAX).swap_remove(0)
}

/// Encodes `columns` as one or more segments, each holding whole columns and at most
/// `max_bytes` before compression, unless one column alone is larger. Each is a segment of its
/// own: decoding and merging them gives back `columns`. There is always at least one.
pub fn encode_chunks(window_ms: i64, columns: &Columns, level: i32, max_bytes: usize) -> Vec<Vec<u8>> {
    // The version byte and the column count, at most a 5-byte varint for a u32 index space.
    const HEADER: usize = 6;
    let mut chunks = Vec::new();
    let mut group = Vec::new();
    let mut in_group = 0u64;
    let mut column = Vec::new();
    let mut body = Vec::new();
    let finish = |chunks: &mut Vec<Vec<u8>>, group: &mut Vec<u8>, in_group: &mut u64| {
        let mut out = Vec::with_capacity(HEADER + group.len());
        out.push(VERSION);
        put_varint(&mut out, *in_group);
        out.extend_from_slice(group);
        chunks.push(crate::history::zstd_context::compress(&out, level));
        group.clear();
        *in_group = 0;
    };
    for (idx, col) in columns.iter().filter(|(_, c)| !c.points.is_empty()) {
        column.clear();
        put_varint(&mut column, *idx as u64);
        column.push(if col.float { FLOAT } else { 0 } | if col.counter { COUNTER } else { 0 });
        column.extend_from_slice(&col.scale.to_le_bytes());
        put_varint(&mut column, col.points.len() as u64);
        body.clear();
        put_dod(&mut body, col.points.iter().map(|p| p.0 - window_ms));
        if col.float {
            put_xor(&mut body, col.points.iter().map(|p| p.1));
        } else {
            put_dod(&mut body, col.points.iter().map(|p| p.1 as i64));
        }
        put_varint(&mut column, body.len() as u64);
        column.extend_from_slice(&body);
        if in_group > 0 && HEADER + group.len() + column.len() > max_bytes {
            finish(&mut chunks, &mut group, &mut in_group);
        }
        group.extend_from_slice(&column);
        in_group += 1;
    }
    if in_group > 0 || chunks.is_empty() {
        finish(&mut chunks, &mut group, &mut in_group);
    }
    chunks
}

/// Decompresses and decodes a segment; `only` picks one series (the others are skipped unread).
pub fn decode(window_ms: i64, bytes: &[u8], only: Option<u32>) -> Result<Columns, SegmentError> {
    let raw = crate::history::zstd_context::decompress(bytes, MAX_DECOMPRESSED).map_err(SegmentError::Zstd)?;
    let mut c = Cursor::new(&raw);
    let version = c.byte()?;
    if version != VERSION {
        return Err(SegmentError::Version(version));
    }
    let n = c.count(12)?;
    let mut columns = Columns::new();
    let mut times = Vec::new();
    for _ in 0..n {
        let idx = u32::try_from(c.varint()?).map_err(|_| CodecError::Corrupt("series index"))?;
        let flags = c.byte()?;
        let scale = f64::from_le_bytes(c.take(8)?.try_into().expect("8 bytes"));
        let points = c.varint()?;
        let len = c.varint()? as usize;
        let body = c.take(len)?;
        if only.is_some_and(|o| o != idx) {
            continue;
        }
        // Each point takes at least two bytes of body.
        if points > (len / 2) as u64 {
            return Err(CodecError::Corrupt("point count larger than the data").into());
        }
        let points = points as usize;
        let mut b = Cursor::new(body);
        times.clear();
        read_dod(&mut b, points, &mut times)?;
        let mut values = Vec::with_capacity(points);
        if flags & FLOAT != 0 {
            read_xor(&mut b, points, &mut values)?;
        } else {
            let mut ints = Vec::with_capacity(points);
            read_dod(&mut b, points, &mut ints)?;
            values.extend(ints.into_iter().map(|v| v as u64));
        }
        let mut col = Column::new(flags & FLOAT != 0, flags & COUNTER != 0, scale);
        col.points = times.iter().map(|t| t.wrapping_add(window_ms)).zip(values).collect();
        columns.insert(idx, col);
    }
    Ok(columns)
}

/// Points in all columns.
#[cfg(test)]
pub fn point_count(columns: &Columns) -> usize {
    columns.values().map(|c| c.points.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::codec::tests::Rng;

    const W: i64 = 1_700_000_400_000;

    fn int_col(points: &[(i64, i64)]) -> Column {
        Column {
            float: false,
            counter: true,
            scale: 0.01,
            points: points.iter().map(|&(t, v)| (t, v as u64)).collect(),
        }
    }

    fn float_col(points: &[(i64, f64)]) -> Column {
        Column {
            float: true,
            counter: false,
            scale: 1.0,
            points: points.iter().map(|&(t, v)| (t, v.to_bits())).collect(),
        }
    }

    #[test]
    fn round_trip_with_irregular_times_counter_resets_and_special_floats() {
        let mut rng = Rng(11);
        let mut counter = Vec::new();
        let mut v = 0i64;
        for i in 0..600 {
            v = if i == 300 { 5 } else { v + rng.below(3000) as i64 };
            counter.push((W + i * 1000 + rng.below(25) as i64, v));
        }
        let specials =
            [(W, f64::NAN), (W + 1, f64::INFINITY), (W + 7, f64::NEG_INFINITY), (W + 9, -0.0), (W + 10, 0.25)];
        let mut columns = Columns::new();
        columns.insert(0, int_col(&counter));
        columns.insert(7, float_col(&specials));
        let bytes = encode(W, &columns, 3);
        let back = decode(W, &bytes, None).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[&0], columns[&0]);
        let bits: Vec<u64> = back[&7].points.iter().map(|p| p.1).collect();
        assert_eq!(bits, specials.iter().map(|p| p.1.to_bits()).collect::<Vec<_>>(), "NaN and infinities bit-exact");
        assert_eq!(back[&0].real(1234), 12.34);
        let one = decode(W, &bytes, Some(7)).unwrap();
        assert_eq!(one.keys().collect::<Vec<_>>(), [&7]);
    }

    #[test]
    fn chunks_hold_whole_series_within_their_bound_and_decode_to_the_whole() {
        let mut rng = Rng(5);
        let mut columns = Columns::new();
        for idx in 0..120u32 {
            let pts: Vec<(i64, i64)> = (0..60).map(|i| (W + i * 1000, rng.below(1 << 40) as i64)).collect();
            columns.insert(idx * 3, int_col(&pts));
        }
        // One series alone larger than the bound gets a chunk of its own.
        let big: Vec<(i64, f64)> = (0..2000).map(|i| (W + i * 100, rng.below(1 << 52) as f64 / 7.0)).collect();
        columns.insert(1000, float_col(&big));
        columns.insert(1001, int_col(&[]));
        let chunks = encode_chunks(W, &columns, 1, 7_000);
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        let mut back = Columns::new();
        let mut seen = 0;
        for chunk in &chunks {
            let raw = crate::history::zstd_context::decompress(chunk, MAX_DECOMPRESSED).unwrap();
            let part = decode(W, chunk, None).unwrap();
            assert!(raw.len() <= 7_000 || part.len() == 1, "{} bytes in {} series", raw.len(), part.len());
            assert!(part.keys().all(|k| !back.contains_key(k)), "a series is in one chunk");
            seen += part.len();
            merge(&mut back, &part);
        }
        columns.remove(&1001);
        assert_eq!(seen, columns.len());
        assert_eq!(back, columns);
        assert_eq!(decode(W, &encode(W, &columns, 1), None).unwrap(), columns, "one chunk without a bound");
        let empty = encode_chunks(W, &Columns::new(), 1, 7_000);
        assert_eq!(empty.len(), 1);
        assert!(decode(W, &empty[0], None).unwrap().is_empty());
    }

    #[test]
    fn late_points_merge_into_place_and_newer_wins_at_equal_times() {
        let mut base = Columns::new();
        base.insert(1, int_col(&[(W, 10), (W + 3000, 40), (W + 4000, 50)]));
        let mut late = Columns::new();
        late.insert(1, int_col(&[(W + 1000, 20), (W + 2000, 30), (W + 3000, 41)]));
        late.insert(2, float_col(&[(W + 500, 1.0)]));
        merge(&mut base, &late);
        let expected: Vec<(i64, u64)> = [(W, 10), (W + 1000, 20), (W + 2000, 30), (W + 3000, 41), (W + 4000, 50)]
            .iter()
            .map(|&(t, v)| (t, v as u64))
            .collect();
        assert_eq!(base[&1].points, expected);
        assert_eq!(base[&2].points.len(), 1);
        let back = decode(W, &encode(W, &base, 1), None).unwrap();
        assert_eq!(back, base);
    }

    #[test]
    fn a_series_that_changes_from_integer_to_float_keeps_its_values() {
        let mut base = Columns::new();
        base.insert(1, int_col(&[(W, 150)]));
        let mut newer = Columns::new();
        newer.insert(1, float_col(&[(W + 1000, 2.5)]));
        merge(&mut base, &newer);
        let reals: Vec<(i64, f64)> = base[&1].reals().collect();
        assert_eq!(reals, [(W, 1.5), (W + 1000, 2.5)]);
    }

    #[test]
    fn steady_host_metrics_compress_far_below_a_byte_per_point() {
        // 500 series, 600 points each at a jittery 1 s: a third constant, a third steady
        // counters, a third wandering gauges.
        let mut rng = Rng(5);
        let times: Vec<i64> = (0..600).map(|i| W + i * 1000 + rng.below(8) as i64).collect();
        let mut columns = Columns::new();
        for s in 0..500u32 {
            let mut v = rng.below(1 << 30) as i64;
            let step = rng.below(5000) as i64;
            let points = times
                .iter()
                .map(|&t| {
                    match s % 3 {
                        0 => {}
                        1 => v += step,
                        _ => v += rng.below(3) as i64 - 1,
                    }
                    (t, v)
                })
                .collect::<Vec<_>>();
            columns.insert(s, int_col(&points));
        }
        let bytes = encode(W, &columns, 3);
        let per_point = bytes.len() as f64 / point_count(&columns) as f64;
        assert!(per_point < 0.5, "{per_point:.3} bytes per point");
        assert_eq!(decode(W, &bytes, None).unwrap(), columns);
    }

    #[test]
    fn corrupt_segments_are_errors() {
        let mut columns = Columns::new();
        columns.insert(3, int_col(&[(W, 1), (W + 1000, 2)]));
        let bytes = encode(W, &columns, 1);
        assert!(decode(W, &bytes[..bytes.len() - 1], None).is_err());
        let raw = zstd::bulk::decompress(&bytes, 1 << 20).unwrap();
        for cut in 1..raw.len() {
            let truncated = zstd::bulk::compress(&raw[..cut], 1).unwrap();
            assert!(decode(W, &truncated, None).is_err(), "cut at {cut}");
        }
        let huge_count = zstd::bulk::compress(&[VERSION, 0xff, 0xff, 0xff, 0x0f], 1).unwrap();
        assert!(decode(W, &huge_count, None).is_err());
    }
}
