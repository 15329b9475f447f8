//! The buffer against models and crashes: placement of every batch, caps, lanes, group commits.

use super::*;
use std::collections::BTreeMap as Map;

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("twinwatch-buffer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn meta(seq: u64, keyframe: bool) -> Meta {
    Meta { ticks: 1, ts_ms: seq as i64 * 1000, keyframe }
}

fn frame(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 ^ seq) as u8).collect()
}

/// Random pushes, sessions, sends, acks and clean reopens, with a small cap. After every step
/// each batch ever pushed is in exactly one place: still held, acknowledged, or in a drop
/// report; drop reports add up to the totals; and whatever is held starts at a keyframe or
/// right after an acknowledged batch, so it decodes.
#[test]
fn every_batch_is_held_acked_or_reported_dropped() {
    for seed in 1..=8u64 {
        let dir = temp_dir(&format!("model{seed}"));
        let cap = 8_000;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut b = Buffer::open(&dir, cap, Duration::from_millis(30)).unwrap();
        let mut incarnation = b.next_incarnation(0).unwrap();
        let mut seq = 0;
        // Every batch pushed: key → (keyframe, acked).
        let mut pushed: Map<Key, (bool, bool)> = Map::new();
        let mut sent: Vec<Key> = Vec::new();
        let mut reported: Map<Key, Dropped> = Map::new();
        let t0 = Instant::now();
        let mut now = t0;
        // Totals count per process; the reports outlive it.
        let mut dropped_earlier = 0;
        for _ in 0..600 {
            now += Duration::from_millis(10);
            match rng.next(12) {
                0..=5 => {
                    seq += 1;
                    let keyframe = seq == 1 || rng.next(6) == 0;
                    b.push(incarnation, seq, meta(seq, keyframe), frame(seq, 50 + rng.next(400) as usize), now)
                        .unwrap();
                    pushed.insert(key(incarnation, seq), (keyframe, false));
                }
                6 => {
                    b.begin_session();
                    sent.clear();
                }
                7 => {
                    b.end_session();
                    sent.clear();
                }
                8 => {
                    if let Some((k, _, _)) = b.next(rng.next(2) == 0).unwrap() {
                        sent.push(k);
                    }
                    for d in b.unsent_drops() {
                        reported.insert(key(d.incarnation, d.first_seq), d);
                    }
                }
                9 if !sent.is_empty() => {
                    let k = sent.remove(rng.next(sent.len() as u64) as usize);
                    let (inc, s) = split_key(&k);
                    b.ack(inc, s, s).unwrap();
                    pushed.get_mut(&k).unwrap().1 = true;
                }
                10 => {
                    b.flush().unwrap();
                    dropped_earlier += b.totals().dropped_ticks;
                    drop(b);
                    b = Buffer::open(&dir, cap, Duration::from_millis(30)).unwrap();
                    incarnation = b.next_incarnation(0).unwrap();
                    seq = 0;
                    sent.clear();
                }
                _ => {}
            }
            // Where every batch is.
            let inner = b.inner();
            let on_disk = b.batches.iter().map(|i| to_key(&i.unwrap().0)).filter(|k| !inner.acked_on_disk.contains(k));
            let held: BTreeSet<Key> = inner.mem.keys().copied().chain(on_disk).collect();
            let dropped: BTreeSet<Key> = inner
                .drops
                .values()
                .chain(reported.values())
                .flat_map(|d| (d.first_seq..=d.last_seq).map(move |s| key(d.incarnation, s)))
                .collect();
            for (k, (_, acked)) in &pushed {
                let places = held.contains(k) as u8 + *acked as u8 + dropped.contains(k) as u8;
                assert_eq!(
                    places,
                    1,
                    "seed {seed}: {:?} held {} acked {acked} dropped {}",
                    split_key(k),
                    held.contains(k),
                    dropped.contains(k)
                );
            }
            assert_eq!(inner.mem.len() as u64 + inner.disk_count, held.len() as u64);
            let mut all_reports: Map<Key, Dropped> = reported.clone();
            all_reports.extend(inner.drops.iter().map(|(k, d)| (*k, *d)));
            assert_eq!(
                all_reports.values().map(|d| d.ticks).sum::<u64>(),
                dropped_earlier + inner.totals.dropped_ticks
            );
            // Held batches decode: each is a keyframe or follows a held or acknowledged batch.
            for k in &held {
                let (inc, s) = split_key(k);
                let prev = key(inc, s - 1);
                let ok = pushed[k].0 || held.contains(&prev) || pushed.get(&prev).is_some_and(|p| p.1);
                assert!(ok, "seed {seed}: held batch {inc}/{s} cannot be decoded");
            }
            drop(inner);
        }
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// An outage longer than the cap holds: whole segments go, oldest first, and the reports
/// count exactly what went.
#[test]
fn over_the_cap_the_oldest_segments_go_and_are_counted() {
    let dir = temp_dir("cap");
    let frame_len = 487; // 500 bytes held per batch
    let b = Buffer::open(&dir, 10_000, Duration::from_millis(50)).unwrap();
    let t0 = Instant::now();
    for seq in 1..=100u64 {
        let now = t0 + Duration::from_millis(100 * seq);
        b.push(1, seq, meta(seq, seq % 5 == 1), frame(seq, frame_len), now).unwrap();
        assert!(b.bytes() <= 10_000 + 5 * 500, "at most one segment over");
    }
    b.begin_session();
    let reports = b.unsent_drops();
    let dropped: u64 = reports.iter().map(|d| d.ticks).sum();
    assert_eq!(dropped + b.len(), 100);
    assert_eq!(dropped, b.totals().dropped_ticks);
    assert_eq!(dropped % 5, 0, "whole segments");
    // Reports tile 1..=dropped, and what is held starts at a keyframe.
    let mut next = 1;
    for d in &reports {
        assert_eq!(d.first_seq, next);
        assert_eq!((d.from_ms, d.to_ms), (d.first_seq as i64 * 1000, d.last_seq as i64 * 1000));
        next = d.last_seq + 1;
    }
    assert_eq!(next, dropped + 1);
    assert_eq!(next % 5, 1);
    // Acknowledged, a report is forgotten, on disk too.
    b.ack(1, 1, dropped).unwrap();
    drop(b);
    let b = Buffer::open(&dir, 10_000, Duration::from_millis(50)).unwrap();
    b.begin_session();
    assert!(b.unsent_drops().is_empty());
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With acks arriving within the flush interval, nothing reaches the disk.
#[test]
fn prompt_acks_write_nothing() {
    let dir = temp_dir("prompt");
    let b = Buffer::open(&dir, 1 << 20, Duration::from_secs(1)).unwrap();
    b.begin_session();
    let t0 = Instant::now();
    for seq in 1..=500u64 {
        let now = t0 + Duration::from_millis(100 * seq);
        b.push(1, seq, meta(seq, seq == 1), frame(seq, 300), now).unwrap();
        let (k, _, lane) = b.next(true).unwrap().unwrap();
        assert_eq!((split_key(&k), lane), ((1, seq), Lane::Live));
        b.ack(1, seq, seq).unwrap();
    }
    assert_eq!(b.totals().spilled_bytes, 0);
    assert!(b.is_empty());
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unacknowledged batches go to disk in group commits once they have waited the flush
/// interval; a crash (no final flush) loses only the younger ones.
#[test]
fn waiting_batches_are_group_committed_and_survive_a_crash() {
    let dir = temp_dir("crash");
    let t0 = Instant::now();
    {
        let b = Buffer::open(&dir, 1 << 20, Duration::from_millis(1000)).unwrap();
        for seq in 1..=35u64 {
            b.push(1, seq, meta(seq, seq == 1), frame(seq, 100), t0 + Duration::from_millis(100 * seq)).unwrap();
        }
        // Pushes at 0.1 s steps with a 1 s interval: a commit every ten pushes.
        assert_eq!(b.totals().spills, 3);
        // Dropped without flush: a crash.
    }
    let b = Buffer::open(&dir, 1 << 20, Duration::from_millis(1000)).unwrap();
    // The commit at the 33rd push took everything up to it; the two after it, younger than the
    // flush interval, were lost.
    assert_eq!(b.len(), 33, "everything older than the flush interval survived");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// After an outage, the first keyframe opens the live lane; live batches go before the
/// backlog, which drains oldest first.
#[test]
fn live_goes_before_the_backlog() {
    let dir = temp_dir("lanes");
    let b = Buffer::open(&dir, 1 << 20, Duration::from_millis(50)).unwrap();
    let t0 = Instant::now();
    for seq in 1..=20u64 {
        b.push(1, seq, meta(seq, seq == 1), frame(seq, 100), t0 + Duration::from_millis(100 * seq)).unwrap();
    }
    assert_eq!(b.begin_session(), 20);
    let t = t0 + Duration::from_secs(3);
    b.push(1, 21, meta(21, false), frame(21, 100), t).unwrap(); // before the keyframe: backlog
    assert_eq!(b.next(false).unwrap(), None, "nothing live yet, and the backlog waits its turn");
    assert!(!b.live_opened());
    b.push(1, 22, meta(22, true), frame(22, 100), t).unwrap();
    b.push(1, 23, meta(23, false), frame(23, 100), t).unwrap();
    assert!(!b.live_opened(), "open once its first batch is sent, not when pushed");
    assert_eq!(b.next(false).unwrap().map(|(k, _, lane)| (split_key(&k).1, lane)), Some((22, Lane::Live)));
    assert!(b.live_opened(), "the shipper may let the backlog go now");
    let order: Vec<(u64, Lane)> =
        std::iter::from_fn(|| b.next(true).unwrap()).map(|(k, _, lane)| (split_key(&k).1, lane)).collect();
    let expected: Vec<(u64, Lane)> =
        [(23, Lane::Live)].into_iter().chain((1..=21).map(|s| (s, Lane::Backlog))).collect();
    assert_eq!(order, expected);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_buffer_needs_no_keyframe_to_go_live() {
    let dir = temp_dir("empty");
    let b = Buffer::open(&dir, 1 << 20, Duration::from_millis(50)).unwrap();
    assert_eq!(b.begin_session(), 0);
    b.push(1, 7, meta(7, false), frame(7, 10), Instant::now()).unwrap();
    assert_eq!(b.next(false).unwrap().map(|(k, _, lane)| (split_key(&k).1, lane)), Some((7, Lane::Live)));
    b.end_session();
    assert_eq!(b.begin_session(), 1, "an unacknowledged batch is backlog: the live lane needs a keyframe");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn incarnations_never_repeat_even_with_a_stale_clock() {
    let dir = temp_dir("inc");
    let b = Buffer::open(&dir, 1 << 20, Duration::from_millis(50)).unwrap();
    let first = b.next_incarnation(5_000).unwrap();
    let second = b.next_incarnation(10).unwrap();
    assert_eq!((first, second), (5_000, 5_001));
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_locked_buffer_is_an_error_and_is_never_moved_aside() {
    let dir = temp_dir("locked");
    let first = Buffer::open(&dir, 1 << 20, Duration::from_millis(50)).unwrap();
    first.push(1, 1, meta(1, true), b"frame".to_vec(), Instant::now()).unwrap();
    first.flush().unwrap();
    assert!(matches!(Buffer::open(&dir, 1 << 20, Duration::from_millis(50)), Err(BufferError::Open { .. })));
    assert_eq!(first.len(), 1);
    assert!(!dir.with_extension(format!("corrupt-{}", std::process::id())).exists());
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}
