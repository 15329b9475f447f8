//! The twin core: every host's reconciled state, driven by messages and the time passed in.
//!
//! Sans-IO: no sockets, no storage, no clock reads. Ingest calls [`Twin::handle_hello`] and
//! [`Twin::handle_batch`] with the aggregator's current time; the API reads [`Twin::hosts`] and
//! asks [`HostTwin::status`] with its own `now`. Everything here is a plain `#[test]` away.
//!
//! Every applied tick is shown to [`Endpoints`], which keeps the recent probe results the host
//! states alone would forget.
//!
//! Sequence rules, per agent: batches of one incarnation arrive in order on one stream. A batch
//! at or below the applied sequence is a duplicate (a replay after a lost ack) and is not applied
//! again; the next sequence is applied; a jump means batches were dropped at the agent, so a
//! delta cannot be applied and a keyframe is requested. A higher incarnation starts afresh.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use twinwatch_common::delta::{DeltaError, DeltaState, Tick};
use twinwatch_common::message::{Batch, Hello, HostInfo};

use crate::endpoints::Endpoints;
use crate::identity::AgentIdentity;

/// Incarnations remembered per host, to recognise late replays of earlier ones.
const REMEMBERED_INCARNATIONS: usize = 8;

/// Ingest bookkeeping, persisted with the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct IngestCounters {
    /// Batches applied (and stored): each exactly once.
    pub batches_applied: u64,
    /// Replayed batches recognised and ignored.
    pub duplicates: u64,
    /// Batches the agent dropped before sending, seen as sequence jumps.
    pub missing_batches: u64,
    /// Batches stored but not applied because a keyframe was awaited or they failed to apply.
    pub unapplied: u64,
    pub keyframe_requests: u64,
    pub connects: u64,
    /// Hellos that carried a boot id different from the one before.
    pub reboots: u64,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct HostTwin {
    pub id: String,
    pub dc: String,
    pub info: HostInfo,
    pub agent_version: String,
    pub interval_ms: u32,
    /// The incarnation whose deltas [`HostTwin::state`] follows.
    pub incarnation: u64,
    /// Highest sequence applied or stored per incarnation, newest last.
    pub stored_through: Vec<(u64, u64)>,
    pub state: DeltaState,
    pub awaiting_keyframe: bool,
    /// Aggregator clock when the host was last heard from, ms since the epoch.
    pub last_seen_ms: i64,
    /// Aggregator clock minus agent clock at the last hello, ms.
    pub clock_offset_ms: i64,
    pub counters: IngestCounters,
}

/// How current a host's twin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Online,
    Stale,
    Offline,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Online => "online",
            HostStatus::Stale => "stale",
            HostStatus::Offline => "offline",
        }
    }
}

impl HostTwin {
    fn new(who: &AgentIdentity) -> Self {
        HostTwin {
            id: who.id.clone(),
            dc: who.dc.clone(),
            info: HostInfo::default(),
            agent_version: String::new(),
            interval_ms: 1000,
            incarnation: 0,
            stored_through: Vec::new(),
            state: DeltaState::default(),
            awaiting_keyframe: false,
            last_seen_ms: 0,
            clock_offset_ms: 0,
            counters: IngestCounters::default(),
        }
    }

    pub fn stored_through(&self, incarnation: u64) -> u64 {
        self.stored_through.iter().find(|(i, _)| *i == incarnation).map_or(0, |(_, s)| *s)
    }

    fn set_stored_through(&mut self, incarnation: u64, seq: u64) {
        match self.stored_through.iter_mut().find(|(i, _)| *i == incarnation) {
            Some(entry) => entry.1 = entry.1.max(seq),
            None => {
                self.stored_through.push((incarnation, seq));
                self.stored_through.sort_unstable();
                if self.stored_through.len() > REMEMBERED_INCARNATIONS {
                    self.stored_through.remove(0);
                }
            }
        }
    }

    /// Online while samples arrive within three intervals, stale until `offline_after_ms`, then
    /// offline.
    pub fn status(&self, now_ms: i64, offline_after_ms: i64) -> HostStatus {
        let silent = now_ms - self.last_seen_ms;
        if silent <= 3 * self.interval_ms.max(1) as i64 {
            HostStatus::Online
        } else if silent <= offline_after_ms {
            HostStatus::Stale
        } else {
            HostStatus::Offline
        }
    }
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the twin; store it.
    Applied,
    /// Already stored: acknowledge it again, store nothing.
    Duplicate,
    /// Store it for history, but the twin could not apply it; a keyframe is wanted.
    Unapplied { keyframe_wanted: bool, reason: String },
}

#[derive(Debug, Default)]
pub struct Twin {
    hosts: BTreeMap<String, HostTwin>,
    /// Recent probe results, taken from the ticks as they are applied; not persisted.
    endpoints: Endpoints,
}

impl Twin {
    /// Rebuilds the twin from hosts loaded from the store.
    pub fn from_hosts(hosts: impl IntoIterator<Item = HostTwin>) -> Self {
        Twin { hosts: hosts.into_iter().map(|h| (h.id.clone(), h)).collect(), endpoints: Endpoints::default() }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostTwin> {
        self.hosts.values()
    }

    pub fn host(&self, id: &str) -> Option<&HostTwin> {
        self.hosts.get(id)
    }

    /// Puts back a host as the store has it, after a failed commit.
    pub fn restore(&mut self, host: Option<HostTwin>, id: &str) {
        // Results already taken from the undone batches stay: their replay finds the same
        // timestamps and takes nothing twice.
        match host {
            Some(h) => {
                self.hosts.insert(id.to_owned(), h);
            }
            None => {
                self.hosts.remove(id);
                self.endpoints.forget_host(id);
            }
        }
    }

    /// An agent said hello: record what it is. Returns what is stored of its incarnation.
    pub fn handle_hello(&mut self, who: &AgentIdentity, hello: &Hello, now_ms: i64) -> u64 {
        let host = self.hosts.entry(who.id.clone()).or_insert_with(|| HostTwin::new(who));
        host.dc = who.dc.clone();
        if !host.info.boot_id.is_empty() && host.info.boot_id != hello.host.boot_id {
            host.counters.reboots += 1;
        }
        host.info = hello.host.clone();
        host.agent_version = hello.agent_version.clone();
        host.interval_ms = hello.interval_ms.max(1);
        host.clock_offset_ms = now_ms - hello.agent_time_ms;
        host.last_seen_ms = now_ms;
        host.counters.connects += 1;
        host.stored_through(hello.incarnation)
    }

    /// Reconciles one batch from `agent` into its twin.
    pub fn handle_batch(&mut self, agent: &str, batch: &Batch, now_ms: i64) -> Outcome {
        let Some(host) = self.hosts.get_mut(agent) else {
            return Outcome::Unapplied { keyframe_wanted: false, reason: "batch before hello".into() };
        };
        host.last_seen_ms = now_ms;
        let through = host.stored_through(batch.incarnation);
        if batch.seq <= through {
            host.counters.duplicates += 1;
            return Outcome::Duplicate;
        }
        if batch.incarnation < host.incarnation {
            // A late replay from an earlier incarnation: history only.
            host.set_stored_through(batch.incarnation, batch.seq);
            host.counters.unapplied += 1;
            return Outcome::Unapplied { keyframe_wanted: false, reason: "earlier incarnation".into() };
        }
        let fresh = batch.incarnation > host.incarnation;
        let missing = if fresh { batch.seq - 1 } else { batch.seq - through - 1 };
        host.counters.missing_batches += missing;
        if fresh {
            host.incarnation = batch.incarnation;
            host.state = DeltaState::default();
            host.awaiting_keyframe = false;
        }
        host.set_stored_through(batch.incarnation, batch.seq);
        if missing > 0 || host.awaiting_keyframe {
            if !batch.is_keyframe() {
                host.counters.unapplied += 1;
                let first_ask = !host.awaiting_keyframe;
                host.awaiting_keyframe = true;
                if first_ask {
                    host.counters.keyframe_requests += 1;
                }
                let reason = if missing > 0 {
                    format!("{missing} batches missing before it")
                } else {
                    "awaiting keyframe".into()
                };
                return Outcome::Unapplied { keyframe_wanted: first_ask, reason };
            }
            host.awaiting_keyframe = false;
        }
        let endpoints = &mut self.endpoints;
        match apply_all(&mut host.state, batch, |state, tick| endpoints.observe(agent, state, tick)) {
            Ok(()) => {
                host.counters.batches_applied += 1;
                Outcome::Applied
            }
            Err(e) => {
                host.counters.unapplied += 1;
                host.awaiting_keyframe = true;
                host.counters.keyframe_requests += 1;
                Outcome::Unapplied { keyframe_wanted: true, reason: e.to_string() }
            }
        }
    }
}

/// Applies every tick of a batch in order, showing `applied` the state after each.
/// `DeltaState::apply` leaves the state untouched when a tick fails; ticks before it stay applied,
/// and the caller then waits for a keyframe, which replaces the state whole.
fn apply_all(
    state: &mut DeltaState,
    batch: &Batch,
    mut applied: impl FnMut(&DeltaState, &Tick),
) -> Result<(), DeltaError> {
    batch.ticks.iter().try_for_each(|tick| {
        state.apply(tick)?;
        applied(state, tick);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::http_result;
    use twinwatch_common::delta::DeltaEncoder;
    use twinwatch_common::sample::{Metric, Sample, SeriesKey, Value};

    fn who() -> AgentIdentity {
        AgentIdentity { id: "udm".into(), dc: "dc1".into() }
    }

    fn hello(incarnation: u64) -> Hello {
        Hello { agent_version: "t".into(), incarnation, agent_time_ms: 0, interval_ms: 1000, host: HostInfo::default() }
    }

    struct Agent {
        enc: DeltaEncoder,
        incarnation: u64,
        seq: u64,
    }

    impl Agent {
        fn new(incarnation: u64) -> Self {
            Agent { enc: DeltaEncoder::new(1000), incarnation, seq: 0 }
        }
        fn batch(&mut self, v: i64) -> Batch {
            self.seq += 1;
            let m = Metric::counter(SeriesKey::new("c"), Value::Int(v));
            let tick = self.enc.encode(&Sample::new(v, vec![m]));
            Batch { incarnation: self.incarnation, seq: self.seq, ticks: vec![tick] }
        }
    }

    fn value(twin: &Twin) -> f64 {
        twin.host("udm").unwrap().state.series().next().unwrap().value()
    }

    #[test]
    fn replays_are_ignored_and_counted() {
        let mut twin = Twin::default();
        twin.handle_hello(&who(), &hello(1), 0);
        let mut agent = Agent::new(1);
        let batches: Vec<_> = (1..=5).map(|v| agent.batch(v * 10)).collect();
        for b in &batches[..3] {
            assert_eq!(twin.handle_batch("udm", b, 1), Outcome::Applied);
        }
        // The connection drops before the ack; the agent replays from the start of its queue.
        assert_eq!(twin.handle_hello(&who(), &hello(1), 2), 3);
        for b in &batches {
            twin.handle_batch("udm", b, 3);
        }
        let host = twin.host("udm").unwrap();
        assert_eq!((host.counters.batches_applied, host.counters.duplicates), (5, 3));
        assert_eq!(value(&twin), 50.0);
    }

    #[test]
    fn a_gap_waits_for_a_keyframe() {
        let mut twin = Twin::default();
        twin.handle_hello(&who(), &hello(1), 0);
        let mut agent = Agent::new(1);
        assert_eq!(twin.handle_batch("udm", &agent.batch(1), 0), Outcome::Applied);
        agent.batch(2); // dropped at the agent
        let after_gap = agent.batch(3);
        assert!(matches!(twin.handle_batch("udm", &after_gap, 0), Outcome::Unapplied { keyframe_wanted: true, .. }));
        assert!(matches!(
            twin.handle_batch("udm", &agent.batch(4), 0),
            Outcome::Unapplied { keyframe_wanted: false, .. }
        ));
        agent.enc.request_keyframe();
        assert_eq!(twin.handle_batch("udm", &agent.batch(5), 0), Outcome::Applied);
        assert_eq!(value(&twin), 5.0);
        let c = &twin.host("udm").unwrap().counters;
        assert_eq!((c.missing_batches, c.unapplied, c.keyframe_requests, c.batches_applied), (1, 2, 1, 2));
    }

    #[test]
    fn a_new_incarnation_starts_afresh_and_old_replays_are_history() {
        let mut twin = Twin::default();
        twin.handle_hello(&who(), &hello(1), 0);
        let mut old = Agent::new(1);
        let first = old.batch(1);
        let late = old.batch(2);
        twin.handle_batch("udm", &first, 0);
        let mut new = Agent::new(2);
        twin.handle_hello(&who(), &hello(2), 0);
        assert_eq!(twin.handle_batch("udm", &new.batch(100), 0), Outcome::Applied);
        assert!(matches!(twin.handle_batch("udm", &late, 0), Outcome::Unapplied { keyframe_wanted: false, .. }));
        assert_eq!(twin.handle_batch("udm", &late, 0), Outcome::Duplicate);
        assert_eq!(value(&twin), 100.0);
        assert_eq!(twin.host("udm").unwrap().incarnation, 2);
    }

    #[test]
    fn a_new_boot_id_counts_a_reboot_and_a_reconnect_does_not() {
        let mut twin = Twin::default();
        let booted = |incarnation, boot: &str| Hello {
            host: HostInfo { boot_id: boot.into(), ..HostInfo::default() },
            ..hello(incarnation)
        };
        twin.handle_hello(&who(), &booted(1, "b1"), 0);
        twin.handle_hello(&who(), &booted(1, "b1"), 1);
        twin.handle_hello(&who(), &booted(2, "b1"), 2);
        assert_eq!(twin.host("udm").unwrap().counters.reboots, 0);
        twin.handle_hello(&who(), &booted(3, "b2"), 3);
        assert_eq!(twin.host("udm").unwrap().counters.reboots, 1);
    }

    #[test]
    fn probe_results_are_taken_once_through_replays_and_new_incarnations() {
        let mut twin = Twin::default();
        twin.handle_hello(&who(), &hello(1), 0);
        let mut enc = DeltaEncoder::new(1000);
        let mut tick = |ts: i64, probe_ts: i64| enc.encode(&Sample::new(ts, http_result("shop", probe_ts, 200, 0.1)));
        let batches = [
            Batch { incarnation: 1, seq: 1, ticks: vec![tick(1_000, 900)] },
            Batch { incarnation: 1, seq: 2, ticks: vec![tick(2_000, 900), tick(3_000, 2_900)] },
            Batch { incarnation: 1, seq: 3, ticks: vec![tick(4_000, 3_900), tick(5_000, 4_900)] },
        ];
        let results = |twin: &Twin| twin.endpoints().vantage("shop", "udm").map_or(0, |v| v.results().len());
        for b in &batches {
            assert_eq!(twin.handle_batch("udm", b, 1), Outcome::Applied);
        }
        assert_eq!(results(&twin), 4);
        for b in &batches {
            assert_eq!(twin.handle_batch("udm", b, 2), Outcome::Duplicate);
        }
        assert_eq!(results(&twin), 4);
        // A restarted agent's keyframe carries the last result again: still not a new one.
        let mut enc = DeltaEncoder::new(1000);
        let again = enc.encode(&Sample::new(6_000, http_result("shop", 4_900, 200, 0.1)));
        twin.handle_hello(&who(), &hello(2), 3);
        assert_eq!(
            twin.handle_batch("udm", &Batch { incarnation: 2, seq: 1, ticks: vec![again] }, 3),
            Outcome::Applied
        );
        assert_eq!(results(&twin), 4);
    }

    #[test]
    fn status_follows_silence() {
        let mut twin = Twin::default();
        twin.handle_hello(&who(), &hello(1), 10_000);
        let host = twin.host("udm").unwrap();
        assert_eq!(host.status(13_000, 60_000), HostStatus::Online);
        assert_eq!(host.status(13_001, 60_000), HostStatus::Stale);
        assert_eq!(host.status(70_001, 60_000), HostStatus::Offline);
    }
}
