//! A host's rollup blocks of one tier and period, stored together in chunks.
//!
//! ```text
//! chunk := zstd( 3  count:varint  (index:varint  length:varint  block)* )
//! ```
//!
//! Blocks (see `block.rs`, uncompressed here) are in ascending series index, whole, and a chunk
//! holds at most a bound of bytes unless one block alone is larger; its key names its first
//! index, so the chunk holding a series is the last key at or before that series' own. Stored one
//! value per series, a thousand hosts' blocks were millions of values of a few hundred bytes, each
//! compressed alone and each costing sled a page entry; together they compress better and take a
//! few hundred values a host. A value whose first byte decompressed is a block version (1 or 2)
//! is one series' block alone, as stores before chunks wrote them: the series its key names.

use std::collections::BTreeMap;

use super::block::MAX_DECOMPRESSED;
use super::RollupError;
use crate::history::codec::{put_varint, CodecError, Cursor};

const VERSION: u8 = 3;

/// Blocks by series index, each still encoded (uncompressed).
pub type Blocks = BTreeMap<u32, Vec<u8>>;

/// Encodes `blocks` into chunks of whole blocks, each at most `max_bytes` before compression
/// unless one block alone is larger: `(first index, bytes)` per chunk, none for no blocks.
pub fn encode(blocks: &Blocks, max_bytes: usize) -> Vec<(u32, Vec<u8>)> {
    // The version byte and a count of at most a 5-byte varint.
    const HEADER: usize = 6;
    let mut chunks = Vec::new();
    let mut group: Vec<u8> = Vec::new();
    let mut first = None;
    let mut count = 0u64;
    let mut entry = Vec::new();
    let finish = |chunks: &mut Vec<(u32, Vec<u8>)>, group: &mut Vec<u8>, first: u32, count: u64| {
        let mut out = Vec::with_capacity(HEADER + group.len());
        out.push(VERSION);
        put_varint(&mut out, count);
        out.extend_from_slice(group);
        chunks.push((first, crate::history::zstd_context::compress(&out, 3)));
        group.clear();
    };
    for (&idx, block) in blocks {
        entry.clear();
        put_varint(&mut entry, u64::from(idx));
        put_varint(&mut entry, block.len() as u64);
        entry.extend_from_slice(block);
        if let Some(f) = first.filter(|_| HEADER + group.len() + entry.len() > max_bytes) {
            finish(&mut chunks, &mut group, f, count);
            first = None;
            count = 0;
        }
        first.get_or_insert(idx);
        group.extend_from_slice(&entry);
        count += 1;
    }
    if let Some(f) = first {
        finish(&mut chunks, &mut group, f, count);
    }
    chunks
}

/// Adds the blocks of one stored value to `blocks` (only series `only`'s, if given). `key_index`
/// is the index its key names: the series of a block stored alone.
pub fn decode(key_index: u32, bytes: &[u8], only: Option<u32>, blocks: &mut Blocks) -> Result<(), RollupError> {
    let raw = crate::history::zstd_context::decompress(bytes, MAX_DECOMPRESSED).map_err(RollupError::Zstd)?;
    let mut c = Cursor::new(&raw);
    match c.byte()? {
        1 | 2 => {
            if only.is_none_or(|o| o == key_index) {
                blocks.insert(key_index, raw);
            }
            Ok(())
        }
        VERSION => {
            // Each entry takes at least three bytes: index, length and a version byte.
            let n = c.count(3)?;
            for _ in 0..n {
                let idx = u32::try_from(c.varint()?).map_err(|_| CodecError::Corrupt("rollup series index"))?;
                let len = usize::try_from(c.varint()?).map_err(|_| CodecError::Corrupt("rollup block length"))?;
                let block = c.take(len)?;
                if only.is_none_or(|o| o == idx) {
                    blocks.insert(idx, block.to_vec());
                }
            }
            if c.remaining() > 0 {
                return Err(CodecError::Corrupt("rollup chunk has trailing bytes").into());
            }
            Ok(())
        }
        _ => Err(CodecError::Corrupt("rollup version").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::rollup::{decode_body, encode as encode_alone, encode_body, fold, Bucket, Tier};

    const PERIOD: i64 = 1_800_000_000_000 / (6 * 3_600_000) * (6 * 3_600_000);

    fn block(idx: u32) -> Vec<Bucket> {
        let points = (0..360).map(|i| (PERIOD + i * 60_000, f64::from(idx) * 1000.0 + (i % 17) as f64 * 0.37));
        fold(points, Tier::Minute.step_ms())
    }

    #[test]
    fn chunks_hold_whole_blocks_within_their_bound_and_give_each_series_back() {
        let blocks: Blocks =
            (0..300u32).map(|i| (i * 2, encode_body(Tier::Minute, PERIOD, &block(i * 2), None))).collect();
        let chunks = encode(&blocks, 7_000);
        assert!(chunks.len() > 5, "{} chunks", chunks.len());
        let firsts: Vec<u32> = chunks.iter().map(|c| c.0).collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]) && firsts[0] == 0);
        let mut back = Blocks::new();
        for (first, bytes) in &chunks {
            let raw = crate::history::zstd_context::decompress(bytes, MAX_DECOMPRESSED).unwrap();
            let mut part = Blocks::new();
            decode(*first, bytes, None, &mut part).unwrap();
            assert!(raw.len() <= 7_000 || part.len() == 1, "{} bytes in {} blocks", raw.len(), part.len());
            assert_eq!(part.keys().next(), Some(first), "a key names its chunk's first series");
            back.extend(part);
        }
        assert_eq!(back, blocks);
        // The chunk at or before a series holds it; picking one series leaves the others.
        let idx = 401;
        let (first, bytes) = chunks.iter().rev().find(|c| c.0 <= idx).unwrap();
        let mut one = Blocks::new();
        decode(*first, bytes, Some(idx - 1), &mut one).unwrap();
        assert_eq!(one.len(), 1);
        let got = decode_body(Tier::Minute, PERIOD, &one[&(idx - 1)]).unwrap();
        assert_eq!(got, block(idx - 1));
        decode(*first, bytes, Some(idx), &mut one).unwrap();
        assert_eq!(one.len(), 1, "an odd index is not stored");
        assert!(encode(&Blocks::new(), 7_000).is_empty());
    }

    #[test]
    fn a_block_stored_alone_reads_as_the_series_its_key_names() {
        let alone = encode_alone(Tier::Minute, PERIOD, &block(9), None);
        let mut blocks = Blocks::new();
        decode(9, &alone, None, &mut blocks).unwrap();
        assert_eq!(decode_body(Tier::Minute, PERIOD, &blocks[&9]).unwrap(), block(9));
        let mut none = Blocks::new();
        decode(9, &alone, Some(8), &mut none).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn damaged_chunks_are_errors() {
        let blocks: Blocks = (0..3u32).map(|i| (i, encode_body(Tier::Hour, PERIOD, &block(i), None))).collect();
        let (_, good) = encode(&blocks, usize::MAX).remove(0);
        let raw = crate::history::zstd_context::decompress(&good, MAX_DECOMPRESSED).unwrap();
        for cut in [1, 2, raw.len() / 2, raw.len() - 1] {
            let bad = crate::history::zstd_context::compress(&raw[..cut], 1);
            assert!(decode(0, &bad, None, &mut Blocks::new()).is_err(), "cut at {cut}");
        }
        let mut trailing = raw.clone();
        trailing.push(0);
        let bad = crate::history::zstd_context::compress(&trailing, 1);
        assert!(decode(0, &bad, None, &mut Blocks::new()).is_err());
        let mut version = raw;
        version[0] = 9;
        let bad = crate::history::zstd_context::compress(&version, 1);
        assert!(decode(0, &bad, None, &mut Blocks::new()).is_err());
        assert!(decode(0, b"not zstd", None, &mut Blocks::new()).is_err());
    }
}
