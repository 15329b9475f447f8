//! zstd with one reused context per thread.
//!
//! `zstd::bulk::compress` and `decompress` build a fresh context on every call, and building
//! one (allocating and clearing its tables) costs more than compressing a small block:
//! compaction compresses three rollup blocks per series, checkpoints a segment per window, and
//! queries decompress a segment per window read. These keep one compressor and one decompressor
//! per thread instead, and size each output by the frame's declared content size (within the
//! caller's cap) rather than reserving the cap.

use std::cell::RefCell;
use std::io;

use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` at `level` into a new buffer.
pub fn compress(data: &[u8], level: i32) -> Vec<u8> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let run = |c: &mut Compressor<'static>| {
            c.set_compression_level(level)?;
            c.compress(data)
        };
        let result = match cell.as_mut() {
            Some(c) => run(c),
            None => Compressor::new(level).and_then(|c| run(cell.insert(c))),
        };
        // Only a failure to allocate the context could fail here, and that aborts anyway.
        result.expect("compressing into a growable buffer cannot fail")
    })
}

/// Decompresses one frame of at most `cap` bytes; more, or a damaged frame, is an error.
pub fn decompress(data: &[u8], cap: usize) -> io::Result<Vec<u8>> {
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n > cap as u64 => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame declares {n} bytes, over {cap}")));
        }
        Ok(Some(n)) => n as usize,
        _ => cap,
    };
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = match cell.as_mut() {
            Some(d) => d,
            None => cell.insert(Decompressor::new()?),
        };
        let mut out = Vec::with_capacity(size);
        d.decompress_to_buffer(data, &mut out)?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_any_level_with_one_context() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for level in [1, 3, 9, 1] {
            let packed = compress(&data, level);
            assert!(packed.len() < data.len() / 10);
            assert_eq!(decompress(&packed, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn refuses_more_than_the_cap_and_damaged_frames() {
        let data = vec![7u8; 10_000];
        let packed = compress(&data, 3);
        assert!(decompress(&packed, 9_999).is_err());
        assert!(decompress(&packed[..packed.len() - 3], 10_000).is_err());
        assert!(decompress(b"not zstd at all", 10_000).is_err());
        assert_eq!(decompress(&packed, 10_000).unwrap(), data);
    }

    #[test]
    fn a_frame_without_a_declared_size_is_held_to_the_cap() {
        let data = vec![1u8; 5_000];
        let mut packed = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut packed, 3).unwrap();
        io::Write::write_all(&mut enc, &data).unwrap();
        enc.finish().unwrap();
        assert!(zstd::zstd_safe::get_frame_content_size(&packed).unwrap().is_none());
        assert_eq!(decompress(&packed, 5_000).unwrap(), data);
        assert!(decompress(&packed, 4_000).is_err());
    }
}
