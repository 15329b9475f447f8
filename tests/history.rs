//! History end to end on a real sled store: 24 h of 1 s data for 200 series, generated fast and
//! fed through the twin as an agent would send it (including an hour that arrives late, as a
//! backfill behind the live lane), checkpointed and compacted as the aggregator does. Every tier
//! is compared with folding the generated points directly; then the store is reopened after a
//! crash-like stop (points still only in the log) and queried again; then retention is advanced
//! and the space checked.

use std::path::Path;
use std::sync::Mutex;

use twinwatch_aggregator::history::rollup::{self, Bucket, Tier};
use twinwatch_aggregator::history::Retention;
use twinwatch_aggregator::store::archive::{Archive, ArchiveError};
use twinwatch_aggregator::store::checkpoint;
use twinwatch_aggregator::store::query::{self, Pending, Points, Resolution};
use twinwatch_aggregator::store::Store;
use twinwatch_aggregator::twin::identity::AgentIdentity;
use twinwatch_aggregator::twin::Twin;
use twinwatch_common::delta::DeltaEncoder;
use twinwatch_common::frame::FrameEncoder;
use twinwatch_common::message::{Batch, Hello, HostInfo, Message};
use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};
use twinwatch_tests::{wait_for, TempDir};

const SERIES: usize = 200;
const TICKS: i64 = 86_400;
const PER_BATCH: i64 = 60;
const HOUR: i64 = 3_600_000;
/// A day start.
const T0: i64 = 1_799_971_200_000;
/// The hour whose batches arrive last.
const LATE_HOUR: i64 = 5;
const HOST: &str = "synth";

fn ts(i: i64) -> i64 {
    T0 + i * 1000 + (i * 7919) % 6
}

/// Series `s` at tick `i`: constant, counter with a reset, float wave, or float with NaNs.
fn value(s: usize, i: i64) -> Value {
    let s64 = s as i64;
    match s % 4 {
        0 => Value::Int(s64 * 1000),
        1 => {
            let reset_at = 40_000 + s64 * 13;
            let base = if i >= reset_at { i - reset_at } else { i };
            Value::Int(base * (s64 % 9 + 1) + (i * s64) % 5)
        }
        2 => Value::Float(((i as f64) / 600.0 + s as f64).sin() * 50.0 + (i % 17) as f64 * 0.25),
        _ => Value::Float(if (i + s64) % 997 == 0 { f64::NAN } else { (i % 3600) as f64 * 0.5 }),
    }
}

fn real(s: usize, i: i64) -> f64 {
    // Counters carry a scale of 1/100 (like kernel ticks → seconds).
    match value(s, i) {
        Value::Int(v) if s % 4 == 1 => v as f64 / 100.0,
        v => v.as_f64(),
    }
}

fn key(s: usize) -> SeriesKey {
    SeriesKey::new(format!("synth_{}", ["const", "counter", "wave", "nans"][s % 4])).with("n", s.to_string())
}

fn sample(i: i64) -> Sample {
    let metrics = (0..SERIES)
        .map(|s| match s % 4 {
            1 => Metric::counter(key(s), value(s, i)).scaled(0.01),
            _ => Metric::gauge(key(s), value(s, i)),
        })
        .collect();
    Sample::new(ts(i), metrics)
}

fn reference(s: usize, from: i64, to: i64) -> Vec<(i64, f64)> {
    (0..TICKS).filter(|&i| ts(i) >= from && ts(i) < to).map(|i| (ts(i), real(s, i))).collect()
}

fn same_buckets(what: &str, got: &[Bucket], want: &[Bucket]) {
    assert_eq!(got.len(), want.len(), "{what}: bucket count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.start_ms, g.count, g.min, g.max, g.last), (w.start_ms, w.count, w.min, w.max, w.last), "{what}");
        assert!((g.sum - w.sum).abs() <= 1e-9 * w.sum.abs().max(1.0), "{what}: sum {} vs {}", g.sum, w.sum);
    }
}

fn pending(twin: &Mutex<Twin>, idx: u32, from: i64, to: i64) -> Pending {
    let twin = twin.lock().unwrap();
    let Some(rec) = twin.history.host(HOST) else { return Pending::default() };
    Pending { column: rec.points(idx, from, to), windows: rec.windows().collect() }
}

fn read(
    twin: &Mutex<Twin>,
    archive: &Archive,
    s: usize,
    res: Resolution,
    step: Option<i64>,
    from: i64,
    to: i64,
) -> Points {
    read_within(twin, archive, s, (res, step), from, to, usize::MAX).unwrap()
}

/// [`read`] with a budget of `points` raw points.
fn read_within(
    twin: &Mutex<Twin>,
    archive: &Archive,
    s: usize,
    plan: (Resolution, Option<i64>),
    from: i64,
    to: i64,
    points: usize,
) -> Result<Points, ArchiveError> {
    let idx =
        twin.lock().unwrap().history.host(HOST).unwrap().keys().iter().position(|k| **k == key(s)).unwrap() as u32;
    query::read(archive, HOST, idx, plan, from, to, &pending(twin, idx, from, to), &query::Budget::new(points))
}

/// Checks raw points and every tier for a few series against the generated data.
fn check_everything(twin: &Mutex<Twin>, archive: &Archive, when: &str) {
    for s in [0, 1, 2, 3, 101, 199] {
        let what = |tier: &str| format!("{when}: series {s} {tier}");
        // Raw, in the late hour and in an ordinary one.
        for (from, to) in [
            (T0 + LATE_HOUR * HOUR + 60_000, T0 + LATE_HOUR * HOUR + 900_000),
            (T0 + 12 * HOUR, T0 + 12 * HOUR + 600_000),
        ] {
            let Points::Raw(got) = read(twin, archive, s, Resolution::Raw, None, from, to) else { panic!("raw") };
            let want = reference(s, from, to);
            assert_eq!(got.len(), want.len(), "{}", what("raw"));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    g.0 == w.0 && (g.1 == w.1 || (g.1.is_nan() && w.1.is_nan())),
                    "{}: {g:?} vs {w:?}",
                    what("raw")
                );
            }
        }
        for (tier, from, to) in [
            (Tier::Minute, T0 + 3 * HOUR, T0 + 9 * HOUR),
            (Tier::FiveMinutes, T0, T0 + 24 * HOUR),
            (Tier::Hour, T0, T0 + 24 * HOUR),
        ] {
            let Points::Buckets(got) = read(twin, archive, s, Resolution::Tier(tier), None, from, to) else { panic!() };
            same_buckets(&what(tier.name()), &got, &rollup::fold(reference(s, from, to), tier.step_ms()));
        }
        // The raw budget: exactly enough answers, one point less stops with an error instead.
        let (from, to) = (T0 + 12 * HOUR, T0 + 12 * HOUR + 600_000);
        let n = reference(s, from, to).len();
        assert!(
            read_within(twin, archive, s, (Resolution::Raw, Some(1000)), from, to, n).is_ok(),
            "{}",
            what("budget")
        );
        match read_within(twin, archive, s, (Resolution::Raw, Some(1000)), from, to, n - 1) {
            Err(ArchiveError::TooManyPoints { limit }) => assert_eq!(limit, n - 1),
            other => panic!("{}: {other:?}", what("budget")),
        }
        // A step coarser than the tier re-buckets it.
        let Points::Buckets(got) =
            read(twin, archive, s, Resolution::Tier(Tier::FiveMinutes), Some(1_800_000), T0, T0 + 24 * HOUR)
        else {
            panic!()
        };
        same_buckets(&what("30m from 5m"), &got, &rollup::fold(reference(s, T0, T0 + 24 * HOUR), 1_800_000));
    }
}

fn open_store(dir: &Path, retention: Retention) -> Store {
    // sled lets go of its file lock a moment after the last handle is dropped.
    wait_for("the store's file lock", std::time::Duration::from_secs(10), || Store::open(dir, retention).ok())
}

fn open(dir: &Path, retention: Retention) -> (Store, Mutex<Twin>) {
    let store = open_store(dir, retention);
    let mut twin = Twin::from_hosts(store.hosts().unwrap());
    for (host, keys) in store.archive.series().unwrap() {
        twin.load_history(&host, keys);
    }
    for id in store.logging_hosts().unwrap() {
        checkpoint::replay(&mut twin, &store, &id).unwrap();
    }
    (store, Mutex::new(twin))
}

#[tokio::test(flavor = "current_thread")]
async fn a_day_of_history_matches_the_reference_at_every_tier_across_a_restart_and_retention() {
    let tmp = TempDir::new("history");
    let dir = tmp.path().join("db");
    let who = AgentIdentity { id: HOST.into(), dc: "dc2".into() };
    let hello = Hello {
        agent_version: "t".into(),
        incarnation: 1,
        agent_time_ms: 0,
        interval_ms: 1000,
        host: HostInfo::default(),
    };

    // The agent's batches, in sequence; the late hour's are held back and sent at the end.
    let mut enc = DeltaEncoder::new(300);
    let mut frames = FrameEncoder::new();
    let mut late = Vec::new();
    let mut seq = 0;
    {
        let (store, twin) = open(&dir, Retention::default());
        twin.lock().unwrap().handle_hello(&who, 1, &hello, T0);
        checkpoint::checkpoint(&twin, &store, None, HOST).await.unwrap();
        let send = |batch: &Batch, frames: &mut FrameEncoder| {
            let frame = Message::Batch(batch.clone()).to_frame(frames).unwrap().to_vec();
            twin.lock().unwrap().handle_batch(HOST, 1, batch, batch.ticks[0].ts_ms);
            store.log(HOST, &[frame]).unwrap();
        };
        for first in (0..TICKS).step_by(PER_BATCH as usize) {
            let in_late_hour = first / 3600 == LATE_HOUR;
            if first / 3600 == LATE_HOUR + 1 && first % 3600 == 0 {
                // The live lane comes back with a keyframe while the backlog waits.
                enc.request_keyframe();
            }
            seq += 1;
            let ticks = (first..first + PER_BATCH).map(|i| enc.encode(&sample(i))).collect();
            let batch = Batch { incarnation: 1, seq, ticks };
            if in_late_hour {
                late.push(batch);
                continue;
            }
            send(&batch, &mut frames);
            // Every ten minutes of data: a checkpoint, and compaction as the clock would allow.
            if (first + PER_BATCH) % 600 == 0 {
                checkpoint::checkpoint(&twin, &store, None, HOST).await.unwrap();
                store.archive.compact(ts(first + PER_BATCH)).unwrap();
            }
        }
        for batch in &late {
            send(batch, &mut frames);
        }
        let host = twin.lock().unwrap().host(HOST).unwrap().clone();
        assert_eq!(host.counters.batches_applied + host.counters.batches_backfilled, (TICKS / PER_BATCH) as u64);
        assert_eq!(host.counters.unapplied, 0);
        // The late hour and the newest windows are not rolled yet: queries fold them from raw.
        check_everything(&twin, &store.archive, "before compaction of the late hour");
        checkpoint::checkpoint(&twin, &store, None, HOST).await.unwrap();
        let pass = store.archive.compact(T0 + 25 * HOUR).unwrap();
        assert!(pass.windows_compacted >= 6, "{pass:?}");
        check_everything(&twin, &store.archive, "compacted");

        // A few more batches only in the log, then a stop with no checkpoint (as kill -9 would).
        for first in (TICKS..TICKS + 600).step_by(PER_BATCH as usize) {
            seq += 1;
            let ticks = (first..first + PER_BATCH).map(|i| enc.encode(&sample(i))).collect();
            send(&Batch { incarnation: 1, seq, ticks }, &mut frames);
        }
        store.flush().await.unwrap();
        let [series_bytes, raw_bytes, rollup_bytes] = store.archive.bytes().unwrap();
        let points = (SERIES as i64 * TICKS) as f64;
        println!(
            "24 h x {SERIES} series ({points:.0} points): raw {raw_bytes} B ({:.3} B/point), rollups {rollup_bytes} B ({:.3} B/point), series {series_bytes} B; sled on disk {} B",
            raw_bytes as f64 / points,
            rollup_bytes as f64 / points,
            store.size_on_disk()
        );
    }

    // Reopen: checkpointed state plus the replayed log.
    let (store, twin) = open(&dir, Retention::default());
    check_everything(&twin, &store.archive, "after restart");
    let tail = T0 + TICKS * 1000;
    let Points::Raw(got) = read(&twin, &store.archive, 1, Resolution::Raw, None, tail, tail + 600_000) else {
        panic!()
    };
    assert_eq!(got, reference_after(1, tail), "points only in the log came back");
    let before = store.archive.bytes().unwrap();
    drop(twin);
    drop(store);

    // Retention: raw and minutes for 12 h, five minutes for a day; now is the end of day one.
    let short =
        Retention { raw_ms: 12 * HOUR, minute_ms: 12 * HOUR, five_minutes_ms: 24 * HOUR, hour_ms: 400 * 24 * HOUR };
    let store = open_store(&dir, short);
    let pass = store.archive.expire(T0 + 24 * HOUR).unwrap();
    store.flush().await.unwrap();
    let after = store.archive.bytes().unwrap();
    println!("retention pass {pass:?}: raw {} -> {} B, rollups {} -> {} B", before[1], after[1], before[2], after[2]);
    assert_eq!(pass.raw_windows_deleted, 72, "the first 12 hours of raw windows");
    assert!(
        after[1] * 100 < before[1] * 55 && after[1] * 100 > before[1] * 40,
        "raw space halves: {before:?} -> {after:?}"
    );
    assert!(after[2] < before[2], "minute blocks of the first 12 hours are gone");
    assert!(store.archive.raw(HOST, 0, T0, T0 + 11 * HOUR).unwrap().is_none(), "expired raw is gone");
    let kept = store.archive.raw(HOST, 0, T0 + 13 * HOUR, T0 + 14 * HOUR).unwrap().unwrap();
    assert_eq!(kept.points.len(), 3600);
    let hours = store.archive.buckets(Tier::Hour, HOST, 0, T0, T0 + 24 * HOUR).unwrap();
    assert_eq!(hours.len(), 24, "hour rollups outlive raw");
}

fn reference_after(s: usize, from: i64) -> Vec<(i64, f64)> {
    (TICKS..TICKS + 600).map(|i| (ts(i), real(s, i))).filter(|p| p.0 >= from).collect()
}
