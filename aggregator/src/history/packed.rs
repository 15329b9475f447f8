//! One series' points in one raw window while they wait for a checkpoint, packed as they arrive.
//!
//! A point kept as `(i64, u64)` costs 16 bytes, and a thousand hosts of five hundred series keep
//! half a minute of them between checkpoints. Packed like a stored segment's columns, interleaved
//! (timestamp as delta-of-delta; an integer value as delta-of-delta, a float as the XOR with the
//! one before), a series read every second costs two or three bytes a point. Points are kept in
//! arrival order; [`Packed::unpack`] gives them back as a [`Column`] for the caller to sort.

use super::codec::{Cursor, Dod, Xor};
use super::segment::Column;

#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub float: bool,
    pub counter: bool,
    pub scale: f64,
    len: u32,
    times: Dod,
    ints: Dod,
    floats: Xor,
    bytes: Vec<u8>,
}

impl Packed {
    pub fn new(float: bool, counter: bool, scale: f64) -> Self {
        Packed {
            float,
            counter,
            scale,
            len: 0,
            times: Dod::default(),
            ints: Dod::default(),
            floats: Xor::default(),
            bytes: Vec::new(),
        }
    }

    /// Packs every point of `col`, in its order.
    pub fn from_column(col: &Column) -> Self {
        let mut packed = Packed::new(col.float, col.counter, col.scale);
        for &(ts, bits) in &col.points {
            packed.push(ts, bits);
        }
        packed
    }

    pub fn push(&mut self, ts: i64, bits: u64) {
        self.times.put(&mut self.bytes, ts);
        if self.float {
            self.floats.put(&mut self.bytes, bits);
        } else {
            self.ints.put(&mut self.bytes, bits as i64);
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Bytes the points take.
    #[cfg(test)]
    pub fn packed_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The points as a column, in the order they were pushed.
    pub fn unpack(&self) -> Column {
        let mut col = Column::new(self.float, self.counter, self.scale);
        col.points.reserve_exact(self.len());
        let (mut times, mut ints, mut floats) = (Dod::default(), Dod::default(), Xor::default());
        let mut c = Cursor::new(&self.bytes);
        for _ in 0..self.len {
            // Only this type writes these bytes, so a read cannot fail; stop rather than panic.
            let point = times.read(&mut c).and_then(|ts| {
                let bits = if self.float { floats.read(&mut c)? } else { ints.read(&mut c)? as u64 };
                Ok((ts, bits))
            });
            match point {
                Ok(p) => col.points.push(p),
                Err(_) => break,
            }
        }
        col
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::codec::tests::Rng;

    #[test]
    fn points_come_back_exactly_in_arrival_order() {
        let mut rng = Rng(7);
        for float in [false, true] {
            let mut col = Column::new(float, !float, 0.01);
            let mut ts = 1_700_000_000_000i64;
            let mut v = 0i64;
            for i in 0..2_000 {
                // Jitter, a late point now and then, and values of every size and sign.
                ts += if i % 97 == 0 { -5_000 } else { 1_000 + rng.below(9) as i64 };
                v = v.wrapping_add(rng.below(1 << (i % 60)) as i64 - (1 << (i % 60)) / 2);
                let bits = if float { (v as f64 / 7.0).to_bits() } else { v as u64 };
                col.points.push((ts, bits));
            }
            col.points.push((ts + 1, f64::NAN.to_bits()));
            col.points.push((i64::MIN, u64::MAX));
            col.points.push((i64::MAX, 0));
            let packed = Packed::from_column(&col);
            assert_eq!(packed.len(), col.points.len());
            assert_eq!(packed.unpack(), col);
        }
    }

    #[test]
    fn a_steady_series_costs_a_few_bytes_a_point() {
        let mut packed = Packed::new(false, true, 1.0);
        let mut gauge = Packed::new(true, false, 1.0);
        for i in 0..30 {
            packed.push(1_700_000_000_000 + i * 1000 + (i % 3), 1_000_000 + i as u64 * 250);
            gauge.push(1_700_000_000_000 + i * 1000, if i % 10 == 0 { 0.5f64 } else { 0.25 }.to_bits());
        }
        // The first point carries the whole timestamp and value; the rest are small changes.
        assert!(packed.packed_bytes() <= 16 + 29 * 3, "{} bytes", packed.packed_bytes());
        assert!(gauge.packed_bytes() <= 16 + 29 * 4, "{} bytes", gauge.packed_bytes());
    }
}
