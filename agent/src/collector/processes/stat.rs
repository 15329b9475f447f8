//! One process's /proc/[pid]/stat: read into a reused buffer and parsed as bytes, so a collection
//! allocates nothing per process.

use std::io::Read;
use std::path::Path;

/// A stat file longer than this is not one (the real ones are a few hundred bytes).
const STAT_MAX: usize = 64 * 1024;

/// What the collector needs from one /proc/[pid]/stat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat<'a> {
    pub(super) comm: &'a [u8],
    pub(super) state: u8,
    /// utime + stime, in clock ticks.
    pub(super) ticks: u64,
    pub(super) threads: u64,
    /// Clock ticks after boot.
    pub(super) start: u64,
    pub(super) rss_pages: u64,
}

/// Parses a /proc/[pid]/stat line; `None` if it is truncated or garbled.
///
/// The name may hold spaces and parentheses (a process names itself), so it ends at the last ')'.
/// Bytes, not text: a name need not be UTF-8, and such a process still counts.
pub(super) fn parse_stat(line: &[u8]) -> Option<Stat<'_>> {
    let open = line.iter().position(|&b| b == b'(')?;
    let close = line.iter().rposition(|&b| b == b')')?;
    let comm = line.get(open + 1..close)?;
    let mut fields = line[close + 1..].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    // Numbered as in proc(5): the state is field 3.
    let state = match fields.next()? {
        [s] if s.is_ascii_alphabetic() => *s,
        _ => return None,
    };
    let utime = number(fields.nth(10)?)?; // 14
    let stime = number(fields.next()?)?; // 15
    let threads = number(fields.nth(4)?)?; // 20
    let start = number(fields.nth(1)?)?; // 22
    let rss_pages = number(fields.nth(1)?)?; // 24
    Some(Stat { comm, state, ticks: utime.saturating_add(stime), threads, start, rss_pages })
}

/// An unsigned decimal field.
fn number(field: &[u8]) -> Option<u64> {
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// A directory entry's name as a pid, if it is one.
pub(super) fn parse_pid(name: &[u8]) -> Option<u32> {
    u32::try_from(number(name)?).ok()
}

/// Reads a small file into `buf` with plain reads, returning its length. No size probing: /proc
/// files report a size of 0, and `read_to_end` would spend two extra system calls finding out.
pub(super) fn read_small(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len >= STAT_MAX {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            buf.resize((len * 2).max(1024), 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
