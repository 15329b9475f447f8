//! The agent's durable outbound buffer: encoded batch frames in sled, oldest first.
//!
//! Design constraints:
//! - A batch leaves the queue only when the aggregator acknowledges it as durably stored
//!   ([`Queue::ack`]), never when it is sent. Nothing is popped before delivery.
//! - Keys are `incarnation ‖ seq`, both big-endian, so key order is production order across agent
//!   restarts, and a cumulative ack removes a prefix.
//! - The queue is capped in bytes: past the cap the oldest batches are dropped, and every dropped
//!   batch and sample is counted, never silently lost.
//! - sled writes go to its log at once and are made durable every `flush_every`, so a kill -9
//!   loses at most that much. The depth is tracked in memory rather than computed from sled
//!   (`len()` is a full scan).
//!
//! On-disk value: `samples: u32 LE ‖ frame bytes`, where the frame is exactly what goes on the wire.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub type Key = [u8; 16];

pub fn key(incarnation: u64, seq: u64) -> Key {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&incarnation.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn split_key(k: &[u8]) -> (u64, u64) {
    let mut inc = [0; 8];
    let mut seq = [0; 8];
    inc.copy_from_slice(&k[..8]);
    seq.copy_from_slice(&k[8..16]);
    (u64::from_be_bytes(inc), u64::from_be_bytes(seq))
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("buffer at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("buffer: {0}")]
    Sled(#[from] sled::Error),
}

/// What [`Queue::push`] had to drop to stay under the cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub samples: u64,
}

pub struct Queue {
    db: sled::Db,
    items: sled::Tree,
    cap: u64,
    bytes: AtomicU64,
    count: AtomicU64,
    /// Set when the store could not be opened and was moved aside.
    pub recovered_from: Option<PathBuf>,
}

const INCARNATION: &[u8] = b"incarnation";

impl Queue {
    /// Opens the buffer in `dir`. A store sled reports as corrupt is moved aside (and named in
    /// `recovered_from`) and a fresh one started: the agent keeps sampling rather than stopping.
    /// Any other failure, such as another process holding the lock, is an error: the buffer is
    /// never moved aside for it.
    pub fn open(dir: &Path, cap: u64, flush_every: Duration) -> Result<Queue, QueueError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(4 << 20)
            .flush_every_ms(Some(flush_every.as_millis().max(1) as u64));
        let mut attempts = 0;
        let (db, recovered_from) = loop {
            match config.open() {
                Ok(db) => break (db, None),
                Err(sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)) => {
                    let aside = dir.with_extension(format!("corrupt-{}", std::process::id()));
                    tracing::error!(path = %dir.display(), aside = %aside.display(), "buffer corrupt; moving it aside");
                    std::fs::rename(dir, &aside)
                        .map_err(|e| QueueError::Open { path: dir.to_owned(), source: e.into() })?;
                    let db = config.open().map_err(|source| QueueError::Open { path: dir.to_owned(), source })?;
                    break (db, Some(aside));
                }
                // The lock may still be held by a process (or, in tests, an instance) on its way out.
                Err(sled::Error::Io(_)) if attempts < 30 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(source) => return Err(QueueError::Open { path: dir.to_owned(), source }),
            }
        };
        let items = db.open_tree("batches")?;
        let (mut bytes, mut count) = (0, 0);
        for item in items.iter() {
            let (_, v) = item?;
            bytes += v.len() as u64;
            count += 1;
        }
        Ok(Queue { db, items, cap, bytes: AtomicU64::new(bytes), count: AtomicU64::new(count), recovered_from })
    }

    /// A new incarnation number, never reused: above every earlier one and at least `now_ms`, so
    /// it stays fresh even if the state directory is lost.
    pub fn next_incarnation(&self, now_ms: u64) -> Result<u64, QueueError> {
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

    /// Appends a batch frame holding `samples` values; drops the oldest batches if over the cap.
    pub fn push(&self, incarnation: u64, seq: u64, samples: u32, frame: &[u8]) -> Result<Dropped, QueueError> {
        let mut value = Vec::with_capacity(4 + frame.len());
        value.extend_from_slice(&samples.to_le_bytes());
        value.extend_from_slice(frame);
        let len = value.len() as u64;
        if let Some(old) = self.items.insert(key(incarnation, seq), value)? {
            self.bytes.fetch_sub(old.len() as u64, Relaxed);
            self.count.fetch_sub(1, Relaxed);
        }
        self.bytes.fetch_add(len, Relaxed);
        self.count.fetch_add(1, Relaxed);
        let mut dropped = Dropped::default();
        while self.bytes.load(Relaxed) > self.cap && self.count.load(Relaxed) > 1 {
            let Some((k, _)) = self.items.first()? else {
                break;
            };
            if let Some(old) = self.items.remove(&k)? {
                self.forget(&old);
                dropped.batches += 1;
                dropped.samples += sample_count(&old) as u64;
            }
        }
        Ok(dropped)
    }

    fn forget(&self, value: &[u8]) {
        self.bytes.fetch_sub(value.len() as u64, Relaxed);
        self.count.fetch_sub(1, Relaxed);
    }

    /// The first batch after `after` (or the oldest): its key and wire frame.
    pub fn next_after(&self, after: Option<Key>) -> Result<Option<(Key, Vec<u8>)>, QueueError> {
        let item = match after {
            Some(k) => self.items.get_gt(k)?,
            None => self.items.first()?,
        };
        Ok(item.map(|(k, v)| {
            let mut key = [0; 16];
            key.copy_from_slice(&k);
            (key, v[4..].to_vec())
        }))
    }

    /// Removes every batch up to and including `(incarnation, through_seq)`; returns how many.
    pub fn ack(&self, incarnation: u64, through_seq: u64) -> Result<u64, QueueError> {
        let mut removed = 0;
        for item in self.items.range(..=key(incarnation, through_seq)) {
            let (k, _) = item?;
            if let Some(old) = self.items.remove(&k)? {
                self.forget(&old);
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn len(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Makes everything pushed so far durable.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.db.flush()?;
        Ok(())
    }
}

fn sample_count(value: &[u8]) -> u32 {
    value.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("twinwatch-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Random push / ack / send / reopen sequences against a `VecDeque` model: after every step the
    /// queue holds exactly the model's batches, in order, with the model's byte count and drops.
    #[test]
    fn model_push_ack_reopen() {
        for seed in 1..=6u64 {
            let dir = temp_dir(&format!("model{seed}"));
            let cap = 6_000;
            let mut q = Queue::open(&dir, cap, Duration::from_millis(50)).unwrap();
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut model: VecDeque<(Key, Vec<u8>, u32)> = VecDeque::new();
            let mut incarnation = q.next_incarnation(0).unwrap();
            let mut seq = 0;
            for _step in 0..400 {
                match rng.next() % 10 {
                    0..=5 => {
                        seq += 1;
                        let len = 1 + (rng.next() % 400) as usize;
                        let frame: Vec<u8> = (0..len).map(|i| (i as u64 ^ seq) as u8).collect();
                        let samples = (rng.next() % 50) as u32;
                        let dropped = q.push(incarnation, seq, samples, &frame).unwrap();
                        model.push_back((key(incarnation, seq), frame, samples));
                        let mut expected = Dropped::default();
                        while model.iter().map(|(_, f, _)| f.len() as u64 + 4).sum::<u64>() > cap && model.len() > 1 {
                            let (_, _, s) = model.pop_front().unwrap();
                            expected.batches += 1;
                            expected.samples += s as u64;
                        }
                        assert_eq!(dropped, expected);
                    }
                    6 | 7 if !model.is_empty() => {
                        let upto = (rng.next() % model.len() as u64) as usize;
                        let (inc, through) = split_key(&model[upto].0);
                        assert_eq!(q.ack(inc, through).unwrap(), upto as u64 + 1);
                        model.drain(..=upto);
                    }
                    8 => {
                        q.flush().unwrap();
                        drop(q);
                        q = Queue::open(&dir, cap, Duration::from_millis(50)).unwrap();
                        let next = q.next_incarnation(0).unwrap();
                        assert!(next > incarnation);
                        incarnation = next;
                        seq = 0;
                    }
                    _ => {
                        // Walk the queue as the shipper does and compare with the model.
                        let mut after = None;
                        for (k, frame, _) in &model {
                            let (got_key, got_frame) = q.next_after(after).unwrap().unwrap();
                            assert_eq!((&got_key, &got_frame), (k, frame));
                            after = Some(got_key);
                        }
                        assert!(q.next_after(after).unwrap().is_none());
                    }
                }
                assert_eq!(q.len(), model.len() as u64);
                assert_eq!(q.bytes(), model.iter().map(|(_, f, _)| f.len() as u64 + 4).sum::<u64>());
            }
            drop(q);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_locked_buffer_is_an_error_and_is_never_moved_aside() {
        let dir = temp_dir("locked");
        let first = Queue::open(&dir, 1 << 20, Duration::from_millis(50)).unwrap();
        first.push(1, 1, 3, b"frame").unwrap();
        first.flush().unwrap();
        assert!(matches!(Queue::open(&dir, 1 << 20, Duration::from_millis(50)), Err(QueueError::Open { .. })));
        assert_eq!(first.len(), 1);
        assert!(first.recovered_from.is_none());
        assert!(!dir.with_extension(format!("corrupt-{}", std::process::id())).exists());
        drop(first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn incarnations_never_repeat_even_with_a_stale_clock() {
        let dir = temp_dir("inc");
        let q = Queue::open(&dir, 1 << 20, Duration::from_millis(50)).unwrap();
        let a = q.next_incarnation(5_000).unwrap();
        let b = q.next_incarnation(10).unwrap();
        assert_eq!((a, b), (5_000, 5_001));
        drop(q);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
