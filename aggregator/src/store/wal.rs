//! The write-ahead log: every frame a host applied since its last checkpoint, in segment files
//! beside the sled database, written and synced by the group commit before ingest acknowledges.
//!
//! Frames are written once, read only after a crash, and deleted a whole segment at a time once
//! every host in it has checkpointed past it. Kept in sled they were tree entries that its cache
//! held, its log rewrote and its garbage collection copied: a thousand agents' frames were tens
//! of megabytes of the aggregator's memory and most of its disk writes.
//!
//! ```text
//! <db>/wal/<segment number, 16 hex digits>.log := record*
//! record := len:u32 LE (of body)  crc:u32 LE (CRC-32 of body)  body
//! body   := position:u64 LE  id_len:u16 LE  id  frame
//! ```
//!
//! - **Positions** count every frame logged, across hosts and restarts; a checkpoint stores the
//!   position it covers (in sled, with the host's twin), so after a crash exactly the frames past
//!   it replay.
//! - **A torn tail ends a segment**: reading stops at the first record that is short or fails its
//!   checksum. A crash mid-write tears only frames that were never acknowledged.
//! - **A failed write** (a full disk) leaves its records queued; the next flush writes them into a
//!   new segment, so nothing valid ever follows a torn record.
//! - **Segments close** at [`SEGMENT_BYTES`] or [`SEGMENT_AGE`], and only closed ones are deleted:
//!   after the sled flush that made the covering checkpoints durable ([`Wal::take_covered`],
//!   [`Wal::release`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use record::{encode, frame_at, read_segment};

mod record;

/// A segment is closed once it holds this much.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// A segment is closed once it is this old, so a quiet fleet's log is deleted too.
pub const SEGMENT_AGE: Duration = Duration::from_secs(60);
/// The most a spare write buffer keeps between flushes.
const SPARE_LIMIT: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("write-ahead log: host id of {0} bytes is too long")]
    LongId(usize),
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_owned(), source }
}

/// Where a written frame is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    position: u64,
    segment: u64,
    /// Of the frame itself, in the segment file.
    offset: u64,
    len: u32,
}

/// A record appended and not yet written.
#[derive(Debug)]
struct Queued {
    id: Arc<str>,
    position: u64,
    /// Of the whole record in `Inner::queued`.
    start: usize,
    len: usize,
}

#[derive(Debug)]
struct Current {
    segment: u64,
    file: Arc<File>,
    bytes: u64,
    opened: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    position: u64,
    /// The number the next segment file takes: one past the highest on disk.
    next_segment: u64,
    queued: Vec<u8>,
    queued_records: Vec<Queued>,
    /// The buffers of the last write, emptied, for the next: a thousand agents' frames pass
    /// through here, and a fresh buffer grown by doubling at every flush left the allocator
    /// holding memory in every size it passed through.
    spare: Vec<u8>,
    spare_records: Vec<Queued>,
    current: Option<Current>,
    /// Every segment on disk: host → its last position there.
    segments: BTreeMap<u64, HashMap<Arc<str>, u64>>,
    /// Per host, its frames past its durable checkpoint, oldest first.
    index: HashMap<Arc<str>, Vec<Entry>>,
    /// Per host, the position its durable checkpoint covers.
    covered: HashMap<Arc<str>, u64>,
    /// Checkpoints written to sled and not yet known durable.
    to_cover: Vec<(Arc<str>, u64)>,
}

impl Inner {
    /// Whether a queued record is past its host's durable checkpoint.
    fn uncovered(&self, r: &Queued) -> bool {
        r.position > self.covered.get(&r.id).copied().unwrap_or(0)
    }
}

pub struct Wal {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.log"))
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the log in `dir` (created if missing) given the position each host's durable
    /// checkpoint covers; indexes every frame past it, and deletes segments no host needs.
    pub fn open(dir: &Path, covered: HashMap<String, u64>) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut names: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let name = entry.map_err(io(dir))?.file_name();
            let segment =
                name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| u64::from_str_radix(n, 16).ok());
            if let Some(segment) = segment {
                names.push(segment);
            }
        }
        names.sort_unstable();
        let mut inner =
            Inner { covered: covered.into_iter().map(|(id, at)| (Arc::from(id), at)).collect(), ..Inner::default() };
        inner.position = inner.covered.values().copied().max().unwrap_or(0);
        inner.next_segment = names.last().map_or(1, |n| n.saturating_add(1));
        let mut ids: HashMap<String, Arc<str>> = HashMap::new();
        for segment in names {
            let path = segment_path(dir, segment);
            let (records, whole) = read_segment(&path)?;
            if !whole {
                tracing::warn!(path = %path.display(), records = records.len(), "write-ahead log segment ends in a torn record; read up to it");
            }
            let hosts = inner.segments.entry(segment).or_default();
            for r in records {
                let id = ids.entry(r.id).or_insert_with_key(|k| Arc::from(k.as_str())).clone();
                inner.position = inner.position.max(r.position);
                let last = hosts.entry(id.clone()).or_default();
                *last = (*last).max(r.position);
                if r.position > inner.covered.get(&id).copied().unwrap_or(0) {
                    let entry = Entry { position: r.position, segment, offset: r.frame_offset, len: r.frame_len };
                    inner.index.entry(id).or_default().push(entry);
                }
            }
        }
        for entries in inner.index.values_mut() {
            entries.sort_by_key(|e| e.position);
        }
        let wal = Wal { dir: dir.to_owned(), inner: Mutex::new(inner) };
        wal.release(Vec::new());
        Ok(wal)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The position of the last frame logged.
    pub fn position(&self) -> u64 {
        self.lock().position
    }

    /// The position covering everything logged so far, raised to at least `at_least` (a
    /// position an older store recorded).
    pub fn raise_position(&self, at_least: u64) {
        let mut inner = self.lock();
        inner.position = inner.position.max(at_least);
    }

    /// Queues `frames` of host `id` for the next [`Wal::write_out`].
    pub fn append(&self, id: &str, frames: &[Vec<u8>]) -> Result<(), WalError> {
        if id.len() > usize::from(u16::MAX) {
            return Err(WalError::LongId(id.len()));
        }
        let mut inner = self.lock();
        let shared: Arc<str> = match inner.index.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => Arc::from(id),
        };
        for frame in frames {
            inner.position = inner.position.saturating_add(1);
            let position = inner.position;
            let start = inner.queued.len();
            encode(&mut inner.queued, position, id, frame);
            let len = inner.queued.len() - start;
            inner.queued_records.push(Queued { id: shared.clone(), position, start, len });
        }
        Ok(())
    }

    /// Writes and syncs everything queued. Called by one flush at a time.
    pub fn write_out(&self) -> Result<(), WalError> {
        let (bytes, records, current, segment) = {
            let mut inner = self.lock();
            if inner.queued_records.is_empty() {
                return Ok(());
            }
            let full =
                inner.current.as_ref().is_none_or(|c| c.bytes >= SEGMENT_BYTES || c.opened.elapsed() >= SEGMENT_AGE);
            if full {
                inner.current = None;
            }
            let current = inner.current.as_ref().map(|c| (c.segment, c.file.clone(), c.bytes));
            let segment = match &current {
                Some(c) => c.0,
                None => {
                    inner.next_segment = inner.next_segment.saturating_add(1);
                    inner.next_segment - 1
                }
            };
            let inner = &mut *inner;
            let bytes = std::mem::replace(&mut inner.queued, std::mem::take(&mut inner.spare));
            let records = std::mem::replace(&mut inner.queued_records, std::mem::take(&mut inner.spare_records));
            (bytes, records, current, segment)
        };
        let path = segment_path(&self.dir, segment);
        let written = (|| -> std::io::Result<(Arc<File>, u64)> {
            let (file, base) = match current {
                Some((_, file, base)) => (file, base),
                None => {
                    let file = File::options().create_new(true).append(true).open(&path)?;
                    sync_dir(&self.dir)?;
                    (Arc::new(file), 0)
                }
            };
            (&*file).write_all(&bytes)?;
            file.sync_data()?;
            Ok((file, base))
        })();
        let mut inner = self.lock();
        let hosts = inner.segments.entry(segment).or_default();
        for r in &records {
            let last = hosts.entry(r.id.clone()).or_default();
            *last = (*last).max(r.position);
        }
        match written {
            Ok((file, base)) => {
                let uncovered: Vec<&Queued> = records.iter().filter(|r| inner.uncovered(r)).collect();
                for r in uncovered {
                    let id_len = r.id.len();
                    let entry = Entry {
                        position: r.position,
                        segment,
                        offset: base + (r.start + frame_at(id_len)) as u64,
                        len: (r.len - frame_at(id_len)) as u32,
                    };
                    inner.index.entry(r.id.clone()).or_default().push(entry);
                }
                let bytes_now = base + bytes.len() as u64;
                match &mut inner.current {
                    Some(c) if c.segment == segment => c.bytes = bytes_now,
                    _ => inner.current = Some(Current { segment, file, bytes: bytes_now, opened: Instant::now() }),
                }
                let (mut bytes, mut records) = (bytes, records);
                bytes.clear();
                records.clear();
                // A burst's buffers are not kept for ever.
                if bytes.capacity() > SPARE_LIMIT {
                    bytes.shrink_to(SPARE_LIMIT / 4);
                    records.shrink_to(records.capacity().min(SPARE_LIMIT / 4 / 1024));
                }
                inner.spare = bytes;
                inner.spare_records = records;
                Ok(())
            }
            Err(source) => {
                // Queued again ahead of anything appended since, for a new segment: this one may
                // end in a torn record.
                inner.current = None;
                let later = std::mem::replace(&mut inner.queued, bytes);
                let shift = inner.queued.len();
                inner.queued.extend_from_slice(&later);
                let mut again = records;
                for mut r in std::mem::take(&mut inner.queued_records) {
                    r.start += shift;
                    again.push(r);
                }
                inner.queued_records = again;
                Err(WalError::Io { path, source })
            }
        }
    }

    /// Host `id`'s frames since its durable checkpoint (those of a checkpoint not yet durable
    /// too), oldest first.
    pub fn logged(&self, id: &str) -> Result<Vec<Vec<u8>>, WalError> {
        let (entries, mut queued) = {
            let inner = self.lock();
            let entries = inner.index.get(id).cloned().unwrap_or_default();
            let covered = inner.covered.get(id).copied().unwrap_or(0);
            let queued: Vec<(u64, Vec<u8>)> = inner
                .queued_records
                .iter()
                .filter(|r| &*r.id == id && r.position > covered)
                .map(|r| (r.position, inner.queued[r.start + frame_at(id.len())..r.start + r.len].to_vec()))
                .collect();
            (entries, queued)
        };
        let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(entries.len() + queued.len());
        let mut open: Option<(u64, File)> = None;
        for e in entries {
            let path = segment_path(&self.dir, e.segment);
            if open.as_ref().is_none_or(|(s, _)| *s != e.segment) {
                open = Some((e.segment, File::open(&path).map_err(io(&path))?));
            }
            let Some((_, file)) = &open else { continue };
            let mut frame = vec![0; e.len as usize];
            file.read_exact_at(&mut frame, e.offset).map_err(io(&path))?;
            out.push((e.position, frame));
        }
        out.append(&mut queued);
        out.sort_by_key(|(p, _)| *p);
        Ok(out.into_iter().map(|(_, f)| f).collect())
    }

    /// Whether host `id` logged anything past its durable checkpoint.
    pub fn has_log(&self, id: &str) -> bool {
        let inner = self.lock();
        inner.index.get(id).is_some_and(|e| !e.is_empty())
            || inner.queued_records.iter().any(|r| &*r.id == id && inner.uncovered(r))
    }

    /// The hosts that logged anything past their durable checkpoint.
    pub fn logging_hosts(&self) -> Vec<String> {
        let inner = self.lock();
        let mut ids: Vec<String> = inner.index.keys().map(|k| k.to_string()).collect();
        ids.extend(inner.queued_records.iter().filter(|r| inner.uncovered(r)).map(|r| r.id.to_string()));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Host `id`'s checkpoint covering positions up to `through` is written (not yet durable).
    pub fn checkpointed(&self, id: &str, through: u64) {
        let mut inner = self.lock();
        let shared: Arc<str> = match inner.index.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => Arc::from(id),
        };
        inner.to_cover.push((shared, through));
    }

    /// The checkpoints written so far, to [`Wal::release`] once a flush that started after this
    /// call made them durable.
    pub fn take_covered(&self) -> Vec<(Arc<str>, u64)> {
        std::mem::take(&mut self.lock().to_cover)
    }

    /// Forgets the frames `durable` checkpoints cover and deletes the closed segments no host
    /// needs any more.
    pub fn release(&self, durable: Vec<(Arc<str>, u64)>) {
        let doomed: Vec<u64> = {
            let mut inner = self.lock();
            for (id, through) in durable {
                let at = inner.covered.entry(id.clone()).or_default();
                *at = (*at).max(through);
                let at = *at;
                if let Some(entries) = inner.index.get_mut(&id) {
                    entries.retain(|e| e.position > at);
                    if entries.is_empty() {
                        inner.index.remove(&id);
                    }
                }
            }
            let current = inner.current.as_ref().map(|c| c.segment);
            let covered = &inner.covered;
            let doomed: Vec<u64> = inner
                .segments
                .iter()
                .filter(|(s, _)| Some(**s) != current)
                .filter(|(_, hosts)| hosts.iter().all(|(id, last)| covered.get(id).is_some_and(|c| c >= last)))
                .map(|(s, _)| *s)
                .collect();
            for s in &doomed {
                inner.segments.remove(s);
            }
            doomed
        };
        for segment in doomed {
            let path = segment_path(&self.dir, segment);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), "deleting a write-ahead log segment: {e}"),
            }
        }
    }

    /// Segment files on disk (closed and current).
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}

#[cfg(test)]
mod tests;
