//! One record of the write-ahead log: how it is written and read back (see `wal.rs`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{io, WalError};

/// The largest record read back: a frame (at most `MAX_WIRE_LEN`) and its host id.
const MAX_RECORD: usize = twinwatch_common::frame::MAX_WIRE_LEN + (1 << 16) + 10;
/// Length and checksum.
pub(super) const HEADER: usize = 8;

/// Where a record's frame starts, from the record's start, for a host id of `id_len` bytes.
pub(super) fn frame_at(id_len: usize) -> usize {
    HEADER + 10 + id_len
}

/// Appends one record to `out`.
pub(super) fn encode(out: &mut Vec<u8>, position: u64, id: &str, frame: &[u8]) {
    let body_len = 8 + 2 + id.len() + frame.len();
    let at = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(frame);
    let crc = crc32fast::hash(&out[at + HEADER..]);
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back: its position, host and where its frame is in the file.
pub(super) struct Record {
    pub position: u64,
    pub id: String,
    pub frame_offset: u64,
    pub frame_len: u32,
}

/// Reads a segment's records up to its end or its first bad one; `false` with them if it ended
/// on a bad one.
pub(super) fn read_segment(path: &Path) -> Result<(Vec<Record>, bool), WalError> {
    let file = File::open(path).map_err(io(path))?;
    let size = file.metadata().map_err(io(path))?.len();
    let mut file = std::io::BufReader::with_capacity(256 << 10, file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut body = Vec::new();
    loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut file, &mut header).map_err(io(path))? {
            0 => return Ok((records, true)),
            HEADER => {}
            _ => return Ok((records, false)),
        }
        let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        // A length past the file's end is a torn or damaged header: nothing is allocated for it.
        if !(10..=MAX_RECORD).contains(&len) || offset + (HEADER + len) as u64 > size {
            return Ok((records, false));
        }
        body.resize(len, 0);
        if read_full(&mut file, &mut body).map_err(io(path))? != len || crc32fast::hash(&body) != crc {
            return Ok((records, false));
        }
        let position = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        let id_len = usize::from(u16::from_le_bytes(body[8..10].try_into().unwrap_or_default()));
        let Some(id) = body.get(10..10 + id_len).and_then(|b| std::str::from_utf8(b).ok()) else {
            return Ok((records, false));
        };
        let frame_offset = offset + frame_at(id_len) as u64;
        records.push(Record { position, id: id.to_owned(), frame_offset, frame_len: (len - 10 - id_len) as u32 });
        offset += (HEADER + len) as u64;
    }
}

/// Reads until `buf` is full or the file ends; how much it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
