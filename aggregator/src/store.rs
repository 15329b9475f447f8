//! Durable state in sled: every stored batch and every host's twin, committed together.
//!
//! One tree, two key spaces, so a single atomic `sled::Batch` stores a batch and the host state it
//! produced; after [`Store::flush`] returns, both survive a kill -9, and only then does ingest ack.
//!
//! ```text
//! h <agent id>                          -> HostTwin (bincode)
//! b <agent id> 0x00 <incarnation> <seq> -> the batch frame as received (zstd bincode)
//! ```

use std::path::{Path, PathBuf};

use crate::twin::HostTwin;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored host {id} does not decode: {detail}")]
    Corrupt { id: String, detail: String },
}

pub struct Store {
    db: sled::Db,
    data: sled::Tree,
}

/// Contiguous runs of stored sequence numbers of one incarnation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredRuns {
    pub incarnation: u64,
    pub count: u64,
    /// `[first, last]` pairs; more than one run means a hole.
    pub runs: Vec<(u64, u64)>,
}

fn host_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(b'h');
    k.extend_from_slice(id.as_bytes());
    k
}

fn batch_prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len() + 16);
    k.push(b'b');
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

fn batch_key(id: &str, incarnation: u64, seq: u64) -> Vec<u8> {
    let mut k = batch_prefix(id);
    k.extend_from_slice(&incarnation.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|source| StoreError::Open { path: dir.to_owned(), source })?;
        let data = db.open_tree("data")?;
        Ok(Store { db, data })
    }

    /// Every stored host.
    pub fn hosts(&self) -> Result<Vec<HostTwin>, StoreError> {
        let mut hosts = Vec::new();
        for item in self.data.scan_prefix(b"h") {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            let (host, _) = bincode::decode_from_slice(&v, config())
                .map_err(|e| StoreError::Corrupt { id: id.clone(), detail: e.to_string() })?;
            hosts.push(host);
        }
        Ok(hosts)
    }

    pub fn host(&self, id: &str) -> Result<Option<HostTwin>, StoreError> {
        match self.data.get(host_key(id))? {
            None => Ok(None),
            Some(v) => bincode::decode_from_slice(&v, config())
                .map(|(h, _)| Some(h))
                .map_err(|e| StoreError::Corrupt { id: id.into(), detail: e.to_string() }),
        }
    }

    /// Stores `host` and the `(incarnation, seq, frame)` batches in one atomic step. Not yet
    /// durable: call [`Store::flush`] before acknowledging.
    pub fn commit(&self, host: &HostTwin, batches: &[(u64, u64, Vec<u8>)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (incarnation, seq, frame) in batches {
            b.insert(batch_key(&host.id, *incarnation, *seq), frame.as_slice());
        }
        let encoded = bincode::encode_to_vec(host, config()).expect("HostTwin always encodes");
        b.insert(host_key(&host.id), encoded);
        self.data.apply_batch(b)?;
        Ok(())
    }

    /// Makes every commit so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The stored sequence numbers of `id`, as runs per incarnation.
    pub fn stored_runs(&self, id: &str) -> Result<Vec<StoredRuns>, StoreError> {
        let prefix = batch_prefix(id);
        let mut out: Vec<StoredRuns> = Vec::new();
        for item in self.data.scan_prefix(&prefix) {
            let (k, _) = item?;
            let rest = &k[prefix.len()..];
            if rest.len() != 16 {
                continue;
            }
            let incarnation = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let seq = u64::from_be_bytes(rest[8..].try_into().expect("8 bytes"));
            match out.last_mut() {
                Some(r) if r.incarnation == incarnation => {
                    r.count += 1;
                    match r.runs.last_mut() {
                        Some(run) if run.1 + 1 == seq => run.1 = seq,
                        _ => r.runs.push((seq, seq)),
                    }
                }
                _ => out.push(StoredRuns { incarnation, count: 1, runs: vec![(seq, seq)] }),
            }
        }
        Ok(out)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AgentIdentity;
    use crate::twin::Twin;
    use twinwatch_common::message::{Hello, HostInfo};

    #[tokio::test]
    async fn commits_survive_reopen_and_runs_show_holes() {
        let dir = std::env::temp_dir().join(format!("twinwatch-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut twin = Twin::default();
        let who = AgentIdentity { id: "a-1".into(), dc: "dc2".into() };
        let hello = Hello {
            agent_version: "t".into(),
            incarnation: 9,
            agent_time_ms: 0,
            interval_ms: 1000,
            host: HostInfo::default(),
        };
        twin.handle_hello(&who, 1, &hello, 5);
        {
            let store = Store::open(&dir).unwrap();
            let host = twin.host("a-1").unwrap();
            store.commit(host, &[(9, 1, vec![1]), (9, 2, vec![2]), (9, 4, vec![4]), (10, 1, vec![5])]).unwrap();
            store.flush().await.unwrap();
        }
        // sled's flusher thread lets go of the file lock a moment after the last handle is
        // dropped; a reopen in the same process waits for it, as a restarted process would not.
        let mut reopened = Store::open(&dir);
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            reopened = Store::open(&dir);
        }
        let store = reopened.unwrap();
        assert_eq!(store.hosts().unwrap(), vec![twin.host("a-1").unwrap().clone()]);
        let runs = store.stored_runs("a-1").unwrap();
        assert_eq!(
            runs,
            vec![
                StoredRuns { incarnation: 9, count: 3, runs: vec![(1, 2), (4, 4)] },
                StoredRuns { incarnation: 10, count: 1, runs: vec![(1, 1)] },
            ]
        );
        assert!(store.stored_runs("a").unwrap().is_empty(), "prefix of another id must not match");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
