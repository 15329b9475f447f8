//! Checkpoints and the log replay that undoes a crash; the background pass that also compacts and
//! expires history.
//!
//! A checkpoint freezes a host's twin and recorded points under the twin lock, writes them with
//! the log truncation outside it, flushes, and only then lets the recorder forget what it froze.
//! Between checkpoints the log is the only durable copy of new points: [`replay`] feeds it back
//! through the twin, which decodes and records them again exactly once (the ledger knows every
//! batch the checkpointed twin already holds).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use twinwatch_common::message::Message;
use twinwatch_common::reader::MessageReader;
use twinwatch_common::sample::SeriesKey;
use twinwatch_common::time::now_ms;

use crate::history::recorder::Frozen;
use crate::remote_write::{RemoteWrite, SeriesPoints};
use crate::store::{Store, StoreError};
use crate::twin::{HostTwin, Twin};

fn lock(twin: &Mutex<Twin>) -> std::sync::MutexGuard<'_, Twin> {
    twin.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes host `id`'s twin and pending history and the log position it covers, and syncs; queues the points
/// for `remote` first.
pub async fn checkpoint(
    twin: &Mutex<Twin>,
    store: &Store,
    remote: Option<&RemoteWrite>,
    id: &str,
) -> Result<(), StoreError> {
    write(twin, store, remote, id)?;
    store.sync().await
}

/// [`checkpoint`] without the sync. The twin, the segments and the log position they cover go in
/// one atomic sled batch, so until a sync makes them durable a crash loses all of them together
/// and the log's replay records the points again; meanwhile queries read them from sled, and the
/// recorder can forget what it froze. The log lets go of the frames only after the sync.
fn write(twin: &Mutex<Twin>, store: &Store, remote: Option<&RemoteWrite>, id: &str) -> Result<(), StoreError> {
    // Taken before the twin lock and never while holding it; nothing here awaits.
    let _turn = store.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
    let (host, frozen, exported, through) = {
        let mut twin = lock(twin);
        let Some(host) = twin.shared_host(id) else {
            return Ok(());
        };
        let frozen = twin.history.host_mut(id).map(|h| h.freeze()).unwrap_or_default();
        let exported = match (remote, twin.history.host(id)) {
            (Some(_), Some(rec)) => export(&host.id, &host.dc, rec.keys(), &frozen),
            _ => Vec::new(),
        };
        // Ingest applies a frame to the twin before it logs it, so every frame logged at or
        // before the position read here is in `host`; one logged later stays in the log.
        (host, frozen, exported, store.log_position())
    };
    // Queued first: a crash before the checkpoint lands replays the log and queues them again
    // (a remote takes a repeated sample as a duplicate), never loses them.
    if let (Some(remote), false) = (remote, exported.is_empty()) {
        remote.enqueue(&exported)?;
    }
    store.checkpoint(&host, &frozen, through)?;
    if let Some(h) = lock(twin).history.host_mut(id) {
        h.written();
    }
    Ok(())
}

/// The frozen points as remote write series: `__name__`, `host`, `dc` and the series' labels.
fn export(id: &str, dc: &str, keys: &[Arc<SeriesKey>], frozen: &Frozen) -> Vec<SeriesPoints> {
    let mut by_series: BTreeMap<u32, Vec<(i64, f64)>> = BTreeMap::new();
    for columns in frozen.windows.values() {
        for (idx, col) in columns {
            by_series.entry(*idx).or_default().extend(col.reals());
        }
    }
    by_series
        .into_iter()
        .filter_map(|(idx, points)| {
            let key = keys.get(idx as usize)?;
            let mut labels = vec![
                ("__name__".to_owned(), key.name.clone()),
                ("host".to_owned(), id.to_owned()),
                ("dc".to_owned(), dc.to_owned()),
            ];
            labels.extend(key.labels.iter().cloned());
            Some(SeriesPoints { labels, points })
        })
        .collect()
}

/// Applies host `id`'s logged frames to the twin again; returns how many were applied.
pub fn replay(twin: &mut Twin, store: &Store, id: &str) -> Result<usize, StoreError> {
    Ok(apply_logged(twin, id, &store.logged(id)?))
}

/// Applies `logged`, frames host `id` logged, to the twin; returns how many were applied.
fn apply_logged(twin: &mut Twin, id: &str, logged: &[Vec<u8>]) -> usize {
    let mut applied = 0;
    // Replayed frames are not news from the agent: the host keeps the time it was last heard.
    let seen = twin.host(id).map_or(0, |h| h.last_seen_ms);
    for frame in logged {
        let mut reader = MessageReader::new();
        reader.push(frame);
        match reader.next_message() {
            Ok(Some(Message::Batch(b))) => {
                twin.apply_batch(id, &b, seen);
                applied += 1;
            }
            Ok(Some(Message::Dropped(d))) => {
                twin.apply_dropped(id, &d, seen);
                applied += 1;
            }
            Ok(other) => tracing::warn!(agent = id, "log entry is not a batch: {:?}", other.map(|m| m.name())),
            Err(e) => tracing::warn!(agent = id, "log entry does not decode: {e}"),
        }
    }
    applied
}

/// Puts host `id` back as storage has it, after a failed write: `stored` as checkpointed and
/// `logged` since, both read from the store before the twin lock was taken.
pub fn restore(twin: &mut Twin, id: &str, stored: Option<HostTwin>, logged: &[Vec<u8>]) {
    twin.restore(stored, id);
    apply_logged(twin, id, logged);
}

/// Checkpoints are spread over the interval in this many slots: each host is written once per
/// interval, in its own slot, so points wait in memory about half an interval on average instead
/// of the whole fleet's growing together and falling at once (a thousand hosts' half minute is
/// tens of megabytes at the top of each cycle).
const SLOTS: u32 = 30;

/// A pass slower than this is logged: the slots behind it run late.
const SLOW_PASS: Duration = Duration::from_secs(1);
/// Slots between two syncs of what the passes wrote.
const SYNC_EVERY: u32 = 5;

/// The shortest wait between two slots' checkpoints.
const MIN_TICK: Duration = Duration::from_millis(10);

/// The slot of host `id`: a fixed hash of its id, so each host keeps its slot.
fn slot_of(id: &str) -> u32 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % u64::from(SLOTS)) as u32
}

/// Every `every / SLOTS`: checkpoints the hosts of the next slot that have new points and
/// compacts their finished windows into rollups; once per `every`, expires what retention no
/// longer keeps. Every [`SYNC_EVERY`] slots, makes what the passes wrote durable, which lets the
/// log delete what they cover. A last checkpoint of every host runs at shutdown.
///
/// Slots keep to the clock: a slow pass makes the next ones run back to back rather than
/// stretching the cycle, so every host is still written once per `every` (a pass waiting on
/// a flush each slot had made it a minute at a thousand hosts, and their points twice as many).
pub async fn run(
    twin: &Mutex<Twin>,
    store: &Store,
    remote: Option<&RemoteWrite>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // A zero or tiny interval in the configuration must not spin a core.
    let tick = (every / SLOTS).max(MIN_TICK);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut slot = 0;
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        slot = (slot + 1) % SLOTS;
        let due = |id: &str| stopping || slot_of(id) == slot;
        if let Err(e) = pass(twin, store, remote, due, slot == 0 || stopping).await {
            tracing::error!("history checkpoint: {e}");
        }
        if stopping || slot % SYNC_EVERY == 0 {
            if let Err(e) = store.sync().await {
                tracing::error!("history checkpoint: {e}");
            }
        }
        if stopping {
            return;
        }
    }
}

/// One round of checkpoints of the hosts `due` picks and compaction of their finished windows;
/// if `maintain`, expiry too. Not yet durable: see [`Store::sync`].
///
/// The sled work runs where the runtime lets other tasks move off this thread
/// ([`off_the_runtime`]): on a two-core VM, a pass must not hold a worker that ingest needs.
pub async fn pass(
    twin: &Mutex<Twin>,
    store: &Store,
    remote: Option<&RemoteWrite>,
    due: impl Fn(&str) -> bool,
    maintain: bool,
) -> Result<(), StoreError> {
    let ids: Vec<String> = {
        let twin = lock(twin);
        twin.hosts()
            .filter(|h| due(&h.id))
            .filter(|h| twin.history.host(&h.id).is_some_and(|r| r.pending_points > 0) || store.has_log(&h.id))
            .map(|h| h.id.clone())
            .collect()
    };
    let started = std::time::Instant::now();
    off_the_runtime(|| ids.iter().try_for_each(|id| write(twin, store, remote, id)))?;
    let written = started.elapsed();
    let now = now_ms();
    let (compacted, expired) = off_the_runtime(|| -> Result<_, StoreError> {
        let compacted = store.archive.compact_hosts(now, &due)?;
        let expired = if maintain { Some(store.archive.expire(now)?) } else { None };
        Ok((compacted, expired))
    })?;
    let expired_any = expired.as_ref().is_some_and(|e| e.raw_windows_deleted + e.rollup_blocks_deleted > 0);
    if compacted.windows_compacted > 0 || expired_any {
        tracing::debug!(?compacted, ?expired, "history compacted and expired");
    }
    let took = started.elapsed();
    if took > SLOW_PASS {
        tracing::warn!(
            hosts = ids.len(),
            windows_compacted = compacted.windows_compacted,
            write_ms = written.as_millis() as u64,
            compact_ms = (took - written).as_millis() as u64,
            "a checkpoint pass took {:.1} s: the next slots run late",
            took.as_secs_f64()
        );
    }
    Ok(())
}

/// Runs `work`, blocking sled calls and encoding, telling a multi-threaded runtime first so that
/// it hands this worker's other tasks to another thread meanwhile; on a single-threaded runtime
/// (tests) it simply runs.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_spread_over_the_slots_and_each_keeps_its_own() {
        let mut per_slot = vec![0usize; SLOTS as usize];
        for i in 0..3_000 {
            let id = format!("load-{i:04}");
            assert_eq!(slot_of(&id), slot_of(&id));
            per_slot[slot_of(&id) as usize] += 1;
        }
        // 100 a slot on average: none empty, none holding a crowd.
        assert!(per_slot.iter().all(|&n| (60..=140).contains(&n)), "{per_slot:?}");
    }
}
