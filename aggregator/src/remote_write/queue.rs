//! One remote's durable queue: encoded `WriteRequest` fragments in a sled tree, oldest first.
//!
//! ```text
//! tree:  remote_write/<name>
//! key:   u64 big-endian, one more than the last key ever pushed
//! value: u32 big-endian sample count ‖ WriteRequest fragment (protobuf, uncompressed)
//! ```
//!
//! **Nothing here flushes.** A push is durable at the owner's next `db.flush` (ingest flushes
//! before it acks); a removal may be undone by a crash before sled's own periodic flush, so after
//! a kill -9 the last sent entries can go out again: delivery is at-least-once.
//!
//! Past `max_bytes` the oldest entries are dropped, except those of the request being sent, so
//! a sample is counted either sent or dropped, never both. Only synchronous sled calls happen
//! under the state lock, never an await.

use std::sync::{Mutex, MutexGuard};

/// Bytes one entry costs against the cap besides its fragment: the key and the sample count.
pub const ENTRY_OVERHEAD: u64 = 8 + 4;

pub struct Queue {
    tree: sled::Tree,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    entries: u64,
    bytes: u64,
    samples: u64,
    dropped_samples: u64,
    /// The last key of the request being sent: entries up to it are not dropped for room.
    in_flight: Option<u64>,
}

/// Consecutive entries from the front of the queue, joined into one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub first: u64,
    pub last: u64,
    pub entries: usize,
    pub samples: u64,
    /// An encoded `WriteRequest`, not yet compressed.
    pub body: Vec<u8>,
}

/// What the queue holds and has dropped, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub samples: u64,
    pub bytes: u64,
    pub entries: u64,
    pub dropped_samples: u64,
}

impl Queue {
    /// Opens the tree `remote_write/<name>` in `db`, counting what a previous run left in it.
    pub fn open(db: &sled::Db, name: &str, max_bytes: u64) -> sled::Result<Queue> {
        let tree = db.open_tree(crate::store::keys::remote_write_tree(name))?;
        let mut state = State::default();
        for item in tree.iter() {
            let (key, value) = item?;
            match key_of(&key) {
                Some(k) => {
                    state.bytes += ENTRY_OVERHEAD + fragment_of(&value).len() as u64;
                    state.samples += u64::from(samples_of(&value));
                    state.entries += 1;
                    state.next = k.saturating_add(1);
                }
                // Not a key this module writes: it could never be sent or removed by range.
                None => {
                    tree.remove(key)?;
                }
            }
        }
        Ok(Queue { tree, max_bytes, state: Mutex::new(state) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a fragment, first dropping the oldest entries not in flight until it fits. A
    /// fragment larger than the whole cap is dropped itself.
    pub fn push(&self, samples: u32, fragment: &[u8]) -> sled::Result<()> {
        let size = ENTRY_OVERHEAD + fragment.len() as u64;
        let mut state = self.state();
        if size > self.max_bytes {
            state.dropped_samples += u64::from(samples);
            return Ok(());
        }
        while state.bytes + size > self.max_bytes {
            let after = state.in_flight.map_or(0, |last| last.saturating_add(1));
            let Some((key, value)) = self.tree.range(after.to_be_bytes()..).next().transpose()? else {
                break;
            };
            self.tree.remove(&key)?;
            state.bytes = state.bytes.saturating_sub(ENTRY_OVERHEAD + fragment_of(&value).len() as u64);
            state.samples = state.samples.saturating_sub(u64::from(samples_of(&value)));
            state.entries = state.entries.saturating_sub(1);
            state.dropped_samples += u64::from(samples_of(&value));
        }
        let mut value = Vec::with_capacity(4 + fragment.len());
        value.extend_from_slice(&samples.to_be_bytes());
        value.extend_from_slice(fragment);
        self.tree.insert(state.next.to_be_bytes(), value)?;
        state.next = state.next.saturating_add(1);
        state.bytes += size;
        state.samples += u64::from(samples);
        state.entries += 1;
        Ok(())
    }

    /// Takes the oldest entries as one request, up to `max_samples` samples, `max_bytes` body bytes
    /// and `max_entries` entries, but always at least one entry. They stay in the queue, marked in
    /// flight, until [`Queue::settle`].
    pub fn take(&self, max_samples: u64, max_bytes: usize, max_entries: usize) -> sled::Result<Option<Request>> {
        let mut state = self.state();
        let mut request: Option<Request> = None;
        for item in self.tree.iter() {
            let (key, value) = item?;
            let Some(k) = key_of(&key) else { continue };
            let (samples, fragment) = (u64::from(samples_of(&value)), fragment_of(&value));
            match &mut request {
                None => request = Some(Request { first: k, last: k, entries: 1, samples, body: fragment.to_vec() }),
                Some(r) => {
                    let full = r.entries >= max_entries
                        || r.samples + samples > max_samples
                        || r.body.len() + fragment.len() > max_bytes;
                    if full {
                        break;
                    }
                    r.last = k;
                    r.entries += 1;
                    r.samples += samples;
                    r.body.extend_from_slice(fragment);
                }
            }
        }
        state.in_flight = request.as_ref().map(|r| r.last);
        Ok(request)
    }

    /// Ends a request from [`Queue::take`]: removes its entries if `remove`, else leaves them at
    /// the front for another try.
    pub fn settle(&self, request: &Request, remove: bool) -> sled::Result<()> {
        let mut state = self.state();
        state.in_flight = None;
        if !remove {
            return Ok(());
        }
        let keys: Vec<sled::IVec> = self
            .tree
            .range(request.first.to_be_bytes()..=request.last.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        for key in keys {
            if let Some(value) = self.tree.remove(&key)? {
                state.bytes = state.bytes.saturating_sub(ENTRY_OVERHEAD + fragment_of(&value).len() as u64);
                state.samples = state.samples.saturating_sub(u64::from(samples_of(&value)));
                state.entries = state.entries.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Kept in step with the tree, so a scrape never walks a long queue.
    pub fn counts(&self) -> Counts {
        let state = self.state();
        Counts {
            samples: state.samples,
            bytes: state.bytes,
            entries: state.entries,
            dropped_samples: state.dropped_samples,
        }
    }
}

fn key_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The sample count of a stored value; a value too short to hold one counts none.
fn samples_of(value: &[u8]) -> u32 {
    value.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes)
}

fn fragment_of(value: &[u8]) -> &[u8] {
    value.get(4..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::{Path, PathBuf};

    use super::*;

    /// A sled directory removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("twinwatch-rwq-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Opens `dir`. sled's background threads let go of the file lock a moment after the last
    /// handle is dropped; a reopen in the same process waits for it, as a new process would not.
    fn open_db(dir: &Path) -> sled::Db {
        let open = || sled::Config::new().path(dir).flush_every_ms(None).open();
        for _ in 0..250 {
            if let Ok(db) = open() {
                return db;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        open().expect("sled open")
    }

    fn bodies(q: &Queue) -> Vec<Vec<u8>> {
        q.tree.iter().values().map(|v| fragment_of(&v.unwrap()).to_vec()).collect()
    }

    #[test]
    fn a_full_queue_drops_its_oldest_entries_and_counts_their_samples() {
        let dir = Dir::new("cap");
        let db = open_db(&dir.0);
        // Room for three entries of 10 bytes (22 with overhead).
        let q = Queue::open(&db, "a", 3 * 22).unwrap();
        for i in 0..5u8 {
            q.push(u32::from(i) + 1, &[i; 10]).unwrap();
        }
        assert_eq!(bodies(&q), [[2u8; 10], [3; 10], [4; 10]]);
        assert_eq!(q.counts(), Counts { samples: 3 + 4 + 5, bytes: 66, entries: 3, dropped_samples: 1 + 2 });
        // An entry larger than the cap never enters, and costs only its own samples.
        q.push(100, &[9; 60]).unwrap();
        assert_eq!(q.counts().dropped_samples, 103);
        assert_eq!(q.counts().entries, 3);
    }

    #[test]
    fn entries_in_flight_are_not_dropped_for_room() {
        let dir = Dir::new("flight");
        let db = open_db(&dir.0);
        let q = Queue::open(&db, "a", 3 * 22).unwrap();
        for i in 0..3u8 {
            q.push(1, &[i; 10]).unwrap();
        }
        let r = q.take(2, usize::MAX, usize::MAX).unwrap().unwrap();
        assert_eq!((r.first, r.last, r.entries, r.samples), (0, 1, 2, 2));
        assert_eq!(r.body, [[0u8; 10], [1; 10]].concat());
        q.push(1, &[3; 10]).unwrap();
        assert_eq!(bodies(&q), [[0u8; 10], [1; 10], [3; 10]], "the entry after the request went");
        q.settle(&r, true).unwrap();
        assert_eq!(bodies(&q), [[3u8; 10]]);
        assert_eq!(q.counts(), Counts { samples: 1, bytes: 22, entries: 1, dropped_samples: 1 });
    }

    #[test]
    fn take_joins_entries_within_its_limits() {
        let dir = Dir::new("take");
        let db = open_db(&dir.0);
        let q = Queue::open(&db, "a", 1 << 20).unwrap();
        assert_eq!(q.take(10, 100, 10).unwrap(), None);
        for i in 0..4u8 {
            q.push(3, &[i; 10]).unwrap();
        }
        let span = |r: Request| (r.first, r.last, r.samples);
        assert_eq!(span(q.take(7, 100, 10).unwrap().unwrap()), (0, 1, 6));
        assert_eq!(span(q.take(100, 25, 10).unwrap().unwrap()), (0, 1, 6));
        assert_eq!(span(q.take(100, 100, 1).unwrap().unwrap()), (0, 0, 3));
        // One entry over every limit still goes alone.
        assert_eq!(span(q.take(1, 1, 10).unwrap().unwrap()), (0, 0, 3));
        let r = q.take(100, 100, 10).unwrap().unwrap();
        q.settle(&r, false).unwrap();
        assert_eq!(q.counts().samples, 12, "a request not removed stays");
        q.settle(&r, true).unwrap();
        assert_eq!(q.counts(), Counts { samples: 0, bytes: 0, entries: 0, dropped_samples: 0 });
    }

    #[test]
    fn the_queue_survives_a_reopen_and_keeps_counting_up() {
        let dir = Dir::new("reopen");
        {
            let db = open_db(&dir.0);
            let q = Queue::open(&db, "a", 1 << 20).unwrap();
            for i in 0..3u8 {
                q.push(2, &[i; 5]).unwrap();
            }
            let r = q.take(2, usize::MAX, usize::MAX).unwrap().unwrap();
            q.settle(&r, true).unwrap();
            db.flush().unwrap();
        }
        let db = open_db(&dir.0);
        let q = Queue::open(&db, "a", 1 << 20).unwrap();
        assert_eq!(q.counts(), Counts { samples: 4, bytes: 2 * 17, entries: 2, dropped_samples: 0 });
        q.push(1, &[7; 5]).unwrap();
        let r = q.take(100, usize::MAX, usize::MAX).unwrap().unwrap();
        assert_eq!((r.first, r.last, r.samples), (1, 3, 5));
        assert_eq!(r.body, [[1u8; 5], [2; 5], [7; 5]].concat());
        // Another remote's queue in the same db is a tree of its own.
        assert_eq!(Queue::open(&db, "b", 1 << 20).unwrap().counts().entries, 0);
    }

    /// Random pushes, takes, settles and crash-restarts against a `VecDeque` model.
    #[test]
    fn random_operations_match_a_simple_model() {
        let dir = Dir::new("model");
        let cap = 10 * 20;
        let mut db = open_db(&dir.0);
        let mut q = Queue::open(&db, "m", cap).unwrap();
        let mut model: VecDeque<(u32, Vec<u8>)> = VecDeque::new();
        let (mut dropped, mut in_flight, mut next) = (0u64, None::<Request>, 0u8);
        let (mut restarts, mut drops) = (0, 0);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..600 {
            match random(10) {
                0..=4 => {
                    let len = 1 + random(12) as usize;
                    let fragment = vec![next; len];
                    let samples = 1 + random(4) as u32;
                    next = next.wrapping_add(1);
                    q.push(samples, &fragment).unwrap();
                    // The model: drop from the front, past what is in flight, until it fits.
                    let size = |f: &Vec<u8>| ENTRY_OVERHEAD + f.len() as u64;
                    let keep = in_flight.as_ref().map_or(0, |r| r.entries);
                    let mut total: u64 = model.iter().map(|(_, f)| size(f)).sum();
                    while total + size(&fragment) > cap && model.len() > keep {
                        let (s, f) = model.remove(keep).unwrap();
                        total -= size(&f);
                        dropped += u64::from(s);
                        drops += 1;
                    }
                    model.push_back((samples, fragment));
                }
                5..=6 if in_flight.is_none() => {
                    let max = 1 + random(8);
                    in_flight = q.take(max, usize::MAX, usize::MAX).unwrap();
                    if let Some(r) = &in_flight {
                        let mut joined = Vec::new();
                        let mut samples = 0;
                        for (s, f) in model.iter().take(r.entries) {
                            joined.extend_from_slice(f);
                            samples += u64::from(*s);
                        }
                        assert_eq!((r.body.clone(), r.samples), (joined, samples));
                        let over = model.get(r.entries).is_some_and(|(s, _)| samples + u64::from(*s) > max);
                        assert!(r.entries == 1 || samples <= max);
                        assert!(r.entries == model.len() || over, "took too little");
                    }
                }
                5..=7 => {
                    if let Some(r) = in_flight.take() {
                        let remove = random(3) > 0;
                        q.settle(&r, remove).unwrap();
                        if remove {
                            model.drain(..r.entries);
                        }
                    }
                }
                _ => {
                    // A crash after a flush: whatever was in flight is simply still there.
                    db.flush().unwrap();
                    drop(q);
                    drop(db);
                    db = open_db(&dir.0);
                    q = Queue::open(&db, "m", cap).unwrap();
                    in_flight = None;
                    dropped = 0;
                    restarts += 1;
                }
            }
            let counts = q.counts();
            assert_eq!(bodies(&q), model.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>());
            let samples: u64 = model.iter().map(|(s, _)| u64::from(*s)).sum();
            assert_eq!(
                (counts.samples, counts.entries, counts.dropped_samples),
                (samples, model.len() as u64, dropped)
            );
        }
        assert!(restarts > 5 && drops > 5, "{restarts} restarts, {drops} drops: the run exercised neither");
    }
}
