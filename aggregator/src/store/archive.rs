//! The archive: history in sled, its compaction into rollups, and retention.
//!
//! ```text
//! s <host> 0x00 <index u32>                      -> series key (bincode)
//! r <window i64> <host> 0x00 <segment u32> <chunk u16>  -> part of a raw segment (history/segment.rs)
//! u <tier u8> <period i64> <host> 0x00 <first index u32> -> rollup blocks of whole series (history/rollup/chunk.rs)
//! ```
//! (Prefixes named in `keys.rs`.)
//! Times come first in the keys, so retention deletes a prefix of each key space.
//!
//! A checkpoint adds a segment (number 1 and up) for each window it has points for, stored in
//! chunks of whole series, each a segment of its own of at most [`CHUNK_BYTES`] (a store from
//! before chunks has keys without the chunk number; they read the same). Once a
//! window is over, compaction merges its segments into segment 0 and computes the window's
//! rollups from the merged points: a window with only segment 0 is *rolled*. Late points (a
//! backfill) add a segment to an old window, which is then compacted and rolled again, so rollups
//! always equal folding the raw points. Queries read rolled windows from the rollup blocks and
//! the rest from raw segments and the recorder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use twinwatch_common::sample::SeriesKey;

use super::keys;
use crate::history::recorder::{Frozen, WINDOW_MS};
use crate::history::rollup::{self, align, chunk, Bucket, RollupError, Tier};
use crate::history::segment::{self, Column, Columns, SegmentError};
use crate::history::Retention;

/// How long after a window ends it is compacted: checkpoints of its last points are in by then.
pub const GRACE_MS: i64 = 90_000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("history store: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error("stored series key does not decode: {0}")]
    Series(String),
    /// A read would hold more raw points than its budget allows.
    #[error("the range holds more than {limit} raw points")]
    TooManyPoints { limit: usize },
}

/// What one compaction or retention pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub windows_compacted: u64,
    pub segments_merged: u64,
    pub raw_windows_deleted: u64,
    pub rollup_blocks_deleted: u64,
}

pub struct Archive {
    tree: sled::Tree,
    /// Windows with segments not yet compacted, per host.
    dirty: Mutex<BTreeSet<(String, i64)>>,
    /// The number the next raw segment of a (host, window) takes, for windows this process wrote:
    /// looked up once in sled, where a reverse scan pages in the window's segments (at a
    /// thousand hosts, tens of megabytes of sled's cache).
    next_segment: Mutex<HashMap<(String, i64), u32>>,
    /// Applying a batch that changes segments is exclusive; readers of segments share. Only
    /// the apply is exclusive: the work before it runs beside readers.
    segments: RwLock<()>,
    /// One compaction or retention pass at a time: each reads rollup blocks and writes them back.
    passes: Mutex<()>,
    pub retention: Retention,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn series_prefix(host: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + host.len() + 4);
    k.push(keys::SERIES);
    k.extend_from_slice(host.as_bytes());
    k.push(0);
    k
}

fn raw_prefix(window: i64, host: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + host.len() + 4);
    k.push(keys::RAW);
    k.extend_from_slice(&window.to_be_bytes());
    k.extend_from_slice(host.as_bytes());
    k.push(0);
    k
}

/// The most one raw chunk holds before compression.
///
/// sled writes a tree node of more than a quarter of its 512 KiB log segment to a file of its
/// own, and its cache then counts the node at the size of the pointer to that file: such nodes
/// are never evicted. With whole segments as values (13 KiB a checkpoint, hundreds once a window
/// is compacted) most leaves were that big, and at a thousand hosts the cache grew by 25 MiB a
/// minute. A leaf splits past 16 items, so 17 chunks of this size and their keys stay inline.
pub const CHUNK_BYTES: usize = 7_000;

fn raw_key(prefix: &[u8], segment: u32, chunk: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 6);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&segment.to_be_bytes());
    k.extend_from_slice(&u16::try_from(chunk).unwrap_or(u16::MAX).to_be_bytes());
    k
}

fn rollup_prefix(tier: Tier, period: i64, host: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + host.len() + 4);
    k.push(keys::ROLLUP);
    k.push(tier.tag());
    k.extend_from_slice(&period.to_be_bytes());
    k.extend_from_slice(host.as_bytes());
    k.push(0);
    k
}

fn rollup_key(tier: Tier, period: i64, host: &str, idx: u32) -> Vec<u8> {
    let mut k = rollup_prefix(tier, period, host);
    k.extend_from_slice(&idx.to_be_bytes());
    k
}

/// The series index a rollup key ends with: the first of its chunk.
fn rollup_index(key: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(key.get(key.len().checked_sub(4)?..)?.try_into().ok()?))
}

/// `(window, host, segment)` of a raw key, with or without its chunk number.
fn parse_raw(key: &[u8]) -> Option<(i64, String, u32)> {
    let window = i64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    let rest = key.get(9..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let numbers = rest.get(nul + 1..)?;
    if numbers.len() != 4 && numbers.len() != 6 {
        return None;
    }
    let seg = u32::from_be_bytes(numbers[..4].try_into().ok()?);
    Some((window, String::from_utf8_lossy(&rest[..nul]).into_owned(), seg))
}

impl Archive {
    /// Opens the history key spaces of `tree`, finding the windows left uncompacted.
    pub fn open(tree: sled::Tree, retention: Retention) -> Result<Archive, ArchiveError> {
        let mut dirty = BTreeSet::new();
        for item in tree.scan_prefix([keys::RAW]) {
            let (k, _) = item?;
            if let Some((window, host, seg)) = parse_raw(&k) {
                if seg > 0 {
                    dirty.insert((host, window));
                }
            }
        }
        Ok(Archive {
            tree,
            dirty: Mutex::new(dirty),
            next_segment: Mutex::new(HashMap::new()),
            segments: RwLock::new(()),
            passes: Mutex::new(()),
            retention,
        })
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, i64)>> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_segments(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), u32>> {
        self.next_segment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the number for a new raw segment of `host`'s `window` (whose keys start `prefix`):
    /// one past the last this process took, or past the highest stored.
    fn take_segment_number(&self, host: &str, window: i64, prefix: &[u8]) -> Result<u32, ArchiveError> {
        let key = (host.to_owned(), window);
        if let Some(next) = self.next_segments().get_mut(&key) {
            *next += 1;
            return Ok(*next - 1);
        }
        let last = self.tree.scan_prefix(prefix).keys().next_back().transpose()?;
        let next = last.and_then(|k| parse_raw(&k)).map_or(1, |(_, _, s)| s + 1).max(1);
        self.next_segments().insert(key, next + 1);
        Ok(next)
    }

    /// Every host's registered series, by index.
    pub fn series(&self) -> Result<BTreeMap<String, Vec<SeriesKey>>, ArchiveError> {
        let mut out: BTreeMap<String, Vec<SeriesKey>> = BTreeMap::new();
        for item in self.tree.scan_prefix([keys::SERIES]) {
            let (k, v) = item?;
            let Some(nul) = k.iter().position(|&b| b == 0) else { continue };
            let host = String::from_utf8_lossy(&k[1..nul]).into_owned();
            let (key, _): (SeriesKey, _) =
                bincode::decode_from_slice(&v, bincode_config()).map_err(|e| ArchiveError::Series(e.to_string()))?;
            let keys = out.entry(host).or_default();
            let idx = u32::from_be_bytes(k[nul + 1..].try_into().map_err(|_| ArchiveError::Series("index".into()))?);
            if idx as usize != keys.len() {
                return Err(ArchiveError::Series(format!("series index {idx} out of order")));
            }
            keys.push(key);
        }
        Ok(out)
    }

    /// Adds a checkpoint's series and segments of `host` to `batch`. Call `Archive::applied`
    /// once the batch is applied.
    pub fn checkpoint(&self, batch: &mut sled::Batch, host: &str, frozen: &Frozen) -> Result<(), ArchiveError> {
        for (idx, key) in &frozen.new_series {
            let mut k = series_prefix(host);
            k.extend_from_slice(&idx.to_be_bytes());
            batch.insert(k, bincode::encode_to_vec(key, bincode_config()).expect("series keys always encode"));
        }
        for (&window, columns) in frozen.windows.iter() {
            let prefix = raw_prefix(window, host);
            let next = self.take_segment_number(host, window, &prefix)?;
            for (chunk, bytes) in segment::encode_chunks(window, columns, 1, CHUNK_BYTES).into_iter().enumerate() {
                batch.insert(raw_key(&prefix, next, chunk), bytes);
            }
        }
        Ok(())
    }

    /// Applies a checkpoint batch built with [`Archive::checkpoint`].
    pub fn apply(&self, batch: sled::Batch, host: &str, frozen: &Frozen) -> Result<(), ArchiveError> {
        let _w = self.segments.write().unwrap_or_else(|e| e.into_inner());
        self.tree.apply_batch(batch)?;
        let mut dirty = self.dirty();
        for &window in frozen.windows.keys() {
            dirty.insert((host.to_owned(), window));
        }
        Ok(())
    }

    /// Windows of `host` whose rollups are not yet computed.
    pub fn unrolled(&self, host: &str) -> BTreeSet<i64> {
        self.dirty().iter().filter(|(h, _)| h == host).map(|(_, w)| *w).collect()
    }

    /// Every stored point of series `idx` of `host` in `[from, to)`.
    pub fn raw(&self, host: &str, idx: u32, from: i64, to: i64) -> Result<Option<Column>, ArchiveError> {
        let mut unlimited = usize::MAX;
        self.raw_bounded(host, idx, from, to, &mut unlimited)
    }

    /// [`Archive::raw`], taking the points it keeps from `budget` and failing with
    /// [`ArchiveError::TooManyPoints`] once it is spent, so that a wide query stops at a memory
    /// bound instead of decoding the whole retention.
    pub fn raw_bounded(
        &self,
        host: &str,
        idx: u32,
        from: i64,
        to: i64,
        budget: &mut usize,
    ) -> Result<Option<Column>, ArchiveError> {
        let limit = *budget;
        let _r = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Option<Column> = None;
        let Some((first, last)) = self.stored_times(&[keys::RAW])? else {
            return Ok(None);
        };
        let mut window = align(from.max(first), WINDOW_MS);
        while window < to && window <= last {
            for item in self.tree.scan_prefix(raw_prefix(window, host)) {
                let (_, v) = item?;
                if let Some(mut col) = segment::decode(window, &v, Some(idx))?.remove(&idx) {
                    col.points.retain(|p| p.0 >= from && p.0 < to);
                    *budget = budget.checked_sub(col.points.len()).ok_or(ArchiveError::TooManyPoints { limit })?;
                    match &mut out {
                        Some(o) => o.merge(&col),
                        None => out = Some(col),
                    }
                }
            }
            window += WINDOW_MS;
        }
        Ok(out)
    }

    /// Stored rollup buckets of series `idx` of `host` at `tier` starting in `[from, to)`.
    pub fn buckets(&self, tier: Tier, host: &str, idx: u32, from: i64, to: i64) -> Result<Vec<Bucket>, ArchiveError> {
        let mut out = Vec::new();
        let Some((first, last)) = self.stored_times(&[keys::ROLLUP, tier.tag()])? else {
            return Ok(out);
        };
        let mut period = align(from.max(first), tier.period_ms());
        while period < to && period <= last {
            // The chunk holding the series is the last key at or before the series' own.
            let prefix = rollup_prefix(tier, period, host);
            let found = self.tree.range(prefix.as_slice()..=rollup_key(tier, period, host, idx).as_slice()).next_back();
            if let Some((k, v)) = found.transpose()? {
                let mut blocks = chunk::Blocks::new();
                if let Some(first) = rollup_index(&k).filter(|_| k.starts_with(&prefix)) {
                    chunk::decode(first, &v, Some(idx), &mut blocks)?;
                }
                if let Some(body) = blocks.get(&idx) {
                    let stored = rollup::decode_body(tier, period, body)?;
                    out.extend(stored.into_iter().filter(|b| b.start_ms >= from && b.start_ms < to));
                }
            }
            period += tier.period_ms();
        }
        Ok(out)
    }

    /// The first and last time of the keys starting with `prefix` (whose time follows it).
    fn stored_times(&self, prefix: &[u8]) -> Result<Option<(i64, i64)>, ArchiveError> {
        let time = |k: sled::IVec| {
            k.get(prefix.len()..prefix.len() + 8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes)
        };
        let mut keys = self.tree.scan_prefix(prefix).keys();
        let first = keys.next().transpose()?.and_then(time);
        let last = keys.next_back().transpose()?.and_then(time);
        Ok(first.map(|f| (f, last.unwrap_or(f))))
    }

    /// Compacts every window that ended more than [`GRACE_MS`] before `now_ms` and has new
    /// segments, computing its rollups.
    pub fn compact(&self, now_ms: i64) -> Result<Pass, ArchiveError> {
        self.compact_hosts(now_ms, |_| true)
    }

    /// [`Archive::compact`] for the hosts `host` picks: the checkpoint pass compacts each host
    /// in its own slot, so a window's end is a few hosts' work a second rather than every host's
    /// at once (at a thousand hosts, seconds of sled writes that held ingest's flushes up).
    pub fn compact_hosts(&self, now_ms: i64, host: impl Fn(&str) -> bool) -> Result<Pass, ArchiveError> {
        let _pass = self.passes.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<(String, i64)> =
            self.dirty().iter().filter(|(h, w)| w + WINDOW_MS + GRACE_MS <= now_ms && host(h)).cloned().collect();
        let mut pass = Pass::default();
        for (host, window) in due {
            // Unmarked before reading: a checkpoint landing meanwhile marks the window again. Its
            // segment number is forgotten too: a late one looks in sled again.
            self.dirty().remove(&(host.clone(), window));
            self.next_segments().remove(&(host.clone(), window));
            pass.segments_merged += self.compact_window(&host, window, now_ms)?;
            pass.windows_compacted += 1;
        }
        Ok(pass)
    }

    fn compact_window(&self, host: &str, window: i64, now_ms: i64) -> Result<u64, ArchiveError> {
        // Read without the lock: the only other writer of these keys is a checkpoint adding a
        // segment under a new number. Whether this scan sees it or not, the batch removes only
        // what was merged, and the checkpoint marks the window for the next pass.
        let prefix = raw_prefix(window, host);
        let mut merged = Columns::new();
        let mut batch = sled::Batch::default();
        let mut segments = BTreeSet::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            segment::merge(&mut merged, &segment::decode(window, &v, None)?);
            segments.extend(parse_raw(&k).map(|(_, _, seg)| seg));
            batch.remove(k);
        }
        for (chunk, bytes) in segment::encode_chunks(window, &merged, 3, CHUNK_BYTES).into_iter().enumerate() {
            batch.insert(raw_key(&prefix, 0, chunk), bytes);
        }
        self.roll(&mut batch, host, window, &merged, now_ms)?;
        let _w = self.segments.write().unwrap_or_else(|e| e.into_inner());
        self.tree.apply_batch(batch)?;
        Ok(segments.len() as u64)
    }

    /// Puts the buckets of a window's series into the host's 1 m and 5 m blocks, and refolds
    /// their hours, rewriting each tier's chunks of the period.
    fn roll(
        &self,
        batch: &mut sled::Batch,
        host: &str,
        window: i64,
        merged: &Columns,
        now_ms: i64,
    ) -> Result<(), ArchiveError> {
        let periods = Tier::ALL.map(|tier| align(window, tier.period_ms()));
        let mut stored = Vec::with_capacity(3);
        for (tier, &period) in Tier::ALL.iter().zip(&periods) {
            stored.push(self.blocks(*tier, period, host)?);
        }
        for (&idx, col) in merged {
            // An integer series keeps exact integer sums, so its blocks store every field as
            // integers.
            let scale = (!col.float && col.scale > 0.0 && col.scale.is_finite()).then_some(col.scale);
            let minutes = match scale {
                Some(s) => {
                    rollup::fold_scaled(col.points.iter().map(|&(t, b)| (t, b as i64)), s, Tier::Minute.step_ms())
                }
                None => rollup::fold(col.reals(), Tier::Minute.step_ms()),
            };
            let fives = rollup::refold(minutes.iter().copied(), Tier::FiveMinutes.step_ms());
            let mut day = Vec::new();
            for (i, fresh) in [(0, &minutes), (1, &fives)] {
                let (tier, period) = (Tier::ALL[i], periods[i]);
                let mut block = match stored[i].0.get(&idx) {
                    Some(body) => rollup::decode_body(tier, period, body)?,
                    None => Vec::new(),
                };
                rollup::upsert(&mut block, fresh);
                stored[i].0.insert(idx, rollup::encode_body(tier, period, &block, scale));
                if tier == Tier::FiveMinutes {
                    day = block;
                }
            }
            let hour = align(window, Tier::Hour.step_ms());
            let in_hour = day.iter().filter(|b| align(b.start_ms, Tier::Hour.step_ms()) == hour).copied();
            let hours = rollup::refold(in_hour, Tier::Hour.step_ms());
            let mut block = match stored[2].0.get(&idx) {
                Some(body) => rollup::decode_body(Tier::Hour, periods[2], body)?,
                None => Vec::new(),
            };
            rollup::upsert(&mut block, &hours);
            stored[2].0.insert(idx, rollup::encode_body(Tier::Hour, periods[2], &block, scale));
        }
        for ((tier, period), (blocks, keys)) in Tier::ALL.into_iter().zip(periods).zip(stored) {
            if tier != Tier::Hour && !self.retention.keeps(tier, period, now_ms) {
                continue;
            }
            for k in keys {
                batch.remove(k);
            }
            for (first, bytes) in chunk::encode(&blocks, CHUNK_BYTES) {
                batch.insert(rollup_key(tier, period, host, first), bytes);
            }
        }
        Ok(())
    }

    /// Every stored block of `host` at `tier` for the period starting `period`, and the keys
    /// they are stored under.
    fn blocks(&self, tier: Tier, period: i64, host: &str) -> Result<(chunk::Blocks, Vec<sled::IVec>), ArchiveError> {
        let mut blocks = chunk::Blocks::new();
        let mut keys = Vec::new();
        for item in self.tree.scan_prefix(rollup_prefix(tier, period, host)) {
            let (k, v) = item?;
            if let Some(first) = rollup_index(&k) {
                chunk::decode(first, &v, None, &mut blocks)?;
            }
            keys.push(k);
        }
        Ok((blocks, keys))
    }

    /// Deletes raw windows and rollup periods past their tier's retention.
    pub fn expire(&self, now_ms: i64) -> Result<Pass, ArchiveError> {
        let _pass = self.passes.lock().unwrap_or_else(|e| e.into_inner());
        let mut pass = Pass::default();
        let cutoff = now_ms - self.retention.raw_ms;
        let mut batch = sled::Batch::default();
        let mut windows = BTreeSet::new();
        for item in self.tree.scan_prefix([keys::RAW]) {
            let (k, _) = item?;
            match parse_raw(&k) {
                Some((window, _, _)) if window + WINDOW_MS <= cutoff => {
                    windows.insert(window);
                    batch.remove(k);
                }
                _ => break,
            }
        }
        pass.raw_windows_deleted = windows.len() as u64;
        for tier in Tier::ALL {
            let cutoff = now_ms - self.retention.of(tier);
            for item in self.tree.scan_prefix([keys::ROLLUP, tier.tag()]) {
                let (k, _) = item?;
                let period = k.get(2..10).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes);
                match period {
                    Some(p) if p + tier.period_ms() <= cutoff => {
                        batch.remove(k);
                        pass.rollup_blocks_deleted += 1;
                    }
                    _ => break,
                }
            }
        }
        let _w = self.segments.write().unwrap_or_else(|e| e.into_inner());
        self.tree.apply_batch(batch)?;
        self.dirty().retain(|(_, w)| w + WINDOW_MS > cutoff);
        self.next_segments().retain(|(_, w), _| w + WINDOW_MS > cutoff);
        Ok(pass)
    }

    /// Bytes of history in the store (keys and values), by key space: series, raw, rollups.
    pub fn bytes(&self) -> Result<[u64; 3], ArchiveError> {
        let mut out = [0u64; 3];
        for (i, prefix) in [[keys::SERIES], [keys::RAW], [keys::ROLLUP]].iter().enumerate() {
            for item in self.tree.scan_prefix(prefix) {
                let (k, v) = item?;
                out[i] += (k.len() + v.len()) as u64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::history::segment::Column;

    const HOUR: i64 = 3_600_000;
    /// The start of a six-hour minute period.
    const P: i64 = 1_800_000_000_000 / (6 * HOUR) * (6 * HOUR);

    fn window_of(series: &[u32], window: i64) -> Frozen {
        let mut columns = Columns::new();
        for &idx in series {
            let mut col = Column::new(false, false, 1.0);
            col.points = (0..600).map(|i| (window + i * 1000, (i64::from(idx) * 1_000 + i % 60) as u64)).collect();
            columns.insert(idx, col);
        }
        let mut windows = crate::history::recorder::Windows::new();
        windows.insert(window, columns);
        Frozen { new_series: Vec::new(), windows: Arc::new(windows) }
    }

    fn store(archive: &Archive, host: &str, frozen: &Frozen) {
        let mut batch = sled::Batch::default();
        archive.checkpoint(&mut batch, host, frozen).unwrap();
        archive.apply(batch, host, frozen).unwrap();
    }

    /// A host's rollup blocks of a period are stored together in a few chunks, read back per
    /// series, and a block an older store wrote alone reads the same until the next compaction of
    /// its period takes it into a chunk.
    #[test]
    fn rollups_of_a_host_period_share_chunks_and_blocks_stored_alone_join_them() {
        let dir = std::env::temp_dir().join(format!("twinwatch-rollup-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new().path(&dir).temporary(true).open().unwrap();
        let archive = Archive::open(db.open_tree("data").unwrap(), Retention::default()).unwrap();
        let series: Vec<u32> = (0..500).collect();
        store(&archive, "h", &window_of(&series, P));
        // An older store's block of series 700, alone under its own index.
        let legacy = rollup::fold((0..5).map(|i| (P + i * 60_000, 7.0 + i as f64)), Tier::Minute.step_ms());
        archive
            .tree
            .insert(rollup_key(Tier::Minute, P, "h", 700), rollup::encode(Tier::Minute, P, &legacy, None))
            .unwrap();
        let later = P + 2 * 24 * HOUR;
        assert_eq!(archive.compact(later).unwrap().windows_compacted, 1);
        let keys = |tier: Tier, period: i64| -> Vec<u32> {
            archive
                .tree
                .scan_prefix(rollup_prefix(tier, period, "h"))
                .keys()
                .map(|k| rollup_index(&k.unwrap()).unwrap())
                .collect()
        };
        let minute_keys = keys(Tier::Minute, P);
        assert!(minute_keys.len() > 1 && minute_keys.len() < 100, "{} chunks for 501 series", minute_keys.len());
        assert!(minute_keys.contains(&0) && !minute_keys.contains(&700), "{minute_keys:?}");
        for idx in [0, 1, 250, 499] {
            let b = archive.buckets(Tier::Minute, "h", idx, P, P + 6 * HOUR).unwrap();
            assert_eq!(b.len(), 10, "series {idx}");
            assert_eq!(b[0].min, f64::from(idx) * 1000.0);
            assert_eq!(b[0].max, f64::from(idx) * 1000.0 + 59.0);
            let h = archive.buckets(Tier::Hour, "h", idx, 0, i64::MAX).unwrap();
            assert_eq!((h.len(), h[0].count), (1, 600), "series {idx}");
        }
        rollup::tests::same(&archive.buckets(Tier::Minute, "h", 700, P, P + HOUR).unwrap(), &legacy);
        assert!(archive.buckets(Tier::Minute, "h", 500, P, P + HOUR).unwrap().is_empty(), "no series 500");
        // The next window of the period rewrites its chunks, the block stored alone among them.
        store(&archive, "h", &window_of(&series[..3], P + 10 * 60_000));
        archive.compact(later).unwrap();
        let minute_keys = keys(Tier::Minute, P);
        assert!(!minute_keys.contains(&700), "{minute_keys:?}");
        assert_eq!(archive.buckets(Tier::Minute, "h", 2, P, P + HOUR).unwrap().len(), 20);
        assert_eq!(archive.buckets(Tier::Minute, "h", 3, P, P + HOUR).unwrap().len(), 10);
        rollup::tests::same(&archive.buckets(Tier::Minute, "h", 700, P, P + HOUR).unwrap(), &legacy);
        drop(archive);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
