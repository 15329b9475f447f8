//! Durable state: every host's twin and history (see `archive.rs`) in sled, in one tree so one
//! atomic `sled::Batch` can span them, and the write-ahead log of the frames applied since each
//! host's checkpoint in files beside it (`wal.rs`).
//!
//! ```text
//! h <agent id>   -> HostTwin (bincode, zstd), as of its last checkpoint
//! c <agent id>   -> the log position that checkpoint covers
//! ```
//!
//! Ingest appends each frame it applies to the log and flushes it before it acks, so an ack means
//! durable. A checkpoint writes the host, the history points recorded from those frames and the
//! position it covers in one batch; once sled has flushed it, the log lets go of those frames.
//! Opening the store after a crash gives back the hosts as checkpointed plus the frames logged past
//! their positions, which replay through the twin to the same state.

pub mod archive;
pub mod checkpoint;
pub(crate) mod keys;
pub mod query;
pub mod wal;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use crate::history::recorder::Frozen;
use crate::history::Retention;
use crate::remote_write::RemoteWriteError;
use crate::twin::HostTwin;
use archive::{Archive, ArchiveError};
use wal::{Wal, WalError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored host {id} does not decode: {detail}")]
    Corrupt { id: String, detail: String },
    #[error(transparent)]
    History(#[from] ArchiveError),
    #[error(transparent)]
    RemoteWrite(#[from] RemoteWriteError),
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// The shortest time between the starts of two flushes (see [`Store::flush`]).
const FLUSH_GAP: std::time::Duration = std::time::Duration::from_millis(20);

pub struct Store {
    db: sled::Db,
    data: sled::Tree,
    pub archive: Archive,
    wal: Arc<Wal>,
    /// Hosts with frames logged in sled by an older version, read and deleted at their first
    /// checkpoint.
    legacy_log: std::sync::Mutex<BTreeSet<String>>,
    /// Group commit: see [`Store::flush`].
    flush_tickets: AtomicU64,
    flushed_through: AtomicU64,
    /// Held for one flush at a time; when the last one started.
    flushing: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Group commit of sled: see [`Store::sync`].
    sync_tickets: AtomicU64,
    synced_through: AtomicU64,
    syncing: tokio::sync::Mutex<()>,
    /// One checkpoint at a time: two of one host writing their snapshots in the other order
    /// would store the older twin with the newer one's log truncation.
    pub(crate) checkpoints: std::sync::Mutex<()>,
}

fn host_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(keys::HOST);
    k.extend_from_slice(id.as_bytes());
    k
}

fn log_prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len() + 8);
    k.push(keys::LOG);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn decode_host(id: &str, v: &[u8]) -> Result<HostTwin, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt { id: id.to_owned(), detail };
    let raw = crate::history::zstd_context::decompress(v, 64 << 20).map_err(|e| corrupt(e.to_string()))?;
    bincode::decode_from_slice(&raw, config()).map(|(h, _)| h).map_err(|e| corrupt(e.to_string()))
}

fn encode_host(host: &HostTwin) -> Vec<u8> {
    let encoded = bincode::encode_to_vec(host, config()).expect("HostTwin always encodes");
    crate::history::zstd_context::compress(&encoded, 1)
}

impl Store {
    pub fn open(dir: &Path, retention: Retention) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // Recent history segments and hosts' twins are what is read back; the log is written
            // and truncated, rarely read. Every byte here is a byte of a 256 MiB VM.
            .cache_capacity(8 << 20)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|source| StoreError::Open { path: dir.to_owned(), source })?;
        let data = db.open_tree(keys::DATA_TREE)?;
        let mut legacy = BTreeSet::new();
        let mut last = 0;
        for item in data.scan_prefix([keys::LOG]) {
            let (k, _) = item?;
            if let Some(n) = k.len().checked_sub(8).and_then(|at| k[at..].try_into().ok()).map(u64::from_be_bytes) {
                last = last.max(n);
            }
            legacy.insert(String::from_utf8_lossy(&k[1..k.len().saturating_sub(9)]).into_owned());
        }
        let mut covered = HashMap::new();
        for item in data.scan_prefix([keys::COVERED]) {
            let (k, v) = item?;
            let through = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            covered.insert(String::from_utf8_lossy(&k[1..]).into_owned(), through);
        }
        let wal = Wal::open(&dir.join("wal"), covered)?;
        wal.raise_position(last);
        let archive = Archive::open(data.clone(), retention)?;
        Ok(Store {
            db,
            data,
            archive,
            wal: Arc::new(wal),
            legacy_log: std::sync::Mutex::new(legacy),
            flush_tickets: AtomicU64::new(0),
            flushed_through: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(None),
            sync_tickets: AtomicU64::new(0),
            synced_through: AtomicU64::new(0),
            syncing: tokio::sync::Mutex::new(()),
            checkpoints: std::sync::Mutex::new(()),
        })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Every stored host, as of its last checkpoint.
    pub fn hosts(&self) -> Result<Vec<HostTwin>, StoreError> {
        let mut hosts = Vec::new();
        for item in self.data.scan_prefix([keys::HOST]) {
            let (k, v) = item?;
            hosts.push(decode_host(&String::from_utf8_lossy(&k[1..]), &v)?);
        }
        Ok(hosts)
    }

    pub fn host(&self, id: &str) -> Result<Option<HostTwin>, StoreError> {
        self.data.get(host_key(id))?.map(|v| decode_host(id, &v)).transpose()
    }

    /// Appends frames `id` applied to its log. Not yet durable: call [`Store::flush`] before
    /// acknowledging.
    pub fn log(&self, id: &str, frames: &[Vec<u8>]) -> Result<(), StoreError> {
        Ok(self.wal.append(id, frames)?)
    }

    /// The log position of the last frame logged so far.
    pub fn log_position(&self) -> u64 {
        self.wal.position()
    }

    fn legacy(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.legacy_log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The frames `id` logged since its last checkpoint, in order.
    pub fn logged(&self, id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        if self.legacy().contains(id) {
            for item in self.data.scan_prefix(log_prefix(id)) {
                out.push(item?.1.to_vec());
            }
        }
        out.extend(self.wal.logged(id)?);
        Ok(out)
    }

    /// Whether `id` logged anything since its last checkpoint.
    pub fn has_log(&self, id: &str) -> bool {
        self.wal.has_log(id) || self.legacy().contains(id)
    }

    /// Ids of the hosts with a log.
    pub fn logging_hosts(&self) -> Result<Vec<String>, StoreError> {
        let mut out = self.wal.logging_hosts();
        out.extend(self.legacy().iter().cloned());
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Lets go of the frames of `id`, a host storage no longer has, through `through`.
    pub fn forget_log(&self, id: &str, through: u64) {
        self.wal.checkpointed(id, through);
    }

    /// Writes `host`, the history points `frozen` from it, and the log position `through` it
    /// covers, in one atomic step. Not yet durable: call [`Store::sync`], after which the log
    /// lets go of the frames it covers.
    pub fn checkpoint(&self, host: &HostTwin, frozen: &Frozen, through: u64) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        b.insert(host_key(&host.id), encode_host(host));
        let mut covered = Vec::with_capacity(1 + host.id.len());
        covered.push(keys::COVERED);
        covered.extend_from_slice(host.id.as_bytes());
        b.insert(covered, &through.to_be_bytes());
        let legacy = self.legacy().contains(&host.id);
        if legacy {
            for item in self.data.scan_prefix(log_prefix(&host.id)) {
                b.remove(item?.0);
            }
        }
        self.archive.checkpoint(&mut b, &host.id, frozen)?;
        self.archive.apply(b, &host.id, frozen)?;
        if legacy {
            self.legacy().remove(&host.id);
        }
        self.wal.checkpointed(&host.id, through);
        Ok(())
    }

    /// Makes every checkpoint, compaction and expiry so far durable, then deletes the log
    /// segments they cover. A group commit, as [`Store::flush`] is: callers arriving during a
    /// sync queue for the next one, which covers them all.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let ticket = self.sync_tickets.fetch_add(1, SeqCst) + 1;
        let _turn = self.syncing.lock().await;
        if self.synced_through.load(SeqCst) >= ticket {
            return Ok(());
        }
        let through = self.sync_tickets.load(SeqCst);
        let covered = self.wal.take_covered();
        let db = self.db.clone();
        let wal = self.wal.clone();
        let sync = move || -> Result<(), StoreError> {
            db.flush()?;
            wal.release(covered);
            Ok(())
        };
        match tokio::task::spawn_blocking(sync).await {
            Ok(result) => result?,
            Err(e) => return Err(StoreError::Sled(sled::Error::ReportableBug(format!("sync task: {e}")))),
        }
        self.synced_through.fetch_max(through, SeqCst);
        Ok(())
    }

    /// Log segment files on disk.
    pub fn log_segments(&self) -> usize {
        self.wal.segments()
    }

    /// Makes every frame logged so far durable.
    ///
    /// A group commit: callers queue for one flush at a time, and a flush that started after a
    /// caller's ticket covers it, so a thousand sessions asking at once cost a few flushes, not a
    /// thousand. Flushes start at least [`FLUSH_GAP`] apart: each is a write and an `fdatasync`
    /// on the blocking pool, and an ack waits at most that much more.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // Taken after this caller's writes: any flush that reads the counter at or past it
        // started after them.
        let ticket = self.flush_tickets.fetch_add(1, SeqCst) + 1;
        let mut last = self.flushing.lock().await;
        if self.flushed_through.load(SeqCst) >= ticket {
            return Ok(());
        }
        // Flushes start at most every FLUSH_GAP (waited out on the blocking pool, which needs no
        // timer in the runtime): callers arriving meanwhile queue for the next one.
        let wait = last.map_or(std::time::Duration::ZERO, |at| {
            (at + FLUSH_GAP).saturating_duration_since(std::time::Instant::now())
        });
        *last = Some(std::time::Instant::now() + wait);
        let through = self.flush_tickets.load(SeqCst);
        let wal = self.wal.clone();
        let flush = move || {
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            wal.write_out()
        };
        match tokio::task::spawn_blocking(flush).await {
            Ok(result) => {
                result?;
            }
            // Only a runtime shutting down.
            Err(e) => return Err(StoreError::Sled(sled::Error::ReportableBug(format!("flush task: {e}")))),
        }
        self.flushed_through.fetch_max(through, SeqCst);
        Ok(())
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checkpoint;
    use crate::twin::identity::AgentIdentity;
    use crate::twin::Twin;
    use std::sync::Mutex;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::frame::FrameEncoder;
    use twinwatch_common::message::{Batch, Hello, HostInfo, Message};
    use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

    async fn reopen(dir: &Path) -> Store {
        // sled's flusher thread lets go of the file lock a moment after the last handle is
        // dropped; a reopen in the same process waits for it, as a restarted process would not.
        for _ in 0..100 {
            if let Ok(s) = Store::open(dir, Retention::default()) {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Store::open(dir, Retention::default()).unwrap()
    }

    fn hello(incarnation: u64) -> Hello {
        Hello { agent_version: "t".into(), incarnation, agent_time_ms: 0, interval_ms: 1000, host: HostInfo::default() }
    }

    /// A twin rebuilt from storage: checkpointed hosts and series, then the log replayed.
    fn recover(store: &Store) -> Twin {
        let mut twin = Twin::from_hosts(store.hosts().unwrap());
        for (host, keys) in store.archive.series().unwrap() {
            twin.load_history(&host, keys);
        }
        for id in store.logging_hosts().unwrap() {
            checkpoint::replay(&mut twin, store, &id).unwrap();
        }
        twin
    }

    /// sled 0.34's own `flush_async` loses wake-ups when many run at once (sled#1308): every
    /// session of a busy aggregator waited forever, with sled's writers blocked behind it. The
    /// group commit must finish every flush. Watched from another thread: a deadlock parks the
    /// runtime's workers, and no timer inside it would fire.
    #[test]
    fn hundreds_of_sessions_flushing_at_once_all_finish() {
        let dir = std::env::temp_dir().join(format!("twinwatch-flush-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (done, finished) = std::sync::mpsc::channel();
        let at = dir.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
            let hosts = rt.block_on(async {
                let store = std::sync::Arc::new(Store::open(&at, Retention::default()).unwrap());
                let sessions: Vec<_> = (0..200)
                    .map(|i| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            for round in 0..20u8 {
                                store.log(&format!("a-{i}"), &[vec![round; 64]]).unwrap();
                                store.flush().await.unwrap();
                            }
                        })
                    })
                    .collect();
                for s in sessions {
                    s.await.unwrap();
                }
                store.logging_hosts().unwrap().len()
            });
            let _ = done.send(hosts);
        });
        let hosts = finished.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(hosts, Ok(200), "every session's flushes finished within 60 s");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_crash_after_a_checkpoint_replays_the_log_to_the_same_twin_and_history() {
        let dir = std::env::temp_dir().join(format!("twinwatch-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let who = AgentIdentity { id: "a-1".into(), dc: "dc2".into() };
        let hello = Hello {
            agent_version: "t".into(),
            incarnation: 9,
            agent_time_ms: 0,
            interval_ms: 1000,
            host: HostInfo::default(),
        };
        let mut enc = DeltaEncoder::new(5);
        let mut frames = FrameEncoder::new();
        let t0 = 1_800_000_000_000;
        let batches: Vec<(Batch, Vec<u8>)> = (1..=40u64)
            .map(|seq| {
                let m = Metric::counter(SeriesKey::new("c"), Value::Int(seq as i64 * 7));
                let tick = enc.encode(&Sample::new(t0 + seq as i64 * 1000, vec![m]));
                let batch = Batch { incarnation: 9, seq, ticks: vec![tick] };
                let frame = Message::Batch(batch.clone()).to_frame(&mut frames).unwrap().to_vec();
                (batch, frame)
            })
            .collect();
        let twin = Mutex::new(Twin::default());
        {
            let store = Store::open(&dir, Retention::default()).unwrap();
            twin.lock().unwrap().handle_hello(&who, 1, &hello, 5);
            checkpoint::checkpoint(&twin, &store, None, "a-1").await.unwrap();
            for (i, (batch, frame)) in batches.iter().enumerate() {
                twin.lock().unwrap().handle_batch("a-1", 1, batch, 10);
                store.log("a-1", std::slice::from_ref(frame)).unwrap();
                if i == 24 {
                    checkpoint::checkpoint(&twin, &store, None, "a-1").await.unwrap();
                    assert_eq!(store.logged("a-1").unwrap().len(), 0, "the checkpoint truncates the log");
                }
            }
            store.flush().await.unwrap();
            assert_eq!(store.logged("a-1").unwrap().len(), 15);
        }
        let store = reopen(&dir).await;
        let recovered = recover(&store);
        let original = twin.lock().unwrap();
        assert_eq!(recovered.host("a-1"), original.host("a-1"), "the same twin, every batch once");
        let points = |t: &Twin| t.history.host("a-1").unwrap().points(0, 0, i64::MAX).unwrap().points;
        let stored = store.archive.raw("a-1", 0, 0, i64::MAX).unwrap().unwrap().points;
        let mut all = stored.clone();
        all.extend(points(&recovered));
        assert_eq!(stored.len(), 25, "checkpointed points are in segments");
        assert_eq!(all, (1..=40).map(|s| (t0 + s * 1000, (s * 7) as u64)).collect::<Vec<_>>());
        assert_eq!(points(&original).len(), 15);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store written before the log moved to files keeps its frames in sled: they replay after
    /// an upgrade, before anything logged since, and the host's first checkpoint deletes them.
    #[tokio::test]
    async fn frames_an_older_store_logged_in_sled_replay_and_are_deleted_by_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("twinwatch-legacy-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir, Retention::default()).unwrap();
            for n in 1..=3u64 {
                let mut k = log_prefix("old");
                k.extend_from_slice(&n.to_be_bytes());
                store.data.insert(k, vec![n as u8; 8]).unwrap();
            }
            store.db.flush().unwrap();
        }
        let store = reopen(&dir).await;
        assert_eq!(store.logging_hosts().unwrap(), ["old"]);
        store.log("old", &[vec![9; 8]]).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.log_position(), 4, "positions go on after the old ones");
        let want: Vec<Vec<u8>> = vec![vec![1; 8], vec![2; 8], vec![3; 8], vec![9; 8]];
        assert_eq!(store.logged("old").unwrap(), want);
        let twin = Mutex::new(Twin::default());
        let who = AgentIdentity { id: "old".into(), dc: "dc1".into() };
        twin.lock().unwrap().handle_hello(&who, 1, &hello(1), 5);
        checkpoint::checkpoint(&twin, &store, None, "old").await.unwrap();
        assert!(!store.has_log("old") && store.logging_hosts().unwrap().is_empty());
        drop(store);
        let store = reopen(&dir).await;
        assert!(store.logging_hosts().unwrap().is_empty(), "nothing replays twice");
        assert_eq!(store.data.scan_prefix([keys::LOG]).count(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// History is stored in chunks small enough that sled keeps every leaf inline (and so
    /// countable by its cache): a checkpoint of many series makes several, compaction merges them
    /// with a segment stored whole by an older store, and every point reads back.
    #[tokio::test]
    async fn history_goes_into_chunks_that_keep_sled_leaves_inline_and_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("twinwatch-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, Retention::default()).unwrap();
        let twin = Mutex::new(Twin::default());
        let t0 = 1_800_000_000_000;
        let who = AgentIdentity { id: "c-1".into(), dc: "dc2".into() };
        twin.lock().unwrap().handle_hello(&who, 1, &hello(3), 5);
        let mut enc = DeltaEncoder::new(5);
        let value = |s: u64, i: u64| Value::Int(((s * 2_654_435_761 + i * 40_503) % 1_000_003) as i64);
        for seq in 1..=30u64 {
            let metrics = (0..400).map(|i| Metric::gauge(SeriesKey::new(format!("g{i}")), value(seq, i))).collect();
            let tick = enc.encode(&Sample::new(t0 + seq as i64 * 1000, metrics));
            twin.lock().unwrap().handle_batch("c-1", 1, &Batch { incarnation: 3, seq, ticks: vec![tick] }, 10);
        }
        checkpoint::checkpoint(&twin, &store, None, "c-1").await.unwrap();
        let raw_items = || -> Vec<(sled::IVec, sled::IVec)> {
            store.data.scan_prefix([keys::RAW]).map(|item| item.unwrap()).collect()
        };
        let items = raw_items();
        assert!(items.len() > 1, "400 series of 30 s make more than one chunk");
        for (_, v) in &items {
            let raw = crate::history::zstd_context::decompress(v, 1 << 20).unwrap();
            assert!(raw.len() <= archive::CHUNK_BYTES, "{} bytes", raw.len());
            assert!(v.len() * 17 < 128 << 10, "17 of these fit a leaf sled writes inline");
        }
        // A segment an older store wrote whole, under a key without a chunk number: a later
        // point of series 0, in the same window.
        let (first_key, _) = &items[0];
        let mut old_key = first_key[..first_key.len() - 6].to_vec();
        old_key.extend_from_slice(&7u32.to_be_bytes());
        let window = crate::history::recorder::WINDOW_MS;
        let window = (t0 + 1000).div_euclid(window) * window;
        let mut old = crate::history::segment::Columns::new();
        let mut col = crate::history::segment::Column::new(false, false, 1.0);
        col.points.push((t0 + 31_000, 4242));
        old.insert(0, col);
        store.data.insert(old_key, crate::history::segment::encode(window, &old, 1)).unwrap();
        let series = |store: &Store, idx: u32| store.archive.raw("c-1", idx, 0, i64::MAX).unwrap().unwrap().points;
        let before: Vec<Vec<(i64, u64)>> = (0..400).map(|i| series(&store, i)).collect();
        assert_eq!(before[0].len(), 31);
        assert_eq!(before[0].last(), Some(&(t0 + 31_000, 4242)));
        assert!(before[1..].iter().all(|p| p.len() == 30));
        let pass = store.archive.compact(t0 + 24 * 3_600_000).unwrap();
        assert_eq!((pass.windows_compacted, pass.segments_merged), (1, 2), "two segments, however many chunks");
        let after = raw_items();
        assert!(after.iter().all(|(k, _)| k.len() == first_key.len()), "no key without a chunk number is left");
        assert!(after.len() > 1);
        let back: Vec<Vec<(i64, u64)>> = (0..400).map(|i| series(&store, i)).collect();
        assert_eq!(back, before);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Compaction runs per checkpoint slot: a pass over some hosts leaves the others' finished
    /// windows for their own slot, and every window is compacted exactly once.
    #[tokio::test]
    async fn compaction_of_some_hosts_leaves_the_others_windows_for_their_own_pass() {
        let dir = std::env::temp_dir().join(format!("twinwatch-compact-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, Retention::default()).unwrap();
        let twin = Mutex::new(Twin::default());
        let t0 = 1_800_000_000_000;
        for id in ["a-1", "a-2"] {
            let who = AgentIdentity { id: id.into(), dc: "dc2".into() };
            let hello = Hello {
                agent_version: "t".into(),
                incarnation: 3,
                agent_time_ms: 0,
                interval_ms: 1000,
                host: HostInfo::default(),
            };
            twin.lock().unwrap().handle_hello(&who, 1, &hello, 5);
            let mut enc = DeltaEncoder::new(5);
            for seq in 1..=30u64 {
                let m = Metric::counter(SeriesKey::new("c"), Value::Int(seq as i64));
                let tick = enc.encode(&Sample::new(t0 + seq as i64 * 1000, vec![m]));
                twin.lock().unwrap().handle_batch(id, 1, &Batch { incarnation: 3, seq, ticks: vec![tick] }, 10);
            }
            checkpoint::checkpoint(&twin, &store, None, id).await.unwrap();
        }
        let later = t0 + 24 * 3_600_000;
        let first = store.archive.compact_hosts(later, |h| h == "a-1").unwrap();
        assert!(first.windows_compacted > 0, "{first:?}");
        let second = store.archive.compact_hosts(later, |h| h == "a-1").unwrap();
        assert_eq!(second.windows_compacted, 0, "a-1 was done: {second:?}");
        let rest = store.archive.compact(later).unwrap();
        assert_eq!(rest.windows_compacted, first.windows_compacted, "a-2's windows waited for their pass");
        for id in ["a-1", "a-2"] {
            let points = store.archive.raw(id, 0, 0, i64::MAX).unwrap().unwrap().points;
            assert_eq!(points.len(), 30, "{id}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
