//! The agent's outbound buffer: memory first, disk only for what waits, two lanes out.
//!
//! - **Memory first.** A batch is pushed into memory. While the aggregator acknowledges promptly,
//!   it is acknowledged and forgotten there: nothing touches the disk. A batch still unacknowledged
//!   after `flush_every` is written to sled together with every other waiting batch in one group
//!   commit (one sled batch, one flush). A kill -9 therefore loses at most the batches younger
//!   than `flush_every` plus one sample interval; everything older is on disk.
//! - **Two lanes.** Each connection is a session. Batches from before the session and up to the
//!   first keyframe pushed in it are the *backlog*; from that keyframe on they are *live*. The
//!   shipper sends live batches first and drains the backlog behind them at a bounded rate, so the
//!   aggregator is current within an interval of reconnecting while the gap fills.
//! - **A cap with drop-oldest.** Past `cap` bytes (memory and disk together) the oldest
//!   *segment*, from the oldest batch up to the next keyframe, is dropped, so what remains always
//!   decodes. Every dropped batch is counted and becomes a [`Dropped`] report, kept on disk until
//!   the aggregator acknowledges it, which records it as a known gap.
//! - **Acknowledged, then deleted.** A batch leaves the buffer only when the aggregator
//!   acknowledges its range as durably stored, never when it is sent.
//!
//! Keys are `incarnation ‖ seq`, both big-endian, so key order is production order across
//! restarts. On disk a batch is `ticks: u32 LE ‖ ts_ms: i64 LE ‖ flags: u8 ‖ frame`, the frame
//! exactly what goes on the wire.

mod cap;
mod lanes;
mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use twinwatch_common::message::Dropped;

pub use lanes::Lane;
use lanes::Session;
use record::{decode_drop, to_key, META_LEN};
pub use record::{key, split_key, Key, Meta};

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("buffer: {0}")]
    Sled(#[from] sled::Error),
}

/// Running totals of what the buffer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub dropped_batches: u64,
    pub dropped_ticks: u64,
    /// Group commits and the batch bytes they wrote.
    pub spills: u64,
    pub spilled_bytes: u64,
}

struct Entry {
    meta: Meta,
    frame: Vec<u8>,
    born: Instant,
}

#[derive(Default)]
struct Inner {
    /// Batches only in memory.
    mem: BTreeMap<Key, Entry>,
    mem_bytes: u64,
    disk_bytes: u64,
    disk_count: u64,
    in_flight: BTreeSet<Key>,
    session: Option<Session>,
    /// Drop reports not yet acknowledged, by `key(incarnation, first_seq)`.
    drops: BTreeMap<Key, Dropped>,
    totals: Totals,
    /// Set when the cap could not be kept because no keyframe follows the oldest batch.
    want_keyframe: bool,
    /// Acknowledged batches still on disk: already forgotten, removed together in the next purge
    /// (each sled batch costs a log write, so one per ack would wear the flash).
    acked_on_disk: BTreeSet<Key>,
    last_purge: Option<Instant>,
}

pub struct Buffer {
    db: sled::Db,
    batches: sled::Tree,
    drops: sled::Tree,
    cap: u64,
    flush_every: Duration,
    inner: Mutex<Inner>,
    /// Set when the store could not be opened and was moved aside.
    pub recovered_from: Option<PathBuf>,
}

const INCARNATION: &[u8] = b"incarnation";

/// A sled batch removing every acknowledged batch still on disk; forgets them.
fn removals(inner: &mut Inner) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for k in std::mem::take(&mut inner.acked_on_disk) {
        batch.remove(k.as_slice());
    }
    batch
}

impl Buffer {
    /// Opens the buffer in `dir`. A store sled reports as corrupt is moved aside (and named in
    /// `recovered_from`) and a fresh one started: the agent keeps sampling rather than stopping.
    /// Any other failure, such as another process holding the lock, is an error: the buffer is
    /// never moved aside for it.
    pub fn open(dir: &Path, cap: u64, flush_every: Duration) -> Result<Buffer, BufferError> {
        // Group commits flush explicitly; sled's own timer stays off so an idle agent writes nothing.
        let config = sled::Config::new().path(dir).cache_capacity(2 << 20).flush_every_ms(None);
        let mut attempts = 0;
        let (db, recovered_from) = loop {
            match config.open() {
                Ok(db) => break (db, None),
                Err(sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)) => {
                    let aside = dir.with_extension(format!("corrupt-{}", std::process::id()));
                    tracing::error!(path = %dir.display(), aside = %aside.display(), "buffer corrupt; moving it aside");
                    std::fs::rename(dir, &aside)
                        .map_err(|e| BufferError::Open { path: dir.to_owned(), source: e.into() })?;
                    let db = config.open().map_err(|source| BufferError::Open { path: dir.to_owned(), source })?;
                    break (db, Some(aside));
                }
                // The lock may still be held by a process (or, in tests, an instance) on its way out.
                Err(sled::Error::Io(_)) if attempts < 30 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(source) => return Err(BufferError::Open { path: dir.to_owned(), source }),
            }
        };
        let batches = db.open_tree("batches")?;
        let drops = db.open_tree("dropped")?;
        let mut inner = Inner::default();
        for item in batches.iter() {
            let (_, v) = item?;
            inner.disk_bytes += v.len() as u64;
            inner.disk_count += 1;
        }
        for item in drops.iter() {
            let (k, v) = item?;
            if let (16, Some(d)) = (k.len(), decode_drop(&v)) {
                inner.drops.insert(to_key(&k), d);
            }
        }
        Ok(Buffer { db, batches, drops, cap, flush_every, inner: Mutex::new(inner), recovered_from })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new incarnation number, never reused: above every earlier one and at least `now_ms`, so
    /// it stays fresh even if the state directory is lost.
    pub fn next_incarnation(&self, now_ms: u64) -> Result<u64, BufferError> {
        let previous = self.db.get(INCARNATION)?.map_or(0, |v| {
            let mut b = [0; 8];
            b.copy_from_slice(&v[..8.min(v.len())]);
            u64::from_be_bytes(b)
        });
        let next = (previous + 1).max(now_ms);
        self.db.insert(INCARNATION, &next.to_be_bytes())?;
        self.db.flush()?;
        Ok(next)
    }

    /// Adds a batch. Then writes out whatever has waited `flush_every` (a group commit), and
    /// drops the oldest segments if over the cap. Returns what was dropped by this push.
    pub fn push(
        &self,
        incarnation: u64,
        seq: u64,
        meta: Meta,
        frame: Vec<u8>,
        now: Instant,
    ) -> Result<Totals, BufferError> {
        let k = key(incarnation, seq);
        let mut inner = self.inner();
        let before = inner.totals;
        inner.mem_bytes += (META_LEN + frame.len()) as u64;
        if let Some(s) =
            inner.session.as_mut().filter(|s| s.live_from.is_none() && (meta.keyframe || s.any_batch_opens))
        {
            s.live_from = Some(k);
        }
        if let Some(old) = inner.mem.insert(k, Entry { meta, frame, born: now }) {
            inner.mem_bytes -= (META_LEN + old.frame.len()) as u64;
        }
        // Keys grow with time, so the first batch in memory is the one that has waited longest.
        let oldest = inner.mem.values().next().map(|e| e.born);
        if oldest.is_some_and(|born| now.saturating_duration_since(born) >= self.flush_every) {
            self.spill(&mut inner)?;
        }
        self.keep_cap(&mut inner)?;
        let after = inner.totals;
        Ok(Totals {
            dropped_batches: after.dropped_batches - before.dropped_batches,
            dropped_ticks: after.dropped_ticks - before.dropped_ticks,
            spills: after.spills - before.spills,
            spilled_bytes: after.spilled_bytes - before.spilled_bytes,
        })
    }

    /// The group commit: every batch in memory goes to disk in one sled batch and one flush.
    fn spill(&self, inner: &mut Inner) -> Result<(), BufferError> {
        if inner.mem.is_empty() {
            return Ok(());
        }
        let mut batch = removals(inner);
        let mut bytes = 0;
        for (k, e) in &inner.mem {
            let v = e.meta.encode(&e.frame);
            bytes += v.len() as u64;
            batch.insert(k.as_slice(), v);
        }
        self.batches.apply_batch(batch)?;
        self.db.flush()?;
        inner.last_purge = Some(Instant::now());
        inner.disk_count += inner.mem.len() as u64;
        inner.disk_bytes += bytes;
        inner.mem.clear();
        inner.mem_bytes = 0;
        inner.totals.spills += 1;
        inner.totals.spilled_bytes += bytes;
        Ok(())
    }

    /// The first key at or after `from` (and below `below`), in memory or on disk.
    fn first_from(&self, inner: &Inner, from: Bound<Key>, below: Option<Key>) -> Result<Option<Key>, BufferError> {
        let in_mem = inner.mem.range((from, Bound::Unbounded)).next().map(|(k, _)| *k);
        let mut on_disk = None;
        for item in self.batches.range::<&[u8], _>((from.as_ref().map(|k| k.as_slice()), Bound::Unbounded)) {
            let k = to_key(&item?.0);
            if !inner.acked_on_disk.contains(&k) {
                on_disk = Some(k);
                break;
            }
        }
        let first = match (in_mem, on_disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(first.filter(|k| below.is_none_or(|b| *k < b)))
    }

    fn meta_and_frame(&self, inner: &Inner, k: &Key) -> Result<Option<(Meta, Vec<u8>)>, BufferError> {
        if let Some(e) = inner.mem.get(k) {
            return Ok(Some((e.meta, e.frame.clone())));
        }
        Ok(self.batches.get(k)?.map(|v| (Meta::decode(&v), v.get(META_LEN..).unwrap_or_default().to_vec())))
    }

    fn meta(&self, inner: &Inner, k: &Key) -> Result<Option<Meta>, BufferError> {
        if let Some(e) = inner.mem.get(k) {
            return Ok(Some(e.meta));
        }
        Ok(self.batches.get(k)?.map(|v| Meta::decode(&v)))
    }
    /// The aggregator stored batches `first..=last` of `incarnation` (or recorded them dropped):
    /// forgets them, and the drop reports that range covers. Returns how many batches went.
    pub fn ack(&self, incarnation: u64, first: u64, last: u64) -> Result<u64, BufferError> {
        if first > last {
            return Ok(0);
        }
        let (lo, hi) = (key(incarnation, first), key(incarnation, last));
        let mut inner = self.inner();
        let mut removed = 0;
        let gone: Vec<Key> = inner.mem.range(lo..=hi).map(|(k, _)| *k).collect();
        for k in gone {
            if let Some(e) = inner.mem.remove(&k) {
                inner.mem_bytes -= (META_LEN + e.frame.len()) as u64;
                removed += 1;
            }
        }
        for item in self.batches.range(lo..=hi) {
            let (k, v) = item?;
            if inner.acked_on_disk.insert(to_key(&k)) {
                inner.disk_bytes -= v.len() as u64;
                inner.disk_count -= 1;
                removed += 1;
            }
        }
        self.purge(&mut inner, Instant::now(), false)?;
        let covered: Vec<Key> = inner
            .drops
            .iter()
            .filter(|(_, d)| d.incarnation == incarnation && d.first_seq >= first && d.last_seq <= last)
            .map(|(k, _)| *k)
            .collect();
        for k in covered {
            inner.drops.remove(&k);
            self.drops.remove(k)?;
        }
        let in_flight: Vec<Key> = inner.in_flight.range(lo..=hi).copied().collect();
        for k in in_flight {
            inner.in_flight.remove(&k);
        }
        Ok(removed)
    }

    /// Removes acknowledged batches from disk, at most once per flush interval unless `now_or_never`.
    /// No flush: a removal lost to a crash only means a replay the aggregator recognises.
    fn purge(&self, inner: &mut Inner, now: Instant, now_or_never: bool) -> Result<(), BufferError> {
        if inner.acked_on_disk.is_empty() {
            return Ok(());
        }
        let due = inner.last_purge.is_none_or(|t| now.saturating_duration_since(t) >= self.flush_every);
        if !(now_or_never || due || inner.acked_on_disk.len() >= 4096) {
            return Ok(());
        }
        self.batches.apply_batch(removals(inner))?;
        inner.last_purge = Some(now);
        Ok(())
    }

    pub fn in_flight(&self) -> usize {
        self.inner().in_flight.len()
    }

    /// Batches held, in memory and on disk.
    pub fn len(&self) -> u64 {
        let inner = self.inner();
        inner.mem.len() as u64 + inner.disk_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        let inner = self.inner();
        inner.mem_bytes + inner.disk_bytes
    }

    pub fn totals(&self) -> Totals {
        self.inner().totals
    }

    /// Writes everything held in memory to disk and makes it durable (at shutdown).
    pub fn flush(&self) -> Result<(), BufferError> {
        let mut inner = self.inner();
        self.purge(&mut inner, Instant::now(), true)?;
        self.spill(&mut inner)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
