//! Delta codec: a keyframe carries every series, later ticks carry only what changed.
//!
//! The encoder lives on the agent and the [`DeltaState`] it mirrors lives in the aggregator's
//! twin. Both work on the 64 raw bits of a value: an integer's change travels as its zig-zagged
//! difference (a counter that grew by 3 costs one byte), a float's as the XOR with the previous
//! bits, and an unchanged value costs nothing at all. Series are named once, in a [`SeriesDef`],
//! and referred to by a small id afterwards.
//!
//! A keyframe resets the state on both sides: every value is then sent against zero.

use std::collections::HashMap;
use std::sync::Arc;

use bincode::{Decode, Encode};

use crate::intern::KeyInterner;
use crate::sample::{apply_scale, is_skipped, Kind, Sample, SeriesKey, Value};

/// Most series one agent may define; ids are dense below this.
pub const MAX_SERIES: u32 = 65_536;

/// A series' definition, sent the first time it appears after a keyframe.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SeriesDef {
    pub id: u32,
    pub key: SeriesKey,
    pub kind: Kind,
    pub scale: f64,
    pub float: bool,
    /// The source group it belongs to; see [`Tick::skipped`].
    pub group: u8,
}

/// What changed at one sampling instant.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Tick {
    /// Agent clock, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// A keyframe resets all state before `defs` are read.
    pub keyframe: bool,
    /// Groups not sampled at this instant: their series were not read, so they neither count as
    /// removed nor get a new timestamp.
    pub skipped: u64,
    pub defs: Vec<SeriesDef>,
    /// Ids of series that no longer exist.
    pub removed: Vec<u32>,
    /// `(gap, change)` in ascending id order: the id is the previous id plus one plus `gap`
    /// (the first id is `gap` itself); `change` is the zig-zagged integer difference or the float
    /// XOR against the previous value.
    pub changes: Vec<(u32, u64)>,
}

/// Why a tick could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta tick received before any keyframe")]
    NoKeyframe,
    #[error("series id {0} is beyond the limit of {MAX_SERIES}")]
    IdOutOfRange(u64),
    #[error("change for series id {0}, which is not defined")]
    UnknownSeries(u32),
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn change_between(previous: u64, current: u64, float: bool) -> u64 {
    if float {
        previous ^ current
    } else {
        zigzag((current as i64).wrapping_sub(previous as i64))
    }
}

fn apply_change(previous: u64, change: u64, float: bool) -> u64 {
    if float {
        previous ^ change
    } else {
        (previous as i64).wrapping_add(unzigzag(change)) as u64
    }
}

#[derive(Debug, Clone, Copy)]
struct EncoderSlot {
    bits: u64,
    float: bool,
    group: u8,
    live: bool,
    seen: bool,
}

/// Turns successive samples into keyframe and delta ticks (agent side).
#[derive(Debug)]
pub struct DeltaEncoder {
    ids: HashMap<SeriesKey, u32>,
    slots: Vec<EncoderSlot>,
    keyframe_every: u32,
    since_keyframe: u32,
    want_keyframe: bool,
    /// Series that could not be given an id because [`MAX_SERIES`] was reached.
    pub overflowed: u64,
}

impl DeltaEncoder {
    /// A keyframe is sent first, after [`DeltaEncoder::request_keyframe`], and every
    /// `keyframe_every` ticks.
    pub fn new(keyframe_every: u32) -> Self {
        DeltaEncoder {
            ids: HashMap::new(),
            slots: Vec::new(),
            keyframe_every: keyframe_every.max(1),
            since_keyframe: 0,
            want_keyframe: true,
            overflowed: 0,
        }
    }

    pub fn request_keyframe(&mut self) {
        self.want_keyframe = true;
    }

    /// Whether the next tick will be a keyframe: the sampler then reads every source, since a
    /// keyframe must carry every series.
    pub fn keyframe_due(&self) -> bool {
        self.want_keyframe || self.since_keyframe >= self.keyframe_every
    }

    /// Encodes `sample` against the previous one. Series absent from `sample` are reported as
    /// removed.
    pub fn encode(&mut self, sample: &Sample) -> Tick {
        let keyframe = self.keyframe_due();
        if keyframe {
            self.ids.clear();
            self.slots.clear();
            self.want_keyframe = false;
            self.since_keyframe = 0;
        }
        self.since_keyframe += 1;
        for slot in &mut self.slots {
            slot.seen = false;
        }
        let mut defs = Vec::new();
        let mut changed: Vec<(u32, u64)> = Vec::with_capacity(sample.metrics.len());
        for metric in &sample.metrics {
            let float = metric.value.is_float();
            let bits = metric.value.to_bits();
            let id = match self.ids.get(&metric.key) {
                Some(&id) => id,
                None => {
                    if self.slots.len() as u32 >= MAX_SERIES {
                        self.overflowed += 1;
                        continue;
                    }
                    let id = self.slots.len() as u32;
                    self.ids.insert(metric.key.clone(), id);
                    self.slots.push(EncoderSlot { bits: 0, float, group: metric.group, live: false, seen: false });
                    id
                }
            };
            let slot = &mut self.slots[id as usize];
            if slot.seen {
                continue; // a duplicate key within one sample: the first value wins
            }
            if !slot.live || slot.float != float || slot.group != metric.group {
                let (kind, scale, group) = (metric.kind, metric.scale, metric.group);
                defs.push(SeriesDef { id, key: metric.key.clone(), kind, scale, float, group });
                slot.bits = 0;
                slot.float = float;
                slot.group = group;
                slot.live = true;
            }
            slot.seen = true;
            let change = change_between(slot.bits, bits, float);
            slot.bits = bits;
            if change != 0 {
                changed.push((id, change));
            }
        }
        let mut removed = Vec::new();
        let skipped = if keyframe { 0 } else { sample.skipped };
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if slot.live && !slot.seen && !is_skipped(skipped, slot.group) {
                slot.live = false;
                removed.push(id as u32);
            }
        }
        if !removed.is_empty() {
            self.ids.retain(|_, id| self.slots[*id as usize].live);
        }
        changed.sort_unstable_by_key(|(id, _)| *id);
        let mut changes = Vec::with_capacity(changed.len());
        let mut next = 0u32;
        for (id, change) in changed {
            changes.push((id - next, change));
            next = id + 1;
        }
        Tick { ts_ms: sample.ts_ms, keyframe, skipped, defs, removed, changes }
    }
}

/// The aggregator's copy of one series, rebuilt from ticks.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SeriesState {
    /// Shared with every other holder of an equal key when applied through a [`KeyInterner`].
    pub key: Arc<SeriesKey>,
    pub kind: Kind,
    pub scale: f64,
    pub float: bool,
    pub group: u8,
    pub bits: u64,
    /// Agent time this series was last read.
    pub ts_ms: i64,
    /// Value and time at the tick before, for rates.
    pub prev_bits: u64,
    pub prev_ts_ms: i64,
}

impl SeriesState {
    /// The current value in the unit the series name states.
    pub fn value(&self) -> f64 {
        apply_scale(Value::from_bits(self.bits, self.float).as_f64(), self.scale)
    }

    /// Per-second rate between the last two ticks, for counters; `None` before two ticks or after
    /// a reset.
    pub fn rate(&self) -> Option<f64> {
        if self.kind != Kind::Counter || self.prev_ts_ms <= 0 || self.ts_ms <= self.prev_ts_ms {
            return None;
        }
        let now = Value::from_bits(self.bits, self.float).as_f64();
        let before = Value::from_bits(self.prev_bits, self.float).as_f64();
        if now < before {
            return None;
        }
        Some(apply_scale(now - before, self.scale) * 1000.0 / (self.ts_ms - self.prev_ts_ms) as f64)
    }
}

/// Every series of one agent incarnation as the ticks so far describe it (aggregator side).
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct DeltaState {
    series: Vec<Option<SeriesState>>,
    keyframed: bool,
    last_ts_ms: i64,
}

impl DeltaState {
    pub fn is_keyframed(&self) -> bool {
        self.keyframed
    }

    /// Agent timestamp of the last applied tick.
    pub fn last_ts_ms(&self) -> i64 {
        self.last_ts_ms
    }

    pub fn series(&self) -> impl Iterator<Item = &SeriesState> {
        self.series.iter().flatten()
    }

    /// Every series with its wire id.
    pub fn entries(&self) -> impl Iterator<Item = (u32, &SeriesState)> {
        self.series.iter().enumerate().filter_map(|(id, s)| Some((id as u32, s.as_ref()?)))
    }

    /// The series with wire id `id`, so a reader of a [`Tick`] can look up what it touched.
    pub fn get(&self, id: u32) -> Option<&SeriesState> {
        self.series.get(id as usize)?.as_ref()
    }

    pub fn len(&self) -> usize {
        self.series().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one tick. On error the state is left as it was.
    pub fn apply(&mut self, tick: &Tick) -> Result<(), DeltaError> {
        self.apply_interned(tick, &mut KeyInterner::default())
    }

    /// Replaces every key with the copy `keys` shares (a state loaded from storage).
    pub fn share_keys(&mut self, keys: &mut KeyInterner) {
        for series in self.series.iter_mut().flatten() {
            keys.share(&mut series.key);
        }
    }

    /// [`DeltaState::apply`], taking the keys of new series from `keys`.
    pub fn apply_interned(&mut self, tick: &Tick, keys: &mut KeyInterner) -> Result<(), DeltaError> {
        if !tick.keyframe && !self.keyframed {
            return Err(DeltaError::NoKeyframe);
        }
        // Validate everything before touching state, so a bad tick changes nothing.
        for def in &tick.defs {
            if def.id >= MAX_SERIES {
                return Err(DeltaError::IdOutOfRange(def.id as u64));
            }
        }
        // Looked up once per change: as sets, not by scanning the lists, so a tick costs time in
        // proportion to its size rather than to the product of its lists' lengths.
        let (defined_here, removed_here) =
            (IdSet::new(tick.defs.iter().map(|d| d.id)), IdSet::new(tick.removed.iter().copied()));
        let mut id: u64 = 0;
        let mut ids = Vec::with_capacity(tick.changes.len());
        for (i, (gap, _)) in tick.changes.iter().enumerate() {
            id = if i == 0 { *gap as u64 } else { id + 1 + *gap as u64 };
            if id >= MAX_SERIES as u64 {
                return Err(DeltaError::IdOutOfRange(id));
            }
            let defined = defined_here.contains(id)
                || (!tick.keyframe
                    && !removed_here.contains(id)
                    && self.series.get(id as usize).is_some_and(Option::is_some));
            if !defined {
                return Err(DeltaError::UnknownSeries(id as u32));
            }
            ids.push(id as usize);
        }

        // A keyframe within a running state replaces it whole, but a series it carries again
        // keeps its previous reading, so its rate survives the keyframe.
        let mut before: HashMap<Arc<SeriesKey>, (u64, i64, bool)> = HashMap::new();
        if tick.keyframe {
            if self.keyframed && tick.ts_ms > self.last_ts_ms {
                before = self.series.drain(..).flatten().map(|s| (s.key, (s.bits, s.ts_ms, s.float))).collect();
            }
            self.series.clear();
            self.keyframed = true;
        }
        for series in self.series.iter_mut().flatten().filter(|s| !is_skipped(tick.skipped, s.group)) {
            series.prev_bits = series.bits;
            series.prev_ts_ms = series.ts_ms;
            series.ts_ms = tick.ts_ms;
        }
        for &id in &tick.removed {
            if let Some(slot) = self.series.get_mut(id as usize) {
                *slot = None;
            }
        }
        // Grown once per tick, not per definition: one at a time, a keyframe of 520 series would
        // leave room for 1,024. A keyframe also gives back what a shrunk host no longer needs.
        let needed = tick.defs.iter().map(|d| d.id as usize + 1).max().unwrap_or(0);
        if tick.keyframe {
            self.series.shrink_to(needed);
        }
        if needed > self.series.len() {
            self.series.resize(needed, None);
        }
        for def in &tick.defs {
            let at = def.id as usize;
            self.series[at] = Some(SeriesState {
                key: keys.intern(&def.key),
                kind: def.kind,
                scale: def.scale,
                float: def.float,
                group: def.group,
                bits: 0,
                ts_ms: tick.ts_ms,
                prev_bits: 0,
                prev_ts_ms: 0,
            });
        }
        for (&at, &(_, change)) in ids.iter().zip(&tick.changes) {
            if let Some(series) = self.series[at].as_mut() {
                series.bits = apply_change(series.bits, change, series.float);
            }
        }
        if !before.is_empty() {
            for series in self.series.iter_mut().flatten() {
                if let Some(&(bits, ts_ms, _)) = before.get(&series.key).filter(|b| b.2 == series.float) {
                    (series.prev_bits, series.prev_ts_ms) = (bits, ts_ms);
                }
            }
        }
        self.last_ts_ms = tick.ts_ms;
        Ok(())
    }
}

/// Series ids below [`MAX_SERIES`], as a bitset (8 KiB, allocated only when an id is added).
struct IdSet(Vec<u64>);

impl IdSet {
    fn new(ids: impl Iterator<Item = u32>) -> Self {
        let mut bits = Vec::new();
        for id in ids.filter(|&id| id < MAX_SERIES) {
            if bits.is_empty() {
                bits = vec![0u64; MAX_SERIES as usize / 64];
            }
            bits[id as usize / 64] |= 1 << (id % 64);
        }
        IdSet(bits)
    }

    fn contains(&self, id: u64) -> bool {
        self.0.get(id as usize / 64).is_some_and(|word| word & (1 << (id % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Metric;

    fn sample(ts_ms: i64, values: &[(&str, Value)]) -> Sample {
        Sample {
            ts_ms,
            skipped: 0,
            metrics: values
                .iter()
                .map(|(name, v)| Metric::counter(SeriesKey::new(*name).with("cpu", "0"), *v))
                .collect(),
        }
    }

    fn values(state: &DeltaState) -> Vec<(String, f64)> {
        let mut out: Vec<_> = state.series().map(|s| (s.key.name.clone(), s.value())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn a_state_holds_room_for_its_series_not_twice_that() {
        let names: Vec<String> = (0..520).map(|i| format!("s{i}")).collect();
        let many: Vec<(&str, Value)> = names.iter().map(|n| (n.as_str(), Value::Int(1))).collect();
        let mut enc = DeltaEncoder::new(100);
        let mut state = DeltaState::default();
        state.apply(&enc.encode(&sample(1_000, &many))).unwrap();
        assert_eq!(state.series.capacity(), 520);
        // A keyframe of a host that shrank gives the rest back.
        enc.request_keyframe();
        state.apply(&enc.encode(&sample(2_000, &many[..100]))).unwrap();
        assert_eq!(state.series.capacity(), 100);
        assert_eq!(state.len(), 100);
    }

    #[test]
    fn a_keyframe_in_a_running_state_keeps_rates() {
        let mut enc = DeltaEncoder::new(100);
        let mut state = DeltaState::default();
        state.apply(&enc.encode(&sample(1_000, &[("c", Value::Int(10))]))).unwrap();
        state.apply(&enc.encode(&sample(2_000, &[("c", Value::Int(20))]))).unwrap();
        enc.request_keyframe();
        let key = enc.encode(&sample(3_000, &[("c", Value::Int(40)), ("new", Value::Int(1))]));
        assert!(key.keyframe);
        state.apply(&key).unwrap();
        let rate = |name: &str| state.series().find(|s| s.key.name == name).unwrap().rate();
        assert_eq!(rate("c"), Some(20.0));
        assert_eq!(rate("new"), None);
        // A keyframe into a fresh state (a new incarnation) has nothing to keep.
        let mut fresh = DeltaState::default();
        fresh.apply(&key).unwrap();
        assert_eq!(fresh.series().find(|s| s.key.name == "c").unwrap().rate(), None);
    }

    #[test]
    fn unchanged_values_cost_nothing() {
        let mut enc = DeltaEncoder::new(100);
        let s = sample(1, &[("a", Value::Int(5)), ("b", Value::Float(1.5))]);
        let first = enc.encode(&s);
        assert!(first.keyframe);
        assert_eq!(first.defs.len(), 2);
        let second = enc.encode(&Sample { ts_ms: 2, ..s });
        assert!(!second.keyframe);
        assert!(second.defs.is_empty() && second.changes.is_empty() && second.removed.is_empty());
    }

    #[test]
    fn decoder_tracks_encoder_through_changes_additions_and_removals() {
        let mut enc = DeltaEncoder::new(4);
        let mut state = DeltaState::default();
        let steps = [
            sample(1000, &[("a", Value::Int(10)), ("b", Value::Float(0.25))]),
            sample(2000, &[("a", Value::Int(13)), ("b", Value::Float(0.25))]),
            sample(3000, &[("a", Value::Int(7)), ("c", Value::Int(-4))]),
            sample(4000, &[("a", Value::Int(7)), ("b", Value::Float(f64::NAN)), ("c", Value::Int(i64::MIN))]),
            sample(5000, &[("a", Value::Float(2.5)), ("c", Value::Int(i64::MAX))]),
            sample(6000, &[("a", Value::Float(2.5))]),
        ];
        for s in &steps {
            let tick = enc.encode(s);
            state.apply(&tick).unwrap();
            let mut expected: Vec<_> = s.metrics.iter().map(|m| (m.key.name.clone(), m.value.as_f64())).collect();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            let got = values(&state);
            assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g.0, e.0);
                assert!(g.1 == e.1 || (g.1.is_nan() && e.1.is_nan()), "{g:?} != {e:?}");
            }
            assert_eq!(state.last_ts_ms(), s.ts_ms);
        }
    }

    #[test]
    fn rate_comes_from_the_last_two_ticks() {
        let mut enc = DeltaEncoder::new(100);
        let mut state = DeltaState::default();
        for (ts, v) in [(1000, 100), (2000, 300), (4000, 700)] {
            let m = Metric::counter(SeriesKey::new("ticks"), Value::Int(v)).scaled(0.01);
            state.apply(&enc.encode(&Sample::new(ts, vec![m]))).unwrap();
        }
        let s = state.series().next().unwrap();
        assert_eq!(state.get(0), Some(s));
        assert_eq!(state.get(1), None);
        assert_eq!(s.value(), 7.0);
        assert_eq!(s.rate(), Some(2.0)); // (700-300) ticks * 0.01 s / 2 s
    }

    #[test]
    fn delta_before_keyframe_is_refused_and_bad_ticks_change_nothing() {
        let mut state = DeltaState::default();
        let delta = Tick { ts_ms: 1, keyframe: false, skipped: 0, defs: vec![], removed: vec![], changes: vec![] };
        assert_eq!(state.apply(&delta), Err(DeltaError::NoKeyframe));

        let mut enc = DeltaEncoder::new(100);
        state.apply(&enc.encode(&sample(1, &[("a", Value::Int(1))]))).unwrap();
        let before = state.clone();
        let unknown = Tick { changes: vec![(0, 2), (5, 1)], ..delta.clone() };
        assert_eq!(state.apply(&unknown), Err(DeltaError::UnknownSeries(6)));
        let far = Tick { changes: vec![(u32::MAX, 1), (u32::MAX, 1)], ..delta };
        assert!(matches!(state.apply(&far), Err(DeltaError::IdOutOfRange(_))));
        assert_eq!(state, before);
    }

    #[test]
    fn a_skipped_group_keeps_its_series_and_their_times() {
        let mut enc = DeltaEncoder::new(100);
        let mut state = DeltaState::default();
        let fast = |v| Metric::counter(SeriesKey::new("fast"), Value::Int(v));
        let slow = |v| Metric { group: 1, ..Metric::counter(SeriesKey::new("slow"), Value::Int(v)) };
        state.apply(&enc.encode(&Sample::new(1000, vec![fast(1), slow(10)]))).unwrap();
        // The slow group is not read at t=2000: its series is absent but not gone.
        let tick = enc.encode(&Sample { ts_ms: 2000, metrics: vec![fast(2)], skipped: 0b10 });
        assert!(tick.removed.is_empty() && tick.defs.is_empty());
        state.apply(&tick).unwrap();
        let tick = enc.encode(&Sample { ts_ms: 3000, metrics: vec![fast(3), slow(40)], skipped: 0 });
        assert!(tick.defs.is_empty());
        state.apply(&tick).unwrap();
        let slow_state = state.series().find(|s| s.key.name == "slow").unwrap();
        // The rate spans the two reads of the slow source, not the last tick.
        assert_eq!((slow_state.prev_ts_ms, slow_state.ts_ms, slow_state.rate()), (1000, 3000, Some(15.0)));
        // Sampled and absent: removed.
        let tick = enc.encode(&Sample { ts_ms: 4000, metrics: vec![fast(4)], skipped: 0 });
        assert_eq!(tick.removed.len(), 1);
        state.apply(&tick).unwrap();
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn long_definition_and_removal_lists_cost_linear_time() {
        // Were each change checked by scanning the tick's definitions and removals, a keyframe of
        // MAX_SERIES series would take seconds to apply, and a crafted tick far longer.
        let n = MAX_SERIES / 2;
        let def =
            |id| SeriesDef { id, key: SeriesKey::new("s"), kind: Kind::Gauge, scale: 1.0, float: false, group: 0 };
        let keyframe = Tick {
            ts_ms: 1,
            keyframe: true,
            skipped: 0,
            defs: (0..n).map(def).collect(),
            removed: vec![],
            changes: vec![(0, 2); n as usize],
        };
        let removals = Tick {
            ts_ms: 2,
            keyframe: false,
            skipped: 0,
            defs: vec![],
            removed: (MAX_SERIES..MAX_SERIES + 100_000).chain([n - 1]).collect(),
            changes: vec![(0, 2); n as usize - 1],
        };
        let started = std::time::Instant::now();
        let mut state = DeltaState::default();
        state.apply(&keyframe).unwrap();
        state.apply(&removals).unwrap();
        assert_eq!(state.len(), n as usize - 1);
        assert_eq!(state.get(0).map(|s| s.bits), Some(2));
        // The refusal path checks the same sets: a change to a series the tick removes.
        let removed_then_changed = Tick { removed: vec![5], changes: vec![(5, 1)], ..removals };
        assert_eq!(state.apply(&removed_then_changed), Err(DeltaError::UnknownSeries(5)));
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, i64::MAX, i64::MIN, 12345, -98765] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
