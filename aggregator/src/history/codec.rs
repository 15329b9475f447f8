//! Column encodings for regular-interval metrics, made to be squeezed further by zstd.
//!
//! - Timestamps and integer values: delta-of-delta, zig-zagged, as LEB128 varints. A series read
//!   every second at a steady pace, or a counter growing at a steady rate, costs one zero byte per
//!   point; zstd then folds runs of zeros (and the timestamp columns every series of a host
//!   shares) to almost nothing.
//! - Floats: the XOR with the previous value's bits, as a header byte (significant bytes, trailing
//!   zero bytes) and only the significant bytes. An unchanged value is one zero byte.
//!
//! Decoders are bounded by their input: they read from a [`Cursor`] that fails on truncation
//! instead of panicking, and never allocate more than the input could describe.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("column ends early")]
    Truncated,
    #[error("varint longer than 64 bits")]
    Overlong,
    #[error("corrupt column: {0}")]
    Corrupt(&'static str),
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// Reads columns back, failing cleanly at the end of its input.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    pub fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.bytes.get(self.at).ok_or(CodecError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(CodecError::Truncated)?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(CodecError::Overlong);
                }
                return Ok(v);
            }
        }
        Err(CodecError::Overlong)
    }

    pub fn signed(&mut self) -> Result<i64, CodecError> {
        self.varint().map(unzigzag)
    }

    /// A count of items each taking at least `min_bytes`, checked against what is left, so a
    /// corrupt count cannot make a decoder reserve memory the input could not fill.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return Err(CodecError::Corrupt("count larger than the data"));
        }
        Ok(n as usize)
    }
}

/// Delta-of-delta state over a sequence of integers, one value at a time: the first is written
/// whole, every later one as the change in its delta.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dod {
    started: bool,
    prev: i64,
    prev_delta: i64,
}

impl Dod {
    pub fn put(&mut self, out: &mut Vec<u8>, v: i64) {
        if self.started {
            let delta = v.wrapping_sub(self.prev);
            put_signed(out, delta.wrapping_sub(self.prev_delta));
            self.prev_delta = delta;
        } else {
            put_signed(out, v);
            self.started = true;
        }
        self.prev = v;
    }

    pub fn read(&mut self, c: &mut Cursor<'_>) -> Result<i64, CodecError> {
        let v = if self.started {
            let delta = self.prev_delta.wrapping_add(c.signed()?);
            self.prev_delta = delta;
            self.prev.wrapping_add(delta)
        } else {
            self.started = true;
            c.signed()?
        };
        self.prev = v;
        Ok(v)
    }
}

/// Delta-of-delta encoding of a sequence of integers (timestamps or integer values).
pub fn put_dod(out: &mut Vec<u8>, values: impl IntoIterator<Item = i64>) {
    let mut dod = Dod::default();
    for v in values {
        dod.put(out, v);
    }
}

/// Reads `n` values written by [`put_dod`].
pub fn read_dod(c: &mut Cursor<'_>, n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
    let mut dod = Dod::default();
    for _ in 0..n {
        out.push(dod.read(c)?);
    }
    Ok(())
}

/// XOR state over float bits, one value at a time: each against the one before it, as a header
/// byte (significant bytes, trailing zero bytes) and the significant bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Xor {
    prev: u64,
}

impl Xor {
    /// The state after a value with these bits.
    pub fn after(prev: u64) -> Self {
        Xor { prev }
    }

    pub fn put(&mut self, out: &mut Vec<u8>, bits: u64) {
        let x = bits ^ self.prev;
        self.prev = bits;
        if x == 0 {
            out.push(0);
            return;
        }
        let trailing = x.trailing_zeros() / 8;
        let significant = 8 - x.leading_zeros() / 8 - trailing;
        out.push(((significant as u8) << 4) | trailing as u8);
        let bytes = (x >> (trailing * 8)).to_le_bytes();
        out.extend_from_slice(&bytes[..significant as usize]);
    }

    pub fn read(&mut self, c: &mut Cursor<'_>) -> Result<u64, CodecError> {
        let header = c.byte()?;
        if header != 0 {
            let (significant, trailing) = ((header >> 4) as usize, (header & 0x0f) as usize);
            if significant == 0 || significant + trailing > 8 {
                return Err(CodecError::Corrupt("float header"));
            }
            let mut bytes = [0u8; 8];
            bytes[..significant].copy_from_slice(c.take(significant)?);
            self.prev ^= u64::from_le_bytes(bytes) << (trailing * 8);
        }
        Ok(self.prev)
    }
}

/// XOR encoding of float bits: each value against the one before it.
pub fn put_xor(out: &mut Vec<u8>, values: impl IntoIterator<Item = u64>) {
    let mut xor = Xor::default();
    for bits in values {
        xor.put(out, bits);
    }
}

/// Reads `n` values written by [`put_xor`].
pub fn read_xor(c: &mut Cursor<'_>, n: usize, out: &mut Vec<u64>) -> Result<(), CodecError> {
    let mut xor = Xor::default();
    for _ in 0..n {
        out.push(xor.read(c)?);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator for property tests (xorshift64*).
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        pub fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn dod_round_trip(values: &[i64]) -> usize {
        let mut out = Vec::new();
        put_dod(&mut out, values.iter().copied());
        let mut back = Vec::new();
        let mut c = Cursor::new(&out);
        read_dod(&mut c, values.len(), &mut back).unwrap();
        assert_eq!(back, values);
        assert!(c.is_empty());
        out.len()
    }

    #[test]
    fn regular_timestamps_cost_a_byte_each_and_irregular_ones_round_trip() {
        let regular: Vec<i64> = (0..1000).map(|i| 1_700_000_000_000 + i * 1000).collect();
        let len = dod_round_trip(&regular);
        assert!(len <= 1000 + 8, "{len}");
        let mut rng = Rng(7);
        let irregular: Vec<i64> = (0..1000).map(|i| i * 1000 + rng.below(40) as i64 - 20).collect();
        dod_round_trip(&irregular);
        dod_round_trip(&[i64::MIN, i64::MAX, 0, -1, i64::MAX, i64::MIN]);
        dod_round_trip(&[]);
    }

    #[test]
    fn counters_with_resets_round_trip() {
        let mut v = Vec::new();
        let mut c = 0i64;
        for i in 0..500 {
            c = if i % 97 == 0 { 3 } else { c + 1500 + (i % 7) };
            v.push(c);
        }
        dod_round_trip(&v);
    }

    #[test]
    fn floats_round_trip_bit_exactly_with_nan_and_infinities() {
        let values = [
            0.0,
            -0.0,
            1.5,
            1.5,
            f64::NAN,
            f64::from_bits(0x7ff8_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            0.1 + 0.2,
        ];
        let bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        let mut out = Vec::new();
        put_xor(&mut out, bits.iter().copied());
        let mut back = Vec::new();
        read_xor(&mut Cursor::new(&out), bits.len(), &mut back).unwrap();
        assert_eq!(back, bits);
        let mut rng = Rng(3);
        let bits: Vec<u64> = (0..2000).map(|_| rng.next()).collect();
        let mut out = Vec::new();
        put_xor(&mut out, bits.iter().copied());
        let mut back = Vec::new();
        read_xor(&mut Cursor::new(&out), bits.len(), &mut back).unwrap();
        assert_eq!(back, bits);
    }

    #[test]
    fn truncated_and_corrupt_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        put_dod(&mut out, [1i64 << 40, 5, 9]);
        for cut in 0..out.len() {
            let mut back = Vec::new();
            assert!(read_dod(&mut Cursor::new(&out[..cut]), 3, &mut back).is_err());
        }
        assert_eq!(Cursor::new(&[0xff; 11]).varint(), Err(CodecError::Overlong));
        let mut back = Vec::new();
        assert!(read_xor(&mut Cursor::new(&[0x90]), 1, &mut back).is_err());
        assert!(Cursor::new(&[0xff, 0xff, 0x03]).count(1).is_err());
    }
}
