//! The protobuf encoding of Prometheus' remote write 1.0 `WriteRequest`, by hand: four messages and
//! two wire types do not need a code generator.
//!
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }   // milliseconds
//! ```
//!
//! A repeated field is its elements' encodings one after the other, so the concatenation of two
//! encoded `WriteRequest`s is the encoding of one holding both lists. The queue relies on it: each
//! entry is a complete `WriteRequest` *fragment*, and a request body is consecutive entries
//! joined. Only encoding lives here; nothing decodes what a remote sends back.

use super::SeriesPoints;

/// Wire types: a varint, a fixed 64-bit value, a length-delimited field.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// One encoded `WriteRequest` fragment and the number of samples in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub samples: u32,
    pub bytes: Vec<u8>,
}

/// Labels as Prometheus requires them: sorted by name (byte order, as Go compares strings),
/// without empty values (an empty value means "no such label"), and a repeated name only once
/// (the first given), since Prometheus rejects a series with two labels of one name.
pub fn normalize(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> =
        labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Stable, so the first of two equal names stays first and survives `dedup_by`.
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|later, earlier| later.0 == earlier.0);
    out
}

/// Encodes `series` as fragments of at most `max_samples` samples and, where one series alone
/// does not make it larger, about `max_bytes`. A series whose points do not fit in the current
/// fragment is split: its first points end this fragment and the rest open the next, each part a
/// `TimeSeries` with the full labels. Points keep their order; series without points are skipped.
pub fn fragments(series: &[SeriesPoints], max_samples: usize, max_bytes: usize) -> Vec<Fragment> {
    let max_samples = max_samples.clamp(1, u32::MAX as usize);
    let mut out = Vec::new();
    let mut current = Fragment { samples: 0, bytes: Vec::new() };
    for s in series {
        let labels = normalize(&s.labels);
        let label_bytes = labels_len(&labels);
        let mut points = s.points.as_slice();
        while !points.is_empty() {
            let room = max_samples - current.samples as usize;
            // Every sample costs at most 1 + 8 + 1 + 10 bytes plus its 2-byte field header.
            let byte_room = max_bytes.saturating_sub(current.bytes.len() + label_bytes + 16) / 22;
            let take = points.len().min(room).min(byte_room.max(1));
            if take < points.len().min(room) && current.samples > 0 {
                out.push(std::mem::replace(&mut current, Fragment { samples: 0, bytes: Vec::new() }));
                continue;
            }
            put_timeseries(&labels, &points[..take], &mut current.bytes);
            current.samples += take as u32;
            points = &points[take..];
            if current.samples as usize >= max_samples || current.bytes.len() >= max_bytes {
                out.push(std::mem::replace(&mut current, Fragment { samples: 0, bytes: Vec::new() }));
            }
        }
    }
    if current.samples > 0 {
        out.push(current);
    }
    out
}

/// Appends one `WriteRequest.timeseries` element: a `TimeSeries` of `labels`, which must already
/// be [`normalize`]d, and `samples` as `(milliseconds, value)`.
pub fn put_timeseries(labels: &[(&str, &str)], samples: &[(i64, f64)], out: &mut Vec<u8>) {
    let body = labels_len(labels) + samples.iter().map(|&(t, _)| field_len(sample_len(t))).sum::<usize>();
    put_key(1, LEN, out);
    put_varint(body as u64, out);
    for (name, value) in labels {
        put_key(1, LEN, out);
        put_varint(label_len(name, value) as u64, out);
        put_bytes(1, name.as_bytes(), out);
        put_bytes(2, value.as_bytes(), out);
    }
    for &(t, v) in samples {
        put_key(2, LEN, out);
        put_varint(sample_len(t) as u64, out);
        put_key(1, FIXED64, out);
        out.extend_from_slice(&v.to_bits().to_le_bytes());
        put_key(2, VARINT, out);
        // int64 is a varint of the two's complement: a negative time takes ten bytes.
        put_varint(t as u64, out);
    }
}

/// The bytes of every label field of a `TimeSeries`, headers included.
fn labels_len(labels: &[(&str, &str)]) -> usize {
    labels.iter().map(|(k, v)| field_len(label_len(k, v))).sum()
}

fn label_len(name: &str, value: &str) -> usize {
    field_len(name.len()) + field_len(value.len())
}

fn sample_len(t: i64) -> usize {
    1 + 8 + 1 + varint_len(t as u64)
}

/// A length-delimited field of `len` payload bytes, with its one-byte key and length prefix.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_key(field: u8, wire: u8, out: &mut Vec<u8>) {
    out.push((field << 3) | wire);
}

fn put_bytes(field: u8, bytes: &[u8], out: &mut Vec<u8>) {
    put_key(field, LEN, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A decoded `TimeSeries`: labels and samples.
    pub type Decoded = (Vec<(String, String)>, Vec<(i64, f64)>);

    /// Decodes a `WriteRequest` as the fields above, strictly: the tests' check on the encoder.
    pub fn decode(mut b: &[u8]) -> Vec<Decoded> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut n = 0u64;
            for shift in (0..64).step_by(7) {
                let (byte, rest) = b.split_first().expect("truncated varint");
                *b = rest;
                n |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return n;
                }
            }
            panic!("varint too long")
        }
        fn field<'a>(b: &mut &'a [u8], want: u8) -> &'a [u8] {
            assert_eq!(varint(b) as u8 & 7, want);
            let len = varint(b) as usize;
            let (f, rest) = b.split_at(len);
            *b = rest;
            f
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
        let mut out = Vec::new();
        while !b.is_empty() {
            let mut ts = field(&mut b, LEN);
            let mut series: Decoded = Default::default();
            while !ts.is_empty() {
                let key = ts[0];
                let mut m = field(&mut ts, LEN);
                if key == 0x0a {
                    let name = text(field(&mut m, LEN));
                    series.0.push((name, text(field(&mut m, LEN))));
                } else {
                    assert_eq!((key, m[0]), (0x12, 0x09));
                    let v = f64::from_le_bytes(m[1..9].try_into().expect("8 bytes"));
                    m = &m[9..];
                    assert_eq!(varint(&mut m), 0x10);
                    series.1.push((varint(&mut m) as i64, v));
                }
                assert!(m.is_empty());
            }
            out.push(series);
        }
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_small_write_request_byte_for_byte() {
        let series = SeriesPoints {
            labels: labels(&[("job", "a"), ("__name__", "up"), ("empty", "")]),
            points: vec![(1000, 1.0)],
        };
        let got = fragments(&[series], 2000, 1 << 20);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0x0a, 40][..],                                          // timeseries, 40 bytes
            &[0x0a, 14, 0x0a, 8], b"__name__", &[0x12, 2], b"up",   // label, 14 bytes
            &[0x0a, 8, 0x0a, 3], b"job", &[0x12, 1], b"a",          // label, 8 bytes
            &[0x12, 12, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f],          // sample, 12 bytes: 1.0
            &[0x10, 0xe8, 0x07],                                      // timestamp 1000
        ]
        .concat();
        assert_eq!(got, vec![Fragment { samples: 1, bytes: expected }]);
    }

    #[test]
    fn negative_times_and_long_fields_use_long_varints() {
        let mut out = Vec::new();
        put_timeseries(&[], &[(-1, 0.0)], &mut out);
        let minus_one = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(out, [&[0x0a, 22, 0x12, 20, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10][..], &minus_one].concat());
        let long = "x".repeat(300);
        let mut out = Vec::new();
        put_timeseries(&[("__name__", &long)], &[(1, 2.5)], &mut out);
        assert_eq!(decode(&out), vec![(labels(&[("__name__", &long)]), vec![(1, 2.5)])]);
        assert_eq!(out.len(), 3 + 3 + (2 + 8) + (3 + 300) + (2 + 11));
        for n in [0, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut v = Vec::new();
            put_varint(n, &mut v);
            assert_eq!(v.len(), varint_len(n), "{n}");
        }
    }

    #[test]
    fn labels_are_sorted_deduplicated_and_empty_ones_dropped() {
        let l = labels(&[("b", "1"), ("a", "x"), ("__name__", "m"), ("a", "y"), ("c", "")]);
        assert_eq!(normalize(&l), vec![("__name__", "m"), ("a", "x"), ("b", "1")]);
        // Byte order: upper case before `_` before lower case.
        let l = labels(&[("a", "1"), ("_b", "2"), ("Z", "3")]);
        assert_eq!(normalize(&l), vec![("Z", "3"), ("_b", "2"), ("a", "1")]);
    }

    fn example() -> Vec<SeriesPoints> {
        (0..5)
            .map(|i| SeriesPoints {
                labels: labels(&[("__name__", "m"), ("host", &format!("h{i}"))]),
                points: (0..7).map(|p| (1_700_000_000_000 + p * 1000, (i * 10 + p) as f64 / 3.0)).collect(),
            })
            .collect()
    }

    #[test]
    fn fragments_concatenate_to_the_whole_request() {
        let series = example();
        let whole = fragments(&series, usize::MAX, usize::MAX);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].samples, 35);
        // Cut between series only: the joined fragments are the whole request, byte for byte.
        let parts = fragments(&series, 7, usize::MAX);
        assert_eq!(parts.len(), 5);
        assert_eq!(parts.iter().flat_map(|f| f.bytes.clone()).collect::<Vec<_>>(), whole[0].bytes);
        // Cut inside series: every sample once, in order, under its full labels.
        let parts = fragments(&series, 4, usize::MAX);
        assert_eq!(parts.iter().map(|f| f.samples).collect::<Vec<_>>(), [4, 4, 4, 4, 4, 4, 4, 4, 3]);
        let mut joined: Vec<Decoded> = Vec::new();
        for (labels, samples) in parts.iter().flat_map(|f| decode(&f.bytes)) {
            match joined.last_mut() {
                Some(last) if last.0 == labels => last.1.extend(samples),
                _ => joined.push((labels, samples)),
            }
        }
        assert_eq!(joined, decode(&whole[0].bytes));
    }

    #[test]
    fn fragments_respect_a_byte_budget_but_always_make_progress() {
        let series = example();
        let parts = fragments(&series, 1000, 200);
        assert!(parts.iter().all(|f| f.bytes.len() <= 200 && f.samples > 0), "{parts:?}");
        assert_eq!(parts.iter().map(|f| f.samples).sum::<u32>(), 35);
        // A budget smaller than one sample still carries one sample per fragment.
        let parts = fragments(&series, 1000, 1);
        assert_eq!(parts.len(), 35);
        assert!(fragments(&[SeriesPoints { labels: labels(&[("a", "b")]), points: vec![] }], 10, 10).is_empty());
    }
}
