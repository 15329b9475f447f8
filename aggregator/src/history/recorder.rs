//! The recorder: turns every decoded tick into history points, held in memory until the next
//! checkpoint writes them as raw segments.
//!
//! Sans-IO, owned by the twin, which shows it every tick it applies, live or backfilled. Each
//! host has a registry numbering its series (the number is what segments and rollups store) and
//! pending columns per raw window. A checkpoint freezes what is pending, writes it, and then
//! forgets exactly that: points recorded meanwhile stay pending for the next one.
//!
//! Until a checkpoint, pending points exist only here and in the write-ahead log of frames, from
//! which a restart records them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use twinwatch_common::delta::{DeltaState, Tick};
use twinwatch_common::sample::{Kind, SeriesKey};

use super::pending::{Meta, Rows};
use super::segment::{self, Column, Columns};

/// The span of one raw segment.
pub const WINDOW_MS: i64 = 10 * 60_000;

/// Points waiting for a checkpoint, per raw window.
pub type Windows = BTreeMap<i64, Columns>;

/// One host's series and pending points.
#[derive(Debug, Default)]
pub struct HostRecorder {
    /// The twin's shared copy of each key, by index.
    keys: Vec<Arc<SeriesKey>>,
    /// Key → index, made when a tick brings wire ids not yet cached in `by_wire` (a new
    /// connection, a keyframe) and dropped after it: a steady host needs none, and a thousand
    /// hosts' maps would hold tens of megabytes.
    index: Option<HashMap<Arc<SeriesKey>, u32>>,
    /// `keys[..saved]` are in storage.
    saved: usize,
    /// Wire id → series index, checked against the key on use (live and backfill states number
    /// series independently).
    by_wire: Vec<u32>,
    /// Points recorded since the last freeze, as rows of ticks, per raw window.
    pending: BTreeMap<i64, Rows>,
    /// Taken by a checkpoint in progress; still visible to queries until it is written. Shared
    /// with the checkpoint writing it rather than copied.
    frozen: Arc<Windows>,
    frozen_series: usize,
    pub pending_points: usize,
}

/// What a checkpoint writes for one host.
#[derive(Debug, Default, Clone)]
pub struct Frozen {
    /// Series first seen since the last checkpoint, with their index.
    pub new_series: Vec<(u32, SeriesKey)>,
    pub windows: Arc<Windows>,
}

impl HostRecorder {
    pub fn keys(&self) -> &[Arc<SeriesKey>] {
        &self.keys
    }

    fn index_of(&mut self, key: &Arc<SeriesKey>) -> u32 {
        let keys = &self.keys;
        let index =
            self.index.get_or_insert_with(|| keys.iter().enumerate().map(|(i, k)| (Arc::clone(k), i as u32)).collect());
        if let Some(&i) = index.get(&**key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(Arc::clone(key));
        index.insert(Arc::clone(key), i);
        i
    }

    fn record(&mut self, state: &DeltaState, tick: &Tick, shift_ms: i64) {
        let ts = tick.ts_ms + shift_ms;
        let window = ts.div_euclid(WINDOW_MS) * WINDOW_MS;
        // Series of groups not read at this instant keep their older time.
        let read = || state.entries().filter(|(_, s)| s.ts_ms == tick.ts_ms);
        let count = read().count();
        if count == 0 {
            return;
        }
        let mut rows = std::mem::take(self.pending.entry(window).or_default());
        let entries = read().map(|(wire, series)| {
            let idx = self.series_index(wire as usize, &series.key);
            let meta = Meta { float: series.float, counter: series.kind == Kind::Counter, scale: series.scale };
            (idx, meta, series.bits)
        });
        rows.push(ts, count, entries);
        self.pending_points += count;
        self.pending.insert(window, rows);
        self.index = None;
    }

    /// The index of the series at wire id `wire`, cached per wire id and checked against the key.
    fn series_index(&mut self, wire: usize, key: &Arc<SeriesKey>) -> u32 {
        // Keys are interned, so the same series is the same allocation; equal contents count too.
        let same = |k: &Arc<SeriesKey>| Arc::ptr_eq(k, key) || k == key;
        let cached = self.by_wire.get(wire).copied().filter(|&i| self.keys.get(i as usize).is_some_and(same));
        if let Some(i) = cached {
            return i;
        }
        let i = self.index_of(key);
        if self.by_wire.len() <= wire {
            self.by_wire.resize(wire + 1, u32::MAX);
        }
        self.by_wire[wire] = i;
        i
    }

    /// Moves everything pending into the frozen set and returns it to write.
    pub fn freeze(&mut self) -> Frozen {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            let frozen = Arc::make_mut(&mut self.frozen);
            for (window, rows) in pending {
                let columns = rows.columns();
                let into = frozen.entry(window).or_default();
                if into.is_empty() {
                    *into = normalized(columns);
                } else {
                    segment::merge(into, &normalized(columns));
                }
            }
        }
        self.pending_points = 0;
        self.frozen_series = self.keys.len();
        let new_series =
            (self.saved..self.frozen_series).map(|i| (i as u32, SeriesKey::clone(&self.keys[i]))).collect();
        Frozen { new_series, windows: Arc::clone(&self.frozen) }
    }

    /// The frozen set is written: forget it.
    pub fn written(&mut self) {
        self.frozen = Arc::default();
        self.saved = self.saved.max(self.frozen_series);
    }

    /// Frozen and pending points of series `idx` in `[from, to)`, ascending, newest winning.
    pub fn points(&self, idx: u32, from: i64, to: i64) -> Option<Column> {
        let mut out: Option<Column> = None;
        let first = from.div_euclid(WINDOW_MS) * WINDOW_MS;
        let frozen = self.frozen.range(first..to).filter_map(|(_, columns)| columns.get(&idx).cloned());
        let pending = self.pending.range(first..to).filter_map(|(_, rows)| rows.column(idx));
        for col in frozen.chain(pending) {
            let mut col = normalize(col);
            col.points.retain(|p| p.0 >= from && p.0 < to);
            match &mut out {
                Some(o) => o.merge(&col),
                None => out = Some(col),
            }
        }
        out
    }

    /// Windows that have points not yet written.
    pub fn windows(&self) -> impl Iterator<Item = i64> + '_ {
        self.frozen.keys().chain(self.pending.keys()).copied()
    }
}

/// Sorts a column's points by time, keeping the last recorded at equal times.
fn normalize(mut col: Column) -> Column {
    sort_points(&mut col.points);
    col
}

pub(super) fn sort_points(points: &mut Vec<(i64, u64)>) {
    if !points.windows(2).all(|w| w[0].0 < w[1].0) {
        let by_time: BTreeMap<i64, u64> = points.iter().copied().collect();
        *points = by_time.into_iter().collect();
    }
}

fn normalized(mut columns: Columns) -> Columns {
    for col in columns.values_mut() {
        sort_points(&mut col.points);
    }
    columns
}

/// Every host's recorder.
#[derive(Debug, Default)]
pub struct Recorder {
    hosts: HashMap<String, HostRecorder>,
}

impl Recorder {
    /// Points recorded and not yet written, across hosts, and the most one host holds.
    pub fn pending(&self) -> (usize, usize) {
        self.hosts.values().fold((0, 0), |(all, most), h| (all + h.pending_points, most.max(h.pending_points)))
    }

    /// Registers the series a host already has in storage, by index.
    pub fn load(&mut self, host: &str, keys: Vec<Arc<SeriesKey>>) {
        let h = self.hosts.entry(host.to_owned()).or_default();
        h.index = None;
        h.saved = keys.len();
        h.frozen_series = keys.len();
        h.keys = keys;
    }

    /// Records the series read at `tick`, at the agent's time moved by `shift_ms` (the clock
    /// correction).
    pub fn observe(&mut self, host: &str, state: &DeltaState, tick: &Tick, shift_ms: i64) {
        let h = match self.hosts.get_mut(host) {
            Some(h) => h,
            None => self.hosts.entry(host.to_owned()).or_default(),
        };
        h.record(state, tick, shift_ms);
    }

    pub fn host(&self, host: &str) -> Option<&HostRecorder> {
        self.hosts.get(host)
    }

    pub fn host_mut(&mut self, host: &str) -> Option<&mut HostRecorder> {
        self.hosts.get_mut(host)
    }

    /// Drops what is pending for `host` (its twin is being restored from storage and its log).
    pub fn discard_pending(&mut self, host: &str) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.pending.clear();
            h.frozen = Arc::default();
            h.pending_points = 0;
            h.keys.truncate(h.saved);
            h.index = None;
            h.frozen_series = h.saved;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::sample::{Metric, Sample, Value};

    fn sample(ts: i64, cpu: i64, load: f64, with_disk: bool) -> Sample {
        let mut m = vec![
            Metric::counter(SeriesKey::new("cpu").with("mode", "user"), Value::Int(cpu)).scaled(0.01),
            Metric::gauge(SeriesKey::new("load"), Value::Float(load)),
        ];
        if with_disk {
            m.push(Metric::gauge(SeriesKey::new("disk"), Value::Int(9)));
        }
        Sample::new(ts, m)
    }

    #[test]
    fn ticks_become_columns_per_window_and_checkpoints_forget_only_what_they_froze() {
        let mut enc = DeltaEncoder::new(1000);
        let mut state = DeltaState::default();
        let mut rec = Recorder::default();
        let base = 10 * WINDOW_MS;
        for i in 0..5 {
            let tick = enc.encode(&sample(base + WINDOW_MS - 2000 + i * 1000, 100 + i, 0.5, i < 2));
            state.apply(&tick).unwrap();
            rec.observe("h", &state, &tick, 0);
        }
        let h = rec.host("h").unwrap();
        assert_eq!(h.keys().len(), 3);
        assert_eq!(h.pending_points, 2 * 5 + 2);
        let frozen = rec.host_mut("h").unwrap().freeze();
        assert_eq!(frozen.new_series.len(), 3);
        assert_eq!(frozen.windows.keys().copied().collect::<Vec<_>>(), [base, base + WINDOW_MS]);
        let cpu = frozen.windows[&base][&0].clone();
        assert_eq!(cpu.reals().collect::<Vec<_>>(), [(base + WINDOW_MS - 2000, 1.0), (base + WINDOW_MS - 1000, 1.01)]);

        // A tick recorded while the checkpoint writes stays for the next one.
        let tick = enc.encode(&sample(base + WINDOW_MS + 3000, 200, 0.7, false));
        state.apply(&tick).unwrap();
        rec.observe("h", &state, &tick, 0);
        let h = rec.host_mut("h").unwrap();
        assert_eq!(h.points(1, base, base + 2 * WINDOW_MS).unwrap().points.len(), 6, "frozen and pending both visible");
        h.written();
        let next = h.freeze();
        assert!(next.new_series.is_empty());
        assert_eq!(segment::point_count(&next.windows[&(base + WINDOW_MS)]), 2);
    }

    #[test]
    fn late_ticks_are_ordered_and_the_clock_correction_applies() {
        let mut enc = DeltaEncoder::new(1000);
        let mut state = DeltaState::default();
        let mut rec = Recorder::default();
        let ticks: Vec<_> = (0..3).map(|i| enc.encode(&sample(1000 * (3 - i), i, 1.0, false))).collect();
        for t in &ticks {
            state.apply(t).unwrap();
            rec.observe("h", &state, t, 500);
        }
        let col = rec.host("h").unwrap().points(0, 0, WINDOW_MS).unwrap();
        assert_eq!(col.points.iter().map(|p| p.0).collect::<Vec<_>>(), [1500, 2500, 3500]);
    }
}
