//! The service twin's memory: the recent probe results of every endpoint from every vantage.
//!
//! Agents report probes as ordinary series (`twinwatch_common::probe`), and a host twin keeps only
//! the latest value of each. [`Endpoints`] watches every tick the twin applies and, when a probe's
//! [`probe::TIMESTAMP`] takes a new value, appends a compact [`ProbeResult`] to the ring of that
//! (endpoint, host) pair, so the API can compute success rates and percentiles over a window
//! ([`stats`]) and show endpoints across vantages (`views/endpoints.rs`).
//!
//! Sans-IO, like the rest of the twin: no clock reads, no I/O. (The endpoints here are the probed
//! services', not the aggregator's own QUIC endpoint.)
//!
//! - **A new result is a new timestamp**, compared per (endpoint, host) with the last one taken:
//!   a keyframe resending the same value, a replayed batch or a new agent incarnation adds
//!   nothing. Only ticks that change or define a timestamp series are looked at closely. The
//!   other series of a result are read from the state after the tick that carries the new
//!   timestamp: an agent writes a result whole, into one sample.
//! - **Not persisted.** After an aggregator restart the rings start empty and refill as results
//!   arrive; the latest state of every probe still comes from the persisted host twins.
//! - **Endpoints follow the host states.** A host is a vantage of an endpoint while its state holds
//!   a probe series labelled with that endpoint; the views list only those. A ring is dropped when
//!   a keyframe or a removal leaves its host without the endpoint (the probe left the agent's
//!   configuration), so memory does not outlive the probes.
//! - **Memory is bounded for the whole fleet**: a [`ProbeResult`] is 40 bytes, and all rings
//!   together hold at most [`RINGS_BUDGET`]. A ring keeps [`RING_CAPACITY`] results while the
//!   budget allows (400 vantages: 100 endpoints probed from 4 hosts); with more, each keeps its
//!   share ([`ring_capacity`]), never fewer than [`MIN_RING`]. 2,000 vantages keep 209 results
//!   each: 35 minutes of a probe every 10 s.

pub mod stats;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use twinwatch_common::delta::{DeltaState, SeriesState, Tick};
use twinwatch_common::probe::{self, Outcome};

/// Results kept per (endpoint, host) at most: about 2.8 hours of a probe every 10 s.
pub const RING_CAPACITY: usize = 1024;
/// Bytes all rings may hold together, shared out as the vantages grow in number.
pub const RINGS_BUDGET: usize = 16 << 20;
/// Results a ring keeps however many vantages share the budget.
pub const MIN_RING: usize = 64;

/// Results each ring keeps when `vantages` share [`RINGS_BUDGET`].
pub fn ring_capacity(vantages: usize) -> usize {
    (RINGS_BUDGET / (vantages.max(1) * std::mem::size_of::<ProbeResult>())).clamp(MIN_RING, RING_CAPACITY)
}

/// One probe result, as small as the statistics allow: durations as `f32` (a resolution of
/// about 2 µs at 30 s is plenty for latency).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// When the probe started, by the agent's clock, ms since the epoch.
    pub ts_ms: i64,
    /// The whole probe, seconds; NaN if not reported.
    pub duration: f32,
    /// Seconds per HTTP phase, in the order of [`probe::PHASES`]; NaN if not reported (non-HTTP).
    pub phases: [f32; probe::PHASES.len()],
    /// HTTP status code; 0 if none.
    pub status: u16,
    pub success: bool,
    /// `None` if the agent reported no outcome or one this aggregator does not know.
    pub outcome: Option<Outcome>,
}

impl ProbeResult {
    /// A result with nothing but its time: a failure until its series say otherwise.
    pub fn at(ts_ms: i64) -> Self {
        ProbeResult {
            ts_ms,
            duration: f32::NAN,
            phases: [f32::NAN; probe::PHASES.len()],
            status: 0,
            success: false,
            outcome: None,
        }
    }
}

/// One host's view of one endpoint: its recent results.
#[derive(Debug, Default)]
pub struct Vantage {
    /// Timestamp of the last result taken, so the same result is never taken twice.
    last_ts_ms: i64,
    /// Oldest first; at most [`RING_CAPACITY`].
    results: VecDeque<ProbeResult>,
}

impl Vantage {
    /// Every result held, oldest first.
    pub fn results(&self) -> &VecDeque<ProbeResult> {
        &self.results
    }

    /// The results that started at or after `since_ms` (agent clock), oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<ProbeResult> {
        self.results.iter().filter(|r| r.ts_ms >= since_ms).copied().collect()
    }

    /// Whether the result that started at `ts_ms` was taken. The last one is the common case (a
    /// keyframe resending it); the ring is searched too, so a state that went back in time and
    /// forward again takes nothing twice.
    fn has(&self, ts_ms: i64) -> bool {
        self.last_ts_ms == ts_ms || self.results.iter().rev().any(|r| r.ts_ms == ts_ms)
    }

    /// Inserts in start-time order: results from a backfill land among the ones already taken.
    /// Keeps at most `keep` results, the newest; a ring whose share shrank gives back the rest.
    fn push(&mut self, result: ProbeResult, keep: usize) {
        let keep = keep.max(1);
        if self.results.len() > keep {
            self.results.drain(..self.results.len() - keep);
        }
        if self.results.capacity() >= keep + 64 {
            self.results.shrink_to(keep);
        }
        // Grown 64 results at a time, not doubled: a thousand hosts' rings all fill at the same
        // pace, and doubling made each 512 results hold room for 1024, 20 MiB at once.
        let (len, room) = (self.results.len(), self.results.capacity());
        if len == room && len < keep {
            self.results.reserve_exact(64.min(keep - len));
        }
        let at = self.results.partition_point(|r| r.ts_ms <= result.ts_ms);
        if self.results.len() >= keep {
            if at == 0 {
                return; // older than everything kept
            }
            self.results.pop_front();
            self.results.insert(at - 1, result);
        } else {
            self.results.insert(at, result);
        }
    }
}

/// The rings of every (endpoint, host) pair that has produced a result.
#[derive(Debug, Default)]
pub struct Endpoints {
    /// Endpoint id → host id → its results.
    by_endpoint: BTreeMap<String, BTreeMap<String, Vantage>>,
}

impl Endpoints {
    pub fn vantage(&self, endpoint: &str, host: &str) -> Option<&Vantage> {
        self.by_endpoint.get(endpoint)?.get(host)
    }

    /// Called after `tick` was applied to `host`'s `state`: takes the new probe results it
    /// carries, and, when `live` (the host's current state rather than a backfill behind it),
    /// drops the rings of endpoints the host no longer probes.
    pub fn observe(&mut self, host: &str, state: &DeltaState, tick: &Tick, live: bool) {
        let mut fresh: Vec<(&str, ProbeResult)> = Vec::new();
        for id in touched(tick) {
            let Some(series) = state.get(id).filter(|s| s.key.name == probe::TIMESTAMP) else {
                continue;
            };
            let (Some(endpoint), Some(ts_ms)) = (series.key.label(probe::ENDPOINT), timestamp_ms(series)) else {
                continue;
            };
            let vantage = self.vantage_mut(endpoint, host);
            if !vantage.has(ts_ms) {
                vantage.last_ts_ms = vantage.last_ts_ms.max(ts_ms);
                fresh.push((endpoint, ProbeResult::at(ts_ms)));
            }
        }
        if !fresh.is_empty() {
            fill(&mut fresh, state);
            let keep = ring_capacity(self.vantages());
            for (endpoint, result) in fresh {
                self.vantage_mut(endpoint, host).push(result, keep);
            }
        }
        if live && (tick.keyframe || !tick.removed.is_empty()) {
            self.prune(host, state);
        }
    }

    /// The (endpoint, host) pairs with a ring.
    pub fn vantages(&self) -> usize {
        self.by_endpoint.values().map(BTreeMap::len).sum()
    }

    /// Drops every ring of `host` (the host is gone from the twin).
    pub fn forget_host(&mut self, host: &str) {
        self.by_endpoint.retain(|_, hosts| {
            hosts.remove(host);
            !hosts.is_empty()
        });
    }

    /// Allocates its keys: it runs once per timestamp change, a few times a minute per probe.
    fn vantage_mut(&mut self, endpoint: &str, host: &str) -> &mut Vantage {
        self.by_endpoint.entry(endpoint.to_owned()).or_default().entry(host.to_owned()).or_default()
    }

    /// Drops `host`'s rings of endpoints its state no longer has.
    fn prune(&mut self, host: &str, state: &DeltaState) {
        // Most removals are of other series (processes come and go): skip the scan when the
        // host has no ring at all.
        if !self.by_endpoint.values().any(|hosts| hosts.contains_key(host)) {
            return;
        }
        let present: BTreeSet<&str> = endpoints_of(state).collect();
        self.by_endpoint.retain(|endpoint, hosts| {
            if !present.contains(endpoint.as_str()) {
                hosts.remove(host);
            }
            !hosts.is_empty()
        });
    }
}

/// Whether `name` is a probe series, which carries the [`probe::ENDPOINT`] label.
pub fn is_probe_series(name: &str) -> bool {
    name.starts_with("probe_") || name.starts_with("twinwatch_probe_")
}

/// The endpoint of every probe series in `state` (with repeats).
pub fn endpoints_of(state: &DeltaState) -> impl Iterator<Item = &str> {
    state.series().filter(|s| is_probe_series(&s.key.name)).filter_map(|s| s.key.label(probe::ENDPOINT))
}

/// The probe's start in ms: the raw integer when the series is ms at scale 1e-3 as the contract
/// has it (exact), else its value in seconds, rounded. `None` before the first result.
pub(crate) fn timestamp_ms(series: &SeriesState) -> Option<i64> {
    let ms = if !series.float && series.scale == 1e-3 {
        series.bits as i64
    } else {
        let secs = series.value();
        if !secs.is_finite() {
            return None;
        }
        (secs * 1000.0).round() as i64
    };
    (ms > 0).then_some(ms)
}

/// The ids a tick changed or defined. Only called after the tick applied, so every id is below
/// `MAX_SERIES`.
fn touched(tick: &Tick) -> impl Iterator<Item = u32> + '_ {
    let mut next = 0u64;
    let changed = tick.changes.iter().map(move |(gap, _)| {
        let id = next + u64::from(*gap);
        next = id + 1;
        id as u32
    });
    changed.chain(tick.defs.iter().map(|d| d.id))
}

/// Fills each fresh result from its endpoint's series, in one pass over the state.
fn fill<'a>(fresh: &mut [(&'a str, ProbeResult)], state: &'a DeltaState) {
    for series in state.series().filter(|s| is_probe_series(&s.key.name)) {
        let Some(endpoint) = series.key.label(probe::ENDPOINT) else { continue };
        let Some((_, result)) = fresh.iter_mut().find(|(e, _)| *e == endpoint) else { continue };
        let value = series.value();
        match series.key.name.as_str() {
            probe::SUCCESS => result.success = value == 1.0,
            probe::DURATION => result.duration = value as f32,
            // `as` saturates: NaN and negatives read as 0, "no status".
            probe::HTTP_STATUS => result.status = value as u16,
            probe::HTTP_DURATION => {
                let phase = series.key.label("phase").and_then(|p| probe::PHASES.iter().position(|q| *q == p));
                if let Some(i) = phase {
                    result.phases[i] = value as f32;
                }
            }
            probe::RESULT_INFO => result.outcome = series.key.label("outcome").and_then(Outcome::parse),
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

    /// The series an agent sends for one HTTP probe result.
    pub(crate) fn http_result(endpoint: &str, ts_ms: i64, status: i64, duration: f64) -> Vec<Metric> {
        let key = |name: &str| SeriesKey::new(name).with(probe::ENDPOINT, endpoint);
        let ok = (200..400).contains(&status);
        let outcome = if ok { Outcome::Success } else { Outcome::StatusMismatch };
        let mut metrics = vec![
            Metric::gauge(key(probe::INFO).with("kind", "http").with("target", "https://shop.example/"), Value::Int(1)),
            Metric::gauge(key(probe::TIMESTAMP), Value::Int(ts_ms)).scaled(1e-3),
            Metric::gauge(key(probe::SUCCESS), Value::Int(ok as i64)),
            Metric::gauge(key(probe::DURATION), Value::Float(duration)),
            Metric::gauge(key(probe::HTTP_STATUS), Value::Int(status)),
            Metric::gauge(
                key(probe::RESULT_INFO)
                    .with("outcome", outcome.as_str())
                    .with("detail", "")
                    .with("address", "[::1]:443"),
                Value::Int(1),
            ),
        ];
        for (i, phase) in probe::PHASES.iter().enumerate() {
            let seconds = duration * (i + 1) as f64 / 15.0;
            metrics.push(Metric::gauge(key(probe::HTTP_DURATION).with("phase", *phase), Value::Float(seconds)));
        }
        metrics
    }

    struct Host {
        enc: DeltaEncoder,
        state: DeltaState,
        endpoints: Endpoints,
    }

    impl Host {
        fn new() -> Self {
            Host { enc: DeltaEncoder::new(1000), state: DeltaState::default(), endpoints: Endpoints::default() }
        }

        fn send(&mut self, ts_ms: i64, metrics: Vec<Metric>) -> Tick {
            let tick = self.enc.encode(&Sample::new(ts_ms, metrics));
            self.apply(&tick);
            tick
        }

        fn apply(&mut self, tick: &Tick) {
            self.state.apply(tick).unwrap();
            self.endpoints.observe("h1", &self.state, tick, true);
        }

        fn results(&self, endpoint: &str) -> Vec<ProbeResult> {
            self.endpoints.vantage(endpoint, "h1").map_or_else(Vec::new, |v| v.results().iter().copied().collect())
        }
    }

    #[test]
    fn a_result_is_taken_once_with_its_series() {
        let mut host = Host::new();
        host.send(1_000, http_result("shop", 900, 200, 0.25));
        let results = host.results("shop");
        assert_eq!(results.len(), 1);
        let r = results[0];
        assert_eq!(
            (r.ts_ms, r.success, r.status, r.duration, r.outcome),
            (900, true, 200, 0.25, Some(Outcome::Success))
        );
        assert_eq!(r.phases[1], (0.25f64 * 2.0 / 15.0) as f32);
        // The next sample carries the same result: nothing new.
        host.send(2_000, http_result("shop", 900, 200, 0.25));
        // A keyframe resends every value: still the same result.
        host.enc.request_keyframe();
        let tick = host.send(3_000, http_result("shop", 900, 200, 0.25));
        assert!(tick.keyframe);
        assert_eq!(host.results("shop").len(), 1);
        // A new timestamp is a new result, even when every other value is the same.
        host.send(4_000, http_result("shop", 3_900, 200, 0.25));
        host.send(5_000, http_result("shop", 4_900, 503, 0.5));
        let results = host.results("shop");
        assert_eq!(results.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), [900, 3_900, 4_900]);
        assert_eq!(
            (results[2].success, results[2].status, results[2].outcome),
            (false, 503, Some(Outcome::StatusMismatch))
        );
    }

    #[test]
    fn a_replayed_tick_adds_nothing() {
        let mut host = Host::new();
        let first = host.send(1_000, http_result("shop", 900, 200, 0.1));
        let second = host.send(2_000, http_result("shop", 1_900, 200, 0.1));
        // Re-applying the ticks takes no result twice, even as the state goes back in time.
        host.apply(&first);
        host.apply(&second);
        assert_eq!(host.results("shop").len(), 2);
    }

    #[test]
    fn only_ticks_touching_a_timestamp_are_looked_at() {
        let mut host = Host::new();
        host.send(1_000, http_result("shop", 900, 200, 0.1));
        // The duration changes without a new timestamp (it cannot, by the contract, but if it
        // did, it would not be a result).
        host.send(2_000, http_result("shop", 900, 200, 0.9));
        assert_eq!(host.results("shop").len(), 1);
        assert_eq!(host.results("shop")[0].duration, 0.1);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let mut vantage = Vantage::default();
        for ts in 1..=(RING_CAPACITY as i64 + 10) {
            vantage.push(ProbeResult::at(ts), RING_CAPACITY);
        }
        assert_eq!(vantage.results().len(), RING_CAPACITY);
        assert_eq!(vantage.results().front().map(|r| r.ts_ms), Some(11));
        assert_eq!(vantage.since(RING_CAPACITY as i64 + 5).len(), 6);
        // What the module documentation promises about memory.
        assert_eq!(std::mem::size_of::<ProbeResult>(), 40);
    }

    /// A thousand hosts probing two endpoints each: every ring keeps its share of the budget,
    /// and a ring that filled while the fleet was small gives back what it no longer may keep.
    #[test]
    fn many_vantages_share_the_rings_budget() {
        assert_eq!((ring_capacity(1), ring_capacity(400)), (RING_CAPACITY, RING_CAPACITY));
        assert_eq!(ring_capacity(2_000), 209);
        assert_eq!(ring_capacity(1_000_000), MIN_RING);
        let mut endpoints = Endpoints::default();
        let feed = |endpoints: &mut Endpoints, host: &str, ts: i64| {
            let keep = ring_capacity(endpoints.vantages().max(1));
            endpoints.vantage_mut("shop", host).push(ProbeResult::at(ts), keep);
        };
        for ts in 1..=1_500 {
            feed(&mut endpoints, "h0", ts);
        }
        assert_eq!(endpoints.vantage("shop", "h0").map(|v| v.results().len()), Some(RING_CAPACITY));
        for h in 1..2_000 {
            feed(&mut endpoints, &format!("h{h}"), 1);
        }
        assert_eq!(endpoints.vantages(), 2_000);
        feed(&mut endpoints, "h0", 1_501);
        let ring = endpoints.vantage("shop", "h0").map(|v| v.results()).unwrap();
        assert_eq!(ring.len(), 209, "the newest 209 results");
        assert_eq!(ring.back().map(|r| r.ts_ms), Some(1_501));
        assert!(ring.capacity() < 209 + 64, "room given back: {}", ring.capacity());
        let held: usize = endpoints.by_endpoint.values().flat_map(|h| h.values()).map(|v| v.results().capacity()).sum();
        assert!(held * std::mem::size_of::<ProbeResult>() <= RINGS_BUDGET, "{held} results held");
    }

    #[test]
    fn a_removed_probe_takes_its_ring_with_it() {
        let mut host = Host::new();
        let mut both = http_result("shop", 900, 200, 0.1);
        both.extend(http_result("blog", 900, 200, 0.1));
        host.send(1_000, both);
        assert_eq!((host.results("shop").len(), host.results("blog").len()), (1, 1));
        host.send(2_000, http_result("shop", 1_900, 200, 0.1));
        assert_eq!(host.results("shop").len(), 2);
        assert!(host.endpoints.vantage("blog", "h1").is_none());
        host.endpoints.forget_host("h1");
        assert!(host.endpoints.by_endpoint.is_empty());
    }

    #[test]
    fn a_probe_without_a_result_yet_has_no_ring() {
        let mut host = Host::new();
        let key = SeriesKey::new(probe::TIMESTAMP).with(probe::ENDPOINT, "new");
        host.send(1_000, vec![Metric::gauge(key, Value::Int(0)).scaled(1e-3)]);
        assert!(host.endpoints.vantage("new", "h1").is_none());
    }
}
